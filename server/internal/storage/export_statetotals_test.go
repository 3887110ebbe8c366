package storage

import (
	"context"

	"github.com/retryhub/retryhub/server/internal/retry"
)

// CountTaskStates counts the tasks per scene and state in rh_task itself, as the state totals
// must (tests only: nothing else counts the task table so).
func (s *Store) CountTaskStates(ctx context.Context) (map[int64]map[retry.State]int64, error) {
	out := map[int64]map[retry.State]int64{}
	err := scanStateCounts(ctx, s.sql, "SELECT scene_id, state, COUNT(*) FROM rh_task GROUP BY scene_id, state", nil,
		func(scene int64, st retry.State, n int64) {
			if out[scene] == nil {
				out[scene] = map[retry.State]int64{}
			}
			out[scene][st] = n
		})
	return out, err
}

// SpoilStateTotals adds n to a scene's total of a state in shard 0, as a change of tasks made
// outside the store would leave it wrong (tests only).
func (s *Store) SpoilStateTotals(ctx context.Context, sceneID int64, st retry.State, n int64) error {
	_, err := s.sql.ExecContext(ctx, "INSERT INTO rh_scene_state (scene_id, shard, state, n) VALUES (?, 0, ?, ?)"+stateUpsert(s.d),
		sceneID, int8(st), n)
	return err
}

// ForgetStateTotals empties the totals and removes the mark that they are kept, as a database
// an earlier version kept looks (tests only).
func (s *Store) ForgetStateTotals(ctx context.Context) error {
	if _, err := s.sql.ExecContext(ctx, "DELETE FROM rh_scene_state"); err != nil {
		return err
	}
	_, err := s.sql.ExecContext(ctx, "DELETE FROM rh_meta WHERE name = ?", metaStateTotals)
	return err
}

package storage

import (
	"context"
	"time"
)

// AddSummaryAt counts reported reports of the scene in the summary of at's minute, as an
// ingest at that time would (tests only: ingest counts at the present).
func (s *Store) AddSummaryAt(ctx context.Context, at time.Time, sceneID int64, reported int) error {
	_, err := s.sql.ExecContext(ctx, "INSERT INTO rh_summary_minute (minute, scene_id, shard, "+joinCols()+") VALUES (?,?,0,?,0,0,0,0,0,0,0,0)"+
		summaryUpsert(s.d), minuteOf(at), sceneID, reported)
	return err
}

func joinCols() string {
	out := ""
	for i, c := range summaryCols {
		if i > 0 {
			out += ", "
		}
		out += c
	}
	return out
}

// MakeSummaryUnsharded puts back the summary table of a version before shards (key minute,
// scene_id), holding the given reports per minute of the scene (tests only).
func (s *Store) MakeSummaryUnsharded(ctx context.Context, sceneID int64, reported map[time.Time]int) error {
	cols := ""
	for _, c := range summaryCols {
		cols += c + " BIGINT NOT NULL DEFAULT 0, "
	}
	for _, q := range []string{"DROP TABLE rh_summary_minute",
		"CREATE TABLE rh_summary_minute (minute DATETIME(3) NOT NULL, scene_id BIGINT NOT NULL, " + cols + "PRIMARY KEY (minute, scene_id))"} {
		if _, err := s.sql.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	for at, n := range reported {
		if _, err := s.sql.ExecContext(ctx, "INSERT INTO rh_summary_minute (minute, scene_id, reported) VALUES (?,?,?)", minuteOf(at), sceneID, n); err != nil {
			return err
		}
	}
	return nil
}

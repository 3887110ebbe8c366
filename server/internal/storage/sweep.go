package storage

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
)

// This file holds the sweeper's and the retention janitor's statements: taking back claims that
// outlived their deadline, bringing held tasks back, and deleting what retention lets go.

// Unhold makes held tasks waiting again (retry.Unhold), due as they were, up to limit of them,
// where they may wait again (retry.MayWaitAgain): their scene, group and namespace are all
// enabled and the group has a client instance with an executor whose heartbeat is not older
// than liveSince. It reads only the held tasks of such scenes, through the (scene_id, state,
// id) index (a filter on buckets would lead the database to scan every held task of the buckets
// instead). It returns how many it brought back, and whether it found limit of them (there may
// be more).
func (s *Store) Unhold(ctx context.Context, liveSince time.Time, limit int) (n int64, more bool, err error) {
	if limit < 1 {
		return 0, false, nil
	}
	tr := retry.Unhold()
	q := fmt.Sprintf("SELECT t.id FROM rh_scene sc JOIN rh_group g ON g.id = sc.group_id "+
		"JOIN rh_namespace n ON n.id = g.namespace_id JOIN rh_task t ON t.scene_id = sc.id AND t.%s "+
		"WHERE sc.enabled = ? AND g.enabled = ? AND n.enabled = ? AND EXISTS ("+
		"SELECT 1 FROM rh_client_instance i WHERE i.group_id = g.id AND i.executor_url <> '' AND i.heartbeat_at >= ?) "+
		"LIMIT %d", inStates(tr.From), limit)
	rows, err := s.sql.QueryContext(ctx, q, true, true, true, T(liveSince))
	if err != nil {
		return 0, false, fmt.Errorf("find held tasks to bring back: %w", err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, false, fmt.Errorf("find held tasks to bring back: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, false, fmt.Errorf("find held tasks to bring back: %w", err)
	}
	if len(ids) == 0 {
		return 0, false, nil
	}
	// Only while still held: an operator may have paused or cancelled one meanwhile. In one
	// transaction with the moves in the state totals.
	now := T(time.Now())
	err = s.retryTx(ctx, func(tx *sql.Tx) error {
		var err error
		n, err = s.transition(ctx, tx, tr, ids, now, now)
		return err
	})
	if err != nil {
		return 0, false, fmt.Errorf("bring back %d held tasks: %w", len(ids), err)
	}
	return n, len(ids) == limit, nil
}

// Stuck returns up to limit tasks of the buckets whose replay (or callback) is running past
// its claim's deadline at now, with the token they were claimed under. It reads only running
// rows, which dispatch keeps few.
func (s *Store) Stuck(ctx context.Context, kind retry.AttemptKind, buckets []int, now time.Time, limit int) ([]retry.Claim, error) {
	return s.StuckAfter(ctx, kind, buckets, now, 0, limit)
}

// StuckAfter is Stuck for the tasks whose id is above afterID, in id order: a sweeper pages
// with it past tasks it had to skip.
func (s *Store) StuckAfter(ctx context.Context, kind retry.AttemptKind, buckets []int, now time.Time, afterID int64, limit int) ([]retry.Claim, error) {
	if len(buckets) == 0 {
		return nil, nil
	}
	ph := phaseOf(kind)
	q := fmt.Sprintf("SELECT %s FROM rh_task WHERE bucket IN (%s) AND %s = %d AND run_deadline <= ? AND id > ? ORDER BY id LIMIT %d",
		ph.claimCols(s.d), intList(buckets), ph.state, ph.running, limit)
	out, err := readClaims(ctx, s.sql, q, kind, T(now), afterID)
	if err != nil {
		return nil, fmt.Errorf("find stuck %s: %w", kind, err)
	}
	return out, nil
}

// DeleteEndedTasks deletes up to limit tasks in one of states that ended before the given time
// and whose callback has nothing left to do, with their attempts, in one transaction (tried
// again on a deadlock: an operator's replay may lock the same tasks) that takes them off their
// scenes' state totals. It returns how many tasks it deleted.
func (s *Store) DeleteEndedTasks(ctx context.Context, states []retry.State, before time.Time, limit int) (int64, error) {
	if len(states) == 0 {
		return 0, nil
	}
	args := []any{}
	for _, st := range states {
		args = append(args, int8(st))
	}
	args = append(args, T(before))
	// The rows found are locked until they are deleted (lockRows): otherwise an operator could
	// replay a dead letter between the read and the delete, be told it was replayed, and lose it.
	var deleted int64
	err := s.retryTx(ctx, func(tx *sql.Tx) error {
		deleted = 0
		rows, err := tx.QueryContext(ctx, fmt.Sprintf(
			"SELECT id, scene_id, state FROM rh_task WHERE state IN (%s) AND ended_at < ? AND cb_state NOT IN (%s) LIMIT %d%s",
			placeholders(len(states)), intList(retry.PendingCallbackStates()), limit, s.d.lockRows()), args...)
		if err != nil {
			return err
		}
		var ids []any
		deltas := stateDeltas{}
		for rows.Next() {
			var (
				id, scene int64
				st        int8
			)
			if err := rows.Scan(&id, &scene, &st); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
			deltas.add(scene, retry.State(st), -1)
		}
		rows.Close()
		if err := rows.Err(); err != nil || len(ids) == 0 {
			return err
		}
		in := placeholders(len(ids))
		if _, err := tx.ExecContext(ctx, "DELETE FROM rh_attempt WHERE task_id IN ("+in+")", ids...); err != nil {
			return err
		}
		r, err := tx.ExecContext(ctx, "DELETE FROM rh_task WHERE id IN ("+in+")", ids...)
		if err != nil {
			return err
		}
		if deleted, err = r.RowsAffected(); err != nil {
			return err
		}
		if deleted != int64(len(ids)) {
			// The rows are locked as read: this is a bug, and totals written now would be wrong.
			return fmt.Errorf("deleted %d of the %d tasks read and locked", deleted, len(ids))
		}
		return s.applyStateDeltas(ctx, tx, deltas)
	})
	if err != nil {
		return 0, fmt.Errorf("delete ended tasks: %w", err)
	}
	return deleted, nil
}

// DeleteAttemptsBefore deletes up to limit attempt records started before the given time.
func (s *Store) DeleteAttemptsBefore(ctx context.Context, before time.Time, limit int) (int64, error) {
	r, err := s.sql.ExecContext(ctx, s.d.deleteLimit("rh_attempt", "started_at < ?", limit), T(before))
	if err != nil {
		return 0, fmt.Errorf("delete old attempts: %w", err)
	}
	n, err := r.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("delete old attempts: %w", err)
	}
	return n, nil
}

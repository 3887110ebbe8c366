package storage

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
)

// Action is an operator's action on tasks.
type Action string

// The operator actions, and the states each applies to. A task in another state is left as it
// is and counted as skipped.
const (
	// TriggerNow makes waiting, held or paused tasks waiting and due now (a task whose scene is
	// still paused is held again when it is claimed).
	TriggerNow Action = "trigger"
	// Pause stops waiting or held tasks until they are resumed.
	Pause Action = "pause"
	// Resume makes paused tasks wait again, due at their next trigger time.
	Resume Action = "resume"
	// Cancel ends waiting, held, running or paused tasks without further replays.
	Cancel Action = "cancel"
	// Replay brings dead letters (exhausted tasks) back with a fresh set of attempts, due now.
	Replay Action = "replay"
	// Discard ends dead letters as cancelled; they are kept until retention removes them.
	Discard Action = "discard"
	// SetNextAt moves the next trigger time of waiting, held or paused tasks.
	SetNextAt Action = "set_next"
)

// Actions lists every action.
var Actions = []Action{TriggerNow, Pause, Resume, Cancel, Replay, Discard, SetNextAt}

// ParseAction reads an action name.
func ParseAction(s string) (Action, error) {
	for _, a := range Actions {
		if string(a) == s {
			return a, nil
		}
	}
	return "", fmt.Errorf("%w action %q: want trigger, pause, resume, cancel, replay, discard or set_next", retry.ErrInvalid, s)
}

// ActionResult counts what an action did.
type ActionResult struct {
	// Changed tasks took the action.
	Changed int64
	// Skipped tasks were in a state the action does not apply to, or no longer exist.
	Skipped int64
	// Conflicts are dead letters not replayed because their scene already has an active task
	// with the same key.
	Conflicts []int64
}

// Apply takes an action on the tasks with the given ids. at is the time for SetNextAt.
func (s *Store) Apply(ctx context.Context, action Action, ids []int64, at time.Time) (ActionResult, error) {
	var res ActionResult
	if len(ids) == 0 {
		return res, nil
	}
	now := T(time.Now())
	in := placeholders(len(ids))
	idArgs := make([]any, len(ids))
	for i, id := range ids {
		idArgs[i] = id
	}
	var (
		q    string
		args []any
	)
	switch action {
	case TriggerNow:
		q = fmt.Sprintf("UPDATE rh_task SET state = %d, next_at = ?, updated_at = ? WHERE id IN (%s) AND state IN (%d, %d, %d)",
			retry.Waiting, in, retry.Waiting, retry.Held, retry.Paused)
		args = []any{now, now}
	case Pause:
		q = fmt.Sprintf("UPDATE rh_task SET state = %d, updated_at = ? WHERE id IN (%s) AND state IN (%d, %d)", retry.Paused, in, retry.Waiting, retry.Held)
		args = []any{now}
	case Resume:
		q = fmt.Sprintf("UPDATE rh_task SET state = %d, updated_at = ? WHERE id IN (%s) AND state = %d", retry.Waiting, in, retry.Paused)
		args = []any{now}
	case Cancel:
		q = fmt.Sprintf("UPDATE rh_task SET state = %d, active_key = NULL, claim_token = 0, run_deadline = NULL, ended_at = ?, updated_at = ? WHERE id IN (%s) AND state IN (%d, %d, %d, %d)",
			retry.Cancelled, in, retry.Waiting, retry.Held, retry.Running, retry.Paused)
		args = []any{now, now}
	case Discard:
		q = fmt.Sprintf("UPDATE rh_task SET state = %d, ended_at = ?, updated_at = ? WHERE id IN (%s) AND state = %d",
			retry.Cancelled, in, retry.Exhausted)
		args = []any{now, now}
	case SetNextAt:
		if at.IsZero() {
			return res, fmt.Errorf("%w: set_next needs a time", retry.ErrInvalid)
		}
		q = fmt.Sprintf("UPDATE rh_task SET next_at = ?, updated_at = ? WHERE id IN (%s) AND state IN (%d, %d, %d)",
			in, retry.Waiting, retry.Held, retry.Paused)
		args = []any{T(at), now}
	case Replay:
		return s.replay(ctx, ids, now)
	default:
		return res, fmt.Errorf("%w action %q", retry.ErrInvalid, action)
	}
	r, err := s.sql.ExecContext(ctx, q, append(args, idArgs...)...)
	if err != nil {
		return res, fmt.Errorf("%s %d tasks: %w", action, len(ids), err)
	}
	res.Changed, _ = r.RowsAffected()
	res.Skipped = int64(len(ids)) - res.Changed
	return res, nil
}

// replay brings dead letters back one statement per task, in one transaction: a dead letter
// whose key is active again in its scene would break the one-active-task-per-key rule, so it is
// reported as a conflict and left as it is.
func (s *Store) replay(ctx context.Context, ids []int64, now Time) (ActionResult, error) {
	var res ActionResult
	q := fmt.Sprintf("UPDATE rh_task SET state = %d, attempts = 0, next_at = ?, active_key = idem_key, ended_at = NULL, "+
		"cb_state = %d, cb_attempts = 0, cb_next_at = NULL, cb_error = '', claim_token = 0, run_deadline = NULL, updated_at = ? WHERE id = ? AND state = %d",
		retry.Waiting, retry.CallbackNone, retry.Exhausted)
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res = ActionResult{}
		for _, id := range ids {
			r, err := tx.ExecContext(ctx, q, now, now, id)
			if isDuplicate(err) {
				res.Conflicts = append(res.Conflicts, id)
				continue
			}
			if err != nil {
				return fmt.Errorf("replay task %d: %w", id, err)
			}
			n, _ := r.RowsAffected()
			res.Changed += n
		}
		return nil
	})
	if err != nil {
		return ActionResult{}, err
	}
	res.Skipped = int64(len(ids)) - res.Changed - int64(len(res.Conflicts))
	return res, nil
}

// DeleteEndedTasks deletes up to limit tasks in one of states that ended before the given time
// and whose callback has nothing left to do, with their attempts. It returns how many tasks it
// deleted.
func (s *Store) DeleteEndedTasks(ctx context.Context, states []retry.State, before time.Time, limit int) (int64, error) {
	if len(states) == 0 {
		return 0, nil
	}
	args := []any{}
	for _, st := range states {
		args = append(args, int8(st))
	}
	args = append(args, T(before))
	// The rows found are locked until they are deleted: otherwise an operator could replay a
	// dead letter between the read and the delete, be told it was replayed, and lose it. (SQLite
	// runs one write transaction at a time, which comes to the same.)
	lock := ""
	if s.mysql {
		lock = " FOR UPDATE"
	}
	var deleted int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, fmt.Sprintf(
			"SELECT id FROM rh_task WHERE state IN (%s) AND ended_at < ? AND cb_state NOT IN (%d, %d) LIMIT %d%s",
			placeholders(len(states)), retry.CallbackWaiting, retry.CallbackRunning, limit, lock), args...)
		if err != nil {
			return err
		}
		var ids []any
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
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
		deleted, _ = r.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("delete ended tasks: %w", err)
	}
	return deleted, nil
}

// DeleteAttemptsBefore deletes up to limit attempt records started before the given time.
func (s *Store) DeleteAttemptsBefore(ctx context.Context, before time.Time, limit int) (int64, error) {
	q := fmt.Sprintf("DELETE FROM rh_attempt WHERE started_at < ? LIMIT %d", limit)
	if !s.mysql {
		q = fmt.Sprintf("DELETE FROM rh_attempt WHERE id IN (SELECT id FROM rh_attempt WHERE started_at < ? LIMIT %d)", limit)
	}
	r, err := s.sql.ExecContext(ctx, q, T(before))
	if err != nil {
		return 0, fmt.Errorf("delete old attempts: %w", err)
	}
	n, _ := r.RowsAffected()
	return n, nil
}

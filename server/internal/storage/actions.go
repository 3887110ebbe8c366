package storage

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
)

// Action is an operator's action on tasks; its values, and which states each applies to, are
// retry's (retry.Action.Transition). They are named here too for the callers of Apply.
type Action = retry.Action

// The operator actions, as retry names them.
const (
	TriggerNow = retry.TriggerNow
	Pause      = retry.Pause
	Resume     = retry.Resume
	Cancel     = retry.Cancel
	Replay     = retry.Replay
	Discard    = retry.Discard
	SetNextAt  = retry.SetNextAt
)

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

// effectSet writes the columns of a transition's effects (retry.Effect); now is their time.
func effectSet(e retry.Effect, now Time) ([]assign, []any) {
	var (
		set  []assign
		args []any
	)
	if e.Has(retry.ClearClaim) {
		set = append(set, claimCleared()...)
	}
	if e.Has(retry.ReleaseKey) {
		set = append(set, assign{"active_key", "NULL"})
	}
	if e.Has(retry.TakeKey) {
		set = append(set, assign{"active_key", "{t}idem_key"})
	}
	if e.Has(retry.StampEnd) {
		set = append(set, assign{"ended_at", "?"})
		args = append(args, now)
	}
	if e.Has(retry.ClearEnd) {
		set = append(set, assign{"ended_at", "NULL"})
	}
	if e.Has(retry.ResetAttempts) {
		set = append(set, assign{"attempts", "0"})
	}
	if e.Has(retry.ResetCallback) {
		set = append(set, assign{"cb_state", fmt.Sprint(int8(retry.CallbackNone))}, assign{"cb_attempts", "0"},
			assign{"cb_next_at", "NULL"}, assign{"cb_error", "''"})
	}
	return set, args
}

// transitionSQL is the UPDATE of one transition on the tasks whose ids follow its arguments:
// the SET list of its state, due time and effects, and the WHERE of the states it applies to.
// at is the time given with it (retry.DueGiven).
func transitionSQL(tr retry.Transition, ids string, now, at Time) (string, []any) {
	var (
		set  []assign
		args []any
	)
	if tr.To != 0 {
		set = append(set, assign{"state", fmt.Sprint(int8(tr.To))})
	}
	switch tr.Due {
	case retry.DueNow:
		set = append(set, assign{"next_at", "?"})
		args = append(args, now)
	case retry.DueGiven:
		set = append(set, assign{"next_at", "?"})
		args = append(args, at)
	}
	es, eargs := effectSet(tr.Effects, now)
	set = append(append(set, es...), assign{"updated_at", "?"})
	args = append(append(args, eargs...), now)
	return "UPDATE rh_task SET " + setList(set, "", "") + " WHERE id IN (" + ids + ") AND " + inStates(tr.From), args
}

// inStates is the condition that a task is in one of states.
func inStates(states []retry.State) string {
	if len(states) == 1 {
		return fmt.Sprintf("state = %d", states[0])
	}
	return "state IN (" + intList(states) + ")"
}

// Apply takes an action on the tasks with the given ids, those in a state it applies to; at is
// the time for SetNextAt. An action that changes the state of tasks runs as one transaction
// that adds their moves to the state totals (statetotals.go).
func (s *Store) Apply(ctx context.Context, action Action, ids []int64, at time.Time) (ActionResult, error) {
	var res ActionResult
	if err := action.Check(at); err != nil {
		return res, err
	}
	if len(ids) == 0 {
		return res, nil
	}
	tr, err := action.Transition()
	if err != nil {
		return res, err
	}
	now := T(time.Now())
	if tr.Effects.Has(retry.TakeKey) {
		return s.reopen(ctx, action, tr, ids, now)
	}
	if tr.To != 0 {
		return s.move(ctx, action, tr, ids, now, T(at))
	}
	// No state changes (set_next): one statement, no totals to keep.
	q, args := transitionSQL(tr, placeholders(len(ids)), now, T(at))
	for _, id := range ids {
		args = append(args, id)
	}
	err = s.retry(ctx, func() error {
		r, err := s.sql.ExecContext(ctx, q, args...)
		if err != nil {
			return err
		}
		res.Changed, err = r.RowsAffected()
		return err
	})
	if err != nil {
		return ActionResult{}, fmt.Errorf("%s %d tasks: %w", action, len(ids), err)
	}
	res.Skipped = int64(len(ids)) - res.Changed
	return res, nil
}

// move takes a transition that changes the state of tasks in one transaction: it reads and
// locks the tasks among ids that the transition applies to (lockInStates), so that it knows
// the state each leaves, updates them, and adds their moves to the state totals.
func (s *Store) move(ctx context.Context, action Action, tr retry.Transition, ids []int64, now, at Time) (ActionResult, error) {
	var res ActionResult
	err := s.retryTx(ctx, func(tx *sql.Tx) error {
		res = ActionResult{}
		n, err := s.transition(ctx, tx, tr, ids, now, at)
		res.Changed = n
		return err
	})
	if err != nil {
		return ActionResult{}, fmt.Errorf("%s %d tasks: %w", action, len(ids), err)
	}
	res.Skipped = int64(len(ids)) - res.Changed
	return res, nil
}

// transition applies tr, which changes the state (tr.To is set), to the tasks among ids in one
// of its states, in tx, with their moves in the state totals; it returns how many it changed.
func (s *Store) transition(ctx context.Context, tx *sql.Tx, tr retry.Transition, ids []int64, now, at Time) (int64, error) {
	found, err := s.lockInStates(ctx, tx, ids, tr.From)
	if err != nil || len(found) == 0 {
		return 0, err
	}
	q, args := transitionSQL(tr, placeholders(len(found)), now, at)
	deltas := stateDeltas{}
	for _, t := range found {
		args = append(args, t.id)
		deltas.move(t.scene, t.state, tr.To, 1)
	}
	r, err := tx.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	n, err := r.RowsAffected()
	if err != nil {
		return 0, err
	}
	if n != int64(len(found)) {
		// The rows are locked as read: this is a bug, and totals written now would be wrong.
		return 0, fmt.Errorf("changed %d of the %d tasks read and locked", n, len(found))
	}
	return n, s.applyStateDeltas(ctx, tx, deltas)
}

// taskState is a task's scene and state, as lockInStates read them.
type taskState struct {
	id, scene int64
	state     retry.State
}

// lockInStates reads the tasks among ids that are in one of states, in the order of their ids,
// and locks them until tx ends (lockRows), so that an UPDATE that follows changes exactly these.
func (s *Store) lockInStates(ctx context.Context, tx *sql.Tx, ids []int64, states []retry.State) ([]taskState, error) {
	var out []taskState
	for start := 0; start < len(ids); start += ingestChunk {
		chunk := ids[start:min(start+ingestChunk, len(ids))]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		rows, err := tx.QueryContext(ctx, "SELECT id, scene_id, state FROM rh_task WHERE id IN ("+placeholders(len(chunk))+
			") AND "+inStates(states)+" ORDER BY id"+s.d.lockRows(), args...)
		if err != nil {
			return nil, fmt.Errorf("read tasks: %w", err)
		}
		for rows.Next() {
			var (
				t  taskState
				st int8
			)
			if err := rows.Scan(&t.id, &t.scene, &st); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read tasks: %w", err)
			}
			t.state = retry.State(st)
			out = append(out, t)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read tasks: %w", err)
		}
	}
	return out, nil
}

// reopen takes a transition that makes ended tasks hold their key again (replaying dead
// letters) one statement per task, in one transaction: a task whose key is active again in its
// scene would break the one-active-task-per-key rule, so it is reported as a conflict and left
// as it is.
func (s *Store) reopen(ctx context.Context, action Action, tr retry.Transition, ids []int64, now Time) (ActionResult, error) {
	var res ActionResult
	q, args := transitionSQL(tr, "?", now, now)
	err := s.retryTx(ctx, func(tx *sql.Tx) error {
		res = ActionResult{}
		// The tasks it applies to are read and locked first, for the states they leave.
		found, err := s.lockInStates(ctx, tx, ids, tr.From)
		if err != nil {
			return err
		}
		from := make(map[int64]taskState, len(found))
		for _, t := range found {
			from[t.id] = t
		}
		deltas := stateDeltas{}
		for _, id := range ids {
			t, ok := from[id]
			if !ok {
				continue
			}
			r, err := tx.ExecContext(ctx, q, append(args, id)...)
			if s.d.isDuplicate(err) {
				res.Conflicts = append(res.Conflicts, id)
				continue
			}
			if err != nil {
				return fmt.Errorf("task %d: %w", id, err)
			}
			n, err := r.RowsAffected()
			if err != nil {
				return fmt.Errorf("task %d: %w", id, err)
			}
			res.Changed += n
			deltas.move(t.scene, t.state, tr.To, n)
		}
		return s.applyStateDeltas(ctx, tx, deltas)
	})
	if err != nil {
		return ActionResult{}, fmt.Errorf("%s %d tasks: %w", action, len(ids), err)
	}
	res.Skipped = int64(len(ids)) - res.Changed - int64(len(res.Conflicts))
	return res, nil
}

func (r *taskRow) domain() retry.Task {
	return retry.Task{ID: r.ID, GroupID: r.GroupID, SceneID: r.SceneID, Bucket: r.Bucket, IdempotencyKey: r.IdemKey,
		Args: []byte(r.Args), State: retry.State(r.State), Attempts: r.Attempts, LocalAttempts: r.LocalAttempts,
		Merges: r.Merges, NextAt: r.NextAt.Time, DeadlineAt: r.DeadlineAt.Ptr(), ClaimToken: r.ClaimToken,
		ClaimedBy: r.ClaimedBy, RunDeadline: r.RunDeadline.Ptr(), LastError: r.LastError, CallbackState: retry.CallbackState(r.CbState),
		CallbackAttempts: r.CbAttempts, CallbackNextAt: r.CbNextAt.Ptr(), CallbackError: r.CbError,
		CreatedAt: r.CreatedAt.Time, UpdatedAt: r.UpdatedAt.Time, EndedAt: r.EndedAt.Ptr()}
}

// Task finds a task by id.
func (s *Store) Task(ctx context.Context, id int64) (retry.Task, error) {
	var row taskRow
	if err := s.db.WithContext(ctx).Take(&row, id).Error; err != nil {
		return retry.Task{}, notFound(err, fmt.Sprintf("task %d", id))
	}
	return row.domain(), nil
}

// TaskFilter selects tasks. Zero fields select everything.
type TaskFilter struct {
	// SceneIDs limits to these scenes; GroupID to one group's scenes.
	SceneIDs []int64
	GroupID  int64
	States   []retry.State
	// Key is an exact idempotency key.
	Key string
	// ErrorContains matches a part of the last error.
	ErrorContains string
	CreatedFrom   *time.Time
	CreatedTo     *time.Time
	// NamespaceIDs limits to the tasks of these namespaces' groups; nil selects every
	// namespace, an empty non-nil list none.
	NamespaceIDs []int64
	// NextFrom and NextTo bound the next trigger time (from inclusive, to exclusive).
	NextFrom *time.Time
	NextTo   *time.Time
	// Arg matches a value inside the arguments.
	Arg *ArgMatch
}

// where is the filter's condition on rh_task and its arguments.
func (s *Store) where(f *TaskFilter) (string, []any) { return f.where(s.d) }

func (f *TaskFilter) where(d dialect) (string, []any) {
	var (
		conds []string
		args  []any
	)
	if len(f.SceneIDs) > 0 {
		conds = append(conds, "scene_id IN ("+placeholders(len(f.SceneIDs))+")")
		for _, id := range f.SceneIDs {
			args = append(args, id)
		}
	}
	if f.GroupID != 0 {
		// Served by the scene index: the scenes of a group are few.
		conds = append(conds, "scene_id IN (SELECT id FROM rh_scene WHERE group_id = ?)")
		args = append(args, f.GroupID)
	}
	if len(f.States) > 0 {
		conds = append(conds, "state IN ("+placeholders(len(f.States))+")")
		for _, st := range f.States {
			args = append(args, int8(st))
		}
	}
	if f.Key != "" {
		conds = append(conds, "idem_key = ?")
		args = append(args, f.Key)
	}
	if f.ErrorContains != "" {
		conds = append(conds, "last_error LIKE ? ESCAPE '!'")
		args = append(args, "%"+likeEscape(f.ErrorContains)+"%")
	}
	if f.CreatedFrom != nil {
		conds = append(conds, "created_at >= ?")
		args = append(args, T(*f.CreatedFrom))
	}
	if f.CreatedTo != nil {
		conds = append(conds, "created_at < ?")
		args = append(args, T(*f.CreatedTo))
	}
	if f.NamespaceIDs != nil {
		if len(f.NamespaceIDs) == 0 {
			conds = append(conds, "1 = 0")
		} else {
			// Served by the scene index, like the group's condition.
			conds = append(conds, "scene_id IN (SELECT s.id FROM rh_scene s JOIN rh_group g ON g.id = s.group_id WHERE g.namespace_id IN ("+
				placeholders(len(f.NamespaceIDs))+"))")
			for _, id := range f.NamespaceIDs {
				args = append(args, id)
			}
		}
	}
	if f.NextFrom != nil {
		conds = append(conds, "next_at >= ?")
		args = append(args, T(*f.NextFrom))
	}
	if f.NextTo != nil {
		conds = append(conds, "next_at < ?")
		args = append(args, T(*f.NextTo))
	}
	if f.Arg != nil {
		conds = append(conds, d.jsonTextAt("args")+" = ?")
		args = append(args, "$."+f.Arg.Path, f.Arg.Value)
	}
	if len(conds) == 0 {
		return "1 = 1", nil
	}
	return strings.Join(conds, " AND "), args
}

func likeEscape(s string) string {
	r := strings.NewReplacer("!", "!!", "%", "!%", "_", "!_")
	return r.Replace(s)
}

// ListTasks returns up to limit tasks matching f with ids above afterID, by id: pages follow
// the key, not an offset.
func (s *Store) ListTasks(ctx context.Context, f TaskFilter, afterID int64, limit int) ([]retry.Task, error) {
	where, args := s.where(&f)
	var rows []taskRow
	err := s.db.WithContext(ctx).Where(where, args...).Where("id > ?", afterID).Order("id").Limit(limit).Find(&rows).Error
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	out := make([]retry.Task, len(rows))
	for i := range rows {
		out[i] = rows[i].domain()
	}
	return out, nil
}

// TaskIDs returns up to limit ids of tasks matching f above afterID, by id.
func (s *Store) TaskIDs(ctx context.Context, f TaskFilter, afterID int64, limit int) ([]int64, error) {
	where, args := s.where(&f)
	var ids []int64
	err := s.db.WithContext(ctx).Model(&taskRow{}).Where(where, args...).Where("id > ?", afterID).
		Order("id").Limit(limit).Pluck("id", &ids).Error
	if err != nil {
		return nil, fmt.Errorf("select task ids: %w", err)
	}
	return ids, nil
}

// Attempts returns a task's attempts, oldest first.
func (s *Store) Attempts(ctx context.Context, taskID int64) ([]retry.Attempt, error) {
	var rows []attemptRow
	if err := s.db.WithContext(ctx).Where("task_id = ?", taskID).Order("id").Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list attempts of task %d: %w", taskID, err)
	}
	out := make([]retry.Attempt, len(rows))
	for i, r := range rows {
		out[i] = retry.Attempt{ID: r.ID, TaskID: r.TaskID, Kind: retry.AttemptKind(r.Kind), Number: r.Number,
			NodeID: r.NodeID, InstanceID: r.InstanceID, StartedAt: r.StartedAt.Time,
			Duration: time.Duration(r.DurationMs) * time.Millisecond, Outcome: retry.Outcome(r.Outcome), Error: r.Error}
	}
	return out, nil
}

package storage

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
)

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
}

func (f *TaskFilter) where() (string, []any) {
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
	where, args := f.where()
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
	where, args := f.where()
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

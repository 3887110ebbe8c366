package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/retryhub/retryhub/server/internal/retry"
)

// JobState is where a bulk job is: running until it has worked through its tasks (done), an
// operator cancelled it (cancelled), or it could not go on (failed).
type JobState string

// The states of a job. Only a running job is worked on; the others are ended.
const (
	JobRunning   JobState = "running"
	JobDone      JobState = "done"
	JobCancelled JobState = "cancelled"
	JobFailed    JobState = "failed"
)

// ParseJobState reads a job state's name.
func ParseJobState(s string) (JobState, error) {
	switch st := JobState(s); st {
	case JobRunning, JobDone, JobCancelled, JobFailed:
		return st, nil
	}
	return "", fmt.Errorf("%w: unknown job state %q; want running, done, cancelled or failed", retry.ErrInvalid, s)
}

// ErrJobLost is returned by the writes of a job's runner when the job is no longer the node's
// to work on: an operator cancelled it, or another node took it over after the node's lease
// expired. What the write would have done is not done.
var ErrJobLost = errors.New("the job is no longer this node's: cancelled, ended or taken over")

// JobRequest is what a job acts on: a list of task ids, or every task that matches a filter.
type JobRequest struct {
	// IDs are the tasks, ascending and without repeats.
	IDs []int64 `json:"ids,omitempty"`
	// Filter selects the tasks, already limited to the namespaces its creator may act in.
	Filter *TaskFilter `json:"filter,omitempty"`
	// NamespaceIDs are the namespaces the tasks are in (a list of ids) or may be in (a
	// filter): who may see and cancel the job. nil for every namespace, an empty list none.
	NamespaceIDs []int64 `json:"namespace_ids"`
}

// Job is an operator's action on many tasks, worked through in batches by id on whichever
// node holds its lease.
type Job struct {
	ID int64
	// NamespaceID is the one namespace the job's tasks are in; 0 when they may be in several
	// (a filter over every namespace its creator may act in, listed in the filter).
	NamespaceID int64
	Action      retry.Action
	Request     JobRequest
	// At is the time given with the action (set_next); zero otherwise.
	At    time.Time
	State JobState
	// Total is how many tasks the request matched when the job was made.
	Total int64
	// Done counts the tasks worked through; Failed those of them the action was not taken on
	// (in a state it does not apply to, gone, or a replay whose key is active again).
	Done, Failed int64
	// MaxTaskID bounds a filter job to the tasks that existed when it was made: a task made
	// later is not acted on, though it matches.
	MaxTaskID int64
	// Cursor is the id of the last task worked through; the job goes on above it.
	Cursor int64
	// Owner is the node working on the job, until LeaseUntil; empty when none.
	Owner      string
	LeaseUntil time.Time
	CreatedBy  string
	CreatedAt  time.Time
	UpdatedAt  time.Time
	EndedAt    *time.Time
	Error      string
}

// Ended reports whether the job is over.
func (j *Job) Ended() bool { return j.State != JobRunning }

// jobRow is a bulk job. The runners claim by (state, id), reading only the running ones; the
// console lists by id, newest first, narrowed by namespace or state. The table stays small: a
// job is a row per operator request, not per task.
type jobRow struct {
	ID          int64  `gorm:"primaryKey;autoIncrement;index:idx_job_state,priority:2;index:idx_job_namespace,priority:2"`
	NamespaceID int64  `gorm:"not null;default:0;index:idx_job_namespace,priority:1"`
	Action      string `gorm:"type:varchar(16);not null"`
	Request     string `gorm:"type:mediumtext;not null"`
	At          *Time
	State       string `gorm:"type:varchar(16);not null;index:idx_job_state,priority:1"`
	Total       int64  `gorm:"not null;default:0"`
	Done        int64  `gorm:"not null;default:0"`
	Failed      int64  `gorm:"not null;default:0"`
	MaxTaskID   int64  `gorm:"not null;default:0"`
	CursorID    int64  `gorm:"not null;default:0"`
	Owner       string `gorm:"type:varchar(64);not null;default:''"`
	LeaseUntil  Time   `gorm:"not null"`
	CreatedBy   string `gorm:"type:varchar(128);not null"`
	CreatedAt   Time   `gorm:"not null"`
	UpdatedAt   Time   `gorm:"not null"`
	EndedAt     *Time
	Error       string `gorm:"type:text;not null"`
}

func (jobRow) TableName() string { return "rh_job" }

func (r *jobRow) domain() (Job, error) {
	j := Job{ID: r.ID, NamespaceID: r.NamespaceID, Action: retry.Action(r.Action), State: JobState(r.State),
		Total: r.Total, Done: r.Done, Failed: r.Failed, MaxTaskID: r.MaxTaskID, Cursor: r.CursorID, Owner: r.Owner,
		LeaseUntil: r.LeaseUntil.Time, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt.Time, UpdatedAt: r.UpdatedAt.Time,
		EndedAt: r.EndedAt.Ptr(), Error: r.Error}
	if r.At != nil {
		j.At = r.At.Time
	}
	if err := json.Unmarshal([]byte(r.Request), &j.Request); err != nil {
		return j, fmt.Errorf("job %d: read its request: %w", r.ID, err)
	}
	return j, nil
}

// jobNone is the lease expiry of a job no node holds.
var jobNone = T(time.Unix(0, 0))

// CreateJob stores a new running job, owned by no node yet, and returns it with its id. The
// caller fills in its total and, for a filter, its MaxTaskID.
func (s *Store) CreateJob(ctx context.Context, j Job) (Job, error) {
	if err := j.Action.Check(j.At); err != nil {
		return Job{}, err
	}
	if (j.Request.Filter == nil) == (len(j.Request.IDs) == 0) {
		return Job{}, fmt.Errorf("%w: a job acts on a list of task ids or on a filter", retry.ErrInvalid)
	}
	if j.Request.IDs != nil {
		ids := slices.Clone(j.Request.IDs)
		slices.Sort(ids)
		j.Request.IDs = slices.Compact(ids)
	}
	req, err := json.Marshal(j.Request)
	if err != nil {
		return Job{}, fmt.Errorf("create job: %w", err)
	}
	now := T(time.Now())
	row := jobRow{NamespaceID: j.NamespaceID, Action: string(j.Action), Request: string(req), State: string(JobRunning),
		Total: j.Total, MaxTaskID: j.MaxTaskID, LeaseUntil: jobNone, CreatedBy: clip(j.CreatedBy, 128),
		CreatedAt: now, UpdatedAt: now}
	if !j.At.IsZero() {
		at := T(j.At)
		row.At = &at
	}
	if err := s.db.WithContext(ctx).Create(&row).Error; err != nil {
		return Job{}, fmt.Errorf("create job: %w", err)
	}
	return row.domain()
}

// Job reads a job.
func (s *Store) Job(ctx context.Context, id int64) (Job, error) {
	var row jobRow
	if err := s.db.WithContext(ctx).Take(&row, id).Error; err != nil {
		return Job{}, notFound(err, fmt.Sprintf("job %d", id))
	}
	return row.domain()
}

// JobFilter narrows the list of jobs; zero fields do not.
type JobFilter struct {
	States []JobState
	// NamespaceIDs limits to the jobs in these namespaces; nil does not limit. OrCreatedBy adds
	// the jobs that actor made, wherever they are.
	NamespaceIDs []int64
	OrCreatedBy  string
}

// ListJobs returns up to limit jobs matching f with ids below before (0: from the newest),
// newest first.
func (s *Store) ListJobs(ctx context.Context, f JobFilter, before int64, limit int) ([]Job, error) {
	q := s.db.WithContext(ctx).Model(&jobRow{})
	if len(f.States) > 0 {
		states := make([]string, len(f.States))
		for i, st := range f.States {
			states[i] = string(st)
		}
		q = q.Where("state IN ?", states)
	}
	if f.NamespaceIDs != nil {
		ns := append([]int64{-1}, f.NamespaceIDs...) // never an empty IN list
		if f.OrCreatedBy != "" {
			q = q.Where("(namespace_id IN ? OR created_by = ?)", ns, f.OrCreatedBy)
		} else {
			q = q.Where("namespace_id IN ?", ns)
		}
	}
	if before > 0 {
		q = q.Where("id < ?", before)
	}
	var rows []jobRow
	if err := q.Order("id DESC").Limit(limit).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	out := make([]Job, len(rows))
	for i := range rows {
		j, err := rows[i].domain()
		if err != nil {
			return nil, err
		}
		out[i] = j
	}
	return out, nil
}

// ClaimJob takes a running job no node holds (never held, given back, or whose holder's
// lease passed before now) for node until until, and returns it; false when there is none.
// The take is a conditional UPDATE, so of several nodes trying at once exactly one gets a job.
func (s *Store) ClaimJob(ctx context.Context, node string, now, until time.Time) (Job, bool, error) {
	var ids []int64
	err := s.db.WithContext(ctx).Model(&jobRow{}).Where("state = ? AND (owner = '' OR lease_until < ?)", string(JobRunning), T(now)).
		Order("id").Limit(8).Pluck("id", &ids).Error
	if err != nil {
		return Job{}, false, fmt.Errorf("find a job to run: %w", err)
	}
	for _, id := range ids {
		var n int64
		err := s.retry(ctx, func() error {
			r, err := s.sql.ExecContext(ctx, "UPDATE rh_job SET owner = ?, lease_until = ? WHERE id = ? AND state = ? "+
				"AND (owner = '' OR lease_until < ?)", node, T(until), id, string(JobRunning), T(now))
			if err != nil {
				return err
			}
			n, err = r.RowsAffected()
			return err
		})
		if err != nil {
			return Job{}, false, fmt.Errorf("claim job %d for %s: %w", id, node, err)
		}
		if n == 0 {
			continue // another node was quicker
		}
		j, err := s.Job(ctx, id)
		return j, err == nil, err
	}
	return Job{}, false, nil
}

// RenewJob extends node's lease on a running job to until; ErrJobLost when the job is no
// longer the node's.
func (s *Store) RenewJob(ctx context.Context, id int64, node string, until time.Time) error {
	return s.jobUpdate(ctx, id, node, "renew the lease of", "lease_until = ?", T(until))
}

// ReleaseJob gives a running job back, so that any node (this one too) takes it up again at
// once, from its cursor. ErrJobLost when it was not the node's.
func (s *Store) ReleaseJob(ctx context.Context, id int64, node string) error {
	return s.jobUpdate(ctx, id, node, "give back", "owner = '', lease_until = ?", jobNone)
}

// FinishJob ends node's running job in state (done or failed, with the reason), and writes
// audit (when not nil), the record of its end, in the same transaction: a job ends once, and
// its end is in the audit log once. ErrJobLost when the job is not the node's.
func (s *Store) FinishJob(ctx context.Context, id int64, node string, state JobState, reason string, audit *AuditEntry) error {
	now := T(time.Now())
	err := s.retry(ctx, func() error {
		return s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			r := tx.Exec("UPDATE rh_job SET state = ?, owner = '', lease_until = ?, ended_at = ?, updated_at = ?, error = ? "+
				"WHERE id = ? AND owner = ? AND state = ?", string(state), jobNone, now, now, clip(reason, 4000), id, node,
				string(JobRunning))
			if r.Error != nil {
				return r.Error
			}
			if r.RowsAffected == 0 { // the state changes whenever the row matches
				return ErrJobLost
			}
			if audit == nil {
				return nil
			}
			row := auditRowOf(*audit)
			return tx.Create(&row).Error
		})
	})
	if err != nil {
		return fmt.Errorf("end job %d: %w", id, err)
	}
	return nil
}

// jobUpdate sets columns of a running job that node holds; ErrJobLost when it holds none such.
func (s *Store) jobUpdate(ctx context.Context, id int64, node, what, set string, args ...any) error {
	var n int64
	err := s.retry(ctx, func() error {
		r, err := s.sql.ExecContext(ctx, "UPDATE rh_job SET "+set+" WHERE id = ? AND owner = ? AND state = ?",
			append(args, id, node, string(JobRunning))...)
		if err != nil {
			return err
		}
		n, err = r.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("%s job %d: %w", what, id, err)
	}
	if n == 0 {
		// MySQL does not count a row whose values did not change: look before calling it lost.
		j, err := s.Job(ctx, id)
		if err != nil {
			return fmt.Errorf("%s job %d: %w", what, id, err)
		}
		if j.State != JobRunning || j.Owner != node {
			return fmt.Errorf("%s job %d: %w", what, id, ErrJobLost)
		}
	}
	return nil
}

// JobBatch is one batch of a job: the tasks to act on, the job's cursor before them (as the
// node last wrote it), and how long the node's lease lasts after.
type JobBatch struct {
	Job        Job
	Node       string
	IDs        []int64
	LeaseUntil time.Time
}

// ApplyJobBatch takes the job's action on the batch's tasks and advances the job past them
// (its cursor to the last id, done and failed by what happened, its lease renewed) in one
// transaction: a crash leaves both or neither, so no task is counted twice or skipped. The
// job's update is conditional on it being still running, held by the node and at the cursor
// the batch starts from; when it is not (cancelled, taken over), ErrJobLost, and the tasks
// are left as they were.
func (s *Store) ApplyJobBatch(ctx context.Context, b JobBatch) (ActionResult, error) {
	if len(b.IDs) == 0 {
		return ActionResult{}, fmt.Errorf("%w: a batch of no tasks", retry.ErrInvalid)
	}
	j := b.Job
	last := b.IDs[len(b.IDs)-1]
	res, err := s.applyThen(ctx, j.Action, b.IDs, j.At, func(tx *sql.Tx, res ActionResult) error {
		failed := int64(len(b.IDs)) - res.Changed
		r, err := tx.ExecContext(ctx, "UPDATE rh_job SET cursor_id = ?, done = done + ?, failed = failed + ?, lease_until = ?, "+
			"updated_at = ? WHERE id = ? AND owner = ? AND state = ? AND cursor_id = ?",
			last, len(b.IDs), failed, T(b.LeaseUntil), T(time.Now()), j.ID, b.Node, string(JobRunning), j.Cursor)
		if err != nil {
			return fmt.Errorf("advance job %d: %w", j.ID, err)
		}
		// The cursor moves forward with every batch, so the row always changes when it matches.
		if n, err := r.RowsAffected(); err != nil || n == 0 {
			return errors.Join(ErrJobLost, err)
		}
		return nil
	})
	if err != nil {
		return ActionResult{}, fmt.Errorf("job %d: %w", j.ID, err)
	}
	return res, nil
}

// CancelJob ends a running job as cancelled and returns it: its runner finds out before its
// next batch, whose changes it then does not make. ErrConflict when the job has ended already.
func (s *Store) CancelJob(ctx context.Context, id int64) (Job, error) {
	now := T(time.Now())
	var n int64
	err := s.retry(ctx, func() error {
		r, err := s.sql.ExecContext(ctx, "UPDATE rh_job SET state = ?, owner = '', lease_until = ?, ended_at = ?, updated_at = ? "+
			"WHERE id = ? AND state = ?", string(JobCancelled), jobNone, now, now, id, string(JobRunning))
		if err != nil {
			return err
		}
		n, err = r.RowsAffected()
		return err
	})
	if err != nil {
		return Job{}, fmt.Errorf("cancel job %d: %w", id, err)
	}
	j, err := s.Job(ctx, id)
	if err != nil {
		return j, err
	}
	if n == 0 {
		return j, fmt.Errorf("job %d is %s; only a running job can be cancelled: %w", id, j.State, ErrConflict)
	}
	return j, nil
}

// MaxTaskID is the highest task id so far (0 when there are none).
func (s *Store) MaxTaskID(ctx context.Context) (int64, error) {
	var id sql.NullInt64
	if err := s.sql.QueryRowContext(ctx, "SELECT MAX(id) FROM rh_task").Scan(&id); err != nil {
		return 0, fmt.Errorf("highest task id: %w", err)
	}
	return id.Int64, nil
}

// TaskNamespaces maps the ids of the tasks that exist among ids to their namespaces.
func (s *Store) TaskNamespaces(ctx context.Context, ids []int64) (map[int64]int64, error) {
	out := make(map[int64]int64, len(ids))
	for chunk := range slices.Chunk(ids, 1000) {
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		rows, err := s.sql.QueryContext(ctx, "SELECT t.id, g.namespace_id FROM rh_task t JOIN rh_group g ON g.id = t.group_id "+
			"WHERE t.id IN ("+placeholders(len(chunk))+")", args...)
		if err != nil {
			return nil, fmt.Errorf("namespaces of %d tasks: %w", len(ids), err)
		}
		for rows.Next() {
			var id, ns int64
			if err := rows.Scan(&id, &ns); err != nil {
				rows.Close()
				return nil, fmt.Errorf("namespaces of %d tasks: %w", len(ids), err)
			}
			out[id] = ns
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return nil, fmt.Errorf("namespaces of %d tasks: %w", len(ids), err)
		}
	}
	return out, nil
}

// JobStates lists the job states' names, for messages.
func JobStates() string {
	return strings.Join([]string{string(JobRunning), string(JobDone), string(JobCancelled), string(JobFailed)}, ", ")
}

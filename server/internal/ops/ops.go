// Package ops carries out operators' actions on tasks: trigger now, pause, resume, cancel,
// replay a dead letter, discard, set the next trigger; on a list of tasks, or on every task
// that matches a filter, as one job that works through the matches in batches and reports its
// progress. Which tasks an action changes, and how, is retry's (retry.Action.Transition).
package ops

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// MaxIDs bounds the tasks of one action by id list.
const MaxIDs = 1000

// BatchSize is how many tasks a job acts on per statement.
const BatchSize = 500

// Service runs operator actions.
type Service struct {
	store *storage.Store
	log   *slog.Logger
}

// New returns the service.
func New(store *storage.Store, log *slog.Logger) *Service { return &Service{store: store, log: log} }

// Progress is how far a job has come.
type Progress struct {
	// Seen counts the tasks acted on so far.
	Seen      int64
	Changed   int64
	Skipped   int64
	Conflicts []int64
	Done      bool
}

// Apply takes action on the listed tasks; at is the time for set_next. by names the operator
// for the log.
func (s *Service) Apply(ctx context.Context, by string, action retry.Action, ids []int64, at time.Time) (storage.ActionResult, error) {
	if len(ids) == 0 {
		return storage.ActionResult{}, fmt.Errorf("%w: no task ids", retry.ErrInvalid)
	}
	if len(ids) > MaxIDs {
		return storage.ActionResult{}, fmt.Errorf("%w: %d task ids; act on at most %d at once, or use a filter", retry.ErrInvalid, len(ids), MaxIDs)
	}
	if err := action.Check(at); err != nil {
		return storage.ActionResult{}, err
	}
	res, err := s.store.Apply(ctx, action, ids, at)
	if err != nil {
		return res, err
	}
	s.log.Info("operator action", "by", by, "action", action, "tasks", len(ids), "changed", res.Changed,
		"skipped", res.Skipped, "conflicts", len(res.Conflicts))
	return res, nil
}

// ApplyFilter takes action on every task matching f, in batches by id, calling progress after
// each batch. It stops early, with what it has done so far, when ctx ends.
func (s *Service) ApplyFilter(ctx context.Context, by string, action retry.Action, f storage.TaskFilter, at time.Time, progress func(Progress)) (Progress, error) {
	var p Progress
	if err := action.Check(at); err != nil {
		return p, err
	}
	var after int64
	for {
		if err := ctx.Err(); err != nil {
			return p, err
		}
		ids, err := s.store.TaskIDs(ctx, f, after, BatchSize)
		if err != nil {
			return p, err
		}
		if len(ids) == 0 {
			break
		}
		res, err := s.store.Apply(ctx, action, ids, at)
		if err != nil {
			return p, err
		}
		after = ids[len(ids)-1]
		p.Seen += int64(len(ids))
		p.Changed += res.Changed
		p.Skipped += res.Skipped
		p.Conflicts = append(p.Conflicts, res.Conflicts...)
		if progress != nil {
			progress(p)
		}
		if len(ids) < BatchSize {
			break
		}
	}
	p.Done = true
	if progress != nil {
		progress(p)
	}
	s.log.Info("operator bulk action", "by", by, "action", action, "tasks", p.Seen, "changed", p.Changed,
		"skipped", p.Skipped, "conflicts", len(p.Conflicts))
	return p, nil
}

package scheduler

import (
	"context"
	"log/slog"
	"time"

	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// Janitor applies retention: it deletes, in batches, ended tasks and attempt records older
// than the configured ages, and forgets client instances and server nodes long gone. Every
// deletion is logged with its count. Dead letters are kept until an operator acts on them
// unless retention.dead_letters is set.
type Janitor struct {
	store *storage.Store
	cfg   config.Retention
	// forgetAfter is how long a silent instance or node stays listed.
	forgetAfter time.Duration
	log         *slog.Logger
}

// NewJanitor returns a janitor; the cron runs Exec.
func NewJanitor(store *storage.Store, cfg config.Retention, forgetAfter time.Duration, log *slog.Logger) *Janitor {
	return &Janitor{store: store, cfg: cfg, forgetAfter: forgetAfter, log: log}
}

// Swept counts what one pass deleted.
type Swept struct {
	Ended       int64
	DeadLetters int64
	Attempts    int64
	Instances   int64
}

// Exec runs one retention pass.
func (j *Janitor) Exec(ctx context.Context) (Swept, error) {
	var sw Swept
	now := time.Now()
	var err error
	if j.cfg.Succeeded > 0 {
		sw.Ended, err = j.drain(ctx, "ended tasks", func() (int64, error) {
			return j.store.DeleteEndedTasks(ctx, []retry.State{retry.Succeeded, retry.Cancelled}, now.Add(-j.cfg.Succeeded), j.cfg.Batch)
		})
		if err != nil {
			return sw, err
		}
	}
	if j.cfg.DeadLetters > 0 {
		sw.DeadLetters, err = j.drain(ctx, "dead letters", func() (int64, error) {
			return j.store.DeleteEndedTasks(ctx, []retry.State{retry.Exhausted}, now.Add(-j.cfg.DeadLetters), j.cfg.Batch)
		})
		if err != nil {
			return sw, err
		}
	}
	if j.cfg.Attempts > 0 {
		sw.Attempts, err = j.drain(ctx, "attempt records", func() (int64, error) {
			return j.store.DeleteAttemptsBefore(ctx, now.Add(-j.cfg.Attempts), j.cfg.Batch)
		})
		if err != nil {
			return sw, err
		}
	}
	if sw.Instances, err = j.store.DeleteInstancesBefore(ctx, now.Add(-j.forgetAfter)); err != nil {
		return sw, err
	}
	if err := j.store.DeleteNodesBefore(ctx, now.Add(-j.forgetAfter)); err != nil {
		return sw, err
	}
	return sw, nil
}

// drain runs del until it deletes less than a batch, logging the total.
func (j *Janitor) drain(ctx context.Context, what string, del func() (int64, error)) (int64, error) {
	var total int64
	for ctx.Err() == nil {
		n, err := del()
		total += n
		if err != nil {
			return total, err
		}
		if n < int64(j.cfg.Batch) {
			break
		}
	}
	if total > 0 {
		j.log.Info("retention deleted "+what, "count", total)
	}
	return total, ctx.Err()
}

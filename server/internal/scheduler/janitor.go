package scheduler

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/service"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// JanitorParams configure a Janitor.
type JanitorParams struct {
	Store     *storage.Store
	Retention config.Retention
	// ForgetAfter is how long a silent instance or node stays listed.
	ForgetAfter time.Duration
	// Leader says whether this node runs retention (the elector); nil runs it on this node.
	Leader Leader
	// RunTimeout bounds one scheduled pass; zero means 10 minutes.
	RunTimeout time.Duration
	// Now reads the clock; nil means time.Now.
	Now func() time.Time
	Log *slog.Logger
}

// Janitor applies retention: on the leader, on the retention schedule, it deletes, in batches,
// ended tasks and attempt records older than the configured ages, forgets client instances
// and server nodes long gone, and rolls the per-minute summaries older than 30 days up into
// hour rows. Every deletion is logged with its count. Dead letters are kept
// until an operator acts on them unless retention.dead_letters is set. Stop cancels a pass
// under way; what it deleted stays deleted, and the next pass goes on from there.
type Janitor struct {
	store *storage.Store
	cfg   config.Retention
	// forgetAfter is how long a silent instance or node stays listed.
	forgetAfter time.Duration
	leader      Leader
	runTimeout  time.Duration
	now         func() time.Time
	log         *slog.Logger
	cron        *Cron
}

var _ service.Service = (*Janitor)(nil)

// NewJanitor returns a janitor on the retention schedule; Start runs it. It fails on a schedule
// it cannot parse.
func NewJanitor(p JanitorParams) (*Janitor, error) {
	j := &Janitor{store: p.Store, cfg: p.Retention, forgetAfter: p.ForgetAfter, leader: p.Leader,
		runTimeout: p.RunTimeout, now: p.Now, log: p.Log}
	if j.now == nil {
		j.now = time.Now
	}
	if j.runTimeout <= 0 {
		j.runTimeout = 10 * time.Minute
	}
	if p.Retention.Schedule != "" {
		c, err := NewCron(p.Log, Job{Name: "retention", Spec: p.Retention.Schedule, Run: j.run})
		if err != nil {
			return nil, err
		}
		j.cron = c
	}
	return j, nil
}

// Start runs retention on its schedule until Stop.
func (j *Janitor) Start(ctx context.Context) error {
	if j.cron == nil {
		return nil
	}
	return j.cron.Start(ctx)
}

// Stop ends the schedule, cancels a pass under way and waits for it until ctx ends.
func (j *Janitor) Stop(ctx context.Context) {
	if j.cron != nil {
		j.cron.Stop(ctx)
	}
}

// run is one scheduled pass, on the leader only.
func (j *Janitor) run(ctx context.Context) {
	if j.leader != nil && !j.leader.IsLeader() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, j.runTimeout)
	defer cancel()
	if _, err := j.Exec(ctx); err != nil && !errors.Is(err, context.Canceled) {
		j.log.Error("retention", "err", err)
	}
}

// Swept counts what one pass deleted.
type Swept struct {
	Ended       int64
	DeadLetters int64
	Attempts    int64
	Instances   int64
	// SummaryHours is how many hours of minute summaries were rolled up into hour rows.
	SummaryHours int
}

// Exec runs one retention pass.
func (j *Janitor) Exec(ctx context.Context) (Swept, error) {
	var sw Swept
	now := j.now()
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
	for ctx.Err() == nil { // minute summaries past their age become hour rows, a day's hours per call
		n, err := j.store.RollUpSummary(ctx, now.Add(-storage.SummaryMinuteAge), 24)
		sw.SummaryHours += n
		if err != nil {
			return sw, err
		}
		if n < 24 {
			break
		}
	}
	if sw.SummaryHours > 0 {
		j.log.Info("retention: rolled up minute summaries", "hours", sw.SummaryHours)
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

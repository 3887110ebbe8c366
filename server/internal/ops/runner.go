package ops

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/service"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// Defaults of RunnerParams.
const (
	// DefaultRate is how many tasks per second a node's jobs act on together
	// (console.bulk_rate): a bulk replay of a million tasks takes minutes, and leaves the
	// database to the API and the scheduler meanwhile.
	DefaultRate     = 5000
	defaultJobs     = 2
	defaultInterval = 500 * time.Millisecond
	defaultLease    = 10 * time.Second
	// jobTries is how many times in a row a batch may be refused as invalid before its job
	// ends as failed. Other errors (the database away for a while) are tried again, at most
	// maxJobBackoff apart, for as long as the job is this node's: a failover does not end a
	// million-task job half way.
	jobTries      = 5
	maxJobBackoff = 30 * time.Second
	// releaseTimeout bounds giving a job back when the runner stops.
	releaseTimeout = 5 * time.Second
)

// JobEndAction is the audit log's action for a job's end.
const JobEndAction = "jobs-end"

// RunnerParams configure a Runner.
type RunnerParams struct {
	Store  *storage.Store
	NodeID string
	// Rate bounds the tasks per second this node's jobs act on, all together (0: DefaultRate).
	Rate int
	// Jobs is how many jobs the node works on at once (0: 2).
	Jobs int
	// Interval is how often the runner looks for jobs to take up (0: 500ms); Wake makes it look
	// at once.
	Interval time.Duration
	// Lease is how long the node holds a job between renewals (0: 10s): a job whose node died
	// is taken up by another node this long after.
	Lease time.Duration
	Log   *slog.Logger
}

// Runner works through the bulk jobs (storage.Job) on this node: it takes up running jobs no
// node holds, at most Jobs at a time, and acts on their tasks in batches of at most BatchSize
// by id, at most Rate tasks per second, each batch's changes and the job's progress in one
// transaction. It renews its lease on each job while it works, drops a job cancelled or taken
// over before its next batch, and on Stop gives its jobs back, running and unowned, for any
// node (itself after a restart) to go on with from their cursors. Each job's end is written to
// the audit log, in its creator's name.
type Runner struct {
	p       RunnerParams
	limiter *rate.Limiter
	batch   int
	wake    chan struct{}

	mu      sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
	running map[int64]bool
	killed  atomic.Bool
}

var _ service.Killer = (*Runner)(nil)

// NewRunner returns a runner; Start runs it.
func NewRunner(p RunnerParams) *Runner {
	p.Rate = cmp.Or(p.Rate, DefaultRate)
	p.Jobs = cmp.Or(p.Jobs, defaultJobs)
	p.Interval = cmp.Or(p.Interval, defaultInterval)
	p.Lease = cmp.Or(p.Lease, defaultLease)
	if p.Log == nil {
		p.Log = slog.Default()
	}
	// A batch is never more than a second's worth of the rate, so a throttled job still
	// renews its lease and notices a cancellation every second.
	batch := min(BatchSize, p.Rate)
	return &Runner{p: p, batch: batch, limiter: rate.NewLimiter(rate.Limit(p.Rate), batch),
		wake: make(chan struct{}, 1), running: map[int64]bool{}}
}

// Wake makes the runner look for jobs now, as when this node has just made one.
func (r *Runner) Wake() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Start begins looking for jobs.
func (r *Runner) Start(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancel != nil {
		return service.ErrStarted
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	r.killed.Store(false)
	go r.loop(ctx, r.done)
	return nil
}

// Stop ends the work between batches (a batch under way commits or rolls back whole) and
// gives the jobs back, running and unowned.
func (r *Runner) Stop(ctx context.Context) { r.stop(ctx) }

// Kill stops the way a crash would: the batches under way are rolled back and the jobs are
// kept until their leases pass.
func (r *Runner) Kill() {
	r.killed.Store(true)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	r.stop(done)
}

func (r *Runner) stop(ctx context.Context) {
	r.mu.Lock()
	cancel, done := r.cancel, r.done
	r.cancel = nil
	r.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	select {
	case <-done:
	case <-ctx.Done():
		if !r.killed.Load() {
			r.p.Log.Warn("job runner: stop timed out; its jobs are taken up by another node when their leases pass")
		}
		<-done // the jobs' statements end with the context: it is not long
	}
}

func (r *Runner) loop(ctx context.Context, done chan struct{}) {
	var wg sync.WaitGroup
	defer close(done)
	defer wg.Wait()
	t := time.NewTicker(r.p.Interval)
	defer t.Stop()
	for {
		r.takeUp(ctx, &wg)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.wake:
		}
	}
}

// takeUp claims jobs while the node has room for them, and works on each in a goroutine.
func (r *Runner) takeUp(ctx context.Context, wg *sync.WaitGroup) {
	for {
		r.mu.Lock()
		full := len(r.running) >= r.p.Jobs
		r.mu.Unlock()
		if full || ctx.Err() != nil {
			return
		}
		now := time.Now()
		j, ok, err := r.p.Store.ClaimJob(ctx, r.p.NodeID, now, now.Add(r.p.Lease))
		if err != nil {
			if ctx.Err() == nil {
				r.p.Log.Error("job runner: look for jobs", "err", err)
			}
			return
		}
		if !ok {
			return
		}
		r.mu.Lock()
		r.running[j.ID] = true
		r.mu.Unlock()
		r.p.Log.Info("job taken up", "job", j.ID, "action", j.Action, "done", j.Done, "total", j.Total)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.run(ctx, j)
			r.mu.Lock()
			delete(r.running, j.ID)
			r.mu.Unlock()
			r.Wake() // another job may be waiting for the room
		}()
	}
}

// run works on one job until it ends, is lost, or the runner stops.
func (r *Runner) run(ctx context.Context, j storage.Job) {
	jctx, cancel := context.WithCancel(ctx)
	var lost atomic.Bool
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		r.renew(jctx, j.ID, func() { lost.Store(true); cancel() })
	}()
	err := r.work(jctx, &j)
	cancel()
	<-renewed
	log := r.p.Log.With("job", j.ID, "action", j.Action, "done", j.Done, "failed", j.Failed, "total", j.Total)
	switch {
	case err == nil:
		r.finish(ctx, &j, storage.JobDone, "")
	case errors.Is(err, storage.ErrJobLost) || lost.Load():
		log.Info("job dropped: cancelled, or taken over by another node")
	case ctx.Err() != nil:
		if r.killed.Load() {
			return
		}
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer rcancel()
		if err := r.p.Store.ReleaseJob(rctx, j.ID, r.p.NodeID); err != nil && !errors.Is(err, storage.ErrJobLost) {
			log.Warn("give back a job; it is taken up when its lease passes", "err", err)
			return
		}
		log.Info("job given back")
	default:
		log.Error("job failed", "err", err)
		r.finish(ctx, &j, storage.JobFailed, err.Error())
	}
}

// renew extends the node's lease on the job every third of the lease until ctx ends, and calls
// lost when the job is no longer the node's.
func (r *Runner) renew(ctx context.Context, id int64, lost func()) {
	t := time.NewTicker(r.p.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := r.p.Store.RenewJob(ctx, id, r.p.NodeID, time.Now().Add(r.p.Lease))
		switch {
		case errors.Is(err, storage.ErrJobLost):
			lost()
			return
		case err != nil && ctx.Err() == nil:
			r.p.Log.Warn("renew the lease of a job", "job", id, "err", err)
		}
	}
}

// work acts on the job's tasks above its cursor, a batch at a time, until there are none left
// (nil) or it cannot go on; j follows the progress written.
func (r *Runner) work(ctx context.Context, j *storage.Job) error {
	failures := 0
	for {
		ids, last, err := r.next(ctx, j)
		if err == nil && len(ids) > 0 {
			if err = r.limiter.WaitN(ctx, len(ids)); err != nil {
				return err
			}
			var res storage.ActionResult
			res, err = r.p.Store.ApplyJobBatch(ctx, storage.JobBatch{Job: *j, Node: r.p.NodeID, IDs: ids,
				LeaseUntil: time.Now().Add(r.p.Lease)})
			if err == nil {
				j.Cursor = ids[len(ids)-1]
				j.Done += int64(len(ids))
				j.Failed += int64(len(ids)) - res.Changed
			}
		}
		switch {
		case err == nil && (last || len(ids) == 0):
			return nil
		case err == nil:
			failures = 0
			continue
		case errors.Is(err, storage.ErrJobLost) || ctx.Err() != nil:
			return err
		}
		if failures++; failures >= jobTries && errors.Is(err, retry.ErrInvalid) {
			return fmt.Errorf("%d tries: %w", failures, err)
		}
		r.p.Log.Warn("job batch failed; trying again", "job", j.ID, "try", failures, "err", err)
		t := time.NewTimer(min(time.Duration(failures)*time.Second, maxJobBackoff))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// next returns the ids of the job's next batch, above its cursor, and whether it is the last.
func (r *Runner) next(ctx context.Context, j *storage.Job) ([]int64, bool, error) {
	if f := j.Request.Filter; f != nil {
		ids, err := r.p.Store.TaskIDs(ctx, *f, j.Cursor, r.batch)
		if err != nil {
			return nil, false, err
		}
		last := len(ids) < r.batch
		// Tasks made after the job are not its own, though they match.
		if i := slices.IndexFunc(ids, func(id int64) bool { return id > j.MaxTaskID }); i >= 0 {
			ids, last = ids[:i], true
		}
		return ids, last, nil
	}
	ids := j.Request.IDs
	i, _ := slices.BinarySearch(ids, j.Cursor+1)
	end := min(i+r.batch, len(ids))
	return ids[i:end], end == len(ids), nil
}

// finish ends the job as done or failed, with its end in the audit log in its creator's name.
func (r *Runner) finish(ctx context.Context, j *storage.Job, state storage.JobState, reason string) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	e := storage.AuditEntry{At: time.Now(), Actor: j.CreatedBy, ActorKind: "user", Action: JobEndAction,
		Target: fmt.Sprintf("job %d", j.ID), NamespaceID: j.NamespaceID, Outcome: "ok", Status: 200,
		Detail: fmt.Sprintf("%s %s on node %s: %d of %d tasks worked through, %d not acted on", j.Action, state,
			r.p.NodeID, j.Done, j.Total, j.Failed)}
	if strings.HasPrefix(j.CreatedBy, "token:") {
		e.ActorKind = "token"
	}
	if state == storage.JobFailed {
		e.Outcome, e.Status, e.Detail = "failed", 500, e.Detail+": "+reason
	}
	if err := r.p.Store.FinishJob(fctx, j.ID, r.p.NodeID, state, reason, &e); err != nil {
		if errors.Is(err, storage.ErrJobLost) {
			r.p.Log.Info("job cancelled as it ended", "job", j.ID, "done", j.Done, "total", j.Total)
			return
		}
		r.p.Log.Warn("end a job; another node ends it when the lease passes", "job", j.ID, "state", state, "err", err)
		return
	}
	r.p.Log.Info("job ended", "job", j.ID, "action", j.Action, "state", state, "done", j.Done, "failed", j.Failed,
		"total", j.Total, "by", j.CreatedBy)
}

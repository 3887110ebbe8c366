package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/retryhub/retryhub/server/internal/catalog"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/service"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// SweeperParams configure a Sweeper.
type SweeperParams struct {
	Store   *storage.Store
	Catalog *catalog.Catalog
	// Held returns the buckets this node holds (the leaser's Held).
	Held func() []int
	// Leader says whether this node brings held tasks back (the elector).
	Leader Leader
	// Interval is how often the sweeper passes.
	Interval time.Duration
	// InstanceTTL: an instance whose heartbeat is older does not count as live.
	InstanceTTL time.Duration
	// Now reads the clock; nil means time.Now.
	Now func() time.Time
	// Batch is how many stuck tasks one statement reads; zero means sweepBatch.
	Batch int
	Log   *slog.Logger
}

// Sweeper takes back tasks whose claim outlived its deadline: the node that claimed them, or
// the client it called, stopped answering. Each counts as a timed-out attempt and is settled
// like any other, on the condition that the task is still running under the same claim token,
// so a task that finished meanwhile is never overwritten. A task it cannot settle (its scene
// cannot be read) is logged, skipped and counted, and the rest of the batch proceeds. On the
// leader it also brings held tasks (of every bucket) back to waiting once their scene, group
// and namespace are enabled and their group has a live instance.
type Sweeper struct {
	p       SweeperParams
	log     *slog.Logger
	loop    loop
	skipped atomic.Int64

	mu sync.Mutex
	// bad holds the tasks already logged as skipped, so each is logged once.
	bad map[int64]struct{}
}

var _ service.Service = (*Sweeper)(nil)

// sweepBatch is how many stuck tasks one statement reads and one settlement writes, and
// sweepPages how many such pages a pass reads per kind at most.
const (
	sweepBatch = 500
	sweepPages = 20
)

// unholdBatch and unholdBatches bound the held tasks brought back per statement and per pass.
const (
	unholdBatch   = 1000
	unholdBatches = 50
)

// NewSweeper returns a sweeper; Start runs it.
func NewSweeper(p SweeperParams) *Sweeper {
	if p.Now == nil {
		p.Now = time.Now
	}
	if p.Batch <= 0 {
		p.Batch = sweepBatch
	}
	s := &Sweeper{p: p, log: p.Log, bad: map[int64]struct{}{}}
	s.loop = loop{interval: p.Interval, exec: func(ctx context.Context) {
		s.Exec(ctx)
		s.Unhold(ctx)
	}, log: p.Log}
	return s
}

// Start sweeps every interval until Stop, the first time at once.
func (s *Sweeper) Start(context.Context) error { return s.loop.start() }

// Stop ends the sweeper, cancelling a pass under way (what it settled is written; what it did
// not, the next sweep on any node takes back).
func (s *Sweeper) Stop(ctx context.Context) { s.loop.stop(ctx) }

// maxBadRows bounds the tasks the sweeper remembers having logged as skipped.
const maxBadRows = 10000

// skip counts a stuck task it cannot settle, logging it the first time.
func (s *Sweeper) skip(c *retry.Claim, kind retry.AttemptKind, err error) {
	s.skipped.Add(1)
	s.mu.Lock()
	_, seen := s.bad[c.TaskID]
	if !seen {
		if len(s.bad) >= maxBadRows {
			clear(s.bad)
		}
		s.bad[c.TaskID] = struct{}{}
	}
	s.mu.Unlock()
	if seen {
		s.log.Debug("sweep: skipping a stuck task again", "task", c.TaskID, "scene", c.SceneID, "kind", kind, "err", err)
		return
	}
	s.log.Error("sweep: cannot read the scene of a stuck task; skipping it (it stays running until its scene can be read)",
		"task", c.TaskID, "scene", c.SceneID, "kind", kind, "err", err)
}

// Skipped is how many times a stuck task was skipped because it could not be settled (its
// scene could not be read); each skip is logged with the task.
func (s *Sweeper) Skipped() int64 { return s.skipped.Load() }

// Exec runs one pass and returns how many tasks it took back.
func (s *Sweeper) Exec(ctx context.Context) int {
	total := 0
	for _, kind := range []retry.AttemptKind{retry.KindReplay, retry.KindCallback} {
		n, err := s.sweep(ctx, kind)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("sweep stuck tasks", "kind", kind, "err", err)
		}
		total += n
	}
	return total
}

// Unhold runs one pass bringing held tasks back, when this node is the leader (so one node at
// a time does it), and returns how many it brought back.
func (s *Sweeper) Unhold(ctx context.Context) int64 {
	if s.p.Leader == nil || !s.p.Leader.IsLeader() {
		return 0
	}
	var total int64
	for range unholdBatches {
		n, more, err := s.p.Store.Unhold(ctx, s.p.Now().Add(-s.p.InstanceTTL), unholdBatch)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("bring back held tasks", "err", err)
			}
			break
		}
		total += n
		if !more {
			break
		}
	}
	if total > 0 {
		s.log.Info("brought back held tasks: their scene, group and namespace are enabled and the group has a live instance",
			"tasks", total)
	}
	return total
}

func (s *Sweeper) sweep(ctx context.Context, kind retry.AttemptKind) (int, error) {
	now := s.p.Now()
	total := 0
	var after int64
	// Page by id: a page of tasks that all had to be skipped does not stop the pass from
	// reaching the tasks behind it.
	for range sweepPages {
		stuck, err := s.p.Store.StuckAfter(ctx, kind, s.p.Held(), now, after, s.p.Batch)
		if err != nil || len(stuck) == 0 {
			return total, err
		}
		after = stuck[len(stuck)-1].TaskID
		n, err := s.takeBack(ctx, kind, stuck, now)
		total += n
		if err != nil || len(stuck) < s.p.Batch {
			return total, err
		}
	}
	return total, nil
}

// takeBack settles stuck claims as timed-out attempts, skipping (and counting) those whose
// scene cannot be read.
func (s *Sweeper) takeBack(ctx context.Context, kind retry.AttemptKind, stuck []retry.Claim, now time.Time) (int, error) {
	batch := make([]retry.Settlement, 0, len(stuck))
	for i := range stuck {
		c := &stuck[i]
		sc, err := s.p.Catalog.Scene(ctx, c.SceneID)
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			if !errors.Is(err, storage.ErrNotFound) {
				// The database, not the row, may be what fails: then no row can be settled
				// either, and the pass ends without blaming any.
				if perr := s.p.Store.Ping(ctx); perr != nil {
					return 0, fmt.Errorf("read scene %d: %w", c.SceneID, err)
				}
			}
			// One task that cannot be settled must not hold back the others: skip it (it stays
			// running, and the next sweep tries again) and count it.
			s.skip(c, kind, err)
			continue
		}
		msg := fmt.Sprintf("no result by the claim's deadline %s: node %s or its client instance stopped answering",
			c.RunDeadline.Format(time.RFC3339), c.ClaimedBy)
		res := retry.Result{Outcome: retry.OutcomeTimedOut, Error: msg}
		att := &retry.Attempt{TaskID: c.TaskID, Kind: kind, Number: c.Number(), NodeID: c.ClaimedBy,
			StartedAt: c.DueAt, Duration: max(c.RunDeadline.Sub(c.DueAt), 0), Outcome: retry.OutcomeTimedOut, Error: msg}
		var st retry.Settlement
		if kind == retry.KindCallback {
			st = retry.SettleCallback(c, &sc.Scene, sc.Policies, res, att, now)
		} else {
			st = retry.SettleReplay(c, &sc.Scene, sc.Policies, res, att, now)
		}
		// Only while the claim is still past its deadline: a dispatcher that started it late
		// may have moved the deadline since it was read.
		st.Lapsed = &now
		batch = append(batch, st)
	}
	if len(batch) == 0 {
		return 0, nil
	}
	n, err := s.p.Store.Settle(ctx, batch)
	if err != nil {
		return 0, err
	}
	if n > 0 {
		s.log.Info("took back stuck tasks", "kind", kind, "tasks", n)
	}
	return int(n), nil
}

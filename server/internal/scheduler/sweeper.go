package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/retryhub/retryhub/server/internal/catalog"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// Sweeper takes back tasks whose claim outlived its deadline: the node that claimed them, or
// the client it called, stopped answering. Each counts as a timed-out attempt and is settled
// like any other, on the condition that the task is still running under the same claim token,
// so a task that finished meanwhile is never overwritten. The sweeper of the node holding
// bucket 0 also brings held tasks (of every bucket) back to waiting once their scene, group and
// namespace are enabled and their group has a live instance.
type Sweeper struct {
	store       *storage.Store
	catalog     *catalog.Catalog
	held        func() []int
	nodeID      string
	instanceTTL time.Duration
	log         *slog.Logger
	loop        loop
}

// sweepBatch bounds the tasks taken back per pass and kind.
const sweepBatch = 500

// unholdBatch and unholdBatches bound the held tasks brought back per statement and per pass.
const (
	unholdBatch   = 1000
	unholdBatches = 50
)

// NewSweeper returns a sweeper of the buckets held returns, passing every interval. An
// instance whose heartbeat is older than instanceTTL does not count as live.
func NewSweeper(store *storage.Store, cat *catalog.Catalog, held func() []int, nodeID string, interval, instanceTTL time.Duration, log *slog.Logger) *Sweeper {
	s := &Sweeper{store: store, catalog: cat, held: held, nodeID: nodeID, instanceTTL: instanceTTL, log: log}
	s.loop = loop{name: "sweeper", interval: interval, exec: func(ctx context.Context) {
		s.Exec(ctx)
		s.Unhold(ctx)
	}, log: log}
	return s
}

// Start sweeps until Stop.
func (s *Sweeper) Start() { s.loop.start() }

// Stop ends the sweeper.
func (s *Sweeper) Stop() { s.loop.stop() }

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

// Unhold runs one pass bringing held tasks back, when this node holds bucket 0 (so one node at
// a time does it), and returns how many it brought back.
func (s *Sweeper) Unhold(ctx context.Context) int64 {
	if !slices.Contains(s.held(), 0) {
		return 0
	}
	var total int64
	for range unholdBatches {
		n, more, err := s.store.Unhold(ctx, time.Now().Add(-s.instanceTTL), unholdBatch)
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
	now := time.Now()
	stuck, err := s.store.Stuck(ctx, kind, s.held(), now, sweepBatch)
	if err != nil || len(stuck) == 0 {
		return 0, err
	}
	batch := make([]retry.Settlement, 0, len(stuck))
	for i := range stuck {
		c := &stuck[i]
		sc, err := s.catalog.Scene(ctx, c.SceneID)
		if err != nil {
			return 0, fmt.Errorf("scene %d of task %d: %w", c.SceneID, c.TaskID, err)
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
	n, err := s.store.Settle(ctx, batch)
	if err != nil {
		return 0, err
	}
	if n > 0 {
		s.log.Info("took back stuck tasks", "kind", kind, "tasks", n)
	}
	return int(n), nil
}

package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/service"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// Sink takes claimed tasks: dispatch.
type Sink interface {
	// Room is how many more claims it can take.
	Room() int
	// Capacity is how many claims it holds when full.
	Capacity() int
	// Submit hands it claims.
	Submit(claims []retry.Claim)
}

// ClaimerParams configure a Claimer.
type ClaimerParams struct {
	Store *storage.Store
	// Held returns the buckets this node holds (the leaser's Held).
	Held func() []int
	Sink Sink
	// Waker wakes the claimer for a round; nil means a waker of its own (Wake still works).
	Waker *Waker
	// Tick is the cron spec of the rounds; empty means rounds only on Wake.
	Tick   string
	Log    *slog.Logger
	NodeID string
	// Batch bounds the claims of one statement.
	Batch int
	// Lookahead is how far ahead of its start a round claims at least; dispatch fires each
	// claim at its time. With a Tick, a round also claims what falls due up to just past the
	// next tick (see Overlap), whatever the Lookahead.
	Lookahead time.Duration
	// Overlap is how far past the next tick a round claims, at least: a task due just after a
	// tick is then held already when that tick's own claim is still under way, and fires on
	// time. A round reaches past the next tick by twice the time the last round took when that
	// is more, but never by more than one tick interval, so the claims held stay within about
	// two ticks. Zero means 250ms.
	Overlap time.Duration
	// ClaimTimeout is how long a claim holds beyond its due time before the sweeper may take
	// the task back.
	ClaimTimeout time.Duration
	// MaxPasses bounds the statements of one round per kind; zero means 8.
	MaxPasses int
}

// claimStatementTimeout bounds one claim statement, and so how long Stop waits for one.
const claimStatementTimeout = 10 * time.Second

// Claimer claims the due tasks and callbacks of this node's buckets and hands them to
// dispatch. A round runs on every cron tick and whenever dispatch has room again after being
// full, and claims what falls due until just past the next tick (the overlap), the earliest
// first in each bucket, spreading what dispatch has room for evenly over the buckets.
type Claimer struct {
	p     ClaimerParams
	store *storage.Store
	held  func() []int
	sink  Sink
	log   *slog.Logger
	wake  *Waker
	tick  *Cron

	// sched is the Tick's schedule, nil without a Tick.
	sched cron.Schedule
	// lastRound is how long the last round took, in nanoseconds.
	lastRound atomic.Int64

	cancel context.CancelFunc
	done   chan struct{}
	// offset is where each kind's rotation over the buckets stands.
	offset map[retry.AttemptKind]int
	// rounds counts rounds, to alternate which kind goes first.
	rounds int
	// ended counts the rounds that have ended, for Rounds.
	ended atomic.Int64
}

var _ service.Service = (*Claimer)(nil)

// NewClaimer returns a claimer; Start runs it. It fails on a Tick it cannot parse.
func NewClaimer(p ClaimerParams) (*Claimer, error) {
	if p.MaxPasses <= 0 {
		p.MaxPasses = 8
	}
	if p.Waker == nil {
		p.Waker = NewWaker()
	}
	if p.Overlap <= 0 {
		p.Overlap = defaultOverlap
	}
	c := &Claimer{p: p, store: p.Store, held: p.Held, sink: p.Sink, log: p.Log, wake: p.Waker,
		offset: map[retry.AttemptKind]int{}}
	if p.Tick != "" {
		tick, err := NewCron(p.Log, Job{Name: "claim tick", Spec: p.Tick, Run: func(context.Context) { c.Wake() }})
		if err != nil {
			return nil, err
		}
		c.tick = tick
		if c.sched, err = specParser.Parse(p.Tick); err != nil {
			return nil, fmt.Errorf("schedule claim tick %q: %w", p.Tick, err)
		}
	}
	return c, nil
}

// defaultOverlap is the Overlap when none is set.
const defaultOverlap = 250 * time.Millisecond

// reach is how far a pass starting at now claims: the Lookahead, and with a tick, past the
// next tick by the overlap. Without the overlap, a task due in the first moments after a tick
// would wait for that tick's claim statement (and, when the lookahead is exactly one tick,
// always did): it is the tail of the due-to-dispatch lag.
func (c *Claimer) reach(now time.Time) time.Time {
	r := now.Add(c.p.Lookahead)
	if c.sched == nil {
		return r
	}
	next := c.sched.Next(now)
	margin := max(c.p.Overlap, 2*time.Duration(c.lastRound.Load()))
	if period := c.sched.Next(next).Sub(next); period > 0 && margin > period {
		margin = period
	}
	if t := next.Add(margin); t.After(r) {
		r = t
	}
	return r
}

// Wake asks for a round soon; rounds never overlap, and wakes during a round merge into one.
func (c *Claimer) Wake() { c.wake.Wake() }

// Start runs rounds until Stop: on every tick and every Wake. A round that leaves due work
// behind for lack of room (a backlog) is followed by another as soon as dispatch has room
// again, without waiting for the next tick.
func (c *Claimer) Start(ctx context.Context) error {
	if c.done != nil {
		return service.ErrStarted
	}
	lctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	go func() {
		defer close(c.done)
		for {
			select {
			case <-lctx.Done():
				return
			case <-c.wake.c:
			}
			for {
				if _, more := c.round(lctx); !more || !c.waitRoom(lctx) {
					break
				}
			}
		}
	}()
	if c.tick != nil {
		return c.tick.Start(ctx)
	}
	return nil
}

// roomPoll is how often a claimer behind a backlog looks for room in dispatch.
const roomPoll = 5 * time.Millisecond

// waitRoom waits until dispatch has room for a quarter of a batch (or of what dispatch holds,
// when that is less), and reports false when ctx ends first.
func (c *Claimer) waitRoom(ctx context.Context) bool {
	want := max(min(c.p.Batch, c.sink.Capacity())/4, 1)
	t := time.NewTicker(roomPoll)
	defer t.Stop()
	for c.sink.Room() < want {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return ctx.Err() == nil
}

// Stop ends the ticks and the claimer, waiting within ctx for the claim statement under way
// (bounded by its own timeout); the round ends after it. What it claimed has been handed to
// dispatch, which gives back what it does not run; a claim that lands after ctx ended is left
// to the sweeper.
func (c *Claimer) Stop(ctx context.Context) {
	if c.tick != nil {
		c.tick.Stop(ctx)
	}
	if c.cancel != nil {
		c.cancel()
		c.cancel = nil
		select {
		case <-c.done:
		case <-ctx.Done():
			c.log.Warn("shutdown: a claim statement still under way at the deadline; what it claims returns through the sweeper")
		}
	}
}

// Exec runs one round: replays, then callbacks, or the other way round every other round, so
// that a backlog of either kind that fills dispatch does not keep the other waiting. It returns
// how many it claimed.
func (c *Claimer) Exec(ctx context.Context) int {
	n, _ := c.round(ctx)
	return n
}

// Rounds is how many rounds have ended: a test that checks that nothing is claimed waits for
// rounds to pass instead of for time to.
func (c *Claimer) Rounds() int64 { return c.ended.Load() }

// round is Exec, also saying whether due work was left behind for lack of room or passes.
func (c *Claimer) round(ctx context.Context) (int, bool) {
	defer c.ended.Add(1)
	start := time.Now()
	defer func() { c.lastRound.Store(int64(time.Since(start))) }()
	first, second := retry.KindReplay, retry.KindCallback
	if c.rounds++; c.rounds%2 == 0 {
		first, second = second, first
	}
	n1, more1 := c.claim(ctx, first)
	n2, more2 := c.claim(ctx, second)
	return n1 + n2, more1 || more2
}

// claim runs the passes of one kind; more says buckets that filled their share were left
// unasked when the room or the passes ran out.
func (c *Claimer) claim(ctx context.Context, kind retry.AttemptKind) (int, bool) {
	buckets := c.held()
	if len(buckets) == 0 {
		return 0, false
	}
	// Rotate, so that when there is room for fewer claims than buckets, each bucket gets its
	// turn over the rounds. Each kind turns on its own: one shared offset stepped twice a round
	// skipped every other bucket when the held count was even.
	off := (c.offset[kind] + 1) % len(buckets)
	c.offset[kind] = off
	active := append(append([]int{}, buckets[off:]...), buckets[:off]...)
	total := 0
	for pass := 0; len(active) > 0 && ctx.Err() == nil; pass++ {
		room := min(c.sink.Room(), c.p.Batch)
		if room <= 0 || pass == c.p.MaxPasses {
			return total, true
		}
		if len(active) > room {
			active = active[:room]
		}
		// Round down: every bucket may fill its share, and the shares must fit the room. What
		// the rounding leaves is taken by the next pass.
		per := room / len(active)
		now := time.Now()
		dueBy := c.reach(now)
		// A claim stamps the rows, then reads them back: cancelled between the two, or after
		// the database took the stamp, it would leave tasks running under a claim no one
		// holds, until the sweeper took them back charging each an attempt. So a stop lets the
		// statement under way finish (the round ends after it); its own timeout bounds it.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), claimStatementTimeout)
		claims, err := c.store.Claim(sctx, storage.ClaimParams{Kind: kind, Buckets: active,
			DueBy: dueBy, PerBucket: per, Token: rand.Int64N(1<<62) + 1, Node: c.p.NodeID,
			Deadline: dueBy.Add(c.p.ClaimTimeout)})
		cancel()
		if err != nil {
			c.log.Warn("claim due work", "kind", kind, "buckets", len(active), "err", err)
			return total, false
		}
		if len(claims) == 0 {
			return total, false
		}
		c.sink.Submit(claims)
		total += len(claims)
		// Buckets that filled their share may have more: the next pass asks only them.
		count := map[int]int{}
		for i := range claims {
			count[claims[i].Bucket]++
		}
		var more []int
		for _, b := range active {
			if count[b] >= per {
				more = append(more, b)
			}
		}
		active = more
	}
	return total, false
}

package dispatch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/catalog"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/service"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// Params configure a Dispatcher.
type Params struct {
	NodeID   string
	Store    *storage.Store
	Catalog  *catalog.Catalog
	Registry *Registry
	Settler  *Settler
	Log      *slog.Logger
	// Concurrency bounds the calls in flight.
	Concurrency int
	// QueueSize bounds the claims held in memory (waiting for their time, queued, in flight).
	QueueSize int
	// MaxQueuedBytes bounds the arguments' bytes of the claims held in memory; zero means no
	// bound. A claim larger than the bound alone is taken when nothing else is held.
	MaxQueuedBytes  int64
	DefaultTimeout  time.Duration
	NoInstanceDelay time.Duration
	BusyDelay       time.Duration
	PausedDelay     time.Duration
	// ClaimTimeout is added to a claim's deadline when a long attempt needs it moved.
	ClaimTimeout time.Duration
	// StopReserve is how long before the end of Stop's context the calls in flight are
	// cancelled, leaving that long for their results to be handed to the settler.
	StopReserve time.Duration
	// Nodes returns how many nodes share the cluster, to split scene rate limits; nil means 1.
	Nodes func() int
	// OnRoom, when set, is called when room frees up after the queue was more than half full,
	// so the claimer can fetch more without waiting for its next tick.
	OnRoom func()
	// Client makes the calls; nil means a client tuned for many calls to few hosts.
	Client *http.Client
	// MaxBatch bounds the tasks of one batched call (protocol.ExecuteBatchRequest), made to
	// groups whose every instance takes batches; below 2, single calls only.
	MaxBatch int
	// MaxBatchBytes bounds the arguments' bytes of one batched call; zero means 1 MiB.
	MaxBatchBytes int64
	// Observer, when set, is told of every attempt (metrics).
	Observer Observer
}

// Grace is how much longer than an attempt's timeout the dispatcher waits for the answer.
const Grace = 2 * time.Second

// Dispatcher runs claims: each at its due time, on an instance the registry picks, and hands
// the outcome to the settler. It holds at most QueueSize claims, whose arguments add up to at
// most MaxQueuedBytes, and runs at most Concurrency calls at once. Claims come without their
// arguments; a loader reads them in batches for the claims about to be sent.
type Dispatcher struct {
	p        Params
	store    *storage.Store
	catalog  *catalog.Catalog
	registry *Registry
	settler  *Settler
	client   *http.Client
	log      *slog.Logger

	// ready holds the claims due (their arguments not read yet), send those about to go out:
	// one claim, or several of a group going out in one batched call.
	ready   chan *retry.Claim
	send    chan []*retry.Claim
	pending atomic.Int64
	// queuedBytes is the arguments' size of the claims held.
	queuedBytes atomic.Int64
	// avgSize is a running average of the claims' argument sizes, to turn free bytes into room.
	avgSize  atomic.Int64
	stopping atomic.Bool
	started  atomic.Bool
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	// idle is signalled when the last claim held is done while stopping.
	idle chan struct{}
	// stopCh is closed as Stop begins.
	stopCh chan struct{}

	mu       sync.Mutex
	timers   map[*retry.Claim]*time.Timer
	limiters map[int64]*sceneLimiter
	// granted holds the claims waiting for a rate-limit token they have already reserved: when
	// their timer fires they run without reserving another.
	granted map[*retry.Claim]bool
	// waiting holds the claims not started yet (on a timer or in the queue). The keeper extends
	// their deadlines, so that time spent waiting for a worker never lets a claim lapse into a
	// sweep that would charge an attempt for a call never made. A claim's RunDeadline is only
	// written while it is here, and only read after it left, both under mu.
	waiting map[*retry.Claim]struct{}
}

var _ service.Killer = (*Dispatcher)(nil)

type sceneLimiter struct {
	limit   int
	nodes   int
	limiter *rate.Limiter
}

// NewDispatcher returns a dispatcher; Start runs it.
func NewDispatcher(p Params) *Dispatcher {
	p.Concurrency = max(p.Concurrency, 1)
	p.QueueSize = max(p.QueueSize, 1)
	if p.MaxBatchBytes <= 0 {
		p.MaxBatchBytes = 1 << 20
	}
	p.Observer = observerOr(p.Observer)
	client := p.Client
	if client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns = p.Concurrency * 2
		tr.MaxIdleConnsPerHost = p.Concurrency
		tr.IdleConnTimeout = 90 * time.Second
		client = &http.Client{Transport: tr}
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{p: p, store: p.Store, catalog: p.Catalog, registry: p.Registry, settler: p.Settler, client: client,
		log: p.Log, ctx: ctx, cancel: cancel,
		ready: make(chan *retry.Claim, p.QueueSize*2), send: make(chan []*retry.Claim, p.Concurrency),
		idle: make(chan struct{}, 1), stopCh: make(chan struct{}),
		timers: map[*retry.Claim]*time.Timer{}, limiters: map[int64]*sceneLimiter{}, granted: map[*retry.Claim]bool{},
		waiting: map[*retry.Claim]struct{}{}}
	d.avgSize.Store(1 << 10)
	return d
}

// Start runs the loader, the workers and the keeper.
func (d *Dispatcher) Start(context.Context) error {
	if !d.started.CompareAndSwap(false, true) {
		return service.ErrStarted
	}
	d.wg.Add(d.p.Concurrency + 2)
	for range d.p.Concurrency {
		go d.work()
	}
	go d.load()
	go d.keep()
	return nil
}

// keepEvery is how often the keeper looks at the claims waiting in memory.
func (d *Dispatcher) keepEvery() time.Duration { return max(d.p.ClaimTimeout/4, 50*time.Millisecond) }

// keep extends, every keepEvery, the deadlines of waiting claims that would lapse within half a
// claim timeout, one statement per claim batch (claims of a batch share a token).
func (d *Dispatcher) keep() {
	defer d.wg.Done()
	t := time.NewTicker(d.keepEvery())
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		if d.stopping.Load() {
			continue
		}
		now := time.Now()
		soon := now.Add(d.p.ClaimTimeout / 2)
		type group struct {
			kind  retry.AttemptKind
			token int64
		}
		due := map[group][]*retry.Claim{}
		d.mu.Lock()
		for c := range d.waiting {
			if c.RunDeadline.Before(soon) {
				g := group{c.Kind, c.Token}
				due[g] = append(due[g], c)
			}
		}
		d.mu.Unlock()
		deadline := now.Add(d.p.ClaimTimeout)
		for g, claims := range due {
			ids := make([]int64, len(claims))
			for i, c := range claims {
				ids[i] = c.TaskID
			}
			if _, err := d.store.ExtendClaims(d.ctx, g.kind, g.token, ids, deadline); err != nil {
				if d.ctx.Err() == nil {
					d.log.Warn("dispatch: extend waiting claims", "claims", len(ids), "err", err)
				}
				continue
			}
			d.mu.Lock()
			for _, c := range claims {
				if _, still := d.waiting[c]; still && c.RunDeadline.Before(deadline) {
					c.RunDeadline = retry.Truncate(deadline)
				}
			}
			d.mu.Unlock()
		}
	}
}

// started takes a claim out of the waiting set as a worker starts on it (or gives it back),
// after which its RunDeadline is the worker's alone.
func (d *Dispatcher) startedOn(c *retry.Claim) {
	d.mu.Lock()
	delete(d.waiting, c)
	d.mu.Unlock()
}

// Room is how many more claims the dispatcher can take: what the queue size leaves, and, under
// a byte bound, what the free bytes hold at the average size of the claims seen.
func (d *Dispatcher) Room() int {
	if d.stopping.Load() {
		return 0
	}
	room := max(d.p.QueueSize-int(d.pending.Load()), 0)
	if d.p.MaxQueuedBytes > 0 {
		free := d.p.MaxQueuedBytes - d.queuedBytes.Load()
		room = min(room, int(max(free, 0)/max(d.avgSize.Load(), 1)))
	}
	return room
}

// Capacity is how many claims the dispatcher holds when full: the queue size, or under a byte
// bound what the bound holds at the average size of the claims seen.
func (d *Dispatcher) Capacity() int {
	n := d.p.QueueSize
	if d.p.MaxQueuedBytes > 0 {
		n = min(n, int(d.p.MaxQueuedBytes/max(d.avgSize.Load(), 1)))
	}
	return max(n, 1)
}

// Pending is how many claims the dispatcher holds.
func (d *Dispatcher) Pending() int { return int(d.pending.Load()) }

// QueuedBytes is the arguments' size of the claims the dispatcher holds.
func (d *Dispatcher) QueuedBytes() int64 { return d.queuedBytes.Load() }

// Submit takes claims: each runs at its due time, or at once when that has passed. Claims
// that would take the arguments held past MaxQueuedBytes are given back at once, due as they
// were.
func (d *Dispatcher) Submit(claims []retry.Claim) {
	now := time.Now()
	var taken []*retry.Claim
	for i := range claims {
		c := &claims[i]
		d.avgSize.Store((d.avgSize.Load()*7 + int64(max(c.ArgsSize, 1))) / 8)
		if !d.take(c) {
			d.add(retry.Release(c, c.DueAt))
			continue
		}
		taken = append(taken, c)
	}
	d.mu.Lock()
	for _, c := range taken {
		d.waiting[c] = struct{}{}
	}
	d.mu.Unlock()
	for _, c := range taken {
		if wait := c.DueAt.Sub(now); wait > 0 {
			d.after(c, wait)
		} else {
			d.ready <- c
		}
	}
}

// take counts a claim as held, unless its arguments would take the bytes held past the bound.
func (d *Dispatcher) take(c *retry.Claim) bool {
	size := int64(c.ArgsSize)
	if d.p.MaxQueuedBytes > 0 {
		for {
			cur := d.queuedBytes.Load()
			if cur > 0 && cur+size > d.p.MaxQueuedBytes {
				return false
			}
			if d.queuedBytes.CompareAndSwap(cur, cur+size) {
				break
			}
		}
	} else {
		d.queuedBytes.Add(size)
	}
	d.pending.Add(1)
	return true
}

func (d *Dispatcher) after(c *retry.Claim, wait time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.timers[c] = time.AfterFunc(wait, func() {
		d.mu.Lock()
		_, armed := d.timers[c]
		delete(d.timers, c)
		d.mu.Unlock()
		if armed {
			d.ready <- c
		}
	})
}

// done counts a claim as no longer held.
func (d *Dispatcher) done(c *retry.Claim) {
	d.queuedBytes.Add(-int64(c.ArgsSize))
	n := d.pending.Add(-1)
	if d.p.OnRoom != nil && n == int64(d.p.QueueSize/2) {
		d.p.OnRoom()
	}
	if n == 0 && d.stopping.Load() {
		select {
		case d.idle <- struct{}{}:
		default:
		}
	}
}

// add hands a settlement to the settler, waiting while its queue is full until the dispatcher
// is stopped for good; one it could not hand over is counted by the settler.
func (d *Dispatcher) add(st retry.Settlement) { d.settler.AddContext(d.ctx, st) }

// loadBatch bounds the claims whose arguments one read fetches.
func (d *Dispatcher) loadBatch() int { return max(d.p.Concurrency, 16) }

// load takes the claims that are due, reads their arguments in batches (one statement for the
// claims due at once) and hands them to the workers. It reads ahead at most the workers' queue.
// Once the dispatcher stops, it gives back what is queued for the workers and what falls due.
func (d *Dispatcher) load() {
	defer d.wg.Done()
	batch := make([]*retry.Claim, 0, d.loadBatch())
	stop := d.stopCh
	for {
		batch = batch[:0]
		select {
		case c := <-d.ready:
			batch = append(batch, c)
		case <-stop:
			d.giveBackQueued()
			stop = nil
			continue
		case <-d.ctx.Done():
			return
		}
	more:
		for len(batch) < cap(batch) {
			select {
			case c := <-d.ready:
				batch = append(batch, c)
			default:
				break more
			}
		}
		if stop == nil {
			for _, c := range batch {
				d.giveBack(c)
			}
			continue
		}
		jobs := d.jobs(d.loadArgs(batch))
		for i, job := range jobs {
			select {
			case d.send <- job:
			case <-stop:
				for _, job := range jobs[i:] {
					for _, c := range job {
						d.giveBack(c)
					}
				}
				d.giveBackQueued()
				stop = nil
			case <-d.ctx.Done():
				return
			}
			if stop == nil {
				break
			}
		}
	}
}

// jobs splits the claims loaded together into what the workers send: the claims of a group
// whose every instance takes batched calls go together, up to the batch size and MaxBatchBytes
// of arguments, in the order they came; every other claim goes alone. Only claims already due
// are grouped: none waits for others to fill a batch.
func (d *Dispatcher) jobs(batch []*retry.Claim) [][]*retry.Claim {
	jobs := make([][]*retry.Claim, 0, len(batch))
	if d.p.MaxBatch < 2 {
		for _, c := range batch {
			jobs = append(jobs, []*retry.Claim{c})
		}
		return jobs
	}
	type open struct {
		job   int // index in jobs
		size  int // the batch size of the group
		bytes int64
	}
	groups := map[int64]*open{}
	for _, c := range batch {
		o := groups[c.GroupID]
		if o == nil {
			o = &open{job: -1, size: min(d.registry.BatchSize(c.GroupID), d.p.MaxBatch)}
			groups[c.GroupID] = o
		}
		size := int64(len(c.Args))
		if o.size < 2 {
			jobs = append(jobs, []*retry.Claim{c})
			continue
		}
		if o.job >= 0 && len(jobs[o.job]) < o.size && o.bytes+size <= d.p.MaxBatchBytes {
			jobs[o.job] = append(jobs[o.job], c)
			o.bytes += size
			continue
		}
		jobs = append(jobs, []*retry.Claim{c})
		o.job, o.bytes = len(jobs)-1, size
	}
	return jobs
}

// giveBackQueued gives back the claims queued for the workers.
func (d *Dispatcher) giveBackQueued() {
	for {
		select {
		case job := <-d.send:
			for _, c := range job {
				d.giveBack(c)
			}
		default:
			return
		}
	}
}

// loadArgs reads the arguments of the claims that lack them and returns the claims to send.
// When the read fails they are given back to wait a little; a task gone meanwhile is dropped.
func (d *Dispatcher) loadArgs(batch []*retry.Claim) []*retry.Claim {
	var ids []int64
	for _, c := range batch {
		if c.Args == nil {
			ids = append(ids, c.TaskID)
		}
	}
	if len(ids) == 0 {
		return batch
	}
	args, err := d.store.TaskArgs(d.ctx, ids)
	if err != nil {
		if d.ctx.Err() == nil {
			d.log.Error("dispatch: read arguments; the tasks wait", "tasks", len(ids), "err", err)
		}
		now := time.Now()
		out := batch[:0]
		for _, c := range batch {
			if c.Args != nil {
				out = append(out, c)
				continue
			}
			d.startedOn(c)
			d.add(retry.Release(c, now.Add(d.p.BusyDelay)))
			d.done(c)
		}
		return out
	}
	out := batch[:0]
	for _, c := range batch {
		if c.Args == nil {
			a, ok := args[c.TaskID]
			if !ok {
				// Deleted since it was claimed (by an operator): nothing to run or settle.
				d.startedOn(c)
				d.done(c)
				continue
			}
			c.Args = a
		}
		out = append(out, c)
	}
	return out
}

func (d *Dispatcher) work() {
	defer d.wg.Done()
	for {
		select {
		case job := <-d.send:
			switch {
			case d.stopping.Load():
				for _, c := range job {
					d.giveBack(c)
				}
			case len(job) == 1:
				d.startedOn(job[0])
				d.run(job[0])
				d.done(job[0])
			default:
				for _, c := range job {
					d.startedOn(c)
				}
				d.runBatch(job)
				for _, c := range job {
					d.done(c)
				}
			}
		case <-d.ctx.Done():
			return
		}
	}
}

// Stop stops taking claims and gives back those not started (they keep their due time). It
// waits for the calls in flight until StopReserve before ctx ends, then cancels them (they are
// given back, not counted as attempts). Every goroutine it started has returned when it
// returns, and what it could not hand to the settler is counted there.
func (d *Dispatcher) Stop(ctx context.Context) {
	if !d.started.Load() || d.stopping.Swap(true) {
		return
	}
	close(d.stopCh)
	wait := ctx
	if dl, ok := ctx.Deadline(); ok && d.p.StopReserve > 0 {
		var cancel context.CancelFunc
		wait, cancel = context.WithDeadline(ctx, dl.Add(-d.p.StopReserve))
		defer cancel()
	}
	// When the wait ends, everything still waiting (a call, a hand-over to a settler that the
	// database holds up) is cancelled.
	defer context.AfterFunc(wait, d.cancel)()
	var back []*retry.Claim
	d.mu.Lock()
	for c, t := range d.timers {
		// A timer that already fired hands its claim to the queue, where the loader gives it back.
		if t.Stop() {
			delete(d.timers, c)
			delete(d.granted, c)
			delete(d.waiting, c)
			back = append(back, c)
		}
	}
	d.mu.Unlock()
	for _, c := range back {
		d.add(retry.Release(c, c.DueAt))
		d.done(c)
	}
	if d.pending.Load() > 0 {
		select {
		case <-d.idle:
		case <-wait.Done():
			d.log.Warn("shutdown: cancelling calls in flight", "calls", d.pending.Load())
		}
	}
	d.cancel()
	d.wg.Wait()
	d.client.CloseIdleConnections()
	// What is left in the queues was not started: give it back if the settler has room.
	for {
		select {
		case c := <-d.ready:
			d.giveBack(c)
			continue
		case job := <-d.send:
			for _, c := range job {
				d.giveBack(c)
			}
			continue
		default:
		}
		break
	}
}

// Kill stops at once without giving anything back, as a crash would: the claims return to
// waiting when the sweeper finds their deadline passed.
func (d *Dispatcher) Kill() {
	if !d.started.Load() || d.stopping.Swap(true) {
		return
	}
	d.mu.Lock()
	for c, t := range d.timers {
		t.Stop()
		delete(d.timers, c)
	}
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
	d.client.CloseIdleConnections()
}

// hold gives back a claim whose scene is paused or whose group or namespace is disabled: a
// replay is held until they are enabled again (and the group has a live instance); a callback
// (few, since a paused scene's tasks do not end) is released to be looked at again after
// PausedDelay.
func (d *Dispatcher) hold(c *retry.Claim, now time.Time) {
	if c.Kind == retry.KindCallback {
		d.add(retry.Release(c, now.Add(d.p.PausedDelay)))
		return
	}
	d.add(retry.Hold(c))
}

// giveBack releases a claim that was not started; it keeps its due time.
func (d *Dispatcher) giveBack(c *retry.Claim) {
	d.mu.Lock()
	delete(d.granted, c)
	delete(d.waiting, c)
	d.mu.Unlock()
	d.add(retry.Release(c, c.DueAt))
	d.done(c)
}

// prepared is a claim ready for its call: its scene and group read and checked, its rate-limit
// token taken, its request built.
type prepared struct {
	c       *retry.Claim
	sc      *catalog.Scene
	group   retry.Group
	timeout time.Duration
	req     protocol.ExecuteRequest
}

// run makes one claim's call and settles it.
func (d *Dispatcher) run(c *retry.Claim) {
	if p := d.prepare(c, time.Now()); p != nil {
		d.dispatch(p, map[string]bool{}, false, nil)
	}
}

// prepare readies a claim for its call. A claim that must not be called now (its scene paused,
// its group disabled, its rate-limit token not there yet, its arguments unusable, the catalog
// unreadable) is given back, held or settled here, and prepare returns nil.
func (d *Dispatcher) prepare(c *retry.Claim, now time.Time) *prepared {
	d.mu.Lock()
	granted := d.granted[c]
	delete(d.granted, c)
	d.mu.Unlock()
	sc, err := d.catalog.Scene(d.ctx, c.SceneID)
	if err != nil {
		d.log.Error("dispatch: read scene; the task waits", "task", c.TaskID, "scene", c.SceneID, "err", err)
		d.add(retry.Release(c, now.Add(d.p.BusyDelay)))
		return nil
	}
	if !sc.Enabled {
		// A paused scene's task is held (the catalog's view is never older than its TTL).
		d.hold(c, now)
		return nil
	}
	if r := d.reserve(sc, granted); r != nil {
		// Wait for the token when it comes soon enough, holding it; otherwise give the token
		// back and the task too, due when the token would have come.
		if wait := r.Delay(); wait > 0 {
			if wait <= time.Second && now.Add(wait).Before(c.RunDeadline) {
				d.pending.Add(1) // the timer holds it again; work() releases the current hold
				d.queuedBytes.Add(int64(c.ArgsSize))
				d.mu.Lock()
				d.granted[c] = true
				d.waiting[c] = struct{}{}
				d.mu.Unlock()
				d.after(c, wait)
			} else {
				r.Cancel()
				d.add(retry.Release(c, now.Add(wait)))
			}
			return nil
		}
	}
	group, err := d.catalog.Group(d.ctx, c.GroupID)
	if err != nil {
		d.log.Error("dispatch: read group; the task waits", "task", c.TaskID, "group", c.GroupID, "err", err)
		d.add(retry.Release(c, now.Add(d.p.BusyDelay)))
		return nil
	}
	if !group.Active() {
		// A disabled group's (or namespace's) clients are refused; its tasks are held, as a
		// paused scene's are.
		d.hold(c, now)
		return nil
	}
	timeout := sc.Timeout
	if timeout <= 0 {
		timeout = d.p.DefaultTimeout
	}
	p := &prepared{c: c, sc: sc, group: group, timeout: timeout}
	if p.req, err = d.request(c, sc, group, timeout); err != nil {
		d.settle(c, sc, retry.Result{Outcome: retry.OutcomeFailed, Error: err.Error(), Permanent: true}, "", now, 0)
		return nil
	}
	return p
}

// holdFor makes sure the claim holds through an attempt starting now, extending it when its
// deadline comes sooner. When it cannot, the claim is given back (or dropped, when it no
// longer holds) and holdFor returns false.
func (d *Dispatcher) holdFor(p *prepared) bool {
	return d.holdUntil(p, time.Now().Add(p.timeout+Grace))
}

// holdUntil makes sure the claim holds until need, as holdFor does.
func (d *Dispatcher) holdUntil(p *prepared, need time.Time) bool {
	now := time.Now()
	if !need.After(p.c.RunDeadline) {
		return true
	}
	ok, err := d.store.ExtendClaim(d.ctx, p.c, need.Add(d.p.ClaimTimeout))
	if err != nil {
		// The database did not answer: give the task back, due shortly, without using an
		// attempt (left alone, the sweeper would count a timed-out attempt).
		d.log.Warn("dispatch: claim could not be extended for the attempt; the task waits", "task", p.c.TaskID, "err", err)
		d.add(retry.Release(p.c, now.Add(d.p.BusyDelay)))
		return false
	}
	if !ok {
		// The claim no longer holds: the task is someone else's now (or the sweeper's).
		d.log.Warn("dispatch: claim lapsed before the attempt; skipping", "task", p.c.TaskID)
		return false
	}
	return true
}

// dispatch makes a prepared claim's call as a single call, on an instance of its group not
// in tried, trying the next when one is busy or cannot be reached, and settles it. sawBusy says
// an instance already answered busy for it.
func (d *Dispatcher) dispatch(p *prepared, tried map[string]bool, sawBusy bool, picked *Lease) {
	c := p.c
	// unpick frees the slot picked for the claim when no call is made on it.
	unpick := func() {
		if picked != nil {
			picked.Done(0, 0)
		}
	}
	if !d.holdFor(p) {
		unpick()
		return
	}
	body, err := json.Marshal(p.req)
	if err != nil {
		unpick()
		d.settle(c, p.sc, retry.Result{Outcome: retry.OutcomeFailed, Error: "encode the request: " + err.Error(), Permanent: true}, "", time.Now(), 0)
		return
	}
	for {
		freed := d.registry.Freed()
		// The first call goes to the instance already picked for it, if any: picking again
		// would move on the round robin a second time for one task.
		lease, err := picked, error(nil)
		if picked == nil {
			lease, err = d.registry.Pick(c.GroupID, p.sc.Routing, c.IdempotencyKey, tried)
		}
		picked = nil
		if errors.Is(err, ErrFull) {
			// Every instance is at capacity with this node's own calls: wait for one to end
			// rather than give the task back for BusyDelay.
			if d.waitSlot(freed, d.startBy(p)) {
				continue
			}
			if d.stopping.Load() {
				d.add(retry.Release(c, time.Now()))
				return
			}
		}
		if errors.Is(err, ErrNoInstance) && !sawBusy {
			if c.Kind == retry.KindReplay && d.registry.Live(c.GroupID) == 0 {
				// The group has no instance at all: hold the task until one registers, so a
				// service that is down does not have its backlog claimed over and over.
				d.add(retry.Hold(c))
			} else {
				d.add(retry.Release(c, time.Now().Add(d.p.NoInstanceDelay)))
			}
			return
		}
		if err != nil {
			d.add(retry.Release(c, time.Now().Add(d.p.BusyDelay)))
			return
		}
		tried[lease.Instance.ID] = true
		start := time.Now()
		res, verdict := d.call(lease.Instance, p.group, body, p.timeout)
		switch verdict {
		case callBusy:
			lease.Done(d.p.BusyDelay, 0)
			sawBusy = true
			continue
		case callUnreachable:
			lease.Done(0, d.p.NoInstanceDelay)
			d.log.Warn("dispatch: client instance unreachable", "instance", lease.Instance.ID, "url", lease.Instance.ExecutorURL, "err", res.Error)
			continue
		case callCancelled:
			lease.Done(0, 0)
			d.add(retry.Release(c, time.Now()))
			return
		}
		lease.Done(0, 0)
		d.settle(c, p.sc, res, lease.Instance.ID, start, 0)
		return
	}
}

// startBy is the latest a prepared claim's call may start waiting for a slot: its claim then
// still holds through the attempt, and it waits no longer than BusyDelay.
func (d *Dispatcher) startBy(p *prepared) time.Time {
	return minTime(p.c.RunDeadline.Add(-p.timeout-Grace), time.Now().Add(d.p.BusyDelay))
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// waitSlot waits until freed is closed (a call ended, freeing a slot) and reports whether it
// was, giving up at until or when the dispatcher stops.
func (d *Dispatcher) waitSlot(freed <-chan struct{}, until time.Time) bool {
	wait := time.Until(until)
	if wait <= 0 {
		return false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-freed:
		return true
	case <-t.C:
	case <-d.stopCh:
	case <-d.ctx.Done():
	}
	return false
}

// runBatch makes the calls of claims of one group that go out together. Each claim gets an
// instance as a single call would (the routing, the capacity counted per task); the claims
// given the same instance go in one batched call, the calls to different instances at once.
// Claims that find every instance at capacity with this node's calls go in the next round,
// once those calls end (or a slot frees); a claim whose instance takes no batches (it
// registered again meanwhile), for which no instance is free, or that waited for a slot in
// vain, goes on as a single call would.
func (d *Dispatcher) runBatch(claims []*retry.Claim) {
	now := time.Now()
	var pending []*prepared
	// Claims that go on as single calls start at once, beside the batches: left to wait for
	// the rounds to end, their claims could lapse meanwhile.
	var singles sync.WaitGroup
	defer singles.Wait()
	// single starts a claim's single call, on the lease picked for it if any (a lease is one
	// slot: one claim's).
	single := func(p *prepared, lease *Lease) {
		singles.Go(func() { d.dispatch(p, map[string]bool{}, false, lease) })
	}
	for _, c := range claims {
		if p := d.prepare(c, now); p != nil {
			pending = append(pending, p)
		}
	}
	type call struct {
		in retry.Instance
		ps []*prepared
		ls []*Lease
	}
	for len(pending) > 0 {
		freed := d.registry.Freed()
		var (
			calls  []*call
			byInst = map[string]*call{}
			full   []*prepared
		)
		for _, p := range pending {
			// Every claim of the round is made to hold through an attempt from now, those
			// that wait for a slot too: a round can last an attempt's timeout.
			if !d.holdFor(p) {
				continue
			}
			if len(full) > 0 {
				// The group's instances were full a moment ago: wait with the first.
				full = append(full, p)
				continue
			}
			lease, err := d.registry.Pick(p.c.GroupID, p.sc.Routing, p.c.IdempotencyKey, nil)
			if errors.Is(err, ErrFull) {
				full = append(full, p)
				continue
			}
			if err != nil || lease.Instance.MaxBatch < 2 {
				// An instance that takes no batches gets the claim as a single call, on the
				// slot just picked for it.
				single(p, lease)
				continue
			}
			k := byInst[lease.Instance.ID]
			if k == nil || len(k.ps) >= lease.Instance.MaxBatch {
				k = &call{in: lease.Instance}
				byInst[lease.Instance.ID] = k
				calls = append(calls, k)
			}
			k.ps = append(k.ps, p)
			k.ls = append(k.ls, lease)
		}
		var wg sync.WaitGroup
		for _, k := range calls[min(1, len(calls)):] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d.callBatch(k.in, k.ps, k.ls)
			}()
		}
		if len(calls) > 0 {
			d.callBatch(calls[0].in, calls[0].ps, calls[0].ls)
		}
		wg.Wait()
		pending = full
		if len(full) == 0 || len(calls) > 0 {
			// The calls made have ended, freeing their slots: the next round picks again.
			continue
		}
		until := d.startBy(full[0])
		for _, p := range full[1:] {
			until = minTime(until, d.startBy(p))
		}
		if !d.waitSlot(freed, until) {
			if d.stopping.Load() {
				for _, p := range full {
					d.add(retry.Release(p.c, time.Now()))
				}
			} else {
				for _, p := range full {
					single(p, nil)
				}
			}
			break
		}
	}
}

// callBatch makes one batched call of the prepared claims to the instance, each holding a
// lease on it, and settles each claim with its own result. Tasks the instance did not run
// (it answered 429, or "busy" or nothing for a task) go on as single calls to the other
// instances, without an attempt; a batch refused as too large (413) goes on as single calls
// to any instance, without an attempt; when the call as a whole fails (the instance cannot be
// reached, no answer in time, an error status) each task is settled as its single call would
// have been.
func (d *Dispatcher) callBatch(in retry.Instance, ps []*prepared, leases []*Lease) {
	req := protocol.ExecuteBatchRequest{Kind: protocol.KindBatch, Tasks: make([]protocol.ExecuteRequest, len(ps))}
	timeout := time.Duration(0)
	for i, p := range ps {
		req.Tasks[i] = p.req
		timeout = max(timeout, p.timeout)
	}
	group := ps[0].group
	done := func(busyFor, downFor time.Duration) { DoneAll(leases, busyFor, downFor) }
	// notRun sends the tasks the instance did not run on as single calls, all at once (one
	// after another, the last could wait past its claim): to the group's other instances, or
	// with others false to this one too.
	notRun := func(ps []*prepared, busy, others bool) {
		var wg sync.WaitGroup
		for _, p := range ps {
			wg.Go(func() {
				tried := map[string]bool{}
				if others {
					tried[in.ID] = true
				}
				d.dispatch(p, tried, busy, nil)
			})
		}
		wg.Wait()
	}
	body, err := json.Marshal(req)
	if err != nil {
		done(0, 0)
		for _, p := range ps {
			d.settle(p.c, p.sc, retry.Result{Outcome: retry.OutcomeFailed, Error: "encode the request: " + err.Error(), Permanent: true}, "", time.Now(), 0)
		}
		return
	}
	// The instance answers once every task has ended, so each claim must hold as long as
	// the batch's longest timeout, not only its own.
	if need := time.Now().Add(timeout + Grace); slices.ContainsFunc(ps, func(p *prepared) bool { return need.After(p.c.RunDeadline) }) {
		var held []*prepared
		var heldLs []*Lease
		for i, p := range ps {
			if d.holdUntil(p, need) {
				held, heldLs = append(held, p), append(heldLs, leases[i])
				continue
			}
			leases[i].Done(0, 0)
		}
		if len(held) == 0 {
			return
		}
		if len(held) < len(ps) {
			// Signed again without the tasks that no longer hold.
			ps, leases = held, heldLs
			req.Tasks = req.Tasks[:0]
			for _, p := range ps {
				req.Tasks = append(req.Tasks, p.req)
			}
			if body, err = json.Marshal(req); err != nil {
				done(0, 0)
				for _, p := range ps {
					d.settle(p.c, p.sc, retry.Result{Outcome: retry.OutcomeFailed, Error: "encode the request: " + err.Error(), Permanent: true}, "", time.Now(), 0)
				}
				return
			}
		}
	}
	start := time.Now()
	raw, res, verdict := d.exchange(in, group, body, timeout)
	switch verdict {
	case callBusy:
		done(d.p.BusyDelay, 0)
		notRun(ps, true, true)
		return
	case callUnreachable:
		done(0, d.p.NoInstanceDelay)
		d.log.Warn("dispatch: client instance unreachable", "instance", in.ID, "url", in.ExecutorURL, "err", res.Error)
		notRun(ps, false, true)
		return
	case callCancelled:
		done(0, 0)
		for _, p := range ps {
			d.add(retry.Release(p.c, time.Now()))
		}
		return
	case callTooLarge:
		// The instance takes smaller bodies than dispatch.max_batch_bytes allows: it ran
		// nothing, so no attempt is charged, and the tasks go on as single calls, this
		// instance among those they may go to; it gets single calls only for a while.
		done(0, 0)
		if d.registry.RefusedBatch(in.ID) {
			d.log.Warn("dispatch: client instance refused a batch as too large; it gets single calls for a while (lower dispatch.max_batch_bytes or raise the instance's body limit)",
				"instance", in.ID, "tasks", len(ps), "bytes", len(body), "for", singlesFor)
		}
		notRun(ps, false, false)
		return
	}
	if raw == nil {
		// The call failed as a whole (no answer in time, an error status): every task is
		// settled with that outcome, as its single call would have been.
		done(0, 0)
		for _, p := range ps {
			d.settle(p.c, p.sc, res, in.ID, start, 0)
		}
		return
	}
	var ans protocol.ExecuteBatchResponse
	if err := json.Unmarshal(raw, &ans); err != nil {
		done(0, 0)
		for _, p := range ps {
			d.settle(p.c, p.sc, retry.Result{Outcome: retry.OutcomeFailed, Error: "unreadable answer: " + err.Error()}, in.ID, start, 0)
		}
		return
	}
	var (
		busy          []*prepared
		ran, notRanLs []*Lease
	)
	results := make([]*protocol.ExecuteResult, len(ps))
	for i, p := range ps {
		if i < len(ans.Results) && ans.Results[i].TaskID == p.req.TaskID && ans.Results[i].Kind == p.req.Kind &&
			(ans.Results[i].Status == protocol.ExecuteSucceeded || ans.Results[i].Status == protocol.ExecuteFailed) {
			results[i] = &ans.Results[i]
			ran = append(ran, leases[i])
			continue
		}
		// Not run (busy), or no result for it: no attempt is charged.
		busy = append(busy, p)
		notRanLs = append(notRanLs, leases[i])
	}
	DoneAll(notRanLs, d.p.BusyDelay, 0)
	DoneAll(ran, 0, 0)
	for i, p := range ps {
		r := results[i]
		if r == nil {
			continue
		}
		res := retry.Result{Outcome: retry.OutcomeSucceeded}
		if r.Status == protocol.ExecuteFailed {
			if r.Error == "" {
				r.Error = "failed without an error text"
			}
			res = retry.Result{Outcome: retry.OutcomeFailed, Error: r.Error, Permanent: r.Permanent}
		}
		d.settle(p.c, p.sc, res, in.ID, start, time.Duration(r.DurationMS)*time.Millisecond)
	}
	notRun(busy, true, true)
}

// reserve takes a token of the scene's rate limit, unless the claim was granted one already or
// the scene has no limit (then it returns nil). The reservation says how long to wait for it.
func (d *Dispatcher) reserve(sc *catalog.Scene, granted bool) *rate.Reservation {
	if sc.RateLimit <= 0 || granted {
		return nil
	}
	nodes := 1
	if d.p.Nodes != nil {
		nodes = max(d.p.Nodes(), 1)
	}
	d.mu.Lock()
	l := d.limiters[sc.ID]
	if l == nil || l.limit != sc.RateLimit || l.nodes != nodes {
		share := max(float64(sc.RateLimit)/float64(nodes), 0.01)
		l = &sceneLimiter{limit: sc.RateLimit, nodes: nodes, limiter: rate.NewLimiter(rate.Limit(share), max(int(share), 1))}
		d.limiters[sc.ID] = l
	}
	d.mu.Unlock()
	return l.limiter.Reserve()
}

func (d *Dispatcher) request(c *retry.Claim, sc *catalog.Scene, g retry.Group, timeout time.Duration) (protocol.ExecuteRequest, error) {
	req := protocol.ExecuteRequest{Kind: c.Kind.String(), TaskID: c.TaskID, Namespace: g.Namespace, Group: g.Name,
		Scene: sc.Name, IdempotencyKey: c.IdempotencyKey, Args: json.RawMessage(c.Args), Attempt: c.Number(),
		Timeout: backoff.Duration(timeout)}
	if !json.Valid(req.Args) {
		return req, fmt.Errorf("stored arguments are not valid JSON")
	}
	if c.Kind == retry.KindCallback {
		outcome := protocol.OutcomeExhausted
		if c.State == retry.Succeeded {
			outcome = protocol.OutcomeSucceeded
		}
		req.Callback = &protocol.CallbackInfo{Outcome: outcome, LastError: c.LastError, Attempts: c.Attempts}
	}
	return req, nil
}

type verdict int

const (
	callAnswered verdict = iota
	callBusy
	callUnreachable
	callCancelled
	// callTooLarge: the instance refused the request's body as too large (413), running
	// nothing. A single call stands as a failed attempt (call); a batch goes on as single calls.
	callTooLarge
)

// maxAnswer bounds the answer read from an instance to a single call.
const maxAnswer = 64 << 10

// maxBatchAnswer bounds the answer read from an instance to a batched call.
const maxBatchAnswer = 4 << 20

// call POSTs a signed request to an executor and reads what became of it.
func (d *Dispatcher) call(in retry.Instance, group retry.Group, body []byte, timeout time.Duration) (retry.Result, verdict) {
	raw, res, v := d.exchange(in, group, body, timeout)
	if v == callTooLarge {
		v = callAnswered
	}
	if v != callAnswered || raw == nil {
		return res, v
	}
	var ans protocol.ExecuteResponse
	if err := json.Unmarshal(raw, &ans); err != nil {
		return retry.Result{Outcome: retry.OutcomeFailed, Error: "unreadable answer: " + err.Error()}, callAnswered
	}
	if ans.Status == protocol.ExecuteSucceeded {
		return retry.Result{Outcome: retry.OutcomeSucceeded}, callAnswered
	}
	if ans.Error == "" {
		ans.Error = "failed without an error text"
	}
	return retry.Result{Outcome: retry.OutcomeFailed, Error: ans.Error, Permanent: ans.Permanent}, callAnswered
}

// exchange POSTs a signed request to an executor. For a 200 answer it returns the body read;
// otherwise the verdict, and for a call answered in another way (no answer in time, an error
// status) the result that stands for the attempt.
func (d *Dispatcher) exchange(in retry.Instance, group retry.Group, body []byte, timeout time.Duration) ([]byte, retry.Result, verdict) {
	ctx, cancel := context.WithTimeout(d.ctx, timeout+Grace)
	defer cancel()
	tokens := group.Tokens(time.Now())
	resp, err := d.post(ctx, in, group, tokens[0], body)
	if err == nil && resp.StatusCode == http.StatusUnauthorized && len(tokens) > 1 {
		// During a token rotation's grace period an instance may still hold the previous
		// token: it refused the call without running it, so the call goes again signed with
		// that one.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer))
		resp.Body.Close()
		resp, err = d.post(ctx, in, group, tokens[1], body)
	}
	if errors.Is(err, errBadURL) {
		return nil, retry.Result{Outcome: retry.OutcomeFailed, Error: err.Error()}, callUnreachable
	}
	if err != nil {
		switch {
		case d.ctx.Err() != nil:
			return nil, retry.Result{}, callCancelled
		case errors.Is(err, context.DeadlineExceeded):
			return nil, retry.Result{Outcome: retry.OutcomeTimedOut,
				Error: fmt.Sprintf("no answer within %s", timeout+Grace)}, callAnswered
		case isDialError(err):
			return nil, retry.Result{Error: err.Error()}, callUnreachable
		}
		return nil, retry.Result{Outcome: retry.OutcomeFailed, Error: "call failed: " + err.Error()}, callAnswered
	}
	defer resp.Body.Close()
	limit := int64(maxAnswer)
	if resp.StatusCode == http.StatusOK {
		limit = maxBatchAnswer
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, retry.Result{Outcome: retry.OutcomeTimedOut, Error: fmt.Sprintf("no answer within %s", timeout+Grace)}, callAnswered
		}
		return nil, retry.Result{Outcome: retry.OutcomeFailed, Error: "reading the answer: " + err.Error()}, callAnswered
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return raw, retry.Result{}, callAnswered
	case http.StatusTooManyRequests:
		return nil, retry.Result{}, callBusy
	}
	msg := string(raw)
	var eb protocol.ErrorBody
	if json.Unmarshal(raw, &eb) == nil && eb.Error.Message != "" {
		msg = eb.Error.Code + ": " + eb.Error.Message
	}
	if resp.StatusCode == http.StatusBadRequest && eb.Error.Code == codeWrongInstance {
		// Another instance answers at this URL now (the process restarted with a new id, and
		// the old one stays listed until its heartbeats lapse): the call did not run, so it
		// uses no attempt, and the listed instance is passed over as an unreachable one is.
		return nil, retry.Result{Error: fmt.Sprintf("instance answered %d: %s", resp.StatusCode, msg)}, callUnreachable
	}
	res := retry.Result{Outcome: retry.OutcomeFailed, Error: fmt.Sprintf("instance answered %d: %s", resp.StatusCode, msg)}
	if resp.StatusCode == http.StatusRequestEntityTooLarge {
		return nil, res, callTooLarge
	}
	return nil, res, callAnswered
}

// codeWrongInstance is the error code of an SDK executor refusing a call signed for another
// instance than itself.
const codeWrongInstance = "wrong_instance"

// errBadURL is an executor URL a request cannot be made for.
var errBadURL = errors.New("bad executor URL")

// post POSTs body to the instance's executor signed with token.
func (d *Dispatcher) post(ctx context.Context, in retry.Instance, group retry.Group, token string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, in.ExecutorURL, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadURL, err)
	}
	req.Header.Set("Content-Type", "application/json")
	// The signature covers the group and the instance the call is meant for, so a captured
	// call cannot be sent to another instance or another group's executor.
	req.Header.Set(protocol.HeaderNamespace, group.Namespace)
	req.Header.Set(protocol.HeaderGroup, group.Name)
	req.Header.Set(protocol.HeaderInstance, in.ID)
	protocol.SignRequest(req, token, body, time.Now())
	return d.client.Do(req)
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// settle hands a call's outcome to the settler, with its attempt: started at start, lasting
// took (zero: until now).
func (d *Dispatcher) settle(c *retry.Claim, sc *catalog.Scene, res retry.Result, instance string, start time.Time, took time.Duration) {
	if took <= 0 {
		took = time.Since(start)
	}
	att := &retry.Attempt{TaskID: c.TaskID, Kind: c.Kind, Number: c.Number(), NodeID: d.p.NodeID, InstanceID: instance,
		StartedAt: start, Duration: took, Outcome: res.Outcome, Error: retry.TruncateError(res.Error)}
	d.p.Observer.Attempt(c.Kind, res.Outcome, lagOf(c, start), att.Duration)
	if c.Kind == retry.KindCallback {
		d.add(retry.SettleCallback(c, &sc.Scene, sc.Policies, res, att, time.Now()))
		return
	}
	d.add(retry.SettleReplay(c, &sc.Scene, sc.Policies, res, att, time.Now()))
}

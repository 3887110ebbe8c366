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

	// ready holds the claims due (their arguments not read yet), send those about to go out.
	ready   chan *retry.Claim
	send    chan *retry.Claim
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
		ready: make(chan *retry.Claim, p.QueueSize*2), send: make(chan *retry.Claim, p.Concurrency),
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
		batch = d.loadArgs(batch)
		for i, c := range batch {
			select {
			case d.send <- c:
			case <-stop:
				for _, c := range batch[i:] {
					d.giveBack(c)
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

// giveBackQueued gives back the claims queued for the workers.
func (d *Dispatcher) giveBackQueued() {
	for {
		select {
		case c := <-d.send:
			d.giveBack(c)
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
		case c := <-d.send:
			if d.stopping.Load() {
				d.giveBack(c)
			} else {
				d.startedOn(c)
				d.run(c)
				d.done(c)
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
		case c := <-d.send:
			d.giveBack(c)
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

// run makes one claim's call and settles it.
func (d *Dispatcher) run(c *retry.Claim) {
	now := time.Now()
	d.mu.Lock()
	granted := d.granted[c]
	delete(d.granted, c)
	d.mu.Unlock()
	sc, err := d.catalog.Scene(d.ctx, c.SceneID)
	if err != nil {
		d.log.Error("dispatch: read scene; the task waits", "task", c.TaskID, "scene", c.SceneID, "err", err)
		d.add(retry.Release(c, now.Add(d.p.BusyDelay)))
		return
	}
	if !sc.Enabled {
		// A paused scene's task is held (the catalog's view is never older than its TTL).
		d.hold(c, now)
		return
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
			return
		}
	}
	group, err := d.catalog.Group(d.ctx, c.GroupID)
	if err != nil {
		d.log.Error("dispatch: read group; the task waits", "task", c.TaskID, "group", c.GroupID, "err", err)
		d.add(retry.Release(c, now.Add(d.p.BusyDelay)))
		return
	}
	if !group.Active() {
		// A disabled group's (or namespace's) clients are refused; its tasks are held, as a
		// paused scene's are.
		d.hold(c, now)
		return
	}
	timeout := sc.Timeout
	if timeout <= 0 {
		timeout = d.p.DefaultTimeout
	}
	if need := now.Add(timeout + Grace); need.After(c.RunDeadline) {
		ok, err := d.store.ExtendClaim(d.ctx, c, need.Add(d.p.ClaimTimeout))
		if err != nil {
			// The database did not answer: give the task back, due shortly, without using an
			// attempt (left alone, the sweeper would count a timed-out attempt).
			d.log.Warn("dispatch: claim could not be extended for the attempt; the task waits", "task", c.TaskID, "err", err)
			d.add(retry.Release(c, now.Add(d.p.BusyDelay)))
			return
		}
		if !ok {
			// The claim no longer holds: the task is someone else's now (or the sweeper's).
			d.log.Warn("dispatch: claim lapsed before the attempt; skipping", "task", c.TaskID)
			return
		}
	}
	body, err := d.request(c, sc, group, timeout)
	if err != nil {
		d.settle(c, sc, retry.Result{Outcome: retry.OutcomeFailed, Error: err.Error(), Permanent: true}, "", now)
		return
	}
	tried := map[string]bool{}
	sawBusy := false
	for {
		lease, err := d.registry.Pick(c.GroupID, sc.Routing, c.IdempotencyKey, tried)
		if errors.Is(err, ErrNoInstance) && !sawBusy {
			if c.Kind == retry.KindReplay && d.registry.Live(c.GroupID) == 0 {
				// The group has no instance at all: hold the task until one registers, so a
				// service that is down does not have its backlog claimed over and over.
				d.add(retry.Hold(c))
			} else {
				d.add(retry.Release(c, now.Add(d.p.NoInstanceDelay)))
			}
			return
		}
		if err != nil {
			d.add(retry.Release(c, now.Add(d.p.BusyDelay)))
			return
		}
		tried[lease.Instance.ID] = true
		start := time.Now()
		res, verdict := d.call(lease.Instance, group, body, timeout)
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
		d.settle(c, sc, res, lease.Instance.ID, start)
		return
	}
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

func (d *Dispatcher) request(c *retry.Claim, sc *catalog.Scene, g retry.Group, timeout time.Duration) ([]byte, error) {
	req := protocol.ExecuteRequest{Kind: c.Kind.String(), TaskID: c.TaskID, Namespace: g.Namespace, Group: g.Name,
		Scene: sc.Name, IdempotencyKey: c.IdempotencyKey, Args: json.RawMessage(c.Args), Attempt: c.Number(),
		Timeout: backoff.Duration(timeout)}
	if !json.Valid(req.Args) {
		return nil, fmt.Errorf("stored arguments are not valid JSON")
	}
	if c.Kind == retry.KindCallback {
		outcome := protocol.OutcomeExhausted
		if c.State == retry.Succeeded {
			outcome = protocol.OutcomeSucceeded
		}
		req.Callback = &protocol.CallbackInfo{Outcome: outcome, LastError: c.LastError, Attempts: c.Attempts}
	}
	return json.Marshal(req)
}

type verdict int

const (
	callAnswered verdict = iota
	callBusy
	callUnreachable
	callCancelled
)

// maxAnswer bounds the answer read from an instance.
const maxAnswer = 64 << 10

// call POSTs a signed request to an executor and reads what became of it.
func (d *Dispatcher) call(in retry.Instance, group retry.Group, body []byte, timeout time.Duration) (retry.Result, verdict) {
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
		return retry.Result{Outcome: retry.OutcomeFailed, Error: err.Error()}, callUnreachable
	}
	if err != nil {
		switch {
		case d.ctx.Err() != nil:
			return retry.Result{}, callCancelled
		case errors.Is(err, context.DeadlineExceeded):
			return retry.Result{Outcome: retry.OutcomeTimedOut,
				Error: fmt.Sprintf("no answer within %s", timeout+Grace)}, callAnswered
		case isDialError(err):
			return retry.Result{Error: err.Error()}, callUnreachable
		}
		return retry.Result{Outcome: retry.OutcomeFailed, Error: "call failed: " + err.Error()}, callAnswered
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return retry.Result{Outcome: retry.OutcomeTimedOut, Error: fmt.Sprintf("no answer within %s", timeout+Grace)}, callAnswered
		}
		return retry.Result{Outcome: retry.OutcomeFailed, Error: "reading the answer: " + err.Error()}, callAnswered
	}
	switch resp.StatusCode {
	case http.StatusOK:
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
	case http.StatusTooManyRequests:
		return retry.Result{}, callBusy
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
		return retry.Result{Error: fmt.Sprintf("instance answered %d: %s", resp.StatusCode, msg)}, callUnreachable
	}
	return retry.Result{Outcome: retry.OutcomeFailed, Error: fmt.Sprintf("instance answered %d: %s", resp.StatusCode, msg)}, callAnswered
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

func (d *Dispatcher) settle(c *retry.Claim, sc *catalog.Scene, res retry.Result, instance string, start time.Time) {
	att := &retry.Attempt{TaskID: c.TaskID, Kind: c.Kind, Number: c.Number(), NodeID: d.p.NodeID, InstanceID: instance,
		StartedAt: start, Duration: time.Since(start), Outcome: res.Outcome, Error: retry.TruncateError(res.Error)}
	d.p.Observer.Attempt(c.Kind, res.Outcome, lagOf(c, start), att.Duration)
	if c.Kind == retry.KindCallback {
		d.add(retry.SettleCallback(c, &sc.Scene, sc.Policies, res, att, time.Now()))
		return
	}
	d.add(retry.SettleReplay(c, &sc.Scene, sc.Policies, res, att, time.Now()))
}

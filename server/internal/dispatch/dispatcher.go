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
	"github.com/retryhub/retryhub/server/internal/storage"
)

// Params configure a Dispatcher.
type Params struct {
	NodeID string
	// Concurrency bounds the calls in flight.
	Concurrency int
	// QueueSize bounds the claims held in memory (waiting for their time, queued, in flight).
	QueueSize       int
	DefaultTimeout  time.Duration
	NoInstanceDelay time.Duration
	BusyDelay       time.Duration
	PausedDelay     time.Duration
	// ClaimTimeout is added to a claim's deadline when a long attempt needs it moved.
	ClaimTimeout time.Duration
	// Nodes returns how many nodes share the cluster, to split scene rate limits; nil means 1.
	Nodes func() int
	// Client makes the calls; nil means a client tuned for many calls to few hosts.
	Client *http.Client
}

// Grace is how much longer than an attempt's timeout the dispatcher waits for the answer.
const Grace = 2 * time.Second

// Dispatcher runs claims: each at its due time, on an instance the registry picks, and hands
// the outcome to the settler. It holds at most QueueSize claims and runs at most Concurrency
// calls at once.
type Dispatcher struct {
	p        Params
	store    *storage.Store
	catalog  *catalog.Catalog
	registry *Registry
	settler  *Settler
	client   *http.Client
	log      *slog.Logger
	// OnRoom, when set, is called when room frees up after the queue was more than half full,
	// so the claimer can fetch more without waiting for its next tick.
	OnRoom func()

	ready    chan *retry.Claim
	pending  atomic.Int64
	stopping atomic.Bool
	ctx      context.Context
	cancel   context.CancelFunc
	workers  sync.WaitGroup

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
	waiting    map[*retry.Claim]struct{}
	keeperDone chan struct{}
}

type sceneLimiter struct {
	limit   int
	nodes   int
	limiter *rate.Limiter
}

// NewDispatcher returns a dispatcher; Start runs it.
func NewDispatcher(p Params, store *storage.Store, cat *catalog.Catalog, reg *Registry, settler *Settler, log *slog.Logger) *Dispatcher {
	client := p.Client
	if client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns = p.Concurrency * 2
		tr.MaxIdleConnsPerHost = p.Concurrency
		tr.IdleConnTimeout = 90 * time.Second
		client = &http.Client{Transport: tr}
	}
	return &Dispatcher{p: p, store: store, catalog: cat, registry: reg, settler: settler, client: client, log: log,
		ready:  make(chan *retry.Claim, p.QueueSize*2),
		timers: map[*retry.Claim]*time.Timer{}, limiters: map[int64]*sceneLimiter{}, granted: map[*retry.Claim]bool{},
		waiting: map[*retry.Claim]struct{}{}}
}

// Start runs the workers and the keeper.
func (d *Dispatcher) Start() {
	d.ctx, d.cancel = context.WithCancel(context.Background())
	for range d.p.Concurrency {
		d.workers.Add(1)
		go d.work()
	}
	d.keeperDone = make(chan struct{})
	go d.keep()
}

// keepEvery is how often the keeper looks at the claims waiting in memory.
func (d *Dispatcher) keepEvery() time.Duration { return max(d.p.ClaimTimeout/4, 50*time.Millisecond) }

// keep extends, every keepEvery, the deadlines of waiting claims that would lapse within half a
// claim timeout, one statement per claim batch (claims of a batch share a token).
func (d *Dispatcher) keep() {
	defer close(d.keeperDone)
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
func (d *Dispatcher) started(c *retry.Claim) {
	d.mu.Lock()
	delete(d.waiting, c)
	d.mu.Unlock()
}

// Room is how many more claims the dispatcher can take.
func (d *Dispatcher) Room() int {
	if d.stopping.Load() {
		return 0
	}
	return max(d.p.QueueSize-int(d.pending.Load()), 0)
}

// Pending is how many claims the dispatcher holds.
func (d *Dispatcher) Pending() int { return int(d.pending.Load()) }

// Submit takes claims: each runs at its due time, or at once when that has passed.
func (d *Dispatcher) Submit(claims []retry.Claim) {
	now := time.Now()
	d.pending.Add(int64(len(claims)))
	d.mu.Lock()
	for i := range claims {
		d.waiting[&claims[i]] = struct{}{}
	}
	d.mu.Unlock()
	for i := range claims {
		c := &claims[i]
		if wait := c.DueAt.Sub(now); wait > 0 {
			d.after(c, wait)
		} else {
			d.ready <- c
		}
	}
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

func (d *Dispatcher) done() {
	n := d.pending.Add(-1)
	if d.OnRoom != nil && n == int64(d.p.QueueSize/2) {
		d.OnRoom()
	}
}

func (d *Dispatcher) work() {
	defer d.workers.Done()
	for {
		select {
		case c := <-d.ready:
			if d.stopping.Load() {
				d.giveBack(c)
			} else {
				d.started(c)
				d.run(c)
				d.done()
			}
		case <-d.ctx.Done():
			return
		}
	}
}

// Stop stops taking claims, gives back those not started (they keep their due time), waits
// for the calls in flight until ctx ends, then cancels them (they are given back, not counted
// as attempts).
func (d *Dispatcher) Stop(ctx context.Context) {
	d.stopping.Store(true)
	d.mu.Lock()
	for c, t := range d.timers {
		// A timer that already fired hands its claim to the queue, drained below.
		if t.Stop() {
			delete(d.timers, c)
			delete(d.granted, c)
			delete(d.waiting, c)
			d.settler.Add(retry.Release(c, c.DueAt))
			d.done()
		}
	}
	d.mu.Unlock()
	for {
		select {
		case c := <-d.ready:
			d.giveBack(c)
			continue
		default:
		}
		break
	}
	idle := make(chan struct{})
	go func() {
		for d.pending.Load() > 0 {
			select {
			case c := <-d.ready:
				d.giveBack(c)
			case <-time.After(10 * time.Millisecond):
			}
		}
		close(idle)
	}()
	select {
	case <-idle:
	case <-ctx.Done():
		d.log.Warn("shutdown: cancelling calls in flight", "calls", d.pending.Load())
	}
	d.cancel()
	d.workers.Wait()
	<-d.keeperDone
}

// hold gives back a claim whose scene is paused or whose group or namespace is disabled: a
// replay is held until they are enabled again (and the group has a live instance); a callback
// (few, since a paused scene's tasks do not end) is released to be looked at again after
// PausedDelay.
func (d *Dispatcher) hold(c *retry.Claim, now time.Time) {
	if c.Kind == retry.KindCallback {
		d.settler.Add(retry.Release(c, now.Add(d.p.PausedDelay)))
		return
	}
	d.settler.Add(retry.Hold(c))
}

// giveBack releases a claim that was not started; it keeps its due time.
func (d *Dispatcher) giveBack(c *retry.Claim) {
	d.mu.Lock()
	delete(d.granted, c)
	delete(d.waiting, c)
	d.mu.Unlock()
	d.settler.Add(retry.Release(c, c.DueAt))
	d.done()
}

// Abandon stops at once without giving anything back, as a crash would: the claims return to
// waiting when the sweeper finds their deadline passed.
func (d *Dispatcher) Abandon() {
	d.stopping.Store(true)
	d.mu.Lock()
	for c, t := range d.timers {
		t.Stop()
		delete(d.timers, c)
	}
	d.mu.Unlock()
	d.cancel()
	d.workers.Wait()
	<-d.keeperDone
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
		d.settler.Add(retry.Release(c, now.Add(d.p.BusyDelay)))
		return
	}
	if !sc.Enabled {
		// A held task is not looked at again until it comes back, and its scene's entry may be
		// old by then (nothing reads it while the scene is paused): hold on a fresh view only.
		fsc, err := d.catalog.FreshScene(d.ctx, c.SceneID)
		if err != nil || !fsc.Enabled {
			d.hold(c, now)
			return
		}
		sc = fsc
	}
	if r := d.reserve(sc, granted); r != nil {
		// Wait for the token when it comes soon enough, holding it; otherwise give the token
		// back and the task too, due when the token would have come.
		if wait := r.Delay(); wait > 0 {
			if wait <= time.Second && now.Add(wait).Before(c.RunDeadline) {
				d.pending.Add(1) // the timer holds it again; work() releases the current hold
				d.mu.Lock()
				d.granted[c] = true
				d.waiting[c] = struct{}{}
				d.mu.Unlock()
				d.after(c, wait)
			} else {
				r.Cancel()
				d.settler.Add(retry.Release(c, now.Add(wait)))
			}
			return
		}
	}
	group, err := d.catalog.Group(d.ctx, c.GroupID)
	if err != nil {
		d.log.Error("dispatch: read group; the task waits", "task", c.TaskID, "group", c.GroupID, "err", err)
		d.settler.Add(retry.Release(c, now.Add(d.p.BusyDelay)))
		return
	}
	if !group.Active() {
		// A disabled group's (or namespace's) clients are refused; its tasks are held, as a
		// paused scene's are (on a fresh view of the group, likewise).
		if group, err = d.catalog.FreshGroup(d.ctx, c.GroupID); err != nil || !group.Active() {
			d.hold(c, now)
			return
		}
	}
	timeout := sc.Timeout
	if timeout <= 0 {
		timeout = d.p.DefaultTimeout
	}
	if need := now.Add(timeout + Grace); need.After(c.RunDeadline) {
		ok, err := d.store.ExtendClaim(d.ctx, c, need.Add(d.p.ClaimTimeout))
		if err != nil || !ok {
			// The claim no longer holds (or cannot be made to last): leave the task to whoever
			// holds it, or to the sweeper.
			d.log.Warn("dispatch: claim could not be extended for the attempt; skipping", "task", c.TaskID, "err", err)
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
				d.settler.Add(retry.Hold(c))
			} else {
				d.settler.Add(retry.Release(c, now.Add(d.p.NoInstanceDelay)))
			}
			return
		}
		if err != nil {
			d.settler.Add(retry.Release(c, now.Add(d.p.BusyDelay)))
			return
		}
		tried[lease.Instance.ID] = true
		start := time.Now()
		res, verdict := d.call(lease.Instance.ExecutorURL, group.Token, body, timeout)
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
			d.settler.Add(retry.Release(c, time.Now()))
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
func (d *Dispatcher) call(url, token string, body []byte, timeout time.Duration) (retry.Result, verdict) {
	ctx, cancel := context.WithTimeout(d.ctx, timeout+Grace)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return retry.Result{Outcome: retry.OutcomeFailed, Error: "bad executor URL: " + err.Error()}, callUnreachable
	}
	req.Header.Set("Content-Type", "application/json")
	protocol.SignRequest(req, token, body, time.Now())
	resp, err := d.client.Do(req)
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
	return retry.Result{Outcome: retry.OutcomeFailed, Error: fmt.Sprintf("instance answered %d: %s", resp.StatusCode, msg)}, callAnswered
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func (d *Dispatcher) settle(c *retry.Claim, sc *catalog.Scene, res retry.Result, instance string, start time.Time) {
	att := &retry.Attempt{TaskID: c.TaskID, Kind: c.Kind, Number: c.Number(), NodeID: d.p.NodeID, InstanceID: instance,
		StartedAt: start, Duration: time.Since(start), Outcome: res.Outcome, Error: retry.TruncateError(res.Error)}
	if c.Kind == retry.KindCallback {
		d.settler.Add(retry.SettleCallback(c, &sc.Scene, sc.Policies, res, att, time.Now()))
		return
	}
	d.settler.Add(retry.SettleReplay(c, &sc.Scene, sc.Policies, res, att, time.Now()))
}

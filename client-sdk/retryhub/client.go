package retryhub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/retryhub/retryhub/client-sdk/internal/recovery"
	"github.com/retryhub/retryhub/client-sdk/internal/spool"
	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// startWait bounds how long Start waits for the server's first answers.
const startWait = 5 * time.Second

// Client connects a process to the retryhub server for one group: it registers the instance
// and keeps it listed, keeps the scenes' policies in step with the server, delivers reports,
// and serves the server's replays and callbacks.
//
// The process-wide client comes from Start and serves the scenes declared with Retryable. An
// explicit client comes from NewClient, serves the scenes declared on it with RetryableOn, and
// starts with its Start method; use it in tests, or to serve several groups from one process.
// A Client starts once; after Shutdown it is spent.
type Client struct {
	cfg Config
	reg *registry
	log *slog.Logger
	// now tells the time of failures and of the executor's checks; tests set it before Start.
	// Requests to the server are signed with the real time.
	now func() time.Time
	// ownHTTP says cfg.HTTPClient is the SDK's own, not the application's.
	ownHTTP bool
	api     *serverAPI
	limits  atomic.Pointer[protocol.RegisterResponse]
	stats   counters
	exec    *executor
	hb      *heartbeat
	pol     *policySync

	// q is set once by Start; failed calls read it without locking.
	q atomic.Pointer[queue]
	// queueFullLogged is when a full queue was last logged (Unix nanoseconds).
	queueFullLogged atomic.Int64

	// mu serializes Start and Shutdown; the fields below belong to them.
	mu      sync.Mutex
	state   int // clientNew, clientRunning, clientStopping, clientStopped
	spool   *spool.Spool
	snd     *sender
	srv     *http.Server
	srvDone chan struct{}
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	hbStop  context.CancelFunc
	hbDone  chan struct{}
}

const (
	clientNew = iota
	clientRunning
	clientStopping
	clientStopped
)

// NewClient checks cfg and returns a client that is not started yet, with a registry of its
// own: declare its scenes with RetryableOn, then call its Start method.
func NewClient(cfg Config) (*Client, error) {
	return newClient(cfg, newRegistry())
}

func newClient(cfg Config, reg *registry) (*Client, error) {
	// The SDK made the HTTP client (or a copy of the application's) when none was given or a CA
	// file was: its idle connections are closed on Shutdown.
	ownHTTP := cfg.HTTPClient == nil || cfg.CAFile != ""
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger.With("retryhub_group", cfg.Namespace+"/"+cfg.Group, "retryhub_instance", cfg.InstanceID)
	c := &Client{cfg: cfg, reg: reg, log: log, now: time.Now, ownHTTP: ownHTTP}
	c.api = &serverAPI{
		servers:   cfg.Servers,
		http:      cfg.HTTPClient,
		token:     cfg.Token,
		namespace: cfg.Namespace,
		group:     cfg.Group,
		instance:  cfg.InstanceID,
	}
	c.exec = &executor{
		reg:       reg,
		log:       log,
		token:     cfg.Token,
		namespace: cfg.Namespace,
		group:     cfg.Group,
		instance:  cfg.InstanceID,
		capacity:  int32(cfg.Capacity),
		limits:    &c.limits,
		nonces:    newNonceMemory(maxNonces),
		now:       func() time.Time { return c.now() },
	}
	c.pol = &policySync{api: c.api, reg: reg, log: log, interval: cfg.PolicyRefreshInterval,
		rec: c.tracker("retryhub: cannot fetch scene policies; scenes keep the last known ones (their code defaults until the server first answers)",
			"retryhub: scene policies refresh again")}
	c.hb = &heartbeat{
		api:      c.api,
		reg:      reg,
		log:      log,
		limits:   &c.limits,
		instance: cfg.InstanceID,
		capacity: cfg.Capacity,
		inFlight: func() int { return int(c.exec.inFlight.Load()) },
		interval: cfg.HeartbeatInterval,
		rec: c.tracker("retryhub: cannot register this instance or send its heartbeat; retrying in the background",
			"retryhub: the server lists this instance again"),
		rescan: make(chan struct{}, 1),
	}
	return c, nil
}

// tracker returns a recovery tracker with the client's retry delays, logging failing when a
// loop starts failing and recovered when it works again.
func (c *Client) tracker(failing, recovered string) *recovery.Tracker {
	return recovery.New(recovery.Params{Log: c.log, Failing: failing, Recovered: recovered,
		MinDelay: c.cfg.RetryMinDelay, MaxDelay: c.cfg.RetryMaxDelay, FixDelay: c.cfg.ConfigErrorDelay})
}

// Start starts the process-wide client, which serves the scenes declared with Retryable, and
// returns it. Only one process-wide client runs at a time; Start again after its Shutdown.
//
// Start fails only for problems of this process: an invalid Config, a spool directory it
// cannot open or that another process holds, an address it cannot listen on. An unreachable
// server is not an error: Start waits for the server's first answers at most until ctx ends
// and at most 5 seconds, then keeps trying in the background while calls use the code
// defaults of their scenes and failed calls queue their reports.
func Start(ctx context.Context, cfg Config) (*Client, error) {
	c, err := newClient(cfg, defaultRegistry)
	if err != nil {
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Start starts an explicit client made with NewClient; see the package-level Start for what
// it does and when it fails.
func (c *Client) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != clientNew {
		return errors.New("retryhub: Start: the client was started before; a Client starts once")
	}
	var loaded []spool.Item
	if c.cfg.SpoolDir != "" {
		sp, items, err := spool.Open(c.cfg.SpoolDir, c.cfg.Namespace, c.cfg.Group, c.log)
		if err != nil {
			return fmt.Errorf("retryhub: Start: %w", err)
		}
		c.spool, loaded = sp, items
		if len(items) > 0 {
			c.log.Info("retryhub: re-sending reports found in the spool", "count", len(items), "dir", c.cfg.SpoolDir)
		}
	}
	q := newQueue(c.cfg.MaxQueuedReports, c.cfg.ReportBatchSize, c.spool, loaded)

	fail := func(err error) error {
		if c.spool != nil {
			_ = c.spool.Close()
		}
		return fmt.Errorf("retryhub: Start: %w", err)
	}
	executorURL := c.cfg.ExecutorURL
	var ln net.Listener
	if c.cfg.ListenAddr != "" {
		var err error
		ln, err = net.Listen("tcp", c.cfg.ListenAddr)
		if err != nil {
			return fail(fmt.Errorf("executor listener: %w", err))
		}
		if executorURL == "" {
			executorURL = deriveExecutorURL(c.cfg.ListenAddr, ln.Addr())
		}
	}
	c.hb.executorURL = executorURL
	c.q.Store(q)
	scenes, ok := c.reg.attach(c)
	if !ok {
		c.q.Store(nil)
		if ln != nil {
			ln.Close()
		}
		return fail(errors.New("another client already serves these scenes; shut it down first"))
	}

	c.snd = &sender{
		q:        q,
		api:      c.api,
		log:      c.log,
		limits:   &c.limits,
		stats:    &c.stats,
		instance: c.cfg.InstanceID,
		rec:      c.tracker("retryhub: cannot deliver reports; they are kept and re-sent", "retryhub: reports are delivered again"),
		batch:    c.cfg.ReportBatchSize,
		interval: c.cfg.ReportInterval,
		flush:    make(chan struct{}, 1),
	}

	if ln != nil {
		mux := http.NewServeMux()
		mux.Handle(ExecutorPath, c.exec)
		c.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, ErrorLog: slog.NewLogLogger(c.log.Handler(), slog.LevelWarn)}
		c.srvDone = make(chan struct{})
		go func() {
			defer close(c.srvDone)
			if err := c.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				c.log.Error("retryhub: the executor listener stopped", "err", err)
			}
		}()
	}

	// The server's first answers, briefly: an unreachable server is retried in the background
	// (the loops go on from these trackers, so an outage is logged once).
	wctx, cancel := context.WithTimeout(ctx, startWait)
	if err := c.hb.register(wctx); err != nil {
		kind, fix := classify(err)
		c.hb.retryIn = c.hb.rec.Failed(err, kind, fix)
	}
	if err := c.pol.refresh(wctx); err != nil {
		kind, fix := classify(err)
		c.pol.rec.Failed(err, kind, fix)
	}
	cancel()

	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = stop
	hbCtx, hbStop := context.WithCancel(runCtx)
	c.hbStop, c.hbDone = hbStop, make(chan struct{})
	go func() {
		defer close(c.hbDone)
		c.hb.run(hbCtx)
	}()
	for _, loop := range []func(context.Context){c.pol.run, c.snd.run} {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			loop(runCtx)
		}()
	}
	c.state = clientRunning
	if executorURL == "" {
		c.log.Info("retryhub: client started; it reports only (no ListenAddr nor ExecutorURL, so it is sent no replays)",
			"scenes", len(scenes), "servers", c.cfg.Servers)
	} else {
		c.log.Info("retryhub: client started", "executor_url", executorURL, "scenes", len(scenes), "servers", c.cfg.Servers)
	}
	return nil
}

// sceneAdded takes a scene declared while the client runs.
func (c *Client) sceneAdded(s *scene) {
	c.pol.apply(s)
	c.hb.scenesChanged()
}

// Stats are a client's counters, for health checks and tests.
type Stats struct {
	// Queued is how many reports wait for the server to commit them.
	Queued int
	// Delivered counts reports the server committed (created or merged into a task).
	Delivered uint64
	// Merged counts the delivered reports that merged into an active task.
	Merged uint64
	// Rejected counts reports the server refused for good (each logged at error level).
	Rejected uint64
	// Registered says the server currently lists this instance.
	Registered bool
	// InFlight is how many replays and callbacks run now (counted from when their request's
	// headers pass the signature's first checks).
	InFlight int
	// Calls counts the calls of the client's retryable functions (replays the server sends
	// are not calls); Failed counts those whose first attempt failed, and LocalRetries the
	// attempts after the first that ran in the process. A function declared with Retryable
	// counts toward the process-wide client.
	Calls        uint64
	Failed       uint64
	LocalRetries uint64
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	st := Stats{
		Delivered: c.stats.delivered.Load(),
		Merged:    c.stats.merged.Load(),
		Rejected:  c.stats.rejected.Load(),
		InFlight:  int(c.exec.inFlight.Load()),

		Calls:        c.reg.calls.calls.Load(),
		Failed:       c.reg.calls.failed.Load(),
		LocalRetries: c.reg.calls.localRetries.Load(),
	}
	if q := c.q.Load(); q != nil {
		st.Queued = q.len()
	}
	st.Registered = c.hb.registered.Load()
	return st
}

// Shutdown stops the client within ctx: it deregisters the instance so the server sends no
// more replays, lets running replays finish, delivers the queued reports, and stops. Failed
// calls from then on are not reported (ErrNotStarted). Reports it could not deliver before
// ctx ended stay in the spool when there is one, for the next start to send; without a spool
// they are lost, and Shutdown returns an error that says how many.
func (c *Client) Shutdown(ctx context.Context) error {
	c.mu.Lock()
	if c.state != clientRunning {
		c.mu.Unlock()
		return nil
	}
	c.state = clientStopping
	c.mu.Unlock()

	var errs []error
	c.exec.stopping.Store(true)
	c.reg.detach(c)

	// No more replays: stop the heartbeat (so nothing registers again), then deregister.
	c.hbStop()
	<-c.hbDone
	if err := c.hb.deregister(ctx); err != nil {
		c.log.Warn("retryhub: cannot deregister; the server drops the instance when its TTL passes", "err", err)
	}
	// Running replays finish.
	if c.srv != nil {
		if err := c.srv.Shutdown(ctx); err != nil {
			_ = c.srv.Close()
			errs = append(errs, fmt.Errorf("stop the executor listener: replays still running were cut off: %w", err))
		}
		<-c.srvDone
	}
	c.waitIdle(ctx)

	// Reports: none are added from now on; deliver the rest within ctx.
	q := c.q.Load()
	q.close()
	c.flushReports(ctx, q)

	c.cancel()
	c.wg.Wait()
	if c.ownHTTP {
		c.cfg.HTTPClient.CloseIdleConnections()
	}
	left := q.len()
	if c.spool != nil {
		if err := c.spool.Close(); err != nil {
			errs = append(errs, err)
		}
		if left > 0 {
			c.log.Warn("retryhub: undelivered reports stay in the spool for the next start", "count", left, "dir", c.cfg.SpoolDir)
		}
	} else if left > 0 {
		errs = append(errs, fmt.Errorf("%d reports were not delivered and are lost (no spool directory): %w", left, context.Cause(ctx)))
	}
	c.mu.Lock()
	c.state = clientStopped
	c.mu.Unlock()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("retryhub: Shutdown: %w", err)
	}
	c.log.Info("retryhub: client stopped", "delivered", c.stats.delivered.Load(), "rejected", c.stats.rejected.Load())
	return nil
}

// waitIdle waits until no replay runs or ctx ends.
func (c *Client) waitIdle(ctx context.Context) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for c.exec.inFlight.Load() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// flushReports asks the sender to deliver everything and waits until the queue is empty or
// ctx ends.
func (c *Client) flushReports(ctx context.Context, q *queue) {
	c.snd.draining.Store(true)
	select {
	case c.snd.flush <- struct{}{}:
	default:
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for q.len() > 0 {
		if q.pendingLen() > 0 {
			// Reports pushed while the sender went idle: wake it without waiting for its tick.
			q.signal()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

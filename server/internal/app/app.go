// Package app wires a retryhub server node together: storage, catalog, dispatch, the
// scheduler's loops and the HTTP APIs. main builds one App from the configuration; tests build
// several to make a cluster.
package app

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/retryhub/retryhub/server/internal/alert"
	"github.com/retryhub/retryhub/server/internal/alert/notify"
	"github.com/retryhub/retryhub/server/internal/api/clientapi"
	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
	"github.com/retryhub/retryhub/server/internal/api/httpx"
	"github.com/retryhub/retryhub/server/internal/auth"
	"github.com/retryhub/retryhub/server/internal/catalog"
	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/dispatch"
	"github.com/retryhub/retryhub/server/internal/metrics"
	"github.com/retryhub/retryhub/server/internal/ops"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/scheduler"
	"github.com/retryhub/retryhub/server/internal/service"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/web"
)

// Version is the server's version, set at build time with -ldflags "-X ...app.Version=…".
var Version = "0.1.0-dev"

// App is one server node.
type App struct {
	cfg    config.Config
	log    *slog.Logger
	NodeID string

	Store      *storage.Store
	Catalog    *catalog.Catalog
	Registry   *dispatch.Registry
	Settler    *dispatch.Settler
	Dispatcher *dispatch.Dispatcher
	Heartbeat  *scheduler.Heartbeat
	Leaser     *scheduler.Leaser
	Elector    *scheduler.Elector
	Claimer    *scheduler.Claimer
	Sweeper    *scheduler.Sweeper
	Janitor    *scheduler.Janitor
	// Channels seals the alert channels' settings; Alerts evaluates the rules on the leader.
	Channels *alert.Channels
	Alerts   *alert.Evaluator
	Ops      *ops.Service
	// Jobs works through the operators' bulk jobs.
	Jobs       *ops.Runner
	ClientAPI  *clientapi.API
	Auth       *auth.Service
	ConsoleAPI *consoleapi.API
	// NoncePruner deletes the client requests' nonces once their signatures have expired.
	NoncePruner *clientapi.NoncePruner
	// Metrics is the node's Prometheus registry and the metrics its parts feed (/metrics).
	Metrics *metrics.Metrics

	// services are the node's long-running parts in start order; they stop in reverse.
	services *service.List
	server   *http.Server
	tls      *tls.Config // nil: plain HTTP
	listener net.Listener
	served   chan error
	stopOnce sync.Once
}

// shutdownGrace is how long past server.shutdown_timeout (or Shutdown's context) a graceful
// shutdown may take: the calls in flight are cancelled that long before the end, leaving it for
// their results to be written, the claims given back and the leases released.
const shutdownGrace = 5 * time.Second

// New opens the database (migrating it), creates the bootstrap group in an empty database,
// and builds the node. Start runs it.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dsn, err := config.ParseDSN(cfg.Database.DSN)
	if err != nil {
		return nil, fmt.Errorf("config database.dsn: %w", err)
	}
	nodeID := cfg.Server.NodeID
	if nodeID == "" {
		nodeID = defaultNodeID()
	}
	log = log.With("node", nodeID)
	m := metrics.New(Version, log)
	store, err := storage.Open(ctx, dsn, storage.Options{MaxOpenConns: cfg.Database.MaxOpenConns,
		MaxIdleConns: cfg.Database.MaxIdleConns, ConnMaxLife: cfg.Database.ConnMaxLife,
		SlowQuery: cfg.Database.SlowQuery, Logger: log, OnError: m.DatabaseError})
	if err != nil {
		return nil, err
	}
	if err := store.Migrate(ctx, cfg.Scheduler.Buckets); err != nil {
		store.Close()
		return nil, err
	}
	if err := bootstrap(ctx, store, cfg.Bootstrap, log); err != nil {
		store.Close()
		return nil, err
	}

	a := &App{cfg: cfg, log: log, NodeID: nodeID, Store: store, Metrics: m}
	key, err := alert.LoadKey(ctx, store, cfg.Alert.SecretKey, log)
	if err == nil {
		a.Channels, err = alert.NewChannels(key, notify.Options{})
	}
	if err != nil {
		store.Close()
		return nil, err
	}
	if err := a.build(); err != nil {
		store.Close()
		return nil, err
	}
	if a.Auth, err = auth.New(ctx, auth.Params{Store: store, Secret: cfg.Auth.JWTSecret, TokenTTL: cfg.Auth.TokenTTL,
		BcryptCost: cfg.Auth.BcryptCost, Log: log}); err != nil {
		store.Close()
		return nil, err
	}
	if err := bootstrapAdmin(ctx, store, a.Auth, cfg.Bootstrap.AdminPassword, log); err != nil {
		store.Close()
		return nil, err
	}
	a.ConsoleAPI = consoleapi.New(consoleapi.Params{Store: store, Auth: a.Auth, Version: Version, Log: log,
		InstanceTTL: cfg.Dispatch.InstanceTTL, NodeTTL: cfg.Scheduler.NodeTTL, // dashboard: liveness windows
		MaxPayloadBytes: cfg.ClientAPI.MaxPayloadBytes, Jobs: a.Jobs, Alerts: a.Alerts, Channels: a.Channels})
	// The HTTP server's own complaints (a failed TLS handshake, a client that hung up) go to
	// the node's log at info level: they are the clients' problems, not the node's.
	a.server = &http.Server{Handler: a.routes(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelInfo)}
	if cfg.Server.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.Server.TLSCertFile, cfg.Server.TLSKeyFile)
		if err != nil {
			store.Close()
			return nil, fmt.Errorf("config server.tls_cert_file, server.tls_key_file: %w", err)
		}
		a.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	return a, nil
}

// build constructs the node's parts, each from its parameters, and lists the services in the
// order they start: what others read from first (registry, settler), then dispatch and the
// loops that feed it, then the scheduled jobs.
func (a *App) build() error {
	cfg, log, store, nodeID := a.cfg, a.log, a.Store, a.NodeID
	s, d := cfg.Scheduler, cfg.Dispatch
	a.Catalog = catalog.New(catalog.Params{Store: store, TTL: cfg.Catalog.TTL, MaxEntries: cfg.Catalog.MaxEntries, Log: log})
	a.Registry = dispatch.NewRegistry(dispatch.RegistryParams{Store: store, TTL: d.InstanceTTL, Interval: time.Second,
		Place: func() (int, int) { return a.Leaser.Place() }, Log: log})
	writers := store.Writers(d.SettleWriters) // one at a time is all SQLite has
	a.Settler = dispatch.NewSettler(dispatch.SettlerParams{Store: store, Batch: d.SettleBatch, Interval: d.SettleInterval,
		Writers: writers, Observer: a.Metrics, Log: log})
	a.Heartbeat = scheduler.NewHeartbeat(scheduler.HeartbeatParams{Store: store, Node: retry.Node{ID: nodeID,
		Address: advertise(cfg.Server), Version: Version, StartedAt: time.Now()}, Interval: s.HeartbeatInterval, Log: log})
	a.Leaser = scheduler.NewLeaser(scheduler.LeaserParams{Store: store, Log: log, NodeID: nodeID, Buckets: s.Buckets,
		Interval: s.HeartbeatInterval, NodeTTL: s.NodeTTL, LeaseDuration: s.LeaseDuration})
	a.Elector = scheduler.NewElector(scheduler.ElectorParams{Store: store, NodeID: nodeID, Interval: s.HeartbeatInterval,
		LeaseDuration: s.LeaseDuration, Log: log})
	waker := scheduler.NewWaker()
	a.Dispatcher = dispatch.NewDispatcher(dispatch.Params{NodeID: nodeID, Store: store, Catalog: a.Catalog,
		Registry: a.Registry, Settler: a.Settler, Log: log, Concurrency: d.Concurrency, QueueSize: d.QueueSize,
		MaxQueuedBytes: d.MaxQueuedBytes, DefaultTimeout: d.DefaultTimeout, NoInstanceDelay: d.NoInstanceDelay,
		BusyDelay: d.BusyDelay, PausedDelay: d.PausedDelay, ClaimTimeout: s.ClaimTimeout, StopReserve: shutdownGrace,
		MaxBatch: d.MaxBatch, MaxBatchBytes: d.MaxBatchBytes,
		Nodes: a.Leaser.Nodes, OnRoom: waker.Wake, Observer: a.Metrics})
	// A claim lasts through an attempt of the default timeout; scenes with longer ones extend
	// their claims as they dispatch.
	var err error
	a.Claimer, err = scheduler.NewClaimer(scheduler.ClaimerParams{Store: store, Held: a.Leaser.Held, Sink: a.Dispatcher,
		Waker: waker, Tick: s.Tick, Log: log, NodeID: nodeID, Batch: s.ClaimBatch, Lookahead: s.Lookahead,
		ClaimTimeout: s.ClaimTimeout + d.DefaultTimeout + dispatch.Grace})
	if err != nil {
		return fmt.Errorf("config scheduler.tick: %w", err)
	}
	a.Sweeper = scheduler.NewSweeper(scheduler.SweeperParams{Store: store, Catalog: a.Catalog, Held: a.Leaser.Held,
		Leader: a.Elector, Interval: s.SweepInterval, InstanceTTL: d.InstanceTTL, Log: log})
	a.Janitor, err = scheduler.NewJanitor(scheduler.JanitorParams{Store: store, Retention: cfg.Retention,
		ForgetAfter: 24 * time.Hour, Leader: a.Elector, Log: log})
	if err != nil {
		return fmt.Errorf("config retention.schedule: %w", err)
	}
	a.Alerts, err = alert.NewEvaluator(alert.Params{Store: store, Leader: a.Elector, Spec: cfg.Alert.Evaluate, Sender: a.Channels.Sender,
		PublicURL: cfg.Server.PublicURL, Buckets: s.Buckets, History: cfg.Alert.HistoryRetention, Log: log})
	if err != nil {
		return fmt.Errorf("config alert.evaluate: %w", err)
	}
	a.Ops = ops.New(store, log)
	a.Jobs = ops.NewRunner(ops.RunnerParams{Store: store, NodeID: nodeID, Rate: cfg.ConsoleAPI.BulkRate,
		Lease: s.LeaseDuration, Log: log})
	a.ClientAPI = clientapi.New(clientapi.Params{MaxBodyBytes: cfg.ClientAPI.MaxBodyBytes, MaxInflightBytes: cfg.ClientAPI.MaxInflightBytes,
		MaxPayloadBytes: cfg.ClientAPI.MaxPayloadBytes, MaxBatch: cfg.ClientAPI.MaxBatch,
		SignatureWindow: cfg.ClientAPI.SignatureWindow, InstanceHeartbeat: d.InstanceHeartbeat,
		InstanceTTL: d.InstanceTTL, Buckets: s.Buckets}, store, a.Catalog, a.Registry, log)
	a.NoncePruner = clientapi.NewNoncePruner(clientapi.NoncePrunerParams{Store: store, Log: log})
	if err := a.watch(); err != nil {
		return err
	}
	// Stopping runs this backwards: the jobs and the claimer end, dispatch gives back what it
	// did not start and hands its results to the settler, the settler writes them, and only
	// then are the leases, the leadership and the node row given up.
	a.services = service.NewList(
		// The catalog's background refresh first: everything below reads it.
		service.Named{Name: "catalog", Service: a.Catalog},
		service.Named{Name: "heartbeat", Service: a.Heartbeat},
		service.Named{Name: "leaser", Service: a.Leaser},
		service.Named{Name: "elector", Service: a.Elector},
		service.Named{Name: "registry", Service: a.Registry},
		service.Named{Name: "settler", Service: a.Settler},
		service.Named{Name: "dispatcher", Service: a.Dispatcher},
		service.Named{Name: "claimer", Service: a.Claimer},
		service.Named{Name: "sweeper", Service: a.Sweeper},
		service.Named{Name: "janitor", Service: a.Janitor},
		service.Named{Name: "alert evaluator", Service: a.Alerts},
		service.Named{Name: "nonce pruner", Service: a.NoncePruner},
		service.Named{Name: "job runner", Service: a.Jobs},
	)
	return nil
}

func defaultNodeID() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "node"
	}
	if len(host) > 40 {
		host = host[:40]
	}
	var b [3]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

func advertise(s config.Server) string {
	if s.Advertise != "" {
		return s.Advertise
	}
	return s.Listen
}

func (a *App) routes() http.Handler {
	// gin prints every route in its debug mode; the server logs through slog instead.
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(httpx.Recover(a.log), httpx.Log(a.log))
	r.GET("/healthz", a.health)
	a.mountMetrics(r)
	a.ClientAPI.Mount(r)
	a.ConsoleAPI.Mount(r)
	files := web.Handler()
	r.NoRoute(func(c *gin.Context) {
		// The console's files answer GET and HEAD outside /api/; every /api/ answer is JSON.
		api := c.Request.URL.Path == "/api" || strings.HasPrefix(c.Request.URL.Path, "/api/")
		if !api && (c.Request.Method == http.MethodGet || c.Request.Method == http.MethodHead) {
			files.ServeHTTP(c.Writer, c.Request)
			return
		}
		httpx.Error(c, http.StatusNotFound, "not_found", "no such endpoint: "+c.Request.Method+" "+c.Request.URL.Path)
	})
	return r
}

// Health is the /healthz answer.
type Health struct {
	Status      string `json:"status"`
	NodeID      string `json:"node_id"`
	Version     string `json:"version"`
	Database    string `json:"database"`
	Dialect     string `json:"dialect"`
	Buckets     int    `json:"buckets"`
	BucketsHeld int    `json:"buckets_held"`
	Nodes       int    `json:"nodes"`
	Pending     int    `json:"pending"`
	// Leader says whether this node leads the singleton work.
	Leader bool `json:"leader"`
	// QueuedBytes is the arguments' size of the claims dispatch holds.
	QueuedBytes int64 `json:"queued_bytes"`
	// SweepSkipped counts the stuck tasks the sweeper skipped because it could not settle them.
	SweepSkipped int64 `json:"sweep_skipped"`
}

func (a *App) health(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 3*time.Second)
	defer cancel()
	h := Health{Status: "ok", NodeID: a.NodeID, Version: Version, Database: "ok", Dialect: a.Store.Dialect(),
		Buckets: a.cfg.Scheduler.Buckets, BucketsHeld: len(a.Leaser.Held()), Nodes: a.Leaser.Nodes(),
		Pending: a.Dispatcher.Pending(), Leader: a.Elector.IsLeader(), QueuedBytes: a.Dispatcher.QueuedBytes(),
		SweepSkipped: a.Sweeper.Skipped()}
	status := http.StatusOK
	if err := a.Store.Ping(ctx); err != nil {
		h.Status, h.Database = "unavailable", err.Error()
		status = http.StatusServiceUnavailable
	}
	c.JSON(status, h)
}

// Start listens, then starts the services in order (the heartbeat and the leaser take this
// node's place and buckets under ctx before the loops run), then serves.
func (a *App) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("config server.listen: %w", err)
	}
	if a.tls != nil {
		ln = tls.NewListener(ln, a.tls)
	}
	ln = bindConnections(a.server, ln, a.cfg.Server.MaxConnections)
	a.listener = ln
	if err := a.services.Start(ctx); err != nil {
		ln.Close()
		return err
	}
	a.served = make(chan error, 1)
	go func() { a.served <- a.server.Serve(ln) }()
	a.log.Info("retryhub server started", "listen", ln.Addr().String(), "version", Version,
		"database", a.Store.Dialect(), "buckets", a.cfg.Scheduler.Buckets, "buckets_held", len(a.Leaser.Held()))
	return nil
}

// Addr is the address the node listens on.
func (a *App) Addr() string { return a.listener.Addr().String() }

// URL is the node's base URL: https when it serves TLS.
func (a *App) URL() string {
	if a.tls != nil {
		return "https://" + a.Addr()
	}
	return "http://" + a.Addr()
}

// Shutdown stops the node gracefully: no new claims; calls in flight finish until shortly
// before ctx ends (shutdownGrace before its deadline, then they are cancelled and their tasks
// given back); claims not started are given back; results are written; the leadership and the
// buckets are released for the other nodes; requests in progress finish. It returns within
// ctx's deadline plus shutdownGrace (a ctx without a deadline gets server.shutdown_timeout),
// whatever the database does, and logs what it could not write.
func (a *App) Shutdown(ctx context.Context) error {
	var err error
	a.stopOnce.Do(func() {
		a.log.Info("shutting down")
		deadline, ok := ctx.Deadline()
		if !ok {
			deadline = time.Now().Add(a.cfg.Server.ShutdownTimeout)
		}
		// The services get the grace beyond ctx to write what the calls cancelled at its end
		// left, so their context outlives ctx.
		sctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline.Add(shutdownGrace))
		defer cancel()
		// Requests in progress get until the deadline, even when ctx has none: a handler stuck
		// on a database that hangs is then cut off with its connection.
		hctx, hcancel := context.WithDeadline(ctx, deadline)
		defer hcancel()
		httpDone := make(chan error, 1)
		go func() { httpDone <- a.server.Shutdown(hctx) }()
		a.services.Stop(sctx)
		if herr := <-httpDone; herr != nil {
			a.server.Close()
			err = fmt.Errorf("http shutdown: %w", herr)
		}
		if a.served != nil { // nil when Start never ran or failed
			if serr := <-a.served; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
				err = errors.Join(err, serr)
			}
		}
		a.Store.Close()
		a.log.Info("stopped")
	})
	return err
}

// Kill stops the node the way a crash would: nothing in memory is written or given back, and
// its leases, leadership and node row are left to expire. Tests use it to prove that nothing
// is lost.
func (a *App) Kill() {
	a.stopOnce.Do(func() {
		a.server.Close()
		a.services.Kill()
		if a.served != nil {
			<-a.served
		}
		a.Store.Close()
		a.log.Info("killed")
	})
}

// Run starts the node and shuts it down when ctx ends.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	a, err := New(ctx, cfg, log)
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		a.Store.Close()
		return err
	}
	select {
	case <-ctx.Done():
	case err := <-a.served:
		return fmt.Errorf("http server: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout)
	defer cancel()
	return a.Shutdown(sctx)
}

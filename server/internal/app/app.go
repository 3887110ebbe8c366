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
	"github.com/robfig/cron/v3"

	"github.com/retryhub/retryhub/server/internal/api/clientapi"
	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
	"github.com/retryhub/retryhub/server/internal/api/httpx"
	"github.com/retryhub/retryhub/server/internal/auth"
	"github.com/retryhub/retryhub/server/internal/catalog"
	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/dispatch"
	"github.com/retryhub/retryhub/server/internal/ops"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/scheduler"
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
	Claimer    *scheduler.Claimer
	Sweeper    *scheduler.Sweeper
	Janitor    *scheduler.Janitor
	Ops        *ops.Service
	ClientAPI  *clientapi.API
	Auth       *auth.Service
	ConsoleAPI *consoleapi.API
	// NoncePruner deletes the client requests' nonces once their signatures have expired.
	NoncePruner *clientapi.NoncePruner

	cron     *cron.Cron
	server   *http.Server
	tls      *tls.Config // nil: plain HTTP
	listener net.Listener
	served   chan error
	stopOnce sync.Once
}

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
	store, err := storage.Open(ctx, dsn, storage.Options{MaxOpenConns: cfg.Database.MaxOpenConns,
		MaxIdleConns: cfg.Database.MaxIdleConns, ConnMaxLife: cfg.Database.ConnMaxLife,
		SlowQuery: cfg.Database.SlowQuery, Logger: log})
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

	a := &App{cfg: cfg, log: log, NodeID: nodeID, Store: store}
	s, d := cfg.Scheduler, cfg.Dispatch
	a.Catalog = catalog.New(catalog.Params{Store: store, TTL: cfg.Catalog.TTL, MaxEntries: cfg.Catalog.MaxEntries, Log: log})
	a.Registry = dispatch.NewRegistry(store, d.InstanceTTL, time.Second, log)
	a.Settler = dispatch.NewSettler(store, d.SettleBatch, d.SettleInterval, log)
	a.Settler.Writers = d.SettleWriters
	if store.Dialect() == config.SQLite {
		a.Settler.Writers = 1 // one writer at a time is all SQLite has
	}
	a.Heartbeat = scheduler.NewHeartbeat(store, retry.Node{ID: nodeID, Address: advertise(cfg.Server),
		Version: Version, StartedAt: time.Now()}, s.HeartbeatInterval, log)
	a.Leaser = scheduler.NewLeaser(store, scheduler.LeaserParams{NodeID: nodeID, Buckets: s.Buckets,
		Interval: s.HeartbeatInterval, NodeTTL: s.NodeTTL, LeaseDuration: s.LeaseDuration}, log)
	a.Dispatcher = dispatch.NewDispatcher(dispatch.Params{NodeID: nodeID, Concurrency: d.Concurrency,
		QueueSize: d.QueueSize, DefaultTimeout: d.DefaultTimeout, NoInstanceDelay: d.NoInstanceDelay,
		BusyDelay: d.BusyDelay, PausedDelay: d.PausedDelay, ClaimTimeout: s.ClaimTimeout, Nodes: a.Leaser.Nodes},
		store, a.Catalog, a.Registry, a.Settler, log)
	// A claim lasts through an attempt of the default timeout; scenes with longer ones extend
	// their claims as they dispatch.
	a.Claimer = scheduler.NewClaimer(store, scheduler.ClaimerParams{NodeID: nodeID, Batch: s.ClaimBatch,
		Lookahead: s.Lookahead, ClaimTimeout: s.ClaimTimeout + d.DefaultTimeout + dispatch.Grace},
		a.Leaser.Held, a.Dispatcher, log)
	a.Dispatcher.OnRoom = a.Claimer.Wake
	a.Sweeper = scheduler.NewSweeper(store, a.Catalog, a.Leaser.Held, nodeID, s.SweepInterval, d.InstanceTTL, log)
	a.Janitor = scheduler.NewJanitor(store, cfg.Retention, 24*time.Hour, log)
	a.Ops = ops.New(store, log)
	a.ClientAPI = clientapi.New(clientapi.Params{MaxBodyBytes: cfg.ClientAPI.MaxBodyBytes, MaxInflightBytes: cfg.ClientAPI.MaxInflightBytes,
		MaxPayloadBytes: cfg.ClientAPI.MaxPayloadBytes, MaxBatch: cfg.ClientAPI.MaxBatch,
		SignatureWindow: cfg.ClientAPI.SignatureWindow, InstanceHeartbeat: d.InstanceHeartbeat,
		InstanceTTL: d.InstanceTTL, Buckets: s.Buckets}, store, a.Catalog, a.Registry, log)
	if a.Auth, err = auth.New(ctx, auth.Params{Store: store, Secret: cfg.Auth.JWTSecret, TokenTTL: cfg.Auth.TokenTTL,
		BcryptCost: cfg.Auth.BcryptCost, Log: log}); err != nil {
		store.Close()
		return nil, err
	}
	if err := bootstrapAdmin(ctx, store, a.Auth, cfg.Bootstrap.AdminPassword, log); err != nil {
		store.Close()
		return nil, err
	}
	a.ConsoleAPI = consoleapi.New(consoleapi.Params{Store: store, Auth: a.Auth, Version: Version, Log: log})
	a.NoncePruner = clientapi.NewNoncePruner(clientapi.NoncePrunerParams{Store: store, Log: log})

	a.cron = cron.New(cron.WithParser(cron.NewParser(cron.SecondOptional|cron.Minute|cron.Hour|cron.Dom|
		cron.Month|cron.Dow|cron.Descriptor)), cron.WithLogger(cron.DiscardLogger))
	if _, err := a.cron.AddFunc(s.Tick, a.Claimer.Wake); err != nil {
		store.Close()
		return nil, fmt.Errorf("config scheduler.tick: %w", err)
	}
	if _, err := a.cron.AddFunc(cfg.Retention.Schedule, a.retention); err != nil {
		store.Close()
		return nil, fmt.Errorf("config retention.schedule: %w", err)
	}
	a.server = &http.Server{Handler: a.routes(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
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

// retention runs the janitor on the node that holds bucket 0, so one node does it at a time.
func (a *App) retention() {
	held := a.Leaser.Held()
	if len(held) == 0 || held[0] != 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := a.Janitor.Exec(ctx); err != nil {
		a.log.Error("retention", "err", err)
	}
}

func (a *App) routes() http.Handler {
	// gin prints every route in its debug mode; the server logs through slog instead.
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(httpx.Recover(a.log), httpx.Log(a.log))
	r.GET("/healthz", a.health)
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
}

func (a *App) health(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 3*time.Second)
	defer cancel()
	h := Health{Status: "ok", NodeID: a.NodeID, Version: Version, Database: "ok", Dialect: a.Store.Dialect(),
		Buckets: a.cfg.Scheduler.Buckets, BucketsHeld: len(a.Leaser.Held()), Nodes: a.Leaser.Nodes(),
		Pending: a.Dispatcher.Pending()}
	status := http.StatusOK
	if err := a.Store.Ping(ctx); err != nil {
		h.Status, h.Database = "unavailable", err.Error()
		status = http.StatusServiceUnavailable
	}
	c.JSON(status, h)
}

// Start listens, takes this node's buckets and runs every loop.
func (a *App) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("config server.listen: %w", err)
	}
	if a.tls != nil {
		ln = tls.NewListener(ln, a.tls)
	}
	a.listener = ln
	if err := a.Heartbeat.Beat(ctx); err != nil {
		ln.Close()
		return err
	}
	if err := a.Leaser.Exec(ctx); err != nil {
		ln.Close()
		return err
	}
	if err := a.Registry.Start(ctx); err != nil {
		ln.Close()
		return err
	}
	a.Settler.Start()
	a.Dispatcher.Start()
	a.Claimer.Start()
	a.Sweeper.Start()
	a.Heartbeat.Start()
	a.Leaser.Start()
	a.cron.Start()
	a.Catalog.Start(ctx)
	a.NoncePruner.Start(ctx)
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

// Shutdown stops the node gracefully: no new claims; calls in flight finish (until ctx ends,
// then they are cancelled and their tasks given back); claims not started are given back;
// results are written; buckets are released for the other nodes; requests in progress finish.
func (a *App) Shutdown(ctx context.Context) error {
	var err error
	a.stopOnce.Do(func() {
		a.log.Info("shutting down")
		<-a.cron.Stop().Done()
		a.Claimer.Stop()
		httpDone := make(chan error, 1)
		go func() { httpDone <- a.server.Shutdown(ctx) }()
		a.Dispatcher.Stop(ctx)
		a.Sweeper.Stop()
		// Write the results, give back the claims and release the buckets with a fresh context:
		// they matter even when ctx is spent, as it is when calls in flight outlived it (they
		// were cancelled, and their give-backs are among the results to write).
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		a.Settler.Stop(rctx)
		a.Leaser.Stop(rctx)
		a.Heartbeat.Stop(rctx)
		cancel()
		a.Registry.Stop()
		// Their work in progress is cancelled, so they return at once even when ctx is spent.
		a.NoncePruner.Stop(context.Background())
		a.Catalog.Stop(context.Background())
		if herr := <-httpDone; herr != nil {
			err = fmt.Errorf("http shutdown: %w", herr)
		}
		if serr := <-a.served; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		a.Store.Close()
		a.log.Info("stopped")
	})
	return err
}

// Kill stops the node the way a crash would: nothing in memory is written or given back, and
// its leases and node row are left to expire. Tests use it to prove that nothing is lost.
func (a *App) Kill() {
	a.stopOnce.Do(func() {
		a.cron.Stop()
		a.Claimer.Stop()
		a.server.Close()
		a.Dispatcher.Abandon()
		a.Settler.Abandon()
		a.Sweeper.Stop()
		a.Leaser.Abandon()
		a.Heartbeat.Abandon()
		a.Registry.Stop()
		a.NoncePruner.Stop(context.Background())
		a.Catalog.Stop(context.Background())
		<-a.served
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

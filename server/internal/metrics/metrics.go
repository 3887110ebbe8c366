// Package metrics keeps a node's Prometheus metrics: counters and histograms the other parts
// feed as they work (reports stored, attempts made, settlement batches written, database
// errors), gauges read from the parts' own counters when scraped (claims in memory, buckets
// held), and the tasks per scene and state read from the totals the store keeps, at most every
// few seconds. Nothing counts rows of the task table on a scrape.
//
// Each node has its own Metrics with its own registry: several nodes in one process (tests)
// never share a series.
package metrics

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/retryhub/retryhub/server/internal/retry"
)

// Namespace starts every metric name of the server.
const Namespace = "retryhub"

// Metrics is a node's registry and the metrics the node's parts feed. Its methods are safe for
// concurrent use, and cheap: the hot paths call them for every attempt.
type Metrics struct {
	reg *prometheus.Registry
	log *slog.Logger

	reports  *prometheus.CounterVec
	attempts *prometheus.CounterVec
	lag      *prometheus.HistogramVec
	duration *prometheus.HistogramVec
	settle   *prometheus.HistogramVec
	dbErrors prometheus.Counter

	// The observers of the hot paths, one per label value, looked up once here.
	attemptsBy map[retry.AttemptKind]map[retry.Outcome]prometheus.Counter
	lagBy      map[retry.AttemptKind]prometheus.Observer
	durationBy map[retry.AttemptKind]prometheus.Observer
}

var (
	kinds    = []retry.AttemptKind{retry.KindReplay, retry.KindCallback}
	outcomes = []retry.Outcome{retry.OutcomeSucceeded, retry.OutcomeFailed, retry.OutcomeTimedOut}
)

// New returns a node's metrics, with the Go runtime's and the process's, and the server's
// version in retryhub_build_info.
func New(version string, log *slog.Logger) *Metrics {
	if log == nil {
		log = slog.Default()
	}
	m := &Metrics{reg: prometheus.NewRegistry(), log: log,
		attemptsBy: map[retry.AttemptKind]map[retry.Outcome]prometheus.Counter{},
		lagBy:      map[retry.AttemptKind]prometheus.Observer{}, durationBy: map[retry.AttemptKind]prometheus.Observer{}}
	m.reports = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "reports_total",
		Help: "Reported failures stored, by result: created a task, or merged into an active task with the same idempotency key."},
		[]string{"result"})
	m.attempts = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "attempts_total",
		Help: "Replays and callbacks this node sent to client instances, by kind and outcome."},
		[]string{"kind", "outcome"})
	m.lag = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "dispatch_lag_seconds",
		Help:    "How long after a task was due its call went out, by kind.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}},
		[]string{"kind"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "attempt_duration_seconds",
		Help:    "How long a replay's or callback's call to a client instance took, by kind.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}},
		[]string{"kind"})
	m.settle = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "settle_batch_duration_seconds",
		Help:    "How long one write of a batch of settlements (results, releases) took, by result: ok or error.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}},
		[]string{"result"})
	m.dbErrors = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "database_errors_total",
		Help: "Errors the database returned (a row not found or a key taken is no error): statements, transactions and the scene totals' reads."})
	build := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "build_info",
		Help: "Always 1; the version label is the server's version.", ConstLabels: prometheus.Labels{"version": version}})
	build.Set(1)
	m.reg.MustRegister(m.reports, m.attempts, m.lag, m.duration, m.settle, m.dbErrors, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every series of a label set known in advance exists from the start, at zero, so that a
	// rate over it has a value before the first event.
	for _, r := range []string{"created", "merged"} {
		m.reports.WithLabelValues(r)
	}
	for _, k := range kinds {
		m.attemptsBy[k] = map[retry.Outcome]prometheus.Counter{}
		for _, o := range outcomes {
			m.attemptsBy[k][o] = m.attempts.WithLabelValues(k.String(), o.String())
		}
		m.lagBy[k] = m.lag.WithLabelValues(k.String())
		m.durationBy[k] = m.duration.WithLabelValues(k.String())
	}
	m.settle.WithLabelValues("ok")
	m.settle.WithLabelValues("error")
	return m
}

// Registry is the node's registry, for a test to gather it or a caller to add its own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in Prometheus' text format (or OpenMetrics when asked). With a
// token, a request must carry "Authorization: Bearer <token>".
func (m *Metrics) Handler(token string) http.Handler {
	h := promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(m.log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      m.reg,
		Timeout:       10 * time.Second,
	})
	if token == "" {
		return h
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := strings.TrimSpace(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="retryhub metrics"`)
			http.Error(w, "metrics: a bearer token is required", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Ingested counts a stored report batch's tasks created and merged (clientapi's OnIngest).
func (m *Metrics) Ingested(created, merged int) {
	m.reports.WithLabelValues("created").Add(float64(created))
	m.reports.WithLabelValues("merged").Add(float64(merged))
}

// Attempt counts an attempt and observes its lag and duration (dispatch.Observer).
func (m *Metrics) Attempt(kind retry.AttemptKind, outcome retry.Outcome, lag, took time.Duration) {
	if c := m.attemptsBy[kind][outcome]; c != nil {
		c.Inc()
	} else {
		m.attempts.WithLabelValues(kind.String(), outcome.String()).Inc()
	}
	if o := m.lagBy[kind]; o != nil {
		o.Observe(lag.Seconds())
		m.durationBy[kind].Observe(took.Seconds())
	}
}

// SettleBatch observes a settlement batch's write (dispatch.Observer). The store counts a
// failed write's database error itself.
func (m *Metrics) SettleBatch(_ int, took time.Duration, err error) {
	if err != nil {
		m.settle.WithLabelValues("error").Observe(took.Seconds())
		return
	}
	m.settle.WithLabelValues("ok").Observe(took.Seconds())
}

// DatabaseError counts an error the database returned; a cancelled context is the caller's
// doing and does not count (storage.Options.OnError).
func (m *Metrics) DatabaseError(err error) {
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	m.dbErrors.Inc()
}

// Node is what a node tells of itself, read when scraped. A nil function leaves its metric out.
type Node struct {
	// Buckets is the cluster's number of buckets.
	Buckets int
	// BucketsHeld is how many buckets this node leases now.
	BucketsHeld func() int
	// Nodes is how many nodes the cluster has now.
	Nodes func() int
	// Leader says whether this node leads the singleton work.
	Leader func() bool
	// Claims is how many claims dispatch holds in memory; ClaimBytes their arguments' bytes.
	Claims     func() int
	ClaimBytes func() int64
}

// WatchNode registers the node's gauges.
func (m *Metrics) WatchNode(n Node) error {
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, f)
	}
	cs := []prometheus.Collector{gauge("buckets", "The cluster's number of buckets (scheduler.buckets).",
		func() float64 { return float64(n.Buckets) })}
	if n.BucketsHeld != nil {
		cs = append(cs, gauge("buckets_held", "Buckets this node leases: it claims their due tasks.",
			func() float64 { return float64(n.BucketsHeld()) }))
	}
	if n.Nodes != nil {
		cs = append(cs, gauge("nodes", "Server nodes alive in the cluster, as this node sees them.",
			func() float64 { return float64(n.Nodes()) }))
	}
	if n.Leader != nil {
		cs = append(cs, gauge("leader", "1 when this node leads the singleton work (sweeps, retention, alerts), else 0.",
			func() float64 {
				if n.Leader() {
					return 1
				}
				return 0
			}))
	}
	if n.Claims != nil {
		cs = append(cs, gauge("dispatch_claims", "Claims dispatch holds in memory: waiting for their time, queued or in flight.",
			func() float64 { return float64(n.Claims()) }))
	}
	if n.ClaimBytes != nil {
		cs = append(cs, gauge("dispatch_claim_bytes", "The arguments' bytes of the claims dispatch holds in memory.",
			func() float64 { return float64(n.ClaimBytes()) }))
	}
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return fmt.Errorf("register node metrics: %w", err)
		}
	}
	return nil
}

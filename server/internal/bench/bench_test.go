// Package bench measures the numbers that matter, against the real parts: reports ingested
// per second through real SDK clients and through the signed client API, next to the raw
// multi-row INSERT rate of the same database; replay attempts per second on a real SDK client
// with every attempt stored, next to the loopback HTTP round-trip rate; how late due tasks
// reach the SDK beside a large backlog, with the server's memory and the storage per task.
// `make bench` runs them; nothing here asserts a time.
//
// Sizes can be raised with RETRYHUB_BENCH_TASKS (default 20000) for longer runs, and the
// due-lag backlog with RETRYHUB_BENCH_BACKLOG (default 1,000,000; `make bench-10m` sets 10M).
// Once every benchmark has run, TestMain prints one table of the figures beside the limits
// measured in the same run (raw INSERT rate, loopback HTTP round trips) and the targets, and
// writes it as JSON to RETRYHUB_BENCH_OUT (default bench-results.json at the repository's
// root); RETRYHUB_BENCH_PEERS names the peers' results (../shared/peers/out) to print beside.
package bench

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/client-sdk/retryhub"
	"github.com/retryhub/retryhub/server/internal/app"
	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

const token = "bench-token-0123456789abcdef"

func tasks() int {
	if n, err := strconv.Atoi(os.Getenv("RETRYHUB_BENCH_TASKS")); err == nil && n > 0 {
		return n
	}
	return 20000
}

func eachDB(b *testing.B, fn func(b *testing.B, target storagetest.Target)) {
	b.Run("sqlite", func(b *testing.B) { fn(b, storagetest.SQLite(b)) })
	b.Run("mysql", func(b *testing.B) { fn(b, storagetest.MySQL(b)) })
}

func node(b *testing.B, target storagetest.Target) *app.App {
	b.Helper()
	cfg := config.Default()
	cfg.Server.Listen = "127.0.0.1:0"
	cfg.Database.DSN = target.DSN
	cfg.Database.SlowQuery = 0
	cfg.Bootstrap = config.Bootstrap{}
	cfg.Dispatch.SettleInterval = 5 * time.Millisecond
	ctx := context.Background()
	a, err := app.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	return a
}

// world is the bench's namespace, group and scene.
type world struct {
	namespace string
	group     retry.Group
	scene     retry.Scene
}

func setup(b *testing.B, a *app.App) world {
	b.Helper()
	return setupOn(b, a.Store)
}

// setupOn makes the bench's namespace, group and scene in s: a remote scene replayed an hour
// after each failure.
func setupOn(b *testing.B, s *storage.Store) world {
	b.Helper()
	ns := storagetest.RandomName("bench")
	f := testkit.NewFixture(b, s, ns, token, func(sc *retry.Scene) {
		sc.Mode = protocol.Remote
		sc.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Hour)}
	})
	return world{namespace: ns, group: f.Group, scene: f.Scene}
}

// BenchmarkLoopbackHTTP is the ceiling BenchmarkReplay is measured against, on its own: small
// JSON POSTs to an in-process HTTP server over loopback from 16 clients with keep-alive, for 2
// seconds, the best of reps, reported as round trips/s. It runs first, before any benchmark has
// left the database busy writing what it stored. BenchmarkReplay measures it again beside its
// replays, and its ratio uses that.
func BenchmarkLoopbackHTTP(b *testing.B) {
	b.ResetTimer()
	best := 0.0
	for range b.N * reps {
		best = max(best, loopbackRate(b))
	}
	b.ReportMetric(best, "req/s")
	record("http16", best)
}

// loopbackRate measures the loopback HTTP POST round trips/s of 16 clients for 2 seconds.
func loopbackRate(b *testing.B) float64 {
	b.Helper()
	resp := []byte(`{"status":"succeeded","id":12}`)
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		rw.Header().Set("Content-Type", "application/json")
		_, _ = rw.Write(resp)
	}))
	defer srv.Close()
	body := []byte(paddedArgs(time.Now()))
	const clients, span = 16, 2 * time.Second
	tr := &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 64, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var trips atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := time.Now()
	end := start.Add(span)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				req, err := http.NewRequest(http.MethodPost, srv.URL+"/x", bytes.NewReader(body))
				if err != nil {
					errs <- err
					return
				}
				req.Header.Set("Content-Type", "application/json")
				res, err := hc.Do(req)
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				trips.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return float64(trips.Load()) / time.Since(start).Seconds()
}

// BenchmarkIngest reports failed calls through the client API, 500 per signed request from 4
// senders (ingestBatch, ingestSenders), and reports rows/s: every row committed before its
// answer. On MariaDB each rep is measured beside a rep of the raw INSERT (pairedReps).
func BenchmarkIngest(b *testing.B) {
	eachDB(b, func(b *testing.B, target storagetest.Target) {
		a := node(b, target)
		w := setup(b, a)
		n := tasks()
		raw := newRawInserter(b, target)
		b.ResetTimer()
		pairedReps(b, "ingest.api."+target.Name, raw, n*b.N, func(rep int) float64 {
			start := time.Now()
			for i := range b.N {
				err := inBatches(int64(rep*b.N+i)*int64(n), int64(n), func(first, last int64) error {
					req := protocol.ReportRequest{}
					for i := first; i < last; i++ {
						req.Items = append(req.Items, protocol.ReportItem{Scene: "notify", IdempotencyKey: "k" + strconv.FormatInt(i, 10),
							Args: json.RawMessage(`{"order":"` + strconv.FormatInt(i, 10) + `","amount":1999}`), Error: "timeout", LocalAttempts: 3})
					}
					return post(a.URL(), w.group, req)
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			return float64(n*b.N) / time.Since(start).Seconds()
		})
	})
}

// pairedReps measures a rate reps times and records it under key, with "rows/s" reported.
// With raw (MariaDB) each rep of the rate is paired with a rep of the raw INSERT of as many
// rows, run just before it or, every other rep, just after, so that the two see the machine in
// the same state: the rep whose ratio is the median is recorded, its raw rate under
// key+".limit". The machine's speed drifts within a run, and a limit measured minutes apart
// moved the ratio by a quarter from one run to the next. Without raw the best rep is
// recorded.
func pairedReps(b *testing.B, key string, raw *rawInserter, rows int, measure func(rep int) float64) {
	b.Helper()
	type pair struct{ rate, limit float64 }
	var pairs []pair
	for rep := range reps {
		var p pair
		if raw != nil && rep%2 == 0 {
			p.limit = raw.rep(b, rows)
		}
		p.rate = measure(rep)
		if raw != nil && rep%2 == 1 {
			p.limit = raw.rep(b, rows)
		}
		pairs = append(pairs, p)
	}
	if raw == nil {
		best := slices.MaxFunc(pairs, func(x, y pair) int { return cmp.Compare(x.rate, y.rate) })
		b.ReportMetric(best.rate, "rows/s")
		record(key, best.rate)
		return
	}
	slices.SortFunc(pairs, func(x, y pair) int { return cmp.Compare(x.rate/x.limit, y.rate/y.limit) })
	mid := pairs[len(pairs)/2]
	for _, p := range pairs {
		b.Logf("%s: %.0f rows/s beside a raw INSERT of %.0f rows/s: %.2f", key, p.rate, p.limit, p.rate/p.limit)
	}
	b.ReportMetric(mid.rate, "rows/s")
	record(key, mid.rate)
	record(key+".limit", mid.limit)
}

// reps is how many times each rate is measured (ingest beside the raw INSERT, loopback HTTP):
// a moment when the shared machine was busy then weighs less on the ratios.
const reps = 3

// ingestArgs are the arguments of the ingest runs' calls: the same width as the raw INSERT's.
type ingestArgs struct {
	Order  string `json:"order"`
	Amount int    `json:"amount"`
}

// errIngest is the failure of every call in BenchmarkIngestSDK.
var errIngest = errors.New("timeout")

// BenchmarkIngestSDK fails calls of a remote scene in ingestSenders real SDK clients at once,
// each delivering its reports in batches of ingestBatch (the SDK's batched reporter, one
// request at a time per client), and reports rows/s: from the first call until the server has
// committed every report. On MariaDB each rep is measured beside a rep of the raw INSERT
// (pairedReps).
func BenchmarkIngestSDK(b *testing.B) {
	eachDB(b, func(b *testing.B, target storagetest.Target) {
		a := node(b, target)
		w := setup(b, a)
		n := tasks()
		per := (n + ingestSenders - 1) / ingestSenders
		type sender struct {
			c    *retryhub.Client
			fail func(context.Context, ingestArgs) error
		}
		var senders []sender
		for range ingestSenders {
			c := startSDKClient(b, a.URL(), w, func(cfg *retryhub.Config) {
				cfg.ListenAddr = ""
				cfg.ReportBatchSize = ingestBatch
				cfg.MaxQueuedReports = per * max(b.N, 1) * reps
			})
			fail := retryhub.RetryableOn(c, w.scene.Name, func(context.Context, ingestArgs) error { return errIngest },
				retryhub.WithMode(retryhub.Remote), retryhub.WithKey(func(a ingestArgs) string { return a.Order }))
			startClient(b, c)
			senders = append(senders, sender{c, fail})
		}
		raw := newRawInserter(b, target)
		b.ResetTimer()
		var seq atomic.Int64
		pairedReps(b, "ingest.sdk."+target.Name, raw, per*ingestSenders*b.N, func(rep int) float64 {
			start := time.Now()
			for range b.N {
				var wg sync.WaitGroup
				errs := make(chan error, ingestSenders)
				for _, s := range senders {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range per {
							k := "k" + strconv.FormatInt(seq.Add(1), 10)
							if err := s.fail(context.Background(), ingestArgs{Order: k, Amount: 1999}); !errors.Is(err, retryhub.ErrReported) {
								errs <- fmt.Errorf("a failed call was not reported: %w", err)
								return
							}
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
			}
			want := uint64(per * ingestSenders * b.N * (rep + 1))
			deadline := time.Now().Add(10 * time.Minute)
			for {
				var delivered uint64
				for _, s := range senders {
					st := s.c.Stats()
					delivered += st.Delivered + st.Merged
					if st.Rejected > 0 {
						b.Fatalf("the server rejected %d reports", st.Rejected)
					}
				}
				if delivered >= want {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d reports delivered after 10 minutes", delivered, want)
				}
				time.Sleep(2 * time.Millisecond)
			}
			return float64(per*ingestSenders*b.N) / time.Since(start).Seconds()
		})
	})
}

func post(base string, g retry.Group, req protocol.ReportRequest) error {
	status, _, err := testkit.Call(base, g, http.MethodPost, protocol.PathReports, req)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("report answered %d", status)
	}
	return nil
}

// ingestBatch and ingestSenders shape the ingest runs: rows per request (or INSERT) and
// requests (or connections) at once.
const ingestBatch, ingestSenders = 500, 4

// inBatches sends the rows [from, from+n) in batches of ingestBatch from ingestSenders
// goroutines: send gets each batch's rows as [first, last). A sender stops at its first error,
// which fails the benchmark.
func inBatches(from, n int64, send func(first, last int64) error) error {
	return inChunks(from, n, ingestBatch, send)
}

// BenchmarkRawInsert is the ceiling the ingest is measured against, on its own: multi-row
// INSERTs of 500 rows of the same width into a table with the same indexes, from 4
// connections, straight through database/sql; the best of reps. The ingest benchmarks measure
// it again beside each of their reps (pairedReps), and their ratios use those.
func BenchmarkRawInsert(b *testing.B) {
	eachDB(b, func(b *testing.B, target storagetest.Target) {
		raw := newRawInserter(b, target)
		if raw == nil {
			b.Skip("the raw ceiling is measured on MySQL, the production store")
		}
		n := tasks()
		b.ResetTimer()
		best := 0.0
		for range reps {
			best = max(best, raw.rep(b, n*b.N))
		}
		b.ReportMetric(best, "rows/s")
		record("rawinsert."+target.Name, best)
	})
}

// rawInserter inserts rows straight through database/sql into a database of its own, with the
// store's schema: the raw multi-row INSERT rate, a rep at a time.
type rawInserter struct {
	db   *sql.DB
	next int64 // the next row's number, so that keys never repeat
}

// newRawInserter opens a fresh database on target for raw INSERTs, or returns nil on SQLite:
// the raw ceiling is measured on MySQL, the production store.
func newRawInserter(b *testing.B, target storagetest.Target) *rawInserter {
	b.Helper()
	if target.Name != config.MySQL {
		return nil
	}
	// A database of its own with the store's schema: Open migrates it.
	fresh := storagetest.MySQL(b)
	storagetest.Open(b, fresh)
	dsn, err := config.ParseDSN(fresh.DSN)
	if err != nil {
		b.Fatal(err)
	}
	db, err := sql.Open("mysql", dsn.MySQL.FormatDSN())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return &rawInserter{db: db}
}

// rep inserts n rows in batches of ingestBatch from ingestSenders connections and returns the
// rows/s.
func (r *rawInserter) rep(b *testing.B, n int) float64 {
	b.Helper()
	cols := "group_id, scene_id, bucket, idem_key, active_key, args, state, local_attempts, next_at, last_error, cb_error, report_id, created_at, updated_at"
	row := "(?,?,?,?,?,?,?,?,?,?,'',?,?,?)"
	from := r.next
	r.next += int64(n)
	start := time.Now()
	err := inBatches(from, int64(n), func(first, last int64) error {
		var q strings.Builder
		q.WriteString("INSERT INTO rh_task (" + cols + ") VALUES ")
		args := make([]any, 0, (last-first)*13)
		now := time.Now().UTC()
		for i := first; i < last; i++ {
			if i > first {
				q.WriteByte(',')
			}
			q.WriteString(row)
			k := "k" + strconv.FormatInt(i, 10)
			args = append(args, 1, 1, int(i%128), k, k, `{"order":"`+k+`","amount":1999}`, 1, 3, now, "timeout", 1, now, now)
		}
		_, err := r.db.Exec(q.String(), args...)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkReplay replays a backlog of due tasks on a real SDK instance whose function
// succeeds at once, and reports attempts/s: each a claim, a call of the SDK's executor over
// loopback HTTP, a settlement and a stored attempt.
func BenchmarkReplay(b *testing.B) {
	eachDB(b, func(b *testing.B, target storagetest.Target) {
		a := node(b, target)
		w := setup(b, a)
		var calls atomic.Int64
		startSDK(b, a.URL(), w, func(context.Context, dueArgs) error {
			calls.Add(1)
			return nil
		}, nil)
		n := tasks()
		for range b.N {
			b.StopTimer()
			// The ceiling is measured just before the load and again once the replays are
			// over, and the higher one counts: the ratio is never flattered by a moment when the
			// machine was slow.
			limit := loopbackRate(b)
			// Due once loading is surely over (loading runs at well over 5000 rows/s), so the
			// replays do not share the database with the load.
			due := time.Now().Add(2*time.Second + time.Duration(n/5)*time.Millisecond)
			base := calls.Load()
			load(b, a.Store, w, n, due, 0)
			if time.Now().After(due) {
				b.Logf("loading took past the due time: the measure includes part of the load")
			}
			time.Sleep(time.Until(due))
			b.StartTimer()
			waitCalls(b, &calls, base+int64(n))
			waitSettled(b, a.Store, w)
			rate := float64(n) / time.Since(due).Seconds()
			b.StopTimer()
			limit = max(limit, loopbackRate(b))
			b.Logf("replay.%s: %.0f attempts/s beside loopback HTTP of %.0f round trips/s: %.2f", target.Name, rate, limit, rate/limit)
			b.ReportMetric(rate, "attempts/s")
			record("replay."+target.Name, rate)
			record("replay."+target.Name+".limit", limit)
		}
	})
}

// dueArgs are the arguments of the bench's tasks: when each falls due (Unix ms).
type dueArgs struct {
	Due int64 `json:"due"`
}

// lagRecorder collects how late each replay reached the SDK's function.
type lagRecorder struct {
	mu   sync.Mutex
	lags []float64
	// dues are the tasks' due times (Unix ms), beside lags.
	dues []int64
	// early are the lags of the tasks due in the first tickEdge after a whole second (the claim
	// ticks): the tail a claim that does not reach past the next tick leaves.
	early []float64
	calls atomic.Int64
}

// tickEdge is how much of each second after a claim tick lagRecorder looks at apart.
const tickEdge = 100 * time.Millisecond

// run is the scene's function: it notes its lag and succeeds.
func (l *lagRecorder) run(_ context.Context, a dueArgs) error {
	lag := float64(time.Now().UnixMicro()-a.Due*1000) / 1000
	l.mu.Lock()
	l.lags = append(l.lags, lag)
	l.dues = append(l.dues, a.Due)
	if time.Duration(a.Due%1000)*time.Millisecond < tickEdge {
		l.early = append(l.early, lag)
	}
	l.mu.Unlock()
	l.calls.Add(1)
	return nil
}

// reset forgets the lags noted.
func (l *lagRecorder) reset() {
	l.mu.Lock()
	l.lags, l.dues, l.early = l.lags[:0], l.dues[:0], l.early[:0]
	l.mu.Unlock()
}

// dump appends the lags noted to RETRYHUB_BENCH_LAG_CSV, when set, as lines of the backlog,
// the due time (Unix ms) and the lag (ms): to see whether the tail comes in bursts.
func (l *lagRecorder) dump(b *testing.B, backlog int) {
	path := os.Getenv("RETRYHUB_BENCH_LAG_CSV")
	if path == "" {
		return
	}
	l.mu.Lock()
	var sb strings.Builder
	for i := range l.lags {
		fmt.Fprintf(&sb, "%d,%d,%.3f\n", backlog, l.dues[i], l.lags[i])
	}
	l.mu.Unlock()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		b.Fatalf("lag CSV: %v", err)
	}
	defer f.Close()
	if _, err := f.WriteString(sb.String()); err != nil {
		b.Fatalf("lag CSV: %v", err)
	}
}

// edge describes the lags of the tasks due just after a tick beside all of them.
func (l *lagRecorder) edge() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.early) == 0 {
		return ""
	}
	s := slices.Clone(l.early)
	slices.Sort(s)
	return fmt.Sprintf("the %d due in the first %s after a tick: p50 %.1f ms, p99 %.1f ms", len(s), tickEdge,
		s[len(s)/2], s[(len(s)*99+99)/100-1])
}

// percentiles returns the p50 and p99 of the lags noted, in ms.
func (l *lagRecorder) percentiles() (float64, float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lags) == 0 {
		return 0, 0
	}
	s := slices.Clone(l.lags)
	slices.Sort(s)
	return s[len(s)/2], s[(len(s)*99+99)/100-1]
}

// The due-lag run: dueCount tasks falling due evenly over dueSpread, beside a backlog of
// waiting tasks that are not due.
const (
	dueCount  = 5000
	dueSpread = 10 * time.Second
)

// backlogSizes are the backlogs the MariaDB due-lag run measures beside, in order: 10k, 1M and
// RETRYHUB_BENCH_BACKLOG (1M by default), as far as that goes. The backlog is loaded once,
// growing from one size to the next.
func backlogSizes() []int {
	largest := 1_000_000
	if n, err := strconv.Atoi(os.Getenv("RETRYHUB_BENCH_BACKLOG")); err == nil && n > 0 {
		largest = n
	}
	var out []int
	for _, n := range []int{10_000, 1_000_000} {
		if n < largest {
			out = append(out, n)
		}
	}
	return append(out, largest)
}

// BenchmarkDueLag measures how late tasks reach a real SDK instance's function after they fall
// due: dueCount tasks due evenly over dueSpread beside a backlog that is not due, p50 and p99
// in ms. On MariaDB the server runs as a process of its own with its default configuration, as
// a new user would run it, beside backlogs of each of backlogSizes (with 200-byte arguments);
// its peak memory and rh_task's bytes per task are measured at the end. On SQLite it runs in
// process beside a backlog of 4 × RETRYHUB_BENCH_TASKS.
func BenchmarkDueLag(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		a := node(b, storagetest.SQLite(b))
		w := setup(b, a)
		var rec lagRecorder
		startSDK(b, a.URL(), w, rec.run, nil)
		for range b.N {
			backlog := 4 * tasks()
			load(b, a.Store, w, backlog, time.Now().Add(time.Hour), 0)
			p50, p99 := measureLag(b, a.Store, w, &rec)
			b.ReportMetric(p50, "p50-ms")
			b.ReportMetric(p99, "p99-ms")
			record(lagKey("p50", "sqlite", backlog), p50)
			record(lagKey("p99", "sqlite", backlog), p99)
		}
	})
	b.Run("mysql", func(b *testing.B) {
		target := storagetest.MySQL(b)
		store := storagetest.Open(b, target)
		db := mysqlDB(b, target)
		var name string
		if err := db.QueryRow("SELECT DATABASE()").Scan(&name); err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(os.Stderr, "due-lag run on MariaDB database %s (dropped at the end)\n", name)
		w := setupOn(b, store)
		srv := startServer(b, target)
		var rec lagRecorder
		startSDK(b, srv.url, w, rec.run, nil)
		for range b.N {
			loaded := 0
			for _, size := range backlogSizes() {
				fillBacklog(b, db, w, size-loaded)
				settleInnoDB(b, db)
				loaded = size
				p50, p99 := measureLag(b, store, w, &rec)
				fmt.Fprintf(os.Stderr, "due→dispatch lag beside %s waiting: p50 %.1f ms, p99 %.1f ms; %s\n", count(size), p50, p99, rec.edge())
				b.ReportMetric(p50, "p50-ms-"+count(size))
				b.ReportMetric(p99, "p99-ms-"+count(size))
				rec.dump(b, size)
				record(lagKey("p50", "mysql", size), p50)
				record(lagKey("p99", "mysql", size), p99)
			}
			rss, peak := srv.memory(b)
			b.ReportMetric(peak, "peak-rss-MiB")
			record("rss.end", rss)
			record("rss.peak", peak)
			per := bytesPerTask(b, db)
			b.ReportMetric(per, "B/task")
			record("bytes_per_task", per)
		}
	})
}

// dueLead is how long after their storing begins the due-lag run's tasks start falling due:
// long enough for storing them to be over, so that the lag is the scheduler's alone.
const dueLead = 3 * time.Second

// measureLag stores dueCount tasks due evenly over dueSpread from dueLead on, waits until the
// SDK instance ran them all and returns the p50 and p99 of their lags, in ms.
func measureLag(b *testing.B, s *storage.Store, w world, rec *lagRecorder) (float64, float64) {
	b.Helper()
	rec.reset()
	base := rec.calls.Load()
	first := time.Now().Add(dueLead)
	load(b, s, w, dueCount, first, dueSpread)
	if late := time.Since(first); late > 0 {
		fmt.Fprintf(os.Stderr, "storing the due tasks ended %s after the first fell due: their lag includes it\n", late.Round(time.Millisecond))
	}
	waitCalls(b, &rec.calls, base+dueCount)
	return rec.percentiles()
}

var loaded atomic.Int64

// load stores n waiting tasks due from `from`, spread evenly over `spread`, through the store
// as an ingest does; each one's arguments (argsBytes long) carry its due time.
func load(b *testing.B, s *storage.Store, w world, n int, from time.Time, spread time.Duration) {
	b.Helper()
	ctx := context.Background()
	for start := 0; start < n; start += 1000 {
		var batch []storage.NewTask
		for i := start; i < min(start+1000, n); i++ {
			due := from
			if spread > 0 {
				due = from.Add(time.Duration(int64(spread) * int64(i) / int64(n)))
			}
			key := fmt.Sprintf("t-%d", loaded.Add(1))
			batch = append(batch, storage.NewTask{GroupID: w.group.ID, SceneID: w.scene.ID, Bucket: retry.BucketOf(key, 128),
				Key: key, Args: []byte(paddedArgs(due)), State: retry.Waiting, NextAt: due})
		}
		if _, err := s.Ingest(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
}

// waitCalls waits until the instance has answered want calls in all.
func waitCalls(b *testing.B, calls *atomic.Int64, want int64) {
	b.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	for calls.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d calls after 10 minutes", calls.Load(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitSettled waits until no task of the scene is running: every result is written.
func waitSettled(b *testing.B, s *storage.Store, w world) {
	b.Helper()
	for {
		ids, err := s.TaskIDs(context.Background(), storage.TaskFilter{SceneIDs: []int64{w.scene.ID},
			States: []retry.State{retry.Running}}, 0, 1)
		if err != nil {
			b.Fatal(err)
		}
		if len(ids) == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

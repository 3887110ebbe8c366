// Package bench measures the numbers that matter, against the real parts: reports ingested
// per second through the client API, next to the raw multi-row INSERT rate of the same
// database; replay attempts per second with every attempt stored; and how late due tasks are
// dispatched. `make bench` runs them; nothing here asserts a time.
//
// Sizes can be raised with RETRYHUB_BENCH_TASKS (default 20000) for longer runs.
package bench

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
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

// BenchmarkIngest reports failed calls through the client API, 500 per signed request from 4
// senders (ingestBatch, ingestSenders), and reports rows/s: every row committed before its answer.
func BenchmarkIngest(b *testing.B) {
	eachDB(b, func(b *testing.B, target storagetest.Target) {
		a := node(b, target)
		w := setup(b, a)
		n := tasks()
		b.ResetTimer()
		start := time.Now()
		for i := range b.N {
			err := inBatches(int64(i)*int64(n), int64(n), func(first, last int64) error {
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
		elapsed := time.Since(start)
		b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "rows/s")
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
	var (
		seq  atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	seq.Store(from)
	for range ingestSenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				first := seq.Add(ingestBatch) - ingestBatch
				if first >= from+n {
					return
				}
				if err := send(first, min(first+ingestBatch, from+n)); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// BenchmarkRawInsert is the ceiling BenchmarkIngest is measured against: multi-row INSERTs of
// 500 rows of the same width into a table with the same indexes, from 4 connections, straight
// through database/sql.
func BenchmarkRawInsert(b *testing.B) {
	eachDB(b, func(b *testing.B, target storagetest.Target) {
		store := storagetest.Open(b, target)
		_ = store
		dsn, _ := config.ParseDSN(target.DSN)
		var db *sql.DB
		var err error
		if dsn.Driver == config.MySQL {
			db, err = sql.Open("mysql", dsn.MySQL.FormatDSN())
		} else {
			b.Skip("the raw ceiling is measured on MySQL, the production store")
		}
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		n := tasks()
		cols := "group_id, scene_id, bucket, idem_key, active_key, args, state, local_attempts, next_at, last_error, cb_error, report_id, created_at, updated_at"
		row := "(?,?,?,?,?,?,?,?,?,?,'',?,?,?)"
		b.ResetTimer()
		start := time.Now()
		for i := range b.N {
			err := inBatches(int64(i)*int64(n), int64(n), func(first, last int64) error {
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
				_, err := db.Exec(q.String(), args...)
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "rows/s")
	})
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
			b.ReportMetric(rate, "attempts/s")
		}
	})
}

// dueArgs are the arguments of the bench's tasks: when each falls due (Unix ms).
type dueArgs struct {
	Due int64 `json:"due"`
}

// lagRecorder collects how late each replay reached the SDK's function.
type lagRecorder struct {
	mu    sync.Mutex
	lags  []float64
	calls atomic.Int64
}

// run is the scene's function: it notes its lag and succeeds.
func (l *lagRecorder) run(_ context.Context, a dueArgs) error {
	lag := float64(time.Now().UnixMicro()-a.Due*1000) / 1000
	l.mu.Lock()
	l.lags = append(l.lags, lag)
	l.mu.Unlock()
	l.calls.Add(1)
	return nil
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

// BenchmarkDueLag loads tasks falling due evenly over a few seconds, beside a larger backlog
// that is not due, and reports how late each reached a real SDK instance's function: p50 and
// p99, in ms.
func BenchmarkDueLag(b *testing.B) {
	eachDB(b, func(b *testing.B, target storagetest.Target) {
		a := node(b, target)
		w := setup(b, a)
		var rec lagRecorder
		startSDK(b, a.URL(), w, rec.run, nil)
		n := tasks()
		for range b.N {
			b.StopTimer()
			load(b, a.Store, w, 4*n, time.Now().Add(time.Hour), 0) // the backlog, not due
			spreadFrom := time.Now().Add(2*time.Second + time.Duration(n/5)*time.Millisecond)
			base := rec.calls.Load()
			load(b, a.Store, w, n, spreadFrom, 5*time.Second) // due over 5 s, 3 s from now
			b.StartTimer()
			waitCalls(b, &rec.calls, base+int64(n))
		}
		p50, p99 := rec.percentiles()
		b.ReportMetric(p50, "p50-ms")
		b.ReportMetric(p99, "p99-ms")
	})
}

var loaded atomic.Int64

// load stores n waiting tasks due from `from`, spread evenly over `spread`; each one's
// arguments carry its due time.
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
				Key: key, Args: []byte(fmt.Sprintf(`{"due":%d}`, due.UnixMilli())), State: retry.Waiting, NextAt: due})
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

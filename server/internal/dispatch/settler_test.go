package dispatch_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/catalog"
	"github.com/retryhub/retryhub/server/internal/dispatch"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// succeeded is the settlement of a successful attempt of the claim.
func (f *fixture) succeeded(c *retry.Claim) retry.Settlement {
	f.T.Helper()
	sc, err := catalog.New(catalog.Params{Store: f.Store}).Scene(context.Background(), c.SceneID)
	if err != nil {
		f.T.Fatal(err)
	}
	now := time.Now()
	att := &retry.Attempt{TaskID: c.TaskID, Kind: c.Kind, Number: c.Number(), NodeID: "node-1", InstanceID: "i1",
		StartedAt: now, Duration: time.Millisecond, Outcome: retry.OutcomeSucceeded}
	if c.Kind == retry.KindCallback {
		return retry.SettleCallback(c, &sc.Scene, sc.Policies, retry.Result{Outcome: retry.OutcomeSucceeded}, att, now)
	}
	return retry.SettleReplay(c, &sc.Scene, sc.Policies, retry.Result{Outcome: retry.OutcomeSucceeded}, att, now)
}

// written records what the settler wrote, batch by batch.
type written struct {
	mu      sync.Mutex
	batches [][]int64 // task ids
	changed int64
}

func (w *written) record(batch []retry.Settlement, changed int64) {
	ids := make([]int64, len(batch))
	for i := range batch {
		ids[i] = batch[i].TaskID
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.batches = append(w.batches, ids)
	w.changed += changed
}

func (w *written) ids() []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []int64
	for _, b := range w.batches {
		out = append(out, b...)
	}
	return out
}

func TestSettlerWritesEverythingInBatchesInOrder(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := newFixture(t, s, nil)
		f.Add(time.Now(), keys("k", 60)...)
		claims := f.claim(retry.KindReplay, time.Now())
		if len(claims) != 60 {
			t.Fatalf("claimed %d, want 60", len(claims))
		}
		var w written
		st := dispatch.NewSettler(dispatch.SettlerParams{Store: s, Batch: 7, Interval: 20 * time.Millisecond, Log: testkit.Logger(t), OnSettled: w.record})
		startSettler(t, st)
		var order []int64
		for i := range claims {
			st.Add(f.succeeded(&claims[i]))
			order = append(order, claims[i].TaskID)
			if i%13 == 0 {
				time.Sleep(5 * time.Millisecond) // some batches close on the interval, some on size
			}
		}
		testkit.WaitUntil(t, 10*time.Second, "every settlement to be written", func() bool { return len(w.ids()) == len(claims) })
		st.Stop(context.Background())

		got := w.ids()
		for i := range order {
			if got[i] != order[i] {
				t.Fatalf("settlements written in the order %v, want the order they were added %v", got, order)
			}
		}
		w.mu.Lock()
		for _, b := range w.batches {
			if len(b) > 7 {
				t.Errorf("a batch of %d settlements, more than the batch size 7", len(b))
			}
		}
		if len(w.batches) < 60/7 {
			t.Errorf("%d batches for 60 settlements of at most 7", len(w.batches))
		}
		if w.changed != 60 {
			t.Errorf("the batches changed %d tasks, want 60", w.changed)
		}
		w.mu.Unlock()
		for _, c := range claims {
			tk := f.Task(c.TaskID)
			if tk.State != retry.Succeeded || tk.Attempts != 1 || tk.ClaimToken != 0 {
				t.Fatalf("task %d after its settlement: %s, %d attempts, claim token %d", tk.ID, tk.State, tk.Attempts, tk.ClaimToken)
			}
			if atts := f.Attempts(c.TaskID); len(atts) != 1 || atts[0].Outcome != retry.OutcomeSucceeded {
				t.Fatalf("task %d attempts: %+v", tk.ID, atts)
			}
		}
	})
}

// queuedSuccesses claims five new tasks and queues their successes in a started settler whose
// batch neither its size nor its interval would close during a test.
func queuedSuccesses(t *testing.T, s *storage.Store) (*fixture, []int64, *dispatch.Settler) {
	t.Helper()
	f := newFixture(t, s, nil)
	ids := f.Add(time.Now(), keys("k", 5)...)
	claims := f.claim(retry.KindReplay, time.Now())
	st := dispatch.NewSettler(dispatch.SettlerParams{Store: s, Batch: 1000, Interval: time.Hour, Log: testkit.Logger(t)})
	startSettler(t, st)
	for i := range claims {
		st.Add(f.succeeded(&claims[i]))
	}
	return f, ids, st
}

func TestSettlerStopWritesWhatIsQueued(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f, ids, st := queuedSuccesses(t, s)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st.Stop(ctx)
		for _, id := range ids {
			if tk := f.Task(id); tk.State != retry.Succeeded {
				t.Fatalf("task %d is %s after Stop, want succeeded: Stop writes what is queued", id, tk.State)
			}
		}
	})
}

func TestSettlerKillWritesNothing(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f, ids, st := queuedSuccesses(t, s)
		st.Kill()
		for _, id := range ids {
			if tk := f.Task(id); tk.State != retry.Running || tk.Attempts != 0 || len(f.Attempts(id)) != 0 {
				t.Fatalf("task %d after Kill: %s with %d attempts, want still running with none", id, tk.State, tk.Attempts)
			}
		}
	})
}

func TestSettlerAddAfterStopDoesNotBlock(t *testing.T) {
	t.Parallel()
	s := storagetest.Open(t, storagetest.SQLite(t))
	f := newFixture(t, s, nil)
	f.Add(time.Now(), "k")
	c := f.claim(retry.KindReplay, time.Now())[0]
	st := dispatch.NewSettler(dispatch.SettlerParams{Store: s, Batch: 2, Interval: time.Hour, Log: testkit.Logger(t)})
	startSettler(t, st)
	st.Stop(context.Background())
	added := make(chan struct{})
	go func() {
		defer close(added)
		for range 100 { // far more than the queue holds
			st.Add(f.succeeded(&c))
		}
	}()
	select {
	case <-added:
	case <-time.After(10 * time.Second):
		t.Fatal("Add after Stop blocked")
	}
	// Stop and Kill again are harmless.
	st.Stop(context.Background())
	st.Kill()
}

func TestSettlementOfALostClaimChangesNothing(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := newFixture(t, s, nil)
		id := f.Add(time.Now(), "k")[0]
		old := f.claim(retry.KindReplay, time.Now())[0]
		// The claim lapses and the task goes back to waiting (as the sweeper or an operator
		// would do), then another node claims it afresh.
		if _, err := s.Settle(ctx, []retry.Settlement{retry.Release(&old, time.Now())}); err != nil {
			t.Fatal(err)
		}
		fresh := f.claim(retry.KindReplay, time.Now())
		if len(fresh) != 1 {
			t.Fatalf("the released task was not claimed again: %d claims", len(fresh))
		}
		var w written
		st := dispatch.NewSettler(dispatch.SettlerParams{Store: s, Batch: 10, Interval: time.Millisecond, Log: testkit.Logger(t), OnSettled: w.record})
		startSettler(t, st)
		st.Add(f.succeeded(&old))
		st.Stop(ctx)
		if len(w.ids()) != 1 || w.changed != 0 {
			t.Fatalf("wrote %v changing %d tasks; want the late settlement written and changing none", w.ids(), w.changed)
		}
		tk := f.Task(id)
		if tk.State != retry.Running || tk.ClaimToken != fresh[0].Token || tk.Attempts != 0 {
			t.Fatalf("the late settlement changed the task: %s, token %d (fresh claim %d), %d attempts",
				tk.State, tk.ClaimToken, fresh[0].Token, tk.Attempts)
		}
	})
}

func TestSettlerStopGivesUpWhenTheDatabaseIsGone(t *testing.T) {
	t.Parallel()
	s := storagetest.Open(t, storagetest.SQLite(t))
	f := newFixture(t, s, nil)
	f.Add(time.Now(), "k")
	c := f.claim(retry.KindReplay, time.Now())[0]
	st := dispatch.NewSettler(dispatch.SettlerParams{Store: s, Batch: 10, Interval: time.Millisecond, Log: testkit.Logger(t)})
	startSettler(t, st)
	settlement := f.succeeded(&c)
	s.Close()
	st.Add(settlement)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		st.Stop(ctx)
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop kept retrying a write to a closed database after its context ended")
	}
}

// TestSettlerIsolatesASettlementTheDatabaseRefuses: MySQL refuses an attempt number beyond INT,
// failing its whole batch. The settler splits the batch until the others are written, and gives
// the refused one up (its claim lapses and the sweeper takes the task back).
func TestSettlerIsolatesASettlementTheDatabaseRefuses(t *testing.T) {
	s := storagetest.Open(t, storagetest.MySQL(t))
	f := newFixture(t, s, nil)
	f.Add(time.Now(), keys("p", 10)...)
	claims := f.claim(retry.KindReplay, time.Now())
	if len(claims) != 10 {
		t.Fatalf("claimed %d", len(claims))
	}
	var w written
	st := dispatch.NewSettler(dispatch.SettlerParams{Store: s, Batch: 100, Interval: time.Hour, Log: testkit.Logger(t), OnSettled: w.record})
	startSettler(t, st)
	for i := range claims {
		set := f.succeeded(&claims[i])
		if i == 6 {
			set.Attempt.Number = 1 << 40
		}
		st.Add(set)
	}
	st.Stop(context.Background()) // writes the batch: 10 settlements, one poisoned
	if n := len(w.ids()); n != 9 {
		t.Fatalf("%d settlements written, want the 9 good ones", n)
	}
	for i, c := range claims {
		tk := f.Task(c.TaskID)
		if want := retry.Succeeded; i != 6 && tk.State != want {
			t.Fatalf("task %d is %s, want %s", tk.ID, tk.State, want)
		}
		if i == 6 && tk.State != retry.Running {
			t.Fatalf("the refused settlement's task is %s, want it left running for the sweeper", tk.State)
		}
	}
}

// logRecord is one captured log record.
type logRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

// captured is a slog handler that keeps every record.
type captured struct {
	mu      sync.Mutex
	records []logRecord
}

func (c *captured) Enabled(context.Context, slog.Level) bool { return true }
func (c *captured) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *captured) WithGroup(string) slog.Handler            { return c }
func (c *captured) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	c.records = append(c.records, rec)
	return nil
}

// at returns the records at level or above.
func (c *captured) at(level slog.Level) []logRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []logRecord
	for _, r := range c.records {
		if r.level >= level {
			out = append(out, r)
		}
	}
	return out
}

// During a database outage the settler logs one error as it begins and one info line when
// writes succeed again, with how many results waited, however many times it retries between.
func TestSettlerLogsAnOutageOnceAndItsEnd(t *testing.T) {
	t.Parallel()
	target, proxy := testkit.MySQLBehindProxy(t)
	s := storagetest.Open(t, target)
	f := newFixture(t, s, nil)
	f.Add(time.Now(), keys("k", 3)...)
	claims := f.claim(retry.KindReplay, time.Now())
	var h captured
	var w written
	st := dispatch.NewSettler(dispatch.SettlerParams{Store: s, Batch: 3, Interval: time.Hour, Log: slog.New(&h),
		OnSettled: w.record})
	startSettler(t, st)
	defer st.Stop(context.Background())
	settlements := make([]retry.Settlement, len(claims))
	for i := range claims {
		settlements[i] = f.succeeded(&claims[i])
	}
	proxy.Down()
	for _, set := range settlements {
		st.Add(set)
	}
	retries := func() int {
		n := 0
		for _, r := range h.at(slog.LevelDebug) {
			if r.level == slog.LevelDebug && strings.Contains(r.msg, "trying again") {
				n++
			}
		}
		return n
	}
	testkit.WaitUntil(t, 20*time.Second, "several retries during the outage", func() bool { return retries() >= 6 })
	proxy.Up()
	testkit.WaitUntil(t, 20*time.Second, "the results to be written", func() bool { return len(w.ids()) == len(claims) })
	if errs := h.at(slog.LevelError); len(errs) != 1 {
		t.Fatalf("%d error lines during one outage of %d retries, want 1: %+v", len(errs), retries(), errs)
	}
	var recovered []logRecord
	for _, r := range h.at(slog.LevelInfo) {
		if r.level == slog.LevelInfo {
			recovered = append(recovered, r)
		}
	}
	if len(recovered) != 1 || recovered[0].attrs["waited"] != "3" || recovered[0].attrs["for"] == "" {
		t.Fatalf("recovery lines %+v, want one naming the 3 results that waited and for how long", recovered)
	}
}

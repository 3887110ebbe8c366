package scheduler_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/catalog"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/scheduler"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// leader is a fixed answer to "does this node lead?".
type leader bool

func (l leader) IsLeader() bool { return bool(l) }

// newSweeper returns a sweeper of the held buckets on the leader.
func newSweeper(t *testing.T, s *storage.Store, held []int) *scheduler.Sweeper {
	t.Helper()
	return sweeperOf(t, s, held, true, time.Minute)
}

func sweeperOf(t *testing.T, s *storage.Store, held []int, leads leader, instanceTTL time.Duration) *scheduler.Sweeper {
	t.Helper()
	return sweeperAt(t, s, held, leads, instanceTTL, time.Now)
}

func sweeperAt(t *testing.T, s *storage.Store, held []int, leads leader, instanceTTL time.Duration, now func() time.Time) *scheduler.Sweeper {
	t.Helper()
	return scheduler.NewSweeper(scheduler.SweeperParams{Store: s, Catalog: catalog.New(catalog.Params{Store: s, TTL: time.Minute}),
		Held: func() []int { return held }, Leader: leads, Interval: time.Hour, InstanceTTL: instanceTTL, Now: now,
		Log: testkit.Logger(t)})
}

func TestSweeperTakesBackClaimsPastTheirDeadline(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := newFixture(t, s, nil)
		due := time.Now().Add(-time.Minute)
		lapsed := f.AddInBucket(1, due, "lapsed")[0]
		f.Claim(retry.KindReplay, "node-dead", time.Now(), time.Now().Add(-time.Second))
		holding := f.AddInBucket(1, due, "holding")[0]
		f.Claim(retry.KindReplay, "node-alive", time.Now(), time.Now().Add(time.Hour))

		sw := newSweeper(t, s, testkit.AllBuckets())
		if n := sw.Exec(context.Background()); n != 1 {
			t.Fatalf("took back %d, want only the claim past its deadline", n)
		}
		tk := f.Task(lapsed)
		if tk.State != retry.Waiting || tk.Attempts != 1 || tk.ClaimToken != 0 || !strings.Contains(tk.LastError, "node-dead") ||
			time.Until(tk.NextAt) < 50*time.Minute {
			t.Fatalf("the lapsed task is %s with %d attempts, token %d, error %q, due %s; want waiting an hour (its back-off) after a timed-out attempt",
				tk.State, tk.Attempts, tk.ClaimToken, tk.LastError, tk.NextAt)
		}
		atts := f.Attempts(lapsed)
		if len(atts) != 1 || atts[0].Outcome != retry.OutcomeTimedOut || atts[0].NodeID != "node-dead" ||
			atts[0].Number != 1 || atts[0].Kind != retry.KindReplay || !atts[0].StartedAt.Equal(retry.Truncate(due)) {
			t.Fatalf("the lapsed task's attempts %+v; want one timed out, charged to node-dead, started when due", atts)
		}
		if tk := f.Task(holding); tk.State != retry.Running || tk.ClaimedBy != "node-alive" || len(f.Attempts(holding)) != 0 {
			t.Fatalf("a claim within its deadline was touched: %s by %q", tk.State, tk.ClaimedBy)
		}
		if n := sw.Exec(context.Background()); n != 0 {
			t.Fatalf("a second pass took back %d", n)
		}
	})
}

func TestSweeperExhaustsOnTheLastAttempt(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := newFixture(t, s, func(sc *retry.Scene) {
			sc.MaxAttempts = 1
			sc.Callback.Enabled = true
		})
		id := f.AddInBucket(5, time.Now().Add(-time.Minute), "k")[0]
		f.Claim(retry.KindReplay, "node-dead", time.Now(), time.Now().Add(-time.Second))
		if n := newSweeper(t, s, []int{5}).Exec(context.Background()); n != 1 {
			t.Fatalf("took back %d, want 1", n)
		}
		tk := f.Task(id)
		if tk.State != retry.Exhausted || tk.Attempts != 1 || tk.EndedAt == nil || tk.CallbackState != retry.CallbackWaiting {
			t.Fatalf("task is %s after %d attempts, callback %s; want exhausted with its callback waiting",
				tk.State, tk.Attempts, tk.CallbackState)
		}
	})
}

func TestSweeperTakesBackStuckCallbacks(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := newFixture(t, s, func(sc *retry.Scene) { sc.Callback.Enabled = true })
		id := f.AddInBucket(2, time.Now().Add(-time.Minute), "k")[0]
		f.settle(f.Claim(retry.KindReplay, "node-1", time.Now(), time.Now().Add(time.Minute)), retry.OutcomeSucceeded, time.Now().Add(-time.Second))
		if cbs := f.Claim(retry.KindCallback, "node-dead", time.Now(), time.Now().Add(-time.Second)); len(cbs) != 1 {
			t.Fatalf("claimed %d callbacks", len(cbs))
		}
		if n := newSweeper(t, s, []int{2}).Exec(context.Background()); n != 1 {
			t.Fatalf("took back %d, want the stuck callback", n)
		}
		tk := f.Task(id)
		if tk.State != retry.Succeeded || tk.Attempts != 1 || tk.CallbackState != retry.CallbackWaiting || tk.CallbackAttempts != 1 || tk.ClaimToken != 0 {
			t.Fatalf("task is %s after %d attempts, callback %s after %d, token %d; want its callback waiting after one timed-out try",
				tk.State, tk.Attempts, tk.CallbackState, tk.CallbackAttempts, tk.ClaimToken)
		}
		atts := f.Attempts(id)
		if len(atts) != 2 || atts[1].Kind != retry.KindCallback || atts[1].Outcome != retry.OutcomeTimedOut || atts[1].NodeID != "node-dead" {
			t.Fatalf("attempts %+v", atts)
		}
	})
}

func TestSweeperSweepsOnlyItsBuckets(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := newFixture(t, s, nil)
		id := f.AddInBucket(7, time.Now().Add(-time.Minute), "k")[0]
		f.Claim(retry.KindReplay, "node-dead", time.Now(), time.Now().Add(-time.Second))
		if n := newSweeper(t, s, []int{6, 8}).Exec(context.Background()); n != 0 {
			t.Fatalf("took back %d from a bucket it does not hold", n)
		}
		if tk := f.Task(id); tk.State != retry.Running {
			t.Fatalf("task is %s", tk.State)
		}
		if n := newSweeper(t, s, nil).Exec(context.Background()); n != 0 {
			t.Fatalf("a sweeper without buckets took back %d", n)
		}
	})
}

// TestSweeperNeverOverwritesAResult races the sweeper against late results of the same lapsed
// claims: each task must end with exactly one of them applied, the other changing nothing.
func TestSweeperNeverOverwritesAResult(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := newFixture(t, s, nil)
		const n = 60
		ids := f.addMany(3, n, time.Now().Add(-time.Minute))
		claims := f.Claim(retry.KindReplay, "node-slow", time.Now(), time.Now().Add(-time.Second))
		if len(claims) != n {
			t.Fatalf("claimed %d", len(claims))
		}
		sw := newSweeper(t, s, []int{3})
		var (
			wg      sync.WaitGroup
			swept   int
			applied = map[int64]bool{}
		)
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 20 {
				swept += sw.Exec(context.Background())
			}
		}()
		go func() {
			defer wg.Done()
			for i := range claims {
				if f.settle(claims[i:i+1], retry.OutcomeSucceeded, time.Now()) == 1 {
					applied[claims[i].TaskID] = true
				}
			}
		}()
		wg.Wait()
		if swept+len(applied) != n {
			t.Fatalf("the sweeper took back %d and %d results applied, want %d in all: each claim settles once", swept, len(applied), n)
		}
		for _, id := range ids {
			tk := f.Task(id)
			switch {
			case applied[id] && (tk.State != retry.Succeeded || tk.Attempts != 1):
				t.Fatalf("task %d: its result applied, then the sweeper overwrote it: %s with %d attempts", id, tk.State, tk.Attempts)
			case !applied[id] && (tk.State != retry.Waiting || tk.Attempts != 1):
				t.Fatalf("task %d: taken back, then the late result overwrote it: %s with %d attempts", id, tk.State, tk.Attempts)
			}
			// Only the settlement that applied recorded its attempt.
			want := retry.OutcomeTimedOut
			if applied[id] {
				want = retry.OutcomeSucceeded
			}
			if atts := f.Attempts(id); len(atts) != 1 || atts[0].Outcome != want {
				t.Fatalf("task %d: attempts %+v, want the one %s attempt of the settlement that applied", id, atts, want)
			}
		}
	})
}

// A dispatcher that starts a lapsed claim moves its deadline first (ExtendClaim); once it has,
// the claim is live again and the sweeper must leave it alone, as the design says: the take-back
// is conditional on the same claim token and a passed deadline. Otherwise the sweeper, having
// read the claim as stuck just before, sets the task waiting while its call runs: it is claimed
// and replayed a second time at once, and the first call's result is thrown away.
func TestSweeperLeavesAClaimExtendedAfterItLapsed(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := newFixture(t, s, nil)
		const n = 60
		ids := f.addMany(3, n, time.Now().Add(-time.Minute))
		claims := f.Claim(retry.KindReplay, "node-late", time.Now(), time.Now().Add(-time.Second))
		if len(claims) != n {
			t.Fatalf("claimed %d", len(claims))
		}
		sw := newSweeper(t, s, []int{3})
		var (
			wg       sync.WaitGroup
			extended = map[int64]bool{}
		)
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range 20 {
				sw.Exec(context.Background())
			}
		}()
		go func() {
			defer wg.Done()
			for i := range claims {
				ok, err := s.ExtendClaim(context.Background(), &claims[i], time.Now().Add(time.Hour))
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					extended[claims[i].TaskID] = true
					time.Sleep(time.Millisecond) // the call
					f.settle(claims[i:i+1], retry.OutcomeSucceeded, time.Now())
				}
			}
		}()
		wg.Wait()
		for _, id := range ids {
			tk := f.Task(id)
			atts := f.Attempts(id)
			switch {
			case extended[id] && (tk.State != retry.Succeeded || len(atts) != 1):
				t.Fatalf("task %d: its claim was extended and its call succeeded, but it is %s with %d attempts recorded %+v",
					id, tk.State, len(atts), atts)
			case !extended[id] && (tk.State != retry.Waiting || len(atts) != 1 || atts[0].Outcome != retry.OutcomeTimedOut):
				t.Fatalf("task %d: taken back, but it is %s with attempts %+v", id, tk.State, atts)
			}
		}
	})
}

func TestSweeperBringsBackHeldTasks(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := newFixture(t, s, nil)
		sc := retry.DefaultScene(f.Group.ID, "paused")
		sc.Enabled = false
		sc, err := s.CreateScene(ctx, sc)
		if err != nil {
			t.Fatal(err)
		}
		paused := &testkit.Fixture{T: t, Store: s, Group: f.Group, Scene: sc}
		due := time.Now().Add(-time.Minute)
		active := f.AddInBucket(1, due, "active")[0]
		other := f.AddInBucket(2, due, "other")[0]
		ofPaused := paused.AddInBucket(1, due, "of-paused")[0]
		claims := f.Claim(retry.KindReplay, "node-a", time.Now(), time.Now().Add(time.Minute))
		holds := make([]retry.Settlement, len(claims))
		for i := range claims {
			holds[i] = retry.Hold(&claims[i])
		}
		if n, err := s.Settle(ctx, holds); err != nil || n != 3 {
			t.Fatalf("held %d tasks (%v), want 3", n, err)
		}

		sw := newSweeper(t, s, []int{0, 1})
		// No instance with an executor: nothing comes back.
		if err := s.UpsertInstance(ctx, retry.Instance{ID: "reporter", GroupID: f.Group.ID}, time.Now()); err != nil {
			t.Fatal(err)
		}
		if n := sw.Unhold(ctx); n != 0 {
			t.Fatalf("brought back %d with no instance to run them, want 0", n)
		}
		if err := s.UpsertInstance(ctx, retry.Instance{ID: "worker", GroupID: f.Group.ID, ExecutorURL: "http://127.0.0.1:1/x"}, time.Now()); err != nil {
			t.Fatal(err)
		}
		// A disabled group keeps them held too.
		g := f.Group
		g.Enabled = false
		if err := s.UpdateGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
		if n := sw.Unhold(ctx); n != 0 {
			t.Fatalf("brought back %d of a disabled group, want 0", n)
		}
		g.Enabled = true
		if err := s.UpdateGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
		// So does a disabled namespace.
		ns, err := s.NamespaceByName(ctx, f.Group.Namespace)
		if err != nil {
			t.Fatal(err)
		}
		ns.Enabled = false
		if err := s.UpdateNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
		if n := sw.Unhold(ctx); n != 0 {
			t.Fatalf("brought back %d of a disabled namespace, want 0", n)
		}
		ns.Enabled = true
		if err := s.UpdateNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
		// And an instance whose heartbeat is older than the instance TTL is not live: seen a
		// minute from now, with a TTL of 30 s.
		later := time.Now().Add(time.Minute)
		staleTTL := sweeperAt(t, s, []int{0}, true, 30*time.Second, func() time.Time { return later })
		if n := staleTTL.Unhold(ctx); n != 0 {
			t.Fatalf("brought back %d with only a silent instance, want 0", n)
		}
		// Only the leader brings tasks back, whatever buckets it holds.
		if n := sweeperOf(t, s, testkit.AllBuckets(), false, time.Minute).Unhold(ctx); n != 0 {
			t.Fatalf("a node that does not lead brought back %d, want 0", n)
		}
		// The enabled scene's tasks, of every bucket, come back due as they were; the paused
		// scene's stays held.
		if n := sw.Unhold(ctx); n != 2 {
			t.Fatalf("brought back %d, want 2", n)
		}
		for _, id := range []int64{active, other} {
			if tk := f.Task(id); tk.State != retry.Waiting || !tk.NextAt.Equal(retry.Truncate(due)) || tk.Attempts != 0 {
				t.Fatalf("a task brought back is %s, due %s, %d attempts; want waiting, due %s, none", tk.State, tk.NextAt, tk.Attempts, due)
			}
		}
		if tk := f.Task(ofPaused); tk.State != retry.Held {
			t.Fatalf("the paused scene's task is %s, want still held", tk.State)
		}
		// A held task an operator pauses is left alone when its scene resumes.
		if res, err := s.Apply(ctx, storage.Pause, []int64{ofPaused}, time.Time{}); err != nil || res.Changed != 1 {
			t.Fatalf("pausing a held task: %+v %v", res, err)
		}
		sc.Enabled = true
		if _, err := s.UpdateScene(ctx, sc); err != nil {
			t.Fatal(err)
		}
		if n := sw.Unhold(ctx); n != 0 || f.Task(ofPaused).State != retry.Paused {
			t.Fatalf("brought back %d; the operator's paused task is %s", n, f.Task(ofPaused).State)
		}
		if res, err := s.Apply(ctx, storage.Resume, []int64{ofPaused}, time.Time{}); err != nil || res.Changed != 1 ||
			f.Task(ofPaused).State != retry.Waiting {
			t.Fatalf("resuming it: %+v %v", res, err)
		}
	})
}

// A stuck task whose scene cannot be read is logged, skipped and counted; the rest of the batch
// is taken back.
func TestSweeperSkipsATaskItCannotSettle(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := newFixture(t, s, nil)
		due := time.Now().Add(-time.Minute)
		good := f.AddInBucket(2, due, "good-1", "good-2")
		// A task of a scene that does not exist (its row gone).
		if _, err := s.Ingest(ctx, []storage.NewTask{{GroupID: f.Group.ID, SceneID: 1 << 40, Bucket: 2, Key: "orphan",
			Args: []byte(`{}`), State: retry.Waiting, NextAt: due}}); err != nil {
			t.Fatal(err)
		}
		f.Claim(retry.KindReplay, "node-dead", time.Now(), time.Now().Add(-time.Second))

		sw := newSweeper(t, s, []int{2})
		if n := sw.Exec(ctx); n != len(good) {
			t.Fatalf("took back %d, want the %d tasks it can settle", n, len(good))
		}
		for _, id := range good {
			if tk := f.Task(id); tk.State != retry.Waiting || tk.Attempts != 1 {
				t.Fatalf("task %d is %s with %d attempts, want taken back", id, tk.State, tk.Attempts)
			}
		}
		if sw.Skipped() != 1 {
			t.Fatalf("skipped %d, want the one task without a scene", sw.Skipped())
		}
		// The next pass finds it again, skips it again, and has nothing else to do.
		if n := sw.Exec(ctx); n != 0 || sw.Skipped() != 2 {
			t.Fatalf("the next pass took back %d and skipped %d in all, want 0 and 2", n, sw.Skipped())
		}
	})
}

// Pages full of tasks that cannot be settled do not stop a pass from reaching the good tasks
// behind them.
func TestSweeperGetsPastPagesOfBadTasks(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := newFixture(t, s, nil)
		due := time.Now().Add(-time.Minute)
		// Five orphans first (lower ids), then the good tasks.
		for i := range 5 {
			if _, err := s.Ingest(ctx, []storage.NewTask{{GroupID: f.Group.ID, SceneID: 1 << 40, Bucket: 2,
				Key: fmt.Sprintf("orphan-%d", i), Args: []byte(`{}`), State: retry.Waiting, NextAt: due}}); err != nil {
				t.Fatal(err)
			}
		}
		good := f.AddInBucket(2, due, "good-1", "good-2")
		f.Claim(retry.KindReplay, "node-dead", time.Now(), time.Now().Add(-time.Second))

		sw := scheduler.NewSweeper(scheduler.SweeperParams{Store: s, Catalog: catalog.New(catalog.Params{Store: s, TTL: time.Minute}),
			Held: func() []int { return []int{2} }, Leader: leader(true), Interval: time.Hour, InstanceTTL: time.Minute,
			Batch: 2, Log: testkit.Logger(t)})
		if n := sw.Exec(ctx); n != len(good) {
			t.Fatalf("took back %d, want the %d good tasks behind the bad ones", n, len(good))
		}
		if sw.Skipped() != 5 {
			t.Fatalf("skipped %d, want the 5 orphans", sw.Skipped())
		}
	})
}

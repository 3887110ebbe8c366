package scheduler_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/scheduler"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// sink plays dispatch for the claimer: it holds up to capacity claims and records what it was
// handed, and any hand-over larger than the room it offered.
type sink struct {
	t        *testing.T
	mu       sync.Mutex
	capacity int
	held     []retry.Claim
	all      []retry.Claim
}

func newSink(t *testing.T, capacity int) *sink { return &sink{t: t, capacity: capacity} }

func (s *sink) Room() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(s.capacity-len(s.held), 0)
}

func (s *sink) Capacity() int { return s.capacity }

func (s *sink) Submit(claims []retry.Claim) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if room := s.capacity - len(s.held); len(claims) > room {
		s.t.Errorf("the claimer submitted %d claims with room for %d", len(claims), room)
	}
	s.held = append(s.held, claims...)
	s.all = append(s.all, claims...)
}

// drain empties the sink (dispatch finished what it held) and returns what it held.
func (s *sink) drain() []retry.Claim {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.held
	s.held = nil
	return out
}

func (s *sink) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.all)
}

// perBucket counts claims by bucket.
func perBucket(claims []retry.Claim) map[int]int {
	out := map[int]int{}
	for _, c := range claims {
		out[c.Bucket]++
	}
	return out
}

const claimTimeout = 30 * time.Second

func newClaimer(t *testing.T, s *storage.Store, held []int, sk scheduler.Sink, lookahead time.Duration) *scheduler.Claimer {
	t.Helper()
	c, err := scheduler.NewClaimer(scheduler.ClaimerParams{Store: s, Held: func() []int { return held }, Sink: sk,
		Log: testkit.Logger(t), NodeID: "node-1", Batch: 1000, Lookahead: lookahead, ClaimTimeout: claimTimeout})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newTickingClaimer is newClaimer with a round every second and a lookahead of one second.
func newTickingClaimer(t *testing.T, s *storage.Store, held []int, sk scheduler.Sink) *scheduler.Claimer {
	t.Helper()
	c, err := scheduler.NewClaimer(scheduler.ClaimerParams{Store: s, Held: func() []int { return held }, Sink: sk,
		Log: testkit.Logger(t), NodeID: "node-1", Batch: 1000, Tick: "* * * * * *", Lookahead: time.Second,
		ClaimTimeout: claimTimeout})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClaimerClaimsOnlyItsBuckets(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := newFixture(t, s, nil)
		now := time.Now()
		mine := map[int64]bool{}
		var others []int64
		for b := range 12 {
			ids := f.addMany(b, 3, now.Add(-time.Minute))
			for _, id := range ids {
				if b%2 == 0 {
					mine[id] = true
				} else {
					others = append(others, id)
				}
			}
		}
		sk := newSink(t, 1000)
		c := newClaimer(t, s, []int{0, 2, 4, 6, 8, 10}, sk, time.Second)
		before := time.Now()
		if n := c.Exec(context.Background()); n != len(mine) {
			t.Fatalf("claimed %d, want the %d due in the held buckets", n, len(mine))
		}
		for _, cl := range sk.drain() {
			if !mine[cl.TaskID] {
				t.Fatalf("claimed task %d of bucket %d, which this node does not hold", cl.TaskID, cl.Bucket)
			}
			if cl.Kind != retry.KindReplay || cl.ClaimedBy != "node-1" || cl.State != retry.Running {
				t.Fatalf("claim %+v", cl)
			}
			// The claim holds at least the claim timeout past the task's due time.
			if cl.RunDeadline.Before(retry.Truncate(before).Add(claimTimeout)) {
				t.Fatalf("claim lapses at %s, less than the claim timeout after it was made", cl.RunDeadline)
			}
			if tk := f.Task(cl.TaskID); tk.State != retry.Running || tk.ClaimToken != cl.Token || tk.ClaimedBy != "node-1" {
				t.Fatalf("claimed task is %s under token %d by %q", tk.State, tk.ClaimToken, tk.ClaimedBy)
			}
		}
		for _, id := range others {
			if tk := f.Task(id); tk.State != retry.Waiting {
				t.Fatalf("task %d of a bucket not held is %s", id, tk.State)
			}
		}
		// Nothing is claimed twice.
		if n := c.Exec(context.Background()); n != 0 {
			t.Fatalf("a second round claimed %d", n)
		}
		// A node that holds no bucket claims nothing.
		if n := newClaimer(t, s, nil, sk, time.Second).Exec(context.Background()); n != 0 {
			t.Fatalf("a claimer without buckets claimed %d", n)
		}
	})
}

func TestClaimerNeverTakesMoreThanThereIsRoomFor(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := newFixture(t, s, nil)
		due := time.Now().Add(-time.Minute)
		for b := range 3 {
			f.addMany(b, 10, due)
		}
		// Room for 10 over 3 buckets does not divide evenly.
		sk := newSink(t, 10)
		c := newClaimer(t, s, []int{0, 1, 2}, sk, time.Second)
		if n := c.Exec(context.Background()); n != 10 {
			t.Fatalf("claimed %d with room for 10 and 30 due, want 10", n)
		}
		got := perBucket(sk.drain())
		for b := range 3 {
			if got[b] < 3 {
				t.Fatalf("claims per bucket %v: room for 10 over 3 buckets leaves bucket %d short", got, b)
			}
		}
		// Without room, nothing is claimed.
		sk.capacity = 0
		if n := c.Exec(context.Background()); n != 0 {
			t.Fatalf("claimed %d without room", n)
		}
		// Room again: the rest comes over the following rounds.
		sk.capacity = 7
		for range 10 {
			c.Exec(context.Background())
			sk.drain()
		}
		if sk.total() != 30 {
			t.Fatalf("claimed %d of 30 over the rounds", sk.total())
		}
	})
}

func TestClaimerSpreadsRoomOverBuckets(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := newFixture(t, s, nil)
		due := time.Now().Add(-time.Minute)
		// One hot bucket with a deep backlog, due earliest, and nine with a little each.
		f.addMany(0, 200, due.Add(-time.Hour))
		for b := 1; b <= 9; b++ {
			f.addMany(b, 2, due)
		}
		held := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
		sk := newSink(t, 40)
		c := newClaimer(t, s, held, sk, time.Second)
		if n := c.Exec(context.Background()); n != 40 {
			t.Fatalf("claimed %d with room for 40, want 40", n)
		}
		got := perBucket(sk.drain())
		for b := 1; b <= 9; b++ {
			if got[b] != 2 {
				t.Fatalf("claims per bucket %v: the hot bucket 0 starved bucket %d", got, b)
			}
		}
		if got[0] != 40-18 {
			t.Fatalf("claims per bucket %v: the room the small buckets left should go to the hot one", got)
		}

		// With room for fewer claims than buckets, the buckets take turns over the rounds.
		sk.capacity = 3
		seen := map[int]bool{}
		for range 10 {
			c.Exec(context.Background())
			for b := range perBucket(sk.drain()) {
				seen[b] = true
			}
		}
		if !seen[0] {
			t.Fatalf("bucket 0 was never claimed in rounds with room for 3 over %d buckets", len(held))
		}
	})
}

func TestClaimerRotatesBucketsWhenRoomIsShort(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := newFixture(t, s, nil)
		held := []int{3, 5, 7, 9}
		for _, b := range held {
			f.addMany(b, 5, time.Now().Add(-time.Minute))
		}
		sk := newSink(t, 1)
		c := newClaimer(t, s, held, sk, time.Second)
		var order []int
		for range 8 {
			if n := c.Exec(context.Background()); n != 1 {
				t.Fatalf("claimed %d with room for 1, want 1", n)
			}
			order = append(order, sk.drain()[0].Bucket)
		}
		// Every window of len(held) rounds visits every bucket.
		for i := 0; i+len(held) <= len(order); i++ {
			w := slices.Clone(order[i : i+len(held)])
			slices.Sort(w)
			if !slices.Equal(w, held) {
				t.Fatalf("buckets claimed round by round %v: rounds %d..%d miss some", order, i, i+len(held)-1)
			}
		}
	})
}

func TestClaimerLooksAhead(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := newFixture(t, s, nil)
		now := time.Now()
		soon := now.Add(1500 * time.Millisecond)
		soonID := f.AddInBucket(1, soon, "soon")[0]
		lateID := f.AddInBucket(1, now.Add(time.Hour), "late")[0]
		sk := newSink(t, 100)
		c := newClaimer(t, s, []int{1}, sk, 5*time.Second)
		if n := c.Exec(context.Background()); n != 1 {
			t.Fatalf("claimed %d, want only the task due within the lookahead", n)
		}
		cl := sk.drain()[0]
		if cl.TaskID != soonID || !cl.DueAt.Equal(retry.Truncate(soon)) {
			t.Fatalf("claimed task %d due %s; want task %d, keeping its due time %s", cl.TaskID, cl.DueAt, soonID, soon)
		}
		if !cl.RunDeadline.After(cl.DueAt.Add(claimTimeout - time.Second)) {
			t.Fatalf("a claim due at %s lapses at %s, before its time plus the claim timeout", cl.DueAt, cl.RunDeadline)
		}
		if tk := f.Task(lateID); tk.State != retry.Waiting {
			t.Fatalf("the task due in an hour is %s", tk.State)
		}
	})
}

// A task due just after a tick is claimed by the round before that tick: when the tick comes,
// dispatch already holds it and fires it at its time, instead of leaving it to wait for that
// tick's own claim statement. (With a lookahead of exactly one tick, a round early in a second
// reached only as far into the next second as it had itself started into this one.)
func TestClaimerHoldsWhatFallsDueJustAfterTheNextTick(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := newFixture(t, s, nil)
		sk := newSink(t, 100)
		c := newTickingClaimer(t, s, []int{1}, sk)
		// Start early in a second, as a tick's round does.
		testkit.WaitEvery(t, time.Millisecond, 5*time.Second, "the start of a second", func() bool {
			return time.Now().Sub(time.Now().Truncate(time.Second)) < 50*time.Millisecond
		})
		tick := time.Now().Truncate(time.Second).Add(time.Second)
		due := tick.Add(150 * time.Millisecond)
		id := f.AddInBucket(1, due, "just-after-the-tick")[0]
		lateID := f.AddInBucket(1, tick.Add(time.Hour), "in-an-hour")[0]
		if n := c.Exec(context.Background()); n != 1 {
			t.Fatalf("claimed %d; want the task due %s after the next tick, and not the one due in an hour",
				n, due.Sub(tick))
		}
		if cl := sk.drain()[0]; cl.TaskID != id || !cl.DueAt.Equal(retry.Truncate(due)) {
			t.Fatalf("claimed task %d due %s; want task %d due %s", cl.TaskID, cl.DueAt, id, due)
		}
		if tk := f.Task(lateID); tk.State != retry.Waiting {
			t.Fatalf("the task due in an hour is %s", tk.State)
		}
	})
}

func TestClaimerClaimsCallbacks(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := newFixture(t, s, func(sc *retry.Scene) { sc.Callback.Enabled = true })
		ids := f.AddInBucket(2, time.Now().Add(-time.Minute), "won", "next")
		claims := f.Claim(retry.KindReplay, "node-0", time.Now(), time.Now().Add(time.Minute))
		var won []retry.Claim
		for _, c := range claims {
			if c.TaskID == ids[0] {
				won = append(won, c)
			} else if _, err := s.Settle(context.Background(), []retry.Settlement{retry.Release(&c, time.Now().Add(-time.Second))}); err != nil {
				t.Fatal(err)
			}
		}
		if n := f.settle(won, retry.OutcomeSucceeded, time.Now().Add(-time.Second)); n != 1 {
			t.Fatalf("settled %d", n)
		}
		sk := newSink(t, 100)
		c := newClaimer(t, s, []int{2}, sk, time.Second)
		if n := c.Exec(context.Background()); n != 2 {
			t.Fatalf("claimed %d, want the due replay and the due callback", n)
		}
		kinds := map[int64]retry.AttemptKind{}
		for _, cl := range sk.drain() {
			kinds[cl.TaskID] = cl.Kind
			if cl.Kind == retry.KindCallback && (cl.State != retry.Succeeded || cl.Number() != 1) {
				t.Fatalf("callback claim %+v", cl)
			}
		}
		if kinds[ids[0]] != retry.KindCallback || kinds[ids[1]] != retry.KindReplay {
			t.Fatalf("claimed kinds %v; want a callback for the ended task and a replay for the other", kinds)
		}
		if tk := f.Task(ids[0]); tk.State != retry.Succeeded || tk.CallbackState != retry.CallbackRunning {
			t.Fatalf("task with a claimed callback is %s, callback %s", tk.State, tk.CallbackState)
		}
	})
}

func TestClaimerRunsARoundWhenWoken(t *testing.T) {
	t.Parallel()
	s := storagetest.Open(t, storagetest.SQLite(t))
	f := newFixture(t, s, nil)
	f.addMany(4, 3, time.Now().Add(-time.Second))
	sk := newSink(t, 100)
	c := newClaimer(t, s, []int{4}, sk, time.Second)
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.Wake()
	c.Wake() // wakes merge
	testkit.WaitUntil(t, 10*time.Second, "the woken claimer to claim", func() bool { return sk.total() == 3 })
	c.Stop(context.Background())
	f.addMany(4, 3, time.Now().Add(-time.Second))
	c.Wake() // a stopped claimer claims nothing more
	if sk.total() != 3 {
		t.Fatalf("a stopped claimer claimed %d", sk.total()-3)
	}
}

func TestClaimerStopNeverStrandsAClaim(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := newFixture(t, s, nil)
		for i := range 12 {
			node := fmt.Sprintf("node-%d", i)
			for b := range 4 {
				f.addMany(b, 25, time.Now().Add(-time.Minute))
			}
			sk := newSink(t, 1000)
			c, err := scheduler.NewClaimer(scheduler.ClaimerParams{Store: s, Held: func() []int { return []int{0, 1, 2, 3} },
				Sink: sk, Log: testkit.Logger(t), NodeID: node, Batch: 1000, Lookahead: time.Second, ClaimTimeout: claimTimeout})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Start(ctx); err != nil {
				t.Fatal(err)
			}
			c.Wake()
			time.Sleep(time.Duration(i%6) * time.Millisecond) // stop at a different point of the round each time
			// Stop waits for the statement under way: nothing lands after it.
			c.Stop(ctx)
			tasks, err := s.ListTasks(ctx, storage.TaskFilter{States: []retry.State{retry.Running}}, 0, 10000)
			if err != nil {
				t.Fatal(err)
			}
			handed := map[int64]bool{}
			for _, cl := range sk.drain() {
				handed[cl.TaskID] = true
			}
			var running []int64
			for _, tk := range tasks {
				running = append(running, tk.ID)
				if tk.ClaimedBy == node && !handed[tk.ID] {
					t.Fatalf("round %d: task %d was claimed by %s but never handed to dispatch: it would wait for the sweeper and lose an attempt", i, tk.ID, node)
				}
			}
			// End every claimed task, so the next round starts afresh.
			if _, err := s.Apply(ctx, storage.Cancel, running, time.Time{}); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestClaimerDoesNotStarveCallbacksUnderABacklog(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := newFixture(t, s, func(sc *retry.Scene) { sc.Callback.Enabled = true })
		// Three ended tasks with callbacks due, behind a backlog of due replays far larger than
		// dispatch takes in a round.
		ended := f.AddInBucket(0, time.Now().Add(-time.Hour), "cb-1", "cb-2", "cb-3")
		f.settle(f.Claim(retry.KindReplay, "node-0", time.Now(), time.Now().Add(time.Minute)), retry.OutcomeSucceeded, time.Now().Add(-time.Second))
		f.addMany(0, 100, time.Now().Add(-time.Minute))
		sk := newSink(t, 10)
		c := newClaimer(t, s, []int{0}, sk, time.Second)
		callbacks := 0
		for range 3 {
			c.Exec(context.Background())
			for _, cl := range sk.drain() {
				if cl.Kind == retry.KindCallback {
					callbacks++
				}
			}
		}
		if callbacks != len(ended) {
			t.Fatalf("%d of %d due callbacks claimed in 3 rounds of room 10 behind 100 due replays; callbacks wait for the whole backlog",
				callbacks, len(ended))
		}
	})
}

// A callback that falls due while a replay backlog drains is claimed before the backlog ends:
// the rounds that follow each other behind a backlog claim callbacks too.
func TestClaimerClaimsCallbacksFallingDueDuringAReplayBacklog(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := newFixture(t, s, func(sc *retry.Scene) { sc.Callback.Enabled = true })
		backlog := f.addMany(0, 3000, time.Now().Add(-time.Minute))
		sk := newSink(t, 20)
		c := newTickingClaimer(t, s, []int{0}, sk)
		start(t, c)
		t.Cleanup(func() { c.Stop(context.Background()) })
		c.Wake()
		// Dispatch finishes what it holds at every poll (5 ms): the backlog drains in rounds
		// that follow each other without waiting for a tick. The first replays handed over
		// succeed, so their callbacks fall due while the backlog is still there.
		var replays, callbacks int
		succeeded := false
		testkit.WaitUntil(t, 30*time.Second, "the callbacks to be claimed during the backlog", func() bool {
			var done []retry.Claim
			for _, cl := range sk.drain() {
				if cl.Kind == retry.KindCallback {
					callbacks++
					continue
				}
				replays++
				if !succeeded && len(done) < 3 {
					done = append(done, cl)
				}
			}
			if len(done) > 0 {
				f.settle(done, retry.OutcomeSucceeded, time.Now())
				succeeded = len(done) == 3
			}
			return callbacks >= 3
		})
		if replays >= len(backlog) {
			t.Fatalf("the callbacks were claimed only after the whole backlog (%d replays) drained", replays)
		}
	})
}

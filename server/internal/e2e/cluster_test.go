package e2e

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/app"
	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// waitFor polls cond every 20 ms until it holds, failing with what after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitEvery(t, 20*time.Millisecond, timeout, what, cond)
}

// split checks that the nodes' held buckets do not overlap and returns how many they hold in
// all, and how many each.
func split(t *testing.T, nodes ...*app.App) (int, []int) {
	t.Helper()
	seen := map[int]string{}
	var each []int
	total := 0
	for _, n := range nodes {
		held := n.Leaser.Held()
		each = append(each, len(held))
		for _, b := range held {
			if other, dup := seen[b]; dup {
				t.Fatalf("bucket %d held by both %s and %s", b, other, n.NodeID)
			}
			seen[b] = n.NodeID
		}
		total += len(held)
	}
	return total, each
}

// startSplit starts node-a and node-b and waits until they split the 128 buckets.
func startSplit(t *testing.T, cfg config.Config) (a, b *app.App) {
	t.Helper()
	a = startNode(t, cfg, "node-a")
	b = startNode(t, cfg, "node-b")
	waitFor(t, 10*time.Second, "two nodes to split 128 buckets", func() bool {
		total, each := split(t, a, b)
		return total == 128 && each[0] > 20 && each[1] > 20
	})
	return a, b
}

func TestTwoNodesSplitTheBucketsAndOneTakesAllWhenTheOtherStops(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		cfg := testConfig(target)
		a, b := startSplit(t, cfg)
		// Exactly one of them leads the singleton work.
		waitFor(t, 10*time.Second, "one node to lead", func() bool { return a.Elector.IsLeader() || b.Elector.IsLeader() })
		if a.Elector.IsLeader() && b.Elector.IsLeader() {
			t.Fatal("both nodes lead the singleton work")
		}
		// The database agrees: every lease is held by one of them.
		leases, err := a.Store.Leases(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range leases {
			if l.NodeID != "node-a" && l.NodeID != "node-b" {
				t.Fatalf("bucket %d leased to %q", l.Bucket, l.NodeID)
			}
		}
		// Through two rounds of lease renewals, it stays split and never overlaps.
		renewedPast := time.Now().Add(cfg.Scheduler.LeaseDuration + 2*cfg.Scheduler.HeartbeatInterval)
		waitFor(t, 10*time.Second, "both nodes to renew their leases twice", func() bool {
			split(t, a, b)
			leases, err := a.Store.Leases(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range leases {
				if !l.ExpiresAt.After(renewedPast) {
					return false
				}
			}
			return true
		})

		// A graceful stop hands the buckets over at once.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "node-a to lead after node-b stopped", a.Elector.IsLeader)
		waitFor(t, 5*time.Second, "node-a to take all buckets after node-b stopped", func() bool {
			total, _ := split(t, a)
			return total == 128
		})

		// A crashed node's buckets move once its leases expire.
		c := startNode(t, cfg, "node-c")
		waitFor(t, 10*time.Second, "node-c to take its share", func() bool {
			total, each := split(t, a, c)
			return total == 128 && each[1] > 20
		})
		c.Kill()
		waitFor(t, 10*time.Second, "node-a to take all buckets after node-c crashed", func() bool {
			total, _ := split(t, a)
			return total == 128
		})
	})
}

func TestNodeStoppedMidDispatchLosesNothing(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		cfg := testConfig(target)
		a := startNode(t, cfg, "node-a")
		w := newWorld(t, a, 3, func(sc *retry.Scene) { sc.Timeout = time.Second })

		// The first call hangs until the node that made it is gone; later calls testkit.Succeed.
		received := make(chan struct{})
		release := make(chan struct{})
		var once sync.Once
		in := testkit.NewInstance(t, testToken, func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
			first := false
			once.Do(func() { first = true })
			if first {
				close(received)
				<-release
			}
			return testkit.Succeed(req)
		})
		w.register("i1", in.URL(), 4)
		id := w.report(item("notify", "survivor"))[0].TaskID
		select {
		case <-received:
		case <-time.After(10 * time.Second):
			t.Fatal("the first replay never arrived")
		}
		if tk := w.task(id); tk.State != retry.Running || tk.ClaimedBy != "node-a" {
			t.Fatalf("task before the crash: %+v", tk)
		}
		a.Kill()
		close(release)

		b := startNode(t, cfg, "node-b")
		w.node = b
		tk := w.waitTask(id, 20*time.Second, "succeeded on node-b", func(tk retry.Task) bool { return tk.State == retry.Succeeded })
		atts := w.attempts(id)
		if tk.Attempts != 2 || len(atts) != 2 {
			t.Fatalf("want 2 attempts (one lost with node-a, one on node-b), got %d: %+v", tk.Attempts, atts)
		}
		if atts[0].Outcome != retry.OutcomeTimedOut || atts[0].NodeID != "node-a" {
			t.Fatalf("the lost attempt: %+v", atts[0])
		}
		if atts[1].Outcome != retry.OutcomeSucceeded || atts[1].NodeID != "node-b" {
			t.Fatalf("the replay on node-b: %+v", atts[1])
		}
	})
}

func TestGracefulShutdownGivesBackWhatItHolds(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		cfg := testConfig(target)
		a := startNode(t, cfg, "node-a")
		w := newWorld(t, a, 3, nil)
		// Tasks due in a while: node-a claims them ahead of time only within its lookahead, so
		// make them due now but give no instance; then stop while they sit released/claimed.
		in := testkit.NewInstance(t, testToken, func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
			time.Sleep(300 * time.Millisecond)
			return testkit.Succeed(req)
		})
		w.register("i1", in.URL(), 1)
		var ids []int64
		for _, r := range w.report(item("notify", "g1"), item("notify", "g2"), item("notify", "g3"), item("notify", "g4")) {
			ids = append(ids, r.TaskID)
		}
		waitFor(t, 10*time.Second, "a replay in flight", func() bool { return len(in.CallsOf(protocol.KindReplay)) > 0 })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		// Nothing is left running: every task either finished or waits again. (node-b may
		// already have claimed some of them on its first tick: those are its own.)
		b := startNode(t, cfg, "node-b")
		w.node = b
		for _, id := range ids {
			tk := w.task(id)
			if tk.State == retry.Running && tk.ClaimedBy == "node-a" {
				t.Fatalf("task %d left running after a graceful shutdown", id)
			}
		}
		for _, id := range ids {
			w.waitTask(id, 15*time.Second, "succeeded", func(tk retry.Task) bool { return tk.State == retry.Succeeded })
		}
		// Released claims were not counted as attempts.
		for _, id := range ids {
			if tk := w.task(id); tk.Attempts != 1 {
				t.Fatalf("task %d has %d attempts, want 1", id, tk.Attempts)
			}
		}
	})
}

// A shutdown whose time runs out while a call is in flight cancels the call and gives its task
// back (not counted as an attempt), as Dispatcher.Stop promises: the give-back must still be
// written although the shutdown's context is spent by then.
func TestShutdownPastItsTimeoutStillGivesBackCancelledCalls(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		cfg := testConfig(target)
		a := startNode(t, cfg, "node-a")
		w := newWorld(t, a, 3, func(sc *retry.Scene) { sc.Timeout = time.Minute })
		hold := make(chan struct{})
		in := testkit.NewInstance(t, testToken, func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
			<-hold
			return testkit.Succeed(req)
		})
		t.Cleanup(func() { close(hold) }) // before the instance's server closes
		w.register("i1", in.URL(), 1)
		id := w.report(item("notify", "slow"))[0].TaskID
		waitFor(t, 10*time.Second, "the replay in flight", func() bool { return len(in.CallsOf(protocol.KindReplay)) > 0 })
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		a.Shutdown(ctx)

		// Read it with no node running, which could claim it again.
		s := storagetest.Open(t, target)
		tk, err := s.Task(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		atts, err := s.Attempts(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if tk.State != retry.Waiting || tk.Attempts != 0 || tk.ClaimToken != 0 || len(atts) != 0 {
			t.Fatalf("after a shutdown that cancelled its call, the task is %s with %d attempts and claim %d; want it given back, waiting with none",
				tk.State, tk.Attempts, tk.ClaimToken)
		}
	})
}

// syncBuffer is a log destination a test reads while a node writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A node whose database becomes unreachable, with calls in flight and results waiting to be
// written, still shuts down (within its timeout and the grace after it), and logs how many
// results it could not write: their tasks return through the sweeper after the claim deadline.
func TestShutdownReturnsWhileTheDatabaseIsDown(t *testing.T) {
	t.Run("refusing", func(t *testing.T) { shutdownWithoutDatabase(t, (*testkit.Proxy).Down) })
	t.Run("hanging", func(t *testing.T) { shutdownWithoutDatabase(t, (*testkit.Proxy).Hang) })
}

// shutdownWithoutDatabase shuts a node down, with calls in flight and results to write, after
// outage has taken its database away.
func shutdownWithoutDatabase(t *testing.T, outage func(*testkit.Proxy)) {
	target, proxy := testkit.MySQLBehindProxy(t)
	cfg := testConfig(target)
	cfg.Server.NodeID = "node-a"
	var logs syncBuffer
	ctx := context.Background()
	a, err := app.New(ctx, cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Kill) // a no-op once Shutdown ran
	w := newWorld(t, a, 3, func(sc *retry.Scene) { sc.Timeout = time.Minute })
	release, hold := make(chan struct{}), make(chan struct{})
	var answered atomic.Int32
	in := testkit.NewInstance(t, testToken, func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
		<-release
		if strings.HasPrefix(req.IdempotencyKey, "hang") {
			<-hold
			return testkit.Succeed(req)
		}
		defer answered.Add(1)
		return testkit.Succeed(req)
	})
	t.Cleanup(func() { close(hold) }) // before the instance's server closes
	w.register("i1", in.URL(), 8)
	w.report(item("notify", "done-1"), item("notify", "done-2"), item("notify", "hang-1"), item("notify", "hang-2"))
	waitFor(t, 10*time.Second, "four calls in flight", func() bool { return len(in.CallsOf(protocol.KindReplay)) == 4 })
	outage(proxy)
	close(release) // two answer (their results cannot be written), two stay in flight
	waitFor(t, 10*time.Second, "two calls to answer", func() bool { return answered.Load() == 2 })

	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Shutdown(sctx)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("Shutdown did not return with the database down; log:\n%s", logs.String())
	}
	// The two answered calls' results, and the give-backs of the two cancelled ones.
	out := logs.String()
	m := regexp.MustCompile(`shutdown: results not written.* results=(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the log does not say which results were not written:\n%s", out)
	}
	if n, _ := strconv.Atoi(m[1]); n < 2 {
		t.Fatalf("the log says %d results were not written, want at least the 2 answered calls':\n%s", n, out)
	}
}

// Two nodes dispatching one group's tasks share an instance's capacity: each fills its part,
// so the instance never gets more calls at once than it registered for (before, each node
// filled the whole capacity, and the instance answered the excess busy).
func TestTwoNodesShareAnInstancesCapacity(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		a, b := startSplit(t, testConfig(target))
		waitFor(t, 10*time.Second, "both nodes to know of each other", func() bool {
			return a.Leaser.Nodes() == 2 && b.Leaser.Nodes() == 2
		})
		w := newWorld(t, a, 3, nil)
		const capacity = 4
		var inflight, most atomic.Int32
		in := testkit.NewInstance(t, testToken, func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
			n := inflight.Add(1)
			defer inflight.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(30 * time.Millisecond) // the partner's work
			return testkit.Succeed(req)
		})
		w.register("i1", in.URL(), capacity)
		waitFor(t, 10*time.Second, "both nodes to know the instance", func() bool {
			return a.Registry.Live(w.group.ID) == 1 && b.Registry.Live(w.group.ID) == 1
		})
		var items []protocol.ReportItem
		for i := range 80 {
			items = append(items, item("notify", "share-"+strconv.Itoa(i)))
		}
		var ids []int64
		for _, r := range w.report(items...) {
			ids = append(ids, r.TaskID)
		}
		nodes := map[string]int{}
		for _, id := range ids {
			w.waitTask(id, 60*time.Second, "succeeded", func(tk retry.Task) bool { return tk.State == retry.Succeeded })
			for _, at := range w.attempts(id) {
				nodes[at.NodeID]++
			}
		}
		if nodes["node-a"] == 0 || nodes["node-b"] == 0 {
			t.Fatalf("replays by node: %v; both nodes should have dispatched", nodes)
		}
		if m := most.Load(); m > capacity {
			t.Fatalf("the instance had %d calls at once from two nodes; it registered a capacity of %d", m, capacity)
		}
	})
}

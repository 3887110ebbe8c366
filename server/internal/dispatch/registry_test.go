package dispatch_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/dispatch"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// instanceOf is a live instance of group 1 with an executor and the given capacity.
func instanceOf(id string, capacity int) retry.Instance {
	return retry.Instance{ID: id, GroupID: 1, ExecutorURL: "http://" + id + ".invalid/execute", Capacity: capacity}
}

// memRegistry is a registry fed only through Observe: Pick never touches the database.
func memRegistry(t *testing.T, instances ...retry.Instance) *dispatch.Registry {
	t.Helper()
	r := dispatch.NewRegistry(dispatch.RegistryParams{Store: nil, TTL: time.Minute, Interval: time.Minute, Log: testkit.Logger(t)})
	for _, in := range instances {
		r.Observe(in)
	}
	return r
}

// pick picks for group 1 and ends the call at once, returning the instance id.
func pick(t *testing.T, r *dispatch.Registry, routing retry.Routing, key string) string {
	t.Helper()
	l, err := r.Pick(1, routing, key, nil)
	if err != nil {
		t.Fatalf("pick %s %q: %v", routing, key, err)
	}
	l.Done(0, 0)
	return l.Instance.ID
}

func TestRoundRobinCyclesOverTheLiveInstances(t *testing.T) {
	r := memRegistry(t, instanceOf("c", 0), instanceOf("a", 0), instanceOf("b", 0))
	var got []string
	for range 7 {
		got = append(got, pick(t, r, retry.RoundRobin, "k"))
	}
	// Every window of three consecutive picks names every instance once.
	for i := 0; i+3 <= len(got); i++ {
		seen := map[string]bool{got[i]: true, got[i+1]: true, got[i+2]: true}
		if len(seen) != 3 {
			t.Fatalf("round robin picks %v: window %d does not visit all three", got, i)
		}
	}
	// An instance that leaves drops out of the cycle; one that joins enters it.
	r.Forget("b")
	r.Observe(instanceOf("d", 0))
	count := map[string]int{}
	for range 30 {
		count[pick(t, r, retry.RoundRobin, "k")]++
	}
	if count["b"] != 0 || count["a"] != 10 || count["c"] != 10 || count["d"] != 10 {
		t.Fatalf("after b left and d joined, 30 picks went %v, want 10 each to a, c, d", count)
	}
}

func TestRandomSpreadsOverTheInstances(t *testing.T) {
	r := memRegistry(t, instanceOf("a", 0), instanceOf("b", 0), instanceOf("c", 0))
	count := map[string]int{}
	for range 600 {
		count[pick(t, r, retry.Random, "k")]++
	}
	// 200 expected each; below 100 happens with odds far under one in a billion.
	for _, id := range []string{"a", "b", "c"} {
		if count[id] < 100 {
			t.Fatalf("random sent %v of 600 picks, want each instance near 200", count)
		}
	}
}

func TestConsistentHashKeepsKeysAndMovesOnlyThoseOfALeavingInstance(t *testing.T) {
	r := memRegistry(t, instanceOf("a", 0), instanceOf("b", 0), instanceOf("c", 0), instanceOf("d", 0))
	before := map[string]string{}
	perInstance := map[string]int{}
	for i := range 400 {
		key := fmt.Sprintf("order-%d", i)
		before[key] = pick(t, r, retry.ConsistentHash, key)
		perInstance[before[key]]++
		for range 3 {
			if again := pick(t, r, retry.ConsistentHash, key); again != before[key] {
				t.Fatalf("key %s went to %s, then to %s", key, before[key], again)
			}
		}
	}
	for _, id := range []string{"a", "b", "c", "d"} {
		if perInstance[id] < 50 {
			t.Fatalf("400 keys spread %v over four instances, want each near 100", perInstance)
		}
	}
	r.Forget("c")
	for key, was := range before {
		now := pick(t, r, retry.ConsistentHash, key)
		if was != "c" && now != was {
			t.Fatalf("key %s moved from %s to %s when only c left", key, was, now)
		}
		if now == "c" {
			t.Fatalf("key %s still goes to c, which left", key)
		}
	}
	// When c comes back, its keys come back to it, and no other key moves.
	r.Observe(instanceOf("c", 0))
	for key, was := range before {
		if now := pick(t, r, retry.ConsistentHash, key); now != was {
			t.Fatalf("key %s went to %s after c returned, want %s as before", key, now, was)
		}
	}
}

func TestLeastRecentlyUsedPicksTheIdlest(t *testing.T) {
	r := memRegistry(t, instanceOf("a", 0), instanceOf("b", 0), instanceOf("c", 0))
	first := []string{pick(t, r, retry.LeastRecentlyUsed, "k"), pick(t, r, retry.LeastRecentlyUsed, "k"),
		pick(t, r, retry.LeastRecentlyUsed, "k")}
	if first[0] == first[1] || first[1] == first[2] || first[0] == first[2] {
		t.Fatalf("the first three picks %v should each take a never-used instance", first)
	}
	// From then on, the instance unused the longest goes next: the same order again.
	for round := range 3 {
		for i, want := range first {
			if got := pick(t, r, retry.LeastRecentlyUsed, "k"); got != want {
				t.Fatalf("round %d pick %d: got %s, want %s, the least recently used", round, i, got, want)
			}
		}
	}
	// A new instance has never been used: it goes first.
	r.Observe(instanceOf("z", 0))
	if got := pick(t, r, retry.LeastRecentlyUsed, "k"); got != "z" {
		t.Fatalf("after z joined, picked %s, want z", got)
	}
}

func TestCapacityBusyAndNoInstance(t *testing.T) {
	r := memRegistry(t, instanceOf("small", 1), instanceOf("large", 2))
	if _, err := r.Pick(99, retry.RoundRobin, "k", nil); !errors.Is(err, dispatch.ErrNoInstance) {
		t.Fatalf("pick in a group without instances: %v, want ErrNoInstance", err)
	}
	var leases []*dispatch.Lease
	count := map[string]int{}
	for range 3 {
		l, err := r.Pick(1, retry.RoundRobin, "k", nil)
		if err != nil {
			t.Fatalf("pick with room left: %v", err)
		}
		leases = append(leases, l)
		count[l.Instance.ID]++
	}
	if count["small"] != 1 || count["large"] != 2 {
		t.Fatalf("three calls in flight went %v, want 1 on small (capacity 1) and 2 on large (capacity 2)", count)
	}
	// Every instance is at capacity: busy, not absent.
	if _, err := r.Pick(1, retry.RoundRobin, "k", nil); !errors.Is(err, dispatch.ErrBusy) {
		t.Fatalf("pick with every instance at capacity: %v, want ErrBusy", err)
	}
	for _, l := range leases {
		if l.Instance.ID == "small" {
			l.Done(0, 0)
		}
	}
	if got := pick(t, r, retry.LeastRecentlyUsed, "k"); got != "small" {
		t.Fatalf("after small's call ended, picked %s, want small: the only one with room", got)
	}
	// Zero capacity means no bound.
	u := memRegistry(t, instanceOf("unbounded", 0))
	for i := range 1000 {
		if _, err := u.Pick(1, retry.RoundRobin, "k", nil); err != nil {
			t.Fatalf("pick %d on an unbounded instance: %v", i, err)
		}
	}
	// Excluded instances (tried already for this call) count as absent.
	if _, err := r.Pick(1, retry.RoundRobin, "k", map[string]bool{"small": true, "large": true}); !errors.Is(err, dispatch.ErrNoInstance) {
		t.Fatalf("pick with every instance excluded: %v, want ErrNoInstance", err)
	}
}

func TestDoneKeepsBusyAndDownInstancesOut(t *testing.T) {
	r := memRegistry(t, instanceOf("a", 0))
	l, _ := r.Pick(1, retry.RoundRobin, "k", nil)
	l.Done(time.Hour, 0)
	if _, err := r.Pick(1, retry.RoundRobin, "k", nil); !errors.Is(err, dispatch.ErrBusy) {
		t.Fatalf("pick after a busy answer: %v, want ErrBusy", err)
	}

	r = memRegistry(t, instanceOf("a", 0))
	l, _ = r.Pick(1, retry.RoundRobin, "k", nil)
	l.Done(0, time.Hour)
	if _, err := r.Pick(1, retry.RoundRobin, "k", nil); !errors.Is(err, dispatch.ErrNoInstance) {
		t.Fatalf("pick after the instance could not be reached: %v, want ErrNoInstance", err)
	}
	// Registering again says the instance is back.
	r.Observe(instanceOf("a", 0))
	if got := pick(t, r, retry.RoundRobin, "k"); got != "a" {
		t.Fatalf("after a registered again, picked %s", got)
	}

	// Short windows pass.
	l, _ = r.Pick(1, retry.RoundRobin, "k", nil)
	l.Done(30*time.Millisecond, 0)
	l, err := waitPick(t, r)
	if err != nil {
		t.Fatalf("the busy window never passed: %v", err)
	}
	l.Done(0, 30*time.Millisecond)
	if _, err := waitPick(t, r); err != nil {
		t.Fatalf("the down window never passed: %v", err)
	}
}

// waitPick picks an instance of group 1 with round robin, waiting until one can be picked.
func waitPick(t *testing.T, r *dispatch.Registry) (*dispatch.Lease, error) {
	t.Helper()
	var (
		l   *dispatch.Lease
		err error
	)
	testkit.WaitDescribed(t, 5*time.Millisecond, 5*time.Second, func() string { return fmt.Sprintf("a pick (%v)", err) },
		func() bool {
			l, err = r.Pick(1, retry.RoundRobin, "k", nil)
			return err == nil
		})
	return l, err
}

func TestInstancesWithoutExecutorAreNeverPicked(t *testing.T) {
	silent := instanceOf("reports-only", 0)
	silent.ExecutorURL = ""
	r := memRegistry(t, silent)
	if n := r.Live(1); n != 0 {
		t.Fatalf("Live counts %d, want 0: the instance has no executor", n)
	}
	if _, err := r.Pick(1, retry.RoundRobin, "k", nil); !errors.Is(err, dispatch.ErrNoInstance) {
		t.Fatalf("pick with only an executor-less instance: %v, want ErrNoInstance", err)
	}
	r.Observe(instanceOf("worker", 0))
	for _, routing := range []retry.Routing{retry.RoundRobin, retry.Random, retry.ConsistentHash, retry.LeastRecentlyUsed} {
		for i := range 20 {
			if got := pick(t, r, routing, fmt.Sprint(i)); got != "worker" {
				t.Fatalf("%s picked %s, which has no executor", routing, got)
			}
		}
	}
	if n := r.Live(1); n != 1 {
		t.Fatalf("Live counts %d, want 1", n)
	}
}

func TestRefreshAndObserveKeepInFlightCounts(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		g := testkit.NewGroup(t, s, storagetest.RandomName("ns"), testToken)
		in := retry.Instance{ID: "i1", GroupID: g.ID, ExecutorURL: "http://i1.invalid/execute", Capacity: 1}
		if err := s.UpsertInstance(ctx, in, time.Now().Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		r := dispatch.NewRegistry(dispatch.RegistryParams{Store: s, TTL: time.Hour, Interval: time.Hour, Log: testkit.Logger(t)})
		if err := r.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		l, err := r.Pick(g.ID, retry.RoundRobin, "k", nil)
		if err != nil {
			t.Fatalf("pick the registered instance: %v", err)
		}
		// Neither a reload nor a new registration forgets the call in flight.
		if err := r.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Pick(g.ID, retry.RoundRobin, "k", nil); !errors.Is(err, dispatch.ErrBusy) {
			t.Fatalf("pick after a reload, with the only slot in use: %v, want ErrBusy", err)
		}
		r.Observe(in)
		if _, err := r.Pick(g.ID, retry.RoundRobin, "k", nil); !errors.Is(err, dispatch.ErrBusy) {
			t.Fatalf("pick after the instance registered again, with the only slot in use: %v, want ErrBusy", err)
		}
		l.Done(0, 0)
		l, err = r.Pick(g.ID, retry.RoundRobin, "k", nil)
		if err != nil {
			t.Fatalf("pick after the call ended: %v", err)
		}
		// A deregistered instance is gone at once; ending its call afterwards is harmless.
		r.Forget("i1")
		l.Done(0, 0)
		if _, err := r.Pick(g.ID, retry.RoundRobin, "k", nil); !errors.Is(err, dispatch.ErrNoInstance) {
			t.Fatalf("pick after Forget: %v, want ErrNoInstance", err)
		}
		// The next reload finds it in the database again (it only deregistered on this node's view).
		if err := r.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if r.Live(g.ID) != 1 {
			t.Fatalf("after reload Live = %d, want 1", r.Live(g.ID))
		}
	})
}

func TestRefreshDropsSilentInstances(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		t.Parallel()
		ctx := context.Background()
		g := testkit.NewGroup(t, s, storagetest.RandomName("ns"), testToken)
		if err := s.UpsertInstance(ctx, retry.Instance{ID: "i1", GroupID: g.ID, ExecutorURL: "http://i1.invalid/execute"}, time.Now().Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		r := dispatch.NewRegistry(dispatch.RegistryParams{Store: s, TTL: 2 * time.Second, Interval: 10 * time.Millisecond, Log: testkit.Logger(t)})
		if err := r.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Stop(context.Background()) })
		if r.Live(g.ID) != 1 {
			t.Fatalf("Live = %d after start, want the registered instance", r.Live(g.ID))
		}
		// Without heartbeats it drops out after the TTL, by the registry's own reloads.
		testkit.WaitUntil(t, 10*time.Second, "the silent instance to drop out", func() bool { return r.Live(g.ID) == 0 })
		if _, err := r.Pick(g.ID, retry.RoundRobin, "k", nil); !errors.Is(err, dispatch.ErrNoInstance) {
			t.Fatalf("pick after the instance expired: %v, want ErrNoInstance", err)
		}
		// A heartbeat brings it back on the next reload.
		if err := s.UpsertInstance(ctx, retry.Instance{ID: "i1", GroupID: g.ID, ExecutorURL: "http://i1.invalid/execute"}, time.Now().Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		testkit.WaitUntil(t, 10*time.Second, "the instance to come back", func() bool { return r.Live(g.ID) == 1 })
	})
}

// The context given to Start bounds the first load only: the reloads go on after it ends (a
// caller may start the node under a start-up timeout, and a signal context ends as the node
// begins its graceful shutdown, while dispatch still runs).
func TestRefreshOutlivesTheStartContext(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		t.Parallel()
		g := testkit.NewGroup(t, s, storagetest.RandomName("ns"), testToken)
		r := dispatch.NewRegistry(dispatch.RegistryParams{Store: s, TTL: time.Minute, Interval: 10 * time.Millisecond, Log: testkit.Logger(t)})
		ctx, cancel := context.WithCancel(context.Background())
		if err := r.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Stop(context.Background()) })
		cancel()
		if err := s.UpsertInstance(context.Background(), retry.Instance{ID: "late", GroupID: g.ID, ExecutorURL: "http://late.invalid/execute"}, time.Now().Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		testkit.WaitUntil(t, 10*time.Second, "an instance registered on another node to be seen", func() bool { return r.Live(g.ID) == 1 })
	})
}

func TestObserveMovesAnInstanceToItsNewGroup(t *testing.T) {
	r := memRegistry(t, instanceOf("a", 0))
	moved := instanceOf("a", 0)
	moved.GroupID = 2
	r.Observe(moved)
	if r.Live(1) != 0 || r.Live(2) != 1 {
		t.Fatalf("after a moved to group 2: Live(1) = %d, Live(2) = %d", r.Live(1), r.Live(2))
	}
	if l, err := r.Pick(2, retry.RoundRobin, "k", nil); err != nil || l.Instance.ID != "a" {
		t.Fatalf("pick in group 2: %v", err)
	}
}

// The nodes' parts of an instance's capacity add up to the capacity when it is not a multiple
// of the nodes, and a batch is never larger than a node's part.
func TestNodesSplitAnInstancesCapacityWithoutExceedingIt(t *testing.T) {
	for _, tc := range []struct{ capacity, nodes int }{{4, 3}, {5, 2}, {64, 3}, {7, 7}, {2, 3}} {
		total := 0
		for rank := range tc.nodes {
			in := instanceOf("i1", tc.capacity)
			in.MaxBatch = 64
			r := dispatch.NewRegistry(dispatch.RegistryParams{TTL: time.Minute, Interval: time.Minute, Log: testkit.Logger(t),
				Place: func() (int, int) { return rank, tc.nodes }})
			r.Observe(in)
			n := 0
			for {
				_, err := r.Pick(1, retry.RoundRobin, "k", nil)
				if errors.Is(err, dispatch.ErrFull) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				n++
			}
			if n < 1 {
				t.Fatalf("capacity %d over %d nodes: the node of rank %d may send nothing", tc.capacity, tc.nodes, rank)
			}
			if b := r.BatchSize(1); b > n {
				t.Errorf("capacity %d over %d nodes: rank %d sends batches of %d with %d slots", tc.capacity, tc.nodes, rank, b, n)
			}
			total += n
		}
		if want := max(tc.capacity, tc.nodes); total != want {
			t.Errorf("capacity %d over %d nodes: the nodes send %d calls at once in all, want %d", tc.capacity, tc.nodes, total, want)
		}
	}
}

package scheduler_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/scheduler"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// nodeNames are the node sets the share is checked with: short names, and names as
// server.node_id makes them (host-pid-random).
func nodeNames(n int) [][]string {
	var short, long []string
	for i := range n {
		short = append(short, fmt.Sprintf("n%d", i+1))
		long = append(long, fmt.Sprintf("retryhub-%d.prod.internal-%d-%06x", i%2, 4000+i*17, 0xa1b2c3*(i+1)&0xffffff))
	}
	return [][]string{short, long}
}

// owners returns each bucket's owners among nodes.
func owners(nodes []string, buckets int) map[int][]string {
	out := map[int][]string{}
	for _, n := range nodes {
		for _, b := range scheduler.Share(nodes, n, buckets) {
			out[b] = append(out[b], n)
		}
	}
	return out
}

func TestShareGivesEveryBucketToOneNodeEvenly(t *testing.T) {
	for n := 1; n <= 5; n++ {
		for _, nodes := range nodeNames(n) {
			for _, buckets := range []int{128, 1024} {
				own := owners(nodes, buckets)
				for b := range buckets {
					if len(own[b]) != 1 {
						t.Fatalf("%d buckets over %v: bucket %d owned by %v, want exactly one node", buckets, nodes, b, own[b])
					}
				}
				mean := float64(buckets) / float64(n)
				for _, node := range nodes {
					got := len(scheduler.Share(nodes, node, buckets))
					if float64(got) < mean*0.6 || float64(got) > mean*1.4 {
						t.Errorf("%d buckets over %d nodes: %s gets %d, want near %.0f", buckets, n, node, got, mean)
					}
				}
			}
		}
	}
	// The share does not depend on the order the nodes are listed in.
	nodes := nodeNames(4)[1]
	rev := slices.Clone(nodes)
	slices.Reverse(rev)
	for _, node := range nodes {
		if !slices.Equal(scheduler.Share(nodes, node, 128), scheduler.Share(rev, node, 128)) {
			t.Fatalf("%s's share changes with the order of the node list", node)
		}
	}
}

func TestShareMovesOnlyTheBucketsOfANodeThatLeavesOrJoins(t *testing.T) {
	for n := 2; n <= 5; n++ {
		for _, nodes := range nodeNames(n) {
			before := owners(nodes, 1024)
			for i, gone := range nodes {
				rest := slices.Delete(slices.Clone(nodes), i, i+1)
				after := owners(rest, 1024)
				for b := range 1024 {
					was, is := before[b][0], after[b][0]
					if was != gone && is != was {
						t.Fatalf("%s left %v: bucket %d moved from %s to %s", gone, nodes, b, was, is)
					}
				}
				// Joining is the same seen the other way: the newcomer takes buckets, nobody else
				// trades any.
				for b := range 1024 {
					was, is := after[b][0], before[b][0]
					if is != gone && is != was {
						t.Fatalf("%s joined %v: bucket %d moved from %s to %s", gone, rest, b, was, is)
					}
				}
			}
		}
	}
}

// newLeaser returns a leaser of node whose node row is live, with short periods.
func newLeaser(t *testing.T, s *storage.Store, node string) *scheduler.Leaser {
	t.Helper()
	beat(t, s, node)
	return scheduler.NewLeaser(scheduler.LeaserParams{Store: s, Log: testkit.Logger(t), NodeID: node, Buckets: storagetest.Buckets,
		Interval: 20 * time.Millisecond, NodeTTL: time.Minute, LeaseDuration: 2 * time.Second})
}

func beat(t *testing.T, s *storage.Store, node string) {
	t.Helper()
	if err := s.HeartbeatNode(context.Background(), retry.Node{ID: node, StartedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
}

func exec(t *testing.T, ls ...*scheduler.Leaser) {
	t.Helper()
	for _, l := range ls {
		if err := l.Exec(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

// split checks that the leasers hold disjoint buckets, that the database agrees, and returns how
// many each holds.
func split(t *testing.T, s *storage.Store, ls map[string]*scheduler.Leaser) map[string]int {
	t.Helper()
	leases, err := s.Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	holder := map[int]string{}
	for _, l := range leases {
		if l.ExpiresAt.After(time.Now()) {
			holder[l.Bucket] = l.NodeID
		}
	}
	count := map[string]int{}
	seen := map[int]string{}
	for name, l := range ls {
		for _, b := range l.Held() {
			if other, dup := seen[b]; dup {
				t.Fatalf("bucket %d held by both %s and %s", b, other, name)
			}
			seen[b] = name
			if holder[b] != name {
				t.Fatalf("%s claims bucket %d, whose lease the database gives to %q", name, b, holder[b])
			}
			count[name]++
		}
	}
	return count
}

func TestLeasersSplitTheBucketsAndHandOverWhenOneLeaves(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		t.Parallel()
		ctx := context.Background()
		a, b, c := newLeaser(t, s, "node-a"), newLeaser(t, s, "node-b"), newLeaser(t, s, "node-c")
		all := map[string]*scheduler.Leaser{"node-a": a, "node-b": b, "node-c": c}
		exec(t, a, b, c)
		count := split(t, s, all)
		if count["node-a"]+count["node-b"]+count["node-c"] != storagetest.Buckets {
			t.Fatalf("three leasers hold %v, want all %d buckets between them", count, storagetest.Buckets)
		}
		for name, l := range all {
			if l.Nodes() != 3 {
				t.Fatalf("%s counts %d nodes, want 3", name, l.Nodes())
			}
			if want := scheduler.Share([]string{"node-a", "node-b", "node-c"}, name, storagetest.Buckets); !slices.Equal(l.Held(), want) {
				t.Fatalf("%s holds %v, want its share %v", name, l.Held(), want)
			}
		}

		// A node that stops gives its buckets back at once: the others take them on their next
		// pass, without waiting for the leases to expire.
		b.Stop(ctx)
		if len(b.Held()) != 0 {
			t.Fatalf("a stopped leaser still holds %v", b.Held())
		}
		if err := s.DeleteNode(ctx, "node-b"); err != nil {
			t.Fatal(err)
		}
		exec(t, a, c)
		count = split(t, s, all)
		if count["node-a"]+count["node-c"] != storagetest.Buckets {
			t.Fatalf("after node-b stopped: %v, want all %d buckets between node-a and node-c", count, storagetest.Buckets)
		}

		// A node that crashes keeps its leases until they expire: the survivor, which no longer
		// counts it, takes its buckets only then.
		cHeld := slices.Clone(c.Held())
		c.Kill()
		if err := s.DeleteNode(ctx, "node-c"); err != nil {
			t.Fatal(err)
		}
		exec(t, a)
		if a.Nodes() != 1 {
			t.Fatalf("node-a counts %d nodes, want 1", a.Nodes())
		}
		for _, bkt := range cHeld {
			if slices.Contains(a.Held(), bkt) {
				t.Fatalf("node-a took bucket %d while node-c's lease on it had not expired", bkt)
			}
		}
		testkit.WaitUntil(t, 10*time.Second, "node-a to take node-c's buckets after their leases expired", func() bool {
			exec(t, a)
			return len(a.Held()) == storagetest.Buckets
		})
		split(t, s, map[string]*scheduler.Leaser{"node-a": a})
	})
}

func TestLeaserRenewsWhileRunningAndReleasesOnStop(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		t.Parallel()
		ctx := context.Background()
		a := newLeaser(t, s, "node-a")
		start(t, a)
		testkit.WaitUntil(t, 10*time.Second, "the leaser to take every bucket", func() bool { return len(a.Held()) == storagetest.Buckets })
		// Leases last two seconds; the leaser keeps them past that.
		renewedPast := time.Now().Add(3 * time.Second)
		testkit.WaitUntil(t, 10*time.Second, "the leases to be renewed", func() bool {
			leases, err := s.Leases(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range leases {
				if l.NodeID != "node-a" || !l.ExpiresAt.After(renewedPast) {
					return false
				}
			}
			return true
		})
		if len(a.Held()) != storagetest.Buckets {
			t.Fatalf("held %d buckets while renewing, want %d", len(a.Held()), storagetest.Buckets)
		}
		a.Stop(ctx)
		if len(a.Held()) != 0 {
			t.Fatalf("held %v after Stop", a.Held())
		}
		leases, err := s.Leases(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range leases {
			if l.NodeID != "" {
				t.Fatalf("bucket %d still leased to %q after Stop", l.Bucket, l.NodeID)
			}
		}
		// Stopping while a renewal is under way: the renewal lands first, never after the
		// release (a cancelled statement may still run on MySQL and take the leases back).
		for i := range 25 {
			l := scheduler.NewLeaser(scheduler.LeaserParams{Store: s, Log: testkit.Logger(t), NodeID: "node-a",
				Buckets: storagetest.Buckets, Interval: time.Millisecond, NodeTTL: time.Minute, LeaseDuration: time.Minute})
			start(t, l)
			time.Sleep(time.Duration(i%5) * time.Millisecond)
			l.Stop(ctx)
			time.Sleep(5 * time.Millisecond) // time for a straggling statement to land
			if held, err := s.HeldBuckets(ctx, "node-a", time.Now()); err != nil || len(held) != 0 {
				t.Fatalf("stop %d: node-a holds %d leases after Stop released them (%v)", i, len(held), err)
			}
		}
		// Another node takes them at once.
		if err := s.DeleteNode(ctx, "node-a"); err != nil {
			t.Fatal(err)
		}
		b := newLeaser(t, s, "node-b")
		exec(t, b)
		if len(b.Held()) != storagetest.Buckets {
			t.Fatalf("node-b took %d buckets after node-a released them, want all", len(b.Held()))
		}
	})
}

// A node whose leases were not renewed in time stops counting their buckets as held once the
// leases would have expired, so it does not claim in buckets another node may have taken.
func TestLeasesNotRenewedCountAsLost(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		beat(t, s, "node-slow")
		// The first pass leases every bucket; the next would come only after an hour.
		l := scheduler.NewLeaser(scheduler.LeaserParams{Store: s, Log: testkit.Logger(t), NodeID: "node-slow",
			Buckets: storagetest.Buckets, Interval: time.Hour, NodeTTL: time.Minute, LeaseDuration: 300 * time.Millisecond})
		if err := l.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer l.Stop(context.Background())
		if len(l.Held()) != storagetest.Buckets {
			t.Fatalf("after its first pass the leaser holds %d buckets, want %d", len(l.Held()), storagetest.Buckets)
		}
		testkit.WaitUntil(t, 10*time.Second, "the unrenewed leases to count as lost", func() bool { return len(l.Held()) == 0 })
		// A pass that renews them gives them back.
		if err := l.Exec(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(l.Held()) != storagetest.Buckets {
			t.Fatalf("after a renewing pass the leaser holds %d buckets, want %d", len(l.Held()), storagetest.Buckets)
		}
	})
}

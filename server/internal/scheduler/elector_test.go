package scheduler_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/scheduler"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// clock is a settable clock shared by the electors of a test.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

const leaderLease = 10 * time.Second

func newElector(t *testing.T, s *storage.Store, node string, clk *clock) *scheduler.Elector {
	t.Helper()
	return scheduler.NewElector(scheduler.ElectorParams{Store: s, NodeID: node, Name: storagetest.RandomName("lead"),
		Interval: time.Hour, LeaseDuration: leaderLease, Now: clk.Now, Log: testkit.Logger(t)})
}

func execElector(t *testing.T, es ...*scheduler.Elector) {
	t.Helper()
	for _, e := range es {
		if err := e.Exec(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestElectorOneLeaderHandsOverOnStopAndAfterACrash(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		clk := &clock{now: time.Now()}
		name := storagetest.RandomName("lead")
		elector := func(node string) *scheduler.Elector {
			return scheduler.NewElector(scheduler.ElectorParams{Store: s, NodeID: node, Name: name,
				Interval: time.Hour, LeaseDuration: leaderLease, Now: clk.Now, Log: testkit.Logger(t)})
		}
		// Two electors started together: exactly one leads.
		a, b := elector("node-a"), elector("node-b")
		started := make(chan struct{})
		go func() {
			defer close(started)
			start(t, b)
		}()
		start(t, a)
		<-started
		testkit.WaitUntil(t, 10*time.Second, "one elector to lead", func() bool { return a.IsLeader() || b.IsLeader() })
		execElector(t, a, b) // passes more change nothing
		if a.IsLeader() == b.IsLeader() {
			t.Fatalf("node-a leads %v, node-b leads %v: want exactly one leader", a.IsLeader(), b.IsLeader())
		}
		leader, other := a, b
		if b.IsLeader() {
			leader, other = b, a
		}

		// A leader that stops hands over at once: the other takes it on its next pass, with no
		// time passing.
		leader.Stop(ctx)
		if leader.IsLeader() {
			t.Fatal("a stopped elector still leads")
		}
		execElector(t, other)
		if !other.IsLeader() {
			t.Fatal("the other elector did not take the leadership the stopped one released")
		}

		// A leader that crashes keeps it until its lease expires; then a third takes over.
		third := elector("node-c")
		execElector(t, third)
		if third.IsLeader() {
			t.Fatal("node-c leads while the live leader holds the lease")
		}
		other.Kill()
		if other.IsLeader() {
			t.Fatal("a killed elector still leads")
		}
		execElector(t, third)
		if third.IsLeader() {
			t.Fatal("node-c took the leadership before the crashed leader's lease expired")
		}
		clk.advance(leaderLease + time.Second)
		execElector(t, third)
		if !third.IsLeader() {
			t.Fatal("node-c did not take over after the crashed leader's lease expired")
		}
		holder, _, err := s.Leader(ctx, name)
		if err != nil || holder != "node-c" {
			t.Fatalf("the lease row names %q (%v), want node-c", holder, err)
		}
		third.Stop(ctx)
	})
}

// A leader whose lease passes without a renewal (its database unreachable, say) stops counting
// itself the leader at the lease's expiry, whatever it last read.
func TestElectorLeadershipEndsAtItsExpiry(t *testing.T) {
	t.Parallel()
	s := storagetest.Open(t, storagetest.SQLite(t))
	clk := &clock{now: time.Now()}
	e := newElector(t, s, "node-a", clk)
	execElector(t, e)
	if !e.IsLeader() {
		t.Fatal("a lone elector does not lead")
	}
	clk.advance(leaderLease)
	if e.IsLeader() {
		t.Fatal("an elector leads past its lease's expiry without renewing it")
	}
}

package scheduler_test

import (
	"context"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/scheduler"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// heartbeatOf returns the node's last heartbeat, or the zero time when it is not listed.
func heartbeatOf(t *testing.T, s *storage.Store, id string) time.Time {
	t.Helper()
	nodes, err := s.LiveNodes(context.Background(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.ID == id {
			return n.HeartbeatAt
		}
	}
	return time.Time{}
}

func TestHeartbeatKeepsTheNodeListedUntilItStops(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		node := retry.Node{ID: "node-a", Address: "10.0.0.1:8080", Version: "test", StartedAt: time.Now()}
		h := scheduler.NewHeartbeat(scheduler.HeartbeatParams{Store: s, Node: node, Interval: 10 * time.Millisecond, Log: testkit.Logger(t)})
		start(t, h)
		testkit.WaitUntil(t, 10*time.Second, "the node to be listed", func() bool { return !heartbeatOf(t, s, "node-a").IsZero() })
		first := heartbeatOf(t, s, "node-a")
		testkit.WaitUntil(t, 10*time.Second, "a later heartbeat", func() bool { return heartbeatOf(t, s, "node-a").After(first) })
		h.Stop(ctx)
		if !heartbeatOf(t, s, "node-a").IsZero() {
			t.Fatal("a node that stopped is still listed")
		}
		// Stopping while a beat is under way: the beat lands first, never after the row is
		// removed (a cancelled statement may still run on MySQL and bring the row back).
		for i := range 25 {
			h := scheduler.NewHeartbeat(scheduler.HeartbeatParams{Store: s, Node: node, Interval: time.Millisecond, Log: testkit.Logger(t)})
			start(t, h)
			time.Sleep(time.Duration(i%5) * time.Millisecond)
			h.Stop(ctx)
			time.Sleep(5 * time.Millisecond) // time for a straggling statement to land
			if !heartbeatOf(t, s, "node-a").IsZero() {
				t.Fatalf("stop %d: the node's row came back after Stop removed it", i)
			}
		}

		// A crashed node stays listed, silent, until it ages out.
		c := scheduler.NewHeartbeat(scheduler.HeartbeatParams{Store: s, Node: retry.Node{ID: "node-c", StartedAt: time.Now()}, Interval: 10 * time.Millisecond, Log: testkit.Logger(t)})
		if err := c.Beat(ctx); err != nil {
			t.Fatal(err)
		}
		start(t, c)
		c.Kill()
		last := heartbeatOf(t, s, "node-c")
		if last.IsZero() {
			t.Fatal("a crashed node's row was removed")
		}
		time.Sleep(50 * time.Millisecond)
		if now := heartbeatOf(t, s, "node-c"); !now.Equal(last) {
			t.Fatalf("a crashed node's heartbeat moved from %s to %s", last, now)
		}
	})
}

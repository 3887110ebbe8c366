package consoleapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/scheduler"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

type instancePage struct {
	Items     []consoleapi.ClientInstance `json:"items"`
	NextAfter string                      `json:"next_after"`
}

// withParams is the same database and users served by a second console API made with p
// (its store, auth and log are e's).
func (e *env) withParams(p consoleapi.Params) *env {
	e.t.Helper()
	c := *e
	p.Store, p.Auth, p.Version, p.Log = e.store, e.svc, "test", testkit.Logger(e.t)
	c.engine = gin.New()
	c.api = consoleapi.New(p)
	c.api.Mount(c.engine)
	c.srv = httptest.NewServer(c.engine)
	e.t.Cleanup(c.srv.Close)
	return &c
}

// addGroup creates a group in the namespace.
func (e *env) addGroup(nsID int64, name string) retry.Group {
	e.t.Helper()
	g, err := e.store.CreateGroup(context.Background(), retry.Group{NamespaceID: nsID, Name: name, Token: "token-of-group-" + name, Enabled: true})
	if err != nil {
		e.t.Fatal(err)
	}
	return g
}

// TestInstancesListByNamespaceAndGroupPaged: a viewer of A sees A's instances only, filtered
// by group and paged by id; a global admin sees every namespace's; a silent instance is
// listed as not live.
func TestInstancesListByNamespaceAndGroupPaged(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		e := newEnv(t, target, false)
		ctx := context.Background()
		ga1, ga2, gb := e.addGroup(e.nsA.ID, "a1"), e.addGroup(e.nsA.ID, "a2"), e.addGroup(e.nsB.ID, "b1")
		for i, g := range []retry.Group{ga1, ga1, ga1, ga2, gb} {
			in := retry.Instance{ID: fmt.Sprintf("inst-%d", i), GroupID: g.ID, ExecutorURL: fmt.Sprintf("http://10.0.0.%d:7070/", i),
				Capacity: 8 + i, SDKVersion: "1.2.3", Host: "h"}
			if err := e.store.UpsertInstance(ctx, in, time.Now().Add(-time.Minute)); err != nil {
				t.Fatal(err)
			}
		}
		// Its heartbeat says how many calls an instance runs.
		if err := e.store.HeartbeatInstance(ctx, ga1.ID, "inst-2", 3); err != nil {
			t.Fatal(err)
		}
		get := func(who, query string) instancePage {
			t.Helper()
			status, body := e.as(who, http.MethodGet, consoleapi.Prefix+"/instances"+query, nil)
			if status != http.StatusOK {
				t.Fatalf("%s %s: %d %s", who, query, status, body)
			}
			return decode[instancePage](t, body)
		}
		ids := func(p instancePage) string {
			s := ""
			for _, it := range p.Items {
				s += it.ID + " "
			}
			return s
		}
		if got := ids(get(viewerA, "")); got != "inst-0 inst-1 inst-2 inst-3 " {
			t.Errorf("viewer of A sees %q", got)
		}
		if got := ids(get(global, "")); got != "inst-0 inst-1 inst-2 inst-3 inst-4 " {
			t.Errorf("global admin sees %q", got)
		}
		if got := ids(get(adminB, "")); got != "inst-4 " {
			t.Errorf("admin of B sees %q", got)
		}
		first := get(viewerA, fmt.Sprintf("?group_id=%d&limit=2", ga1.ID))
		if ids(first) != "inst-0 inst-1 " || first.NextAfter != "inst-1" {
			t.Fatalf("first page %q next %q", ids(first), first.NextAfter)
		}
		second := get(viewerA, fmt.Sprintf("?group_id=%d&limit=2&after=%s", ga1.ID, first.NextAfter))
		if ids(second) != "inst-2 " || second.NextAfter != "" {
			t.Fatalf("second page %q next %q", ids(second), second.NextAfter)
		}
		it := second.Items[0]
		if it.Group != "a1" || it.Namespace != "ns-a" || it.NamespaceID != e.nsA.ID || it.ExecutorURL != "http://10.0.0.2:7070/" ||
			it.Capacity != 10 || it.InFlight != 3 || it.SDKVersion != "1.2.3" || !it.Live || it.HeartbeatAt.IsZero() {
			t.Errorf("instance %+v", it)
		}
		// A group of B asked for by a viewer of A shows nothing of B.
		if got := ids(get(viewerA, fmt.Sprintf("?group_id=%d", gb.ID))); got != "" {
			t.Errorf("viewer of A sees B's group: %q", got)
		}
		if status, _ := e.as(viewerA, http.MethodGet, fmt.Sprintf("%s/instances?namespace_id=%d", consoleapi.Prefix, e.nsB.ID), nil); status != http.StatusForbidden {
			t.Errorf("viewer of A asking for B: %d", status)
		}
		// An instance silent past the TTL is listed, not live.
		if _, err := e.store.DeleteInstancesBefore(ctx, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		old := retry.Instance{ID: "inst-old", GroupID: ga2.ID, ExecutorURL: "http://old/", Capacity: 1, SDKVersion: "1.0.0"}
		if err := e.store.UpsertInstance(ctx, old, time.Now()); err != nil {
			t.Fatal(err)
		}
		short := e.withParams(consoleapi.Params{InstanceTTL: time.Nanosecond})
		var list instancePage
		testkit.WaitUntil(t, 5*time.Second, "the instance counts as silent", func() bool {
			status, body := short.as(global, http.MethodGet, consoleapi.Prefix+"/instances", nil)
			list = decode[instancePage](t, body)
			return status == http.StatusOK && len(list.Items) == 1 && !list.Items[0].Live
		})
	})
}

type nodePage struct {
	Items []consoleapi.ServerNode `json:"items"`
}

// TestNodesListShowsBucketsAndTheLeader: every signed-in caller sees the server nodes, the
// buckets each leases and which one leads; a node silent past the TTL is not live.
func TestNodesListShowsBucketsAndTheLeader(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		e := newEnv(t, target, false)
		ctx := context.Background()
		now := time.Now()
		for _, n := range []string{"node-1", "node-2"} {
			if err := e.store.HeartbeatNode(ctx, retry.Node{ID: n, Address: n + ":8080", Version: "v9", StartedAt: now}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := e.store.AcquireBuckets(ctx, "node-1", []int{0, 2, 1}, now, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.AcquireBuckets(ctx, "node-2", []int{3}, now, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if held, err := e.store.AcquireLeader(ctx, scheduler.LeaderName, "node-2", now, now.Add(time.Hour)); err != nil || !held {
			t.Fatalf("lead: %v %v", held, err)
		}
		status, body := e.as(viewerA, http.MethodGet, consoleapi.Prefix+"/nodes", nil)
		if status != http.StatusOK {
			t.Fatalf("%d %s", status, body)
		}
		nodes := decode[nodePage](t, body).Items
		if len(nodes) != 2 {
			t.Fatalf("nodes %+v", nodes)
		}
		n1, n2 := nodes[0], nodes[1]
		if n1.ID != "node-1" || fmt.Sprint(n1.Buckets) != "[0 1 2]" || n1.Leader || !n1.Live || n1.Version != "v9" || n1.Address != "node-1:8080" {
			t.Errorf("node 1: %+v", n1)
		}
		if n2.ID != "node-2" || fmt.Sprint(n2.Buckets) != "[3]" || !n2.Leader || !n2.Live {
			t.Errorf("node 2: %+v", n2)
		}
		short := e.withParams(consoleapi.Params{NodeTTL: time.Nanosecond})
		testkit.WaitUntil(t, 5*time.Second, "the nodes count as silent", func() bool {
			status, body := short.as(viewerA, http.MethodGet, consoleapi.Prefix+"/nodes", nil)
			nodes := decode[nodePage](t, body).Items
			return status == http.StatusOK && len(nodes) == 2 && !nodes[0].Live && !nodes[1].Live
		})
	})
}

package e2e

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/app"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// catalogTTL is the catalog lifetime the tests on two nodes run with.
const catalogTTL = 500 * time.Millisecond

// twoNodes starts nodes A and B on one database and a world on A; on returns the same world as
// seen through another node.
func twoNodes(t *testing.T, target storagetest.Target, maxAttempts int, edit func(*retry.Scene)) (a, b *app.App, w *world) {
	t.Helper()
	cfg := testConfig(target)
	cfg.Catalog.TTL = catalogTTL
	a = startNode(t, cfg, "node-a")
	b = startNode(t, cfg, "node-b")
	return a, b, newWorld(t, a, maxAttempts, edit)
}

func (w *world) on(node *app.App) *world {
	c := *w
	c.node = node
	return &c
}

// ttlPassed waits until the catalog's lifetime has passed since the edit: the README's promise
// is that every node obeys an edit from then on.
func ttlPassed(t *testing.T, edited time.Time) {
	t.Helper()
	testkit.WaitUntil(t, catalogTTL+5*time.Second, "the catalog's lifetime to pass since the edit", func() bool {
		return time.Since(edited) > catalogTTL
	})
}

// A back-off edited through node A is used by node B for the next report once the catalog's
// lifetime has passed; before, B scheduled it by the old policy it had cached.
func TestPolicyEditReachesTheOtherNode(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		a, b, w := twoNodes(t, target, 3, nil)
		wb := w.on(b)
		wb.report(item("notify", "before"))
		sc := w.scene
		sc.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Hour)}
		if _, err := a.Store.UpdateScene(context.Background(), sc); err != nil {
			t.Fatal(err)
		}
		ttlPassed(t, time.Now())
		reported := time.Now()
		tk := wb.task(wb.report(item("notify", "after"))[0].TaskID)
		if d := tk.NextAt.Sub(reported); d < 59*time.Minute {
			t.Fatalf("node B scheduled the first replay %s after the report, want the edited back-off's hour", d)
		}
	})
}

// A group or namespace disabled through node A is refused by node B once the catalog's
// lifetime has passed, and nothing is stored; before, B stored the report by its cached view.
func TestDisabledGroupIsRefusedByTheOtherNode(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		a, b, w := twoNodes(t, target, 3, nil)
		wb := w.on(b)
		wb.report(item("notify", "before"))
		ctx := context.Background()
		g := w.group
		g.Enabled = false
		if err := a.Store.UpdateGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
		ttlPassed(t, time.Now())
		status, body := wb.call(http.MethodPost, protocol.PathReports, protocol.ReportRequest{Items: []protocol.ReportItem{item("notify", "after")}})
		if status != http.StatusForbidden || !strings.Contains(string(body), "group_disabled") {
			t.Fatalf("node B answered a disabled group's report %d %s, want 403 group_disabled", status, body)
		}

		g.Enabled = true
		if err := a.Store.UpdateGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
		ttlPassed(t, time.Now())
		wb.report(item("notify", "enabled"))
		ns, err := a.Store.NamespaceByName(ctx, g.Namespace)
		if err != nil {
			t.Fatal(err)
		}
		ns.Enabled = false
		if err := a.Store.UpdateNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
		ttlPassed(t, time.Now())
		status, body = wb.call(http.MethodPost, protocol.PathReports, protocol.ReportRequest{Items: []protocol.ReportItem{item("notify", "after2")}})
		if status != http.StatusForbidden || !strings.Contains(string(body), "namespace_disabled") {
			t.Fatalf("node B answered a disabled namespace's report %d %s, want 403 namespace_disabled", status, body)
		}
		if n := w.countTasks(); n != 2 {
			t.Fatalf("%d tasks stored, want the two reports made while enabled", n)
		}
	})
}

// A scene paused through node A while its task's first replay runs is obeyed for the next
// replay, a back-off step later, by whichever node claims it: the task is held, not run again.
// Before, the node that ran the first replay ran the second by the view it had cached then.
func TestPausedSceneIsObeyedByTheOtherNode(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		a, b, w := twoNodes(t, target, 5, func(sc *retry.Scene) {
			sc.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(2 * catalogTTL)}
		})
		var paused atomic.Bool
		in := testkit.NewInstance(t, testToken, func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
			if req.Kind == protocol.KindReplay && paused.CompareAndSwap(false, true) {
				sc := w.scene
				sc.Enabled = false
				if _, err := a.Store.UpdateScene(context.Background(), sc); err != nil {
					t.Errorf("pause the scene: %v", err)
				}
			}
			return http.StatusOK, protocol.ExecuteResponse{Status: protocol.ExecuteFailed, Error: "partner down"}
		})
		wb := w.on(b)
		wb.register("i1", in.URL(), 4)
		id := wb.report(item("notify", "k1"))[0].TaskID
		tk := wb.waitTask(id, 20*time.Second, "held", func(tk retry.Task) bool { return tk.State == retry.Held })
		if n := len(in.CallsOf(protocol.KindReplay)); n != 1 || tk.Attempts != 1 {
			t.Fatalf("%d replays (%d attempts) of a task whose scene was paused during the first, want 1", n, tk.Attempts)
		}
	})
}

// A token rotated through node A stops the old one on node B once the catalog's lifetime has
// passed; the new one works.
func TestRotatedTokenIsRefusedByTheOtherNode(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		a, b, w := twoNodes(t, target, 3, nil)
		wb := w.on(b)
		if status, body := wb.call(http.MethodGet, protocol.PathScenes, nil); status != http.StatusOK {
			t.Fatalf("scenes: %d %s", status, body)
		}
		g := w.group
		g.Token = "rotated-token-0123456789abcdef"
		if err := a.Store.UpdateGroup(context.Background(), g); err != nil {
			t.Fatal(err)
		}
		ttlPassed(t, time.Now())
		if status, body := wb.call(http.MethodGet, protocol.PathScenes, nil); status != http.StatusUnauthorized ||
			!strings.Contains(string(body), "bad_signature") {
			t.Fatalf("node B answered the old token %d %s, want 401 bad_signature", status, body)
		}
		wb.group = g
		if status, body := wb.call(http.MethodGet, protocol.PathScenes, nil); status != http.StatusOK {
			t.Fatalf("node B answered the new token %d %s", status, body)
		}
	})
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
	"github.com/retryhub/retryhub/server/internal/ops"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// A bulk job made on node A, which dies part way, is finished by node B from where A got to:
// every task acted on exactly once, the progress readable on either node.
func TestBulkJobOutlivesItsNode(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		cfg := testConfig(target)
		cfg.Bootstrap.AdminPassword = "first-admin-password"
		cfg.ConsoleAPI.BulkRate = 200 // batches of 200 a second: 5 s for the whole
		a := startNode(t, cfg, "node-a")
		w := newWorld(t, a, 3, nil)
		f := &testkit.Fixture{T: t, Store: a.Store, Group: w.group, Scene: w.scene}
		const n = 1000
		keys := make([]string, n)
		for i := range keys {
			keys[i] = fmt.Sprintf("bulk-%d", i)
		}
		f.Add(time.Now().Add(time.Hour), keys...)
		admin := consoleLogin(t, a, "admin", "first-admin-password")

		status, body := console(t, a, http.MethodPost, consoleapi.Prefix+"/jobs", admin,
			map[string]any{"action": "pause", "filter": map[string]any{"group_id": w.group.ID, "state": "waiting"}})
		if status != http.StatusAccepted {
			t.Fatalf("create job: %d %s", status, body)
		}
		var j consoleapi.Job
		if err := json.Unmarshal(body, &j); err != nil || j.Total != n {
			t.Fatalf("job %s: %v", body, err)
		}
		get := func(s *storage.Store) storage.Job {
			t.Helper()
			got, err := s.Job(context.Background(), j.ID)
			if err != nil {
				t.Fatal(err)
			}
			return got
		}
		testkit.WaitUntil(t, 30*time.Second, "node a works on the job", func() bool {
			got := get(a.Store)
			return got.Owner == "node-a" && got.Done > 0
		})
		b := startNode(t, cfg, "node-b")
		a.Kill()
		if mid := get(b.Store); mid.Done >= n {
			t.Fatalf("node a finished before it died: %+v", mid)
		}
		adminB := consoleLogin(t, b, "admin", "first-admin-password")
		var last int64
		testkit.WaitEvery(t, 20*time.Millisecond, 60*time.Second, "node b finishes the job", func() bool {
			status, body := console(t, b, http.MethodGet, fmt.Sprintf("%s/jobs/%d", consoleapi.Prefix, j.ID),
				adminB, nil)
			if status != http.StatusOK {
				t.Fatalf("read job on node b: %d %s", status, body)
			}
			if err := json.Unmarshal(body, &j); err != nil {
				t.Fatal(err)
			}
			if j.Done < last {
				t.Fatalf("done went back from %d to %d", last, j.Done)
			}
			last = j.Done
			return j.State != "running"
		})
		// A batch acted on twice would find its tasks paused already and count them failed.
		if j.State != "done" || j.Done != n || j.Failed != 0 {
			t.Fatalf("job %+v; want all %d done once", j, n)
		}
		paused, err := b.Store.CountTasks(context.Background(), storage.TaskFilter{GroupID: w.group.ID, States: []retry.State{retry.Paused}})
		if err != nil || paused != n {
			t.Fatalf("%d paused (%v), want %d", paused, err, n)
		}
		end, err := b.Store.ListAudit(context.Background(), storage.AuditFilter{Action: ops.JobEndAction}, 1)
		if err != nil || len(end) != 1 || !strings.Contains(end[0].Detail, "node node-b") {
			t.Fatalf("audit of the end: %+v %v", end, err)
		}
	})
}

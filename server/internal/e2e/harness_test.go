// Package e2e tests whole server nodes over real HTTP, on SQLite and on MariaDB: reports come
// in through the client API, replays go out to test HTTP servers playing client instances.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/app"
	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// testConfig is a node configuration with short periods, so that tests see leases move,
// claims lapse and instances expire within seconds.
func testConfig(target storagetest.Target) config.Config {
	cfg := config.Default()
	cfg.Server.Listen = "127.0.0.1:0"
	cfg.Server.ShutdownTimeout = 5 * time.Second
	cfg.Database.DSN = target.DSN
	cfg.Database.SlowQuery = 0
	cfg.Scheduler.HeartbeatInterval = 200 * time.Millisecond
	cfg.Scheduler.NodeTTL = time.Second
	cfg.Scheduler.LeaseDuration = time.Second
	cfg.Scheduler.SweepInterval = 200 * time.Millisecond
	cfg.Scheduler.ClaimTimeout = time.Second
	cfg.Dispatch.NoInstanceDelay = 200 * time.Millisecond
	cfg.Dispatch.BusyDelay = 200 * time.Millisecond
	cfg.Dispatch.PausedDelay = 200 * time.Millisecond
	cfg.Dispatch.SettleInterval = 5 * time.Millisecond
	cfg.Dispatch.DefaultTimeout = 2 * time.Second
	cfg.Bootstrap = config.Bootstrap{}
	cfg.Auth.BcryptCost, cfg.Auth.AllowWeakHash = 4, true // bcrypt's least cost: a password hash takes seconds under -race
	return cfg
}

// startNode starts a node and stops it gracefully when the test ends (unless the test killed
// or stopped it).
func startNode(t *testing.T, cfg config.Config, name string) *app.App {
	t.Helper()
	cfg.Server.NodeID = name
	ctx := context.Background()
	a, err := app.New(ctx, cfg, testkit.Logger(t))
	if err != nil {
		t.Fatalf("new node %s: %v", name, err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatalf("start node %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	return a
}

// world is one test's namespace, group and scene.
type world struct {
	t     *testing.T
	node  *app.App
	group retry.Group
	scene retry.Scene
}

const testToken = "test-token-0123456789abcdef"

// newWorld creates a namespace, a group and a scene with a fast policy: remote only, fixed
// 100 ms back-off, the given max attempts, 2 s attempt timeout; edit changes it further.
func newWorld(t *testing.T, node *app.App, maxAttempts int, edit func(*retry.Scene)) *world {
	t.Helper()
	f := testkit.NewFixture(t, node.Store, storagetest.RandomName("ns"), testToken,
		testkit.RemoteScene(maxAttempts, 100*time.Millisecond, 2*time.Second, edit))
	return &world{t: t, node: node, group: f.Group, scene: f.Scene}
}

// call sends a signed client API request and returns the status and body.
func (w *world) call(method, path string, body any) (int, []byte) {
	w.t.Helper()
	status, out, err := testkit.Call(w.node.URL(), w.group, method, path, body)
	if err != nil {
		w.t.Fatal(err)
	}
	return status, out
}

// report reports items and returns the per-item results, failing the test on a non-200.
func (w *world) report(items ...protocol.ReportItem) []protocol.ReportResult {
	w.t.Helper()
	status, body := w.call(http.MethodPost, protocol.PathReports, protocol.ReportRequest{Items: items})
	if status != http.StatusOK {
		w.t.Fatalf("report: %d %s", status, body)
	}
	var resp protocol.ReportResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		w.t.Fatal(err)
	}
	return resp.Results
}

func item(scene, key string) protocol.ReportItem {
	return protocol.ReportItem{Scene: scene, IdempotencyKey: key, Args: json.RawMessage(`{"order":"` + key + `"}`),
		Error: "partner timed out", LocalAttempts: 3}
}

// register registers an instance of the world's group at url.
func (w *world) register(id, url string, capacity int) {
	w.t.Helper()
	testkit.Register(w.t, w.node.URL(), w.group, protocol.RegisterRequest{InstanceID: id, ExecutorURL: url,
		Capacity: capacity, SDKVersion: "test", Host: "localhost", Scenes: []string{w.scene.Name}})
}

// task reads a task.
func (w *world) task(id int64) retry.Task {
	w.t.Helper()
	return testkit.Task(w.t, w.node.Store, id)
}

// waitTask waits until the task satisfies ok, failing after timeout with the task's state.
func (w *world) waitTask(id int64, timeout time.Duration, what string, ok func(retry.Task) bool) retry.Task {
	w.t.Helper()
	var tk retry.Task
	testkit.WaitDescribed(w.t, 20*time.Millisecond, timeout, func() string {
		return fmt.Sprintf("task %d to be %s; it is %s after %d attempts (callback %s), last error %q",
			id, what, tk.State, tk.Attempts, tk.CallbackState, tk.LastError)
	}, func() bool {
		tk = w.task(id)
		return ok(tk)
	})
	return tk
}

func (w *world) attempts(id int64) []retry.Attempt {
	w.t.Helper()
	return testkit.Attempts(w.t, w.node.Store, id)
}

func (w *world) countTasks() int {
	w.t.Helper()
	tasks, err := w.node.Store.ListTasks(context.Background(), storage.TaskFilter{GroupID: w.group.ID}, 0, 10000)
	if err != nil {
		w.t.Fatal(err)
	}
	return len(tasks)
}

func fail(msg string) func(protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
	return func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
		if req.Kind == protocol.KindCallback {
			return testkit.Succeed(req)
		}
		return http.StatusOK, protocol.ExecuteResponse{Status: protocol.ExecuteFailed, Error: fmt.Sprintf("%s (attempt %d)", msg, req.Attempt)}
	}
}

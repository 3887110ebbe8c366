// Package e2e tests whole server nodes over real HTTP, on SQLite and on MariaDB: reports come
// in through the client API, replays go out to test HTTP servers playing client instances.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/app"
	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
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
	return cfg
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// startNode starts a node and stops it gracefully when the test ends (unless the test killed
// or stopped it).
func startNode(t *testing.T, cfg config.Config, name string) *app.App {
	t.Helper()
	cfg.Server.NodeID = name
	ctx := context.Background()
	a, err := app.New(ctx, cfg, testLogger(t))
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
	ctx := context.Background()
	ns, err := node.Store.CreateNamespace(ctx, retry.Namespace{Name: storagetest.RandomName("ns"), Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	g, err := node.Store.CreateGroup(ctx, retry.Group{NamespaceID: ns.ID, Name: "orders", Token: testToken, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	sc := retry.DefaultScene(g.ID, "notify")
	sc.Mode = protocol.Remote
	sc.MaxAttempts = maxAttempts
	sc.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(100 * time.Millisecond)}
	sc.Timeout = 2 * time.Second
	sc.Callback.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(100 * time.Millisecond)}
	if edit != nil {
		edit(&sc)
	}
	sc, err = node.Store.CreateScene(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	return &world{t: t, node: node, group: g, scene: sc}
}

// call sends a signed client API request and returns the status and body.
func (w *world) call(method, path string, body any) (int, []byte) {
	w.t.Helper()
	return signedCall(w.t, w.node.URL(), w.group.Namespace, w.group.Name, w.group.Token, method, path, body)
}

func signedCall(t *testing.T, base, ns, group, token, method, path string, body any) (int, []byte) {
	t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, base+path, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(protocol.HeaderNamespace, ns)
	req.Header.Set(protocol.HeaderGroup, group)
	protocol.SignRequest(req.Header, token, raw, time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
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
	status, body := w.call(http.MethodPost, protocol.PathRegister, protocol.RegisterRequest{InstanceID: id,
		ExecutorURL: url, Capacity: capacity, SDKVersion: "test", Host: "localhost", Scenes: []string{w.scene.Name}})
	if status != http.StatusOK {
		w.t.Fatalf("register: %d %s", status, body)
	}
}

// task reads a task.
func (w *world) task(id int64) retry.Task {
	w.t.Helper()
	tk, err := w.node.Store.Task(context.Background(), id)
	if err != nil {
		w.t.Fatal(err)
	}
	return tk
}

// waitTask waits until the task satisfies ok, failing after timeout with the task's state.
func (w *world) waitTask(id int64, timeout time.Duration, what string, ok func(retry.Task) bool) retry.Task {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		tk := w.task(id)
		if ok(tk) {
			return tk
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("task %d never %s; it is %s after %d attempts (callback %s), last error %q",
				id, what, tk.State, tk.Attempts, tk.CallbackState, tk.LastError)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (w *world) attempts(id int64) []retry.Attempt {
	w.t.Helper()
	atts, err := w.node.Store.Attempts(context.Background(), id)
	if err != nil {
		w.t.Fatal(err)
	}
	return atts
}

func (w *world) countTasks() int {
	w.t.Helper()
	tasks, err := w.node.Store.ListTasks(context.Background(), storage.TaskFilter{GroupID: w.group.ID}, 0, 10000)
	if err != nil {
		w.t.Fatal(err)
	}
	return len(tasks)
}

// instance is a test HTTP server playing a client instance: it checks the server's signature
// and answers each call with what behave says.
type instance struct {
	t      *testing.T
	srv    *httptest.Server
	token  string
	behave func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse)

	mu      sync.Mutex
	calls   []protocol.ExecuteRequest
	forged  int
	inCalls int
}

func newInstance(t *testing.T, token string, behave func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse)) *instance {
	in := &instance{t: t, token: token, behave: behave}
	in.srv = httptest.NewServer(http.HandlerFunc(in.serve))
	t.Cleanup(in.srv.Close)
	return in
}

func (in *instance) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if err := protocol.VerifyRequest(r.Header, in.token, body, time.Now()); err != nil {
		in.mu.Lock()
		in.forged++
		in.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var req protocol.ExecuteRequest
	if err := json.Unmarshal(body, &req); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	in.mu.Lock()
	in.calls = append(in.calls, req)
	in.mu.Unlock()
	status, resp := in.behave(req)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(resp)
}

func (in *instance) url() string { return in.srv.URL + "/retryhub/execute" }

func (in *instance) callsOf(kind string) []protocol.ExecuteRequest {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []protocol.ExecuteRequest
	for _, c := range in.calls {
		if c.Kind == kind {
			out = append(out, c)
		}
	}
	return out
}

func succeed(protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
	return http.StatusOK, protocol.ExecuteResponse{Status: protocol.ExecuteSucceeded}
}

func fail(msg string) func(protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
	return func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
		if req.Kind == protocol.KindCallback {
			return succeed(req)
		}
		return http.StatusOK, protocol.ExecuteResponse{Status: protocol.ExecuteFailed, Error: fmt.Sprintf("%s (attempt %d)", msg, req.Attempt)}
	}
}

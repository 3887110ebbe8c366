package dispatch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
)

const testToken = "dispatch-test-token-0123456789"

func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// waitUntil polls cond until it holds, failing with what after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// newGroup creates a namespace and a group signed with testToken.
func newGroup(t *testing.T, s *storage.Store) retry.Group {
	t.Helper()
	ctx := context.Background()
	ns, err := s.CreateNamespace(ctx, retry.Namespace{Name: storagetest.RandomName("ns"), Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	g, err := s.CreateGroup(ctx, retry.Group{NamespaceID: ns.ID, Name: "orders", Token: testToken, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// fixture is one test's group and scene in a fresh database.
type fixture struct {
	t     *testing.T
	store *storage.Store
	group retry.Group
	scene retry.Scene
}

// newFixture creates a group and a scene "notify": 3 attempts, fixed one-hour back-off (a failed
// task is not due again during the test), 1 s attempt timeout; edit changes it further.
func newFixture(t *testing.T, s *storage.Store, edit func(*retry.Scene)) *fixture {
	t.Helper()
	g := newGroup(t, s)
	sc := retry.DefaultScene(g.ID, "notify")
	sc.Mode = protocol.Remote
	sc.MaxAttempts = 3
	sc.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Hour)}
	sc.Timeout = time.Second
	sc.Callback.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Hour)}
	if edit != nil {
		edit(&sc)
	}
	sc, err := s.CreateScene(context.Background(), sc)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, store: s, group: g, scene: sc}
}

// report stores one waiting task per key, due at due, and returns their ids in order.
func (f *fixture) report(due time.Time, keys ...string) []int64 {
	f.t.Helper()
	batch := make([]storage.NewTask, len(keys))
	for i, k := range keys {
		batch[i] = storage.NewTask{GroupID: f.group.ID, SceneID: f.scene.ID, Bucket: retry.BucketOf(k, storagetest.Buckets),
			Key: k, Args: []byte(`{"order":"` + k + `"}`), Error: "partner timed out", LocalAttempts: 1,
			State: retry.Waiting, NextAt: due}
	}
	res, err := f.store.Ingest(context.Background(), batch)
	if err != nil {
		f.t.Fatal(err)
	}
	ids := make([]int64, len(res))
	for i, r := range res {
		ids[i] = r.TaskID
	}
	return ids
}

// keys returns n distinct keys with the prefix.
func keys(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

func allBuckets() []int {
	b := make([]int, storagetest.Buckets)
	for i := range b {
		b[i] = i
	}
	return b
}

// claim claims, as node-1, every replay (or callback) due by dueBy, holding each for a minute
// past now.
func (f *fixture) claim(kind retry.AttemptKind, dueBy time.Time) []retry.Claim {
	f.t.Helper()
	claims, err := f.store.Claim(context.Background(), storage.ClaimParams{Kind: kind, Buckets: allBuckets(),
		DueBy: dueBy, PerBucket: 1000, Token: rand.Int64N(1<<62) + 1, Node: "node-1",
		Deadline: time.Now().Add(time.Minute)})
	if err != nil {
		f.t.Fatal(err)
	}
	return claims
}

func (f *fixture) task(id int64) retry.Task {
	f.t.Helper()
	tk, err := f.store.Task(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	return tk
}

func (f *fixture) attempts(id int64) []retry.Attempt {
	f.t.Helper()
	atts, err := f.store.Attempts(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	return atts
}

// waitTask waits until the task satisfies ok, failing with its state after a generous timeout.
func (f *fixture) waitTask(id int64, what string, ok func(retry.Task) bool) retry.Task {
	f.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		tk := f.task(id)
		if ok(tk) {
			return tk
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("task %d never %s: it is %s after %d attempts (callback %s), next at %s, last error %q",
				id, what, tk.State, tk.Attempts, tk.CallbackState, tk.NextAt.Format(time.StampMilli), tk.LastError)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func notRunning(tk retry.Task) bool { return tk.State != retry.Running }

// hang, returned by an executor's behaviour, makes it never answer: it waits until the caller
// gives up.
const hang = -1

// executor is an HTTP server playing a client instance: it checks the server's signature and
// answers each call with what behave says.
type executor struct {
	t      *testing.T
	srv    *httptest.Server
	behave func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse)

	mu     sync.Mutex
	calls  []protocol.ExecuteRequest
	forged int
}

func newExecutor(t *testing.T, behave func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse)) *executor {
	t.Helper()
	e := &executor{t: t, behave: behave}
	e.srv = httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *executor) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if err := protocol.VerifyRequest(r.Header, testToken, body, time.Now()); err != nil {
		e.mu.Lock()
		e.forged++
		e.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var req protocol.ExecuteRequest
	if err := json.Unmarshal(body, &req); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	e.mu.Lock()
	e.calls = append(e.calls, req)
	e.mu.Unlock()
	status, resp := e.behave(req)
	if status == hang {
		<-r.Context().Done()
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(resp)
}

func (e *executor) url() string { return e.srv.URL + "/retryhub/execute" }

// received returns the calls received so far.
func (e *executor) received() []protocol.ExecuteRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.forged > 0 {
		e.t.Errorf("the executor received %d calls with a bad signature", e.forged)
	}
	return append([]protocol.ExecuteRequest(nil), e.calls...)
}

func succeed(protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
	return http.StatusOK, protocol.ExecuteResponse{Status: protocol.ExecuteSucceeded}
}

func busy(protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
	return http.StatusTooManyRequests, protocol.ExecuteResponse{}
}

// newRawServer is an executor that answers every call with status and body as they are.
func newRawServer(t *testing.T, status int, body []byte) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/html; charset=iso-8859-1")
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/retryhub/execute"
}

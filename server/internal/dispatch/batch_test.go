package dispatch_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/dispatch"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// batchExecutor is a fake instance that takes batched calls: it verifies the signature and
// answers each task by its key: "fails…" fails, "permanent…" fails for good, "busy…" is not
// run, "omitted…" gets no result, anything else succeeds. status, when set, answers every
// call with that status instead. Single calls are answered as a single call would be.
type batchExecutor struct {
	t      *testing.T
	srv    *httptest.Server
	status int
	// delay, when set, is how long a batched call takes.
	delay time.Duration
	// maxBody, when set, is the largest body it reads: a larger one is refused with 413.
	maxBody int

	tooLarge atomic.Int32 // the bodies refused with 413

	mu      sync.Mutex
	batches [][]protocol.ExecuteRequest
	singles []protocol.ExecuteRequest
}

func newBatchExecutor(t *testing.T, status int) *batchExecutor {
	t.Helper()
	b := &batchExecutor{t: t, status: status}
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *batchExecutor) URL() string { return b.srv.URL + "/retryhub/execute" }

func outcome(key string) protocol.ExecuteResult {
	switch {
	case strings.HasPrefix(key, "fails"):
		return protocol.ExecuteResult{Status: protocol.ExecuteFailed, Error: "partner down"}
	case strings.HasPrefix(key, "permanent"):
		return protocol.ExecuteResult{Status: protocol.ExecuteFailed, Error: "no such order", Permanent: true}
	case strings.HasPrefix(key, "busy"), strings.HasPrefix(key, "omitted"):
		return protocol.ExecuteResult{Status: protocol.ExecuteBusy}
	}
	return protocol.ExecuteResult{Status: protocol.ExecuteSucceeded}
}

func (b *batchExecutor) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if b.maxBody > 0 && len(body) > b.maxBody {
		b.tooLarge.Add(1)
		w.WriteHeader(http.StatusRequestEntityTooLarge)
		w.Write([]byte(`{"error":{"code":"too_large","message":"the body is too large"}}`))
		return
	}
	if _, err := protocol.VerifyRequest(r, testToken, body, time.Now(), protocol.SignatureWindow); err != nil {
		b.t.Errorf("a call with a bad signature: %v", err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var req protocol.ExecuteBatchRequest
	if err := json.Unmarshal(body, &req); err != nil {
		b.t.Errorf("undecodable call: %v", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if req.Kind != protocol.KindBatch {
		var one protocol.ExecuteRequest
		json.Unmarshal(body, &one)
		b.mu.Lock()
		b.singles = append(b.singles, one)
		b.mu.Unlock()
		o := outcome(one.IdempotencyKey)
		if b.status != 0 || o.Status == protocol.ExecuteBusy {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		json.NewEncoder(w).Encode(protocol.ExecuteResponse{Status: o.Status, Error: o.Error, Permanent: o.Permanent})
		return
	}
	b.mu.Lock()
	b.batches = append(b.batches, req.Tasks)
	b.mu.Unlock()
	time.Sleep(b.delay) // the call's work
	if b.status != 0 {
		w.WriteHeader(b.status)
		w.Write([]byte(`{"error":{"code":"broken","message":"the executor broke"}}`))
		return
	}
	var ans protocol.ExecuteBatchResponse
	for _, task := range req.Tasks {
		if strings.HasPrefix(task.IdempotencyKey, "omitted") {
			continue // only at the end of the batch in these tests: the rest keep their index
		}
		o := outcome(task.IdempotencyKey)
		o.TaskID, o.Kind, o.DurationMS = task.TaskID, task.Kind, 7
		ans.Results = append(ans.Results, o)
	}
	json.NewEncoder(w).Encode(ans)
}

func (b *batchExecutor) calls() (batches [][]protocol.ExecuteRequest, singles []protocol.ExecuteRequest) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append(batches, b.batches...), append(singles, b.singles...)
}

// registerBatching lists an instance that takes batches of up to maxBatch tasks.
func (r *rig) registerBatching(id, url string, capacity, maxBatch int) {
	r.T.Helper()
	in := retry.Instance{ID: id, GroupID: r.Group.ID, ExecutorURL: url, Capacity: capacity, MaxBatch: maxBatch}
	if err := r.Store.UpsertInstance(context.Background(), in, time.Now().Add(-time.Minute)); err != nil {
		r.T.Fatal(err)
	}
	r.reg.Observe(in)
}

func TestDispatcherSendsABatchAndSettlesEachTaskByItsResult(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		r := newRig(t, s, nil, func(p *dispatch.Params) { p.MaxBatch = 8 })
		ex := newBatchExecutor(t, 0)
		r.registerBatching("i1", ex.URL(), 100, 16)
		keys := []string{"ok-1", "fails-1", "permanent-1", "ok-2", "busy-1", "omitted-1"}
		ids := r.Add(time.Now(), keys...)
		claims := r.claim(retry.KindReplay, time.Now())
		if len(claims) != len(keys) {
			t.Fatalf("claimed %d tasks, want %d", len(claims), len(keys))
		}
		// The claims go in the order of their keys, so that the omitted one is last.
		byID := map[int64]retry.Claim{}
		for _, c := range claims {
			byID[c.TaskID] = c
		}
		for i, id := range ids {
			claims[i] = byID[id]
		}
		r.d.RunTogether(claims)
		for _, id := range ids {
			r.waitTask(id, "settled", notRunning)
		}
		batches, singles := ex.calls()
		if len(batches) != 1 || len(batches[0]) != len(keys) {
			t.Fatalf("the instance received %d batches (%v); want one of all %d tasks", len(batches), batches, len(keys))
		}
		for i, task := range batches[0] {
			if task.TaskID != ids[i] || task.IdempotencyKey != keys[i] || task.Kind != protocol.KindReplay ||
				task.Scene != "notify" || time.Duration(task.Timeout) != time.Second || task.Attempt != 1 {
				t.Errorf("task %d of the batch: %+v", i, task)
			}
		}
		// The tasks not run go on as single calls to the group's other instances: there are
		// none, so no single call is made.
		if len(singles) != 0 {
			t.Errorf("the instance received %d single calls, want none", len(singles))
		}
		for i, id := range ids[:4] {
			tk, atts := r.Task(id), r.Attempts(id)
			if tk.Attempts != 1 || len(atts) != 1 || atts[0].InstanceID != "i1" || atts[0].Duration != 7*time.Millisecond {
				t.Errorf("%s: task is %s with %d attempts %+v; want one attempt on i1 lasting what the instance said",
					keys[i], tk.State, tk.Attempts, atts)
			}
		}
		if tk := r.Task(ids[0]); tk.State != retry.Succeeded {
			t.Errorf("ok-1 is %s, want succeeded", tk.State)
		}
		if tk := r.Task(ids[1]); tk.State != retry.Waiting || tk.LastError != "partner down" || time.Until(tk.NextAt) < 50*time.Minute {
			t.Errorf("fails-1 is %s with error %q due %s; want waiting an hour", tk.State, tk.LastError, tk.NextAt)
		}
		if tk := r.Task(ids[2]); tk.State != retry.Exhausted || tk.LastError != "no such order" {
			t.Errorf("permanent-1 is %s with error %q; want exhausted", tk.State, tk.LastError)
		}
		// A task the instance did not run, or gave no result for, costs no attempt.
		r.released(ids[4], busyDelay, "busy in the batch")
		r.released(ids[5], busyDelay, "no result in the batch")
		if r.d.Pending() != 0 {
			t.Errorf("pending %d after every claim settled, want 0", r.d.Pending())
		}
	})
}

func TestDispatcherSendsTasksNotRunInABatchToAnotherInstance(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		r := newRig(t, s, nil, func(p *dispatch.Params) { p.MaxBatch = 8 })
		full := newBatchExecutor(t, http.StatusTooManyRequests)
		other := newExecutor(t, func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
			return http.StatusOK, protocol.ExecuteResponse{Status: protocol.ExecuteSucceeded}
		})
		// Round robin starts with the first by id: the full one takes every claim of the batch
		// only if it is the only choice, so the second instance is an old one, taking no
		// batches; the claims it is picked for go as single calls.
		r.registerBatching("a-full", full.URL(), 100, 16)
		r.register("b-old", other.URL(), 100)
		ids := r.Add(time.Now(), "k1", "k2", "k3", "k4")
		r.d.RunTogether(r.claim(retry.KindReplay, time.Now()))
		for _, id := range ids {
			tk := r.waitTask(id, "settled", notRunning)
			atts := r.Attempts(id)
			if tk.State != retry.Succeeded || len(atts) != 1 || atts[0].InstanceID != "b-old" {
				t.Errorf("task %d is %s with attempts %+v; want succeeded once, on b-old", id, tk.State, atts)
			}
		}
		batches, _ := full.calls()
		if len(batches) != 1 || len(batches[0]) != 2 {
			t.Errorf("the batching instance received %v; want one batch of the 2 claims round robin gave it", batches)
		}
		if n := len(other.received()); n != 4 {
			t.Errorf("the old instance received %d single calls, want 4 (2 its own, 2 the busy one did not run)", n)
		}
	})
}

func TestDispatcherSettlesEachTaskOfABatchThatFailsAsAWhole(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		r := newRig(t, s, nil, func(p *dispatch.Params) { p.MaxBatch = 8 })
		ex := newBatchExecutor(t, http.StatusInternalServerError)
		r.registerBatching("i1", ex.URL(), 100, 16)
		ids := r.Add(time.Now(), "k1", "k2", "k3")
		r.d.RunTogether(r.claim(retry.KindReplay, time.Now()))
		for _, id := range ids {
			tk := r.waitTask(id, "settled", notRunning)
			atts := r.Attempts(id)
			if tk.State != retry.Waiting || tk.Attempts != 1 || len(atts) != 1 || !strings.Contains(tk.LastError, "500") ||
				!strings.Contains(tk.LastError, "the executor broke") {
				t.Errorf("task %d is %s with %d attempts, error %q; want a failed attempt naming the status, as a single call's",
					id, tk.State, tk.Attempts, tk.LastError)
			}
		}
	})
}

// An instance that takes smaller bodies than a batch refuses it with 413, running nothing: the
// tasks go on as single calls, to it too, and cost one attempt each, the one that ran; the
// tasks that come next go to it as single calls at once.
func TestDispatcherSendsABatchTooLargeForTheInstanceAsSingleCalls(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		r := newRig(t, s, nil, func(p *dispatch.Params) { p.MaxBatch = 8 })
		ex := newBatchExecutor(t, 0)
		ex.maxBody = 400 // a single call's body (about 160 bytes), not a batch of four (about 670)
		r.registerBatching("i1", ex.URL(), 100, 16)
		ids := r.Add(time.Now(), "k1", "k2", "k3", "k4")
		r.d.RunTogether(r.claim(retry.KindReplay, time.Now()))
		for _, id := range ids {
			tk := r.waitTask(id, "settled", notRunning)
			atts := r.Attempts(id)
			if tk.State != retry.Succeeded || tk.Attempts != 1 || len(atts) != 1 || atts[0].InstanceID != "i1" {
				t.Errorf("task %d is %s with %d attempts %+v, error %q; want succeeded with one attempt, on i1",
					id, tk.State, tk.Attempts, atts, tk.LastError)
			}
		}
		if _, singles := ex.calls(); len(singles) != len(ids) {
			t.Errorf("the instance received %d single calls, want %d", len(singles), len(ids))
		}
		if n := ex.tooLarge.Load(); n != 1 {
			t.Fatalf("the instance refused %d bodies as too large, want the one batch", n)
		}
		next := r.Add(time.Now(), "k5", "k6", "k7", "k8")
		r.d.RunTogether(r.claim(retry.KindReplay, time.Now()))
		for _, id := range next {
			if tk := r.waitTask(id, "settled", notRunning); tk.State != retry.Succeeded || tk.Attempts != 1 {
				t.Errorf("task %d is %s with %d attempts, want succeeded with one", id, tk.State, tk.Attempts)
			}
		}
		if n := ex.tooLarge.Load(); n != 1 {
			t.Errorf("the instance was sent %d batches too large for it; after the first it gets single calls", n)
		}
	})
}

func TestDispatcherGroupsOnlyWhatEveryInstanceTakes(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		r := newRig(t, s, nil, func(p *dispatch.Params) { p.MaxBatch = 4; p.MaxBatchBytes = 100 })
		r.registerBatching("i1", "http://127.0.0.1:1/x", 100, 3)
		other := newRig(t, s, nil, nil) // another group, with an old instance
		claim := func(group int64, args int) *retry.Claim {
			return &retry.Claim{GroupID: group, Args: make([]byte, args)}
		}
		g, o := r.Group.ID, other.Group.ID
		in := []*retry.Claim{claim(g, 10), claim(o, 10), claim(g, 10), claim(g, 10), claim(g, 10), claim(g, 90), claim(g, 200)}
		sizes := func(jobs [][]*retry.Claim) (out []int) {
			for _, j := range jobs {
				out = append(out, len(j))
			}
			return out
		}
		// The group's instance takes 3 at most: 3, then the 4th with the 90-byte one up to the
		// byte bound, then the one over the bound alone; the other group's claim alone.
		got := sizes(r.d.Jobs(in))
		want := []int{3, 1, 2, 1}
		if len(got) != len(want) {
			t.Fatalf("jobs of sizes %v, want %v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("jobs of sizes %v, want %v", got, want)
			}
		}
		// The batch size is stored with the instance: a registry that reloads it from the
		// database (as other nodes' do) groups the same way.
		if err := r.reg.Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := sizes(r.d.Jobs(in[:4])); len(got) != 2 || got[0] != 3 {
			t.Fatalf("after a reload: jobs of sizes %v, want [3 1]", got)
		}
		// An old instance joining the group turns batching off for it.
		r.register("i2-old", "http://127.0.0.1:1/y", 100)
		if got := sizes(r.d.Jobs(in[:3])); len(got) != 3 {
			t.Fatalf("with an old instance in the group: jobs of sizes %v, want 3 single calls", got)
		}
	})
}

// A claim that finds its group's instances at capacity with this node's own calls waits for a
// slot to free instead of waiting out the busy delay, whether it goes alone or in a batch.
func TestDispatcherWaitsForASlotOfAnInstanceAtCapacity(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		for _, batching := range []bool{false, true} {
			r := newRig(t, s, nil, func(p *dispatch.Params) { p.MaxBatch = 8 })
			var url string
			if batching {
				ex := newBatchExecutor(t, 0)
				url = ex.URL()
				r.registerBatching("i-batching", url, 2, 8)
			} else {
				ex := newExecutor(t, func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
					time.Sleep(20 * time.Millisecond)
					return http.StatusOK, protocol.ExecuteResponse{Status: protocol.ExecuteSucceeded}
				})
				r.register("i-single", ex.URL(), 1)
			}
			ids := r.Add(time.Now(), keys("k", 6)...)
			claims := r.claim(retry.KindReplay, time.Now())
			if batching {
				r.d.RunTogether(claims)
			} else {
				r.d.Submit(claims)
			}
			for _, id := range ids {
				tk := r.waitTask(id, "settled", notRunning)
				if tk.State != retry.Succeeded || tk.Attempts != 1 {
					t.Errorf("batching %v: task %d is %s with %d attempts, due %s; want succeeded once, not given back busy",
						batching, id, tk.State, tk.Attempts, tk.NextAt)
				}
			}
		}
	})
}

// Claims of a batch that wait for an instance's slot, while the calls before them take most of
// the claims' time, are kept held: none is ever past its deadline unsent (where the sweeper
// would charge it an attempt never made), and each task runs once.
func TestBatchedClaimsWaitingForASlotStayHeld(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		r := newRig(t, s, func(sc *retry.Scene) { sc.Timeout = time.Second }, func(p *dispatch.Params) { p.MaxBatch = 16 })
		ex := newBatchExecutor(t, 0)
		ex.delay = 1200 * time.Millisecond
		r.registerBatching("i-one-slot", ex.URL(), 1, 16)
		ids := r.Add(time.Now(), keys("k", 6)...)
		claims := r.Claim(retry.KindReplay, "node-1", time.Now(), time.Now().Add(2500*time.Millisecond))
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.d.RunTogether(claims)
		}()
		for finished := false; !finished; {
			select {
			case <-done:
				finished = true
			case <-time.After(50 * time.Millisecond):
			}
			stuck, err := s.Stuck(context.Background(), retry.KindReplay, testkit.AllBuckets(), time.Now(), 10)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range stuck {
				t.Fatalf("task %d is past its claim's deadline while it waits to be sent", c.TaskID)
			}
		}
		for _, id := range ids {
			if tk := r.waitTask(id, "settled", notRunning); tk.State != retry.Succeeded || tk.Attempts != 1 {
				t.Errorf("task %d is %s after %d attempts; want succeeded once", id, tk.State, tk.Attempts)
			}
		}
	})
}

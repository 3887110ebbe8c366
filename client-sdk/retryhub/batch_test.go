package retryhub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// executeBatch sends a signed batch of tasks to c's executor and returns the recorded answer.
func executeBatch(t *testing.T, c *Client, tasks ...protocol.ExecuteRequest) *httptest.ResponseRecorder {
	t.Helper()
	body, err := json.Marshal(protocol.ExecuteBatchRequest{Kind: protocol.KindBatch, Tasks: tasks})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, ExecutorPath, bytes.NewReader(body))
	signFor(r, c, "secret", body)
	w := httptest.NewRecorder()
	c.Handler().ServeHTTP(w, r)
	return w
}

func decodeBatch(t *testing.T, w *httptest.ResponseRecorder, n int) []protocol.ExecuteResult {
	t.Helper()
	if w.Code != http.StatusOK {
		t.Fatalf("executor answered %d %s, want 200", w.Code, w.Body)
	}
	var resp protocol.ExecuteBatchResponse
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatalf("decode batch answer %q: %v", w.Body, err)
	}
	if len(resp.Results) != n {
		t.Fatalf("%d results for %d tasks: %s", len(resp.Results), n, w.Body)
	}
	return resp.Results
}

// task is a replay of scene with args, numbered id.
func task(id int64, scene, args string) protocol.ExecuteRequest {
	r := replayOf(scene, args)
	r.TaskID = id
	return r
}

func TestExecutorRunsABatchAtOnceAndAnswersEachTask(t *testing.T) {
	c := localClient(t)
	var pair sync.WaitGroup
	pair.Add(2)
	release := make(chan struct{})
	RetryableOn(c, "batch-send", func(ctx context.Context, what string) error {
		switch what {
		case "fail":
			return errBoom
		case "perm":
			return Permanent(errors.New("no such order"))
		case "slow":
			<-ctx.Done()
			return ctx.Err()
		case "pair":
			// Each of the two waits for the other: they finish only when run at once.
			pair.Done()
			done := make(chan struct{})
			go func() { pair.Wait(); close(done) }()
			select {
			case <-done:
				return nil
			case <-ctx.Done():
				return errors.New("the other task of the pair never ran beside this one")
			}
		case "stuck":
			<-release // ignores its context
		}
		return nil
	})
	slow := task(3, "batch-send", `"slow"`)
	slow.Timeout = backoff.Duration(30 * time.Millisecond)
	stuck := task(7, "batch-send", `"stuck"`)
	stuck.Timeout = backoff.Duration(50 * time.Millisecond)
	pairA, pairB := task(4, "batch-send", `"pair"`), task(5, "batch-send", `"pair"`)
	pairA.Timeout, pairB.Timeout = backoff.Duration(10*time.Second), backoff.Duration(10*time.Second)
	cb := task(8, "batch-send", `"ok"`)
	cb.Kind, cb.Callback = protocol.KindCallback, &protocol.CallbackInfo{Outcome: protocol.OutcomeSucceeded, Attempts: 1}
	tasks := []protocol.ExecuteRequest{task(1, "batch-send", `"ok"`), task(2, "batch-send", `"fail"`), slow, pairA, pairB,
		task(6, "nobody-declared-this", `1`), stuck, task(9, "batch-send", `"perm"`), cb}
	res := decodeBatch(t, executeBatch(t, c, tasks...), len(tasks))
	for i, r := range res {
		if r.TaskID != tasks[i].TaskID || r.Kind != tasks[i].Kind {
			t.Errorf("result %d is for task %d %s, want %d %s", i, r.TaskID, r.Kind, tasks[i].TaskID, tasks[i].Kind)
		}
	}
	check := func(i int, status, errPart string, permanent bool) {
		t.Helper()
		if r := res[i]; r.Status != status || !strings.Contains(r.Error, errPart) || r.Permanent != permanent {
			t.Errorf("task %d answered %+v, want %s with an error naming %q (permanent %v)", tasks[i].TaskID, r, status, errPart, permanent)
		}
	}
	check(0, protocol.ExecuteSucceeded, "", false)
	check(1, protocol.ExecuteFailed, "boom", false)
	check(2, protocol.ExecuteFailed, "timed out after 30ms", false)
	check(3, protocol.ExecuteSucceeded, "", false)
	check(4, protocol.ExecuteSucceeded, "", false)
	check(5, protocol.ExecuteFailed, "unknown_scene", false)
	check(6, protocol.ExecuteFailed, "timed out after 50ms", false)
	check(7, protocol.ExecuteFailed, "no such order", true)
	check(8, protocol.ExecuteSucceeded, "", false)
	// The task answered past its timeout keeps its slot until its function returns.
	if n := c.Stats().InFlight; n != 1 {
		t.Errorf("in flight %d after the answer, want 1 (the stuck task)", n)
	}
	close(release)
	eventually(t, "the stuck task to give back its slot", func() bool { return c.Stats().InFlight == 0 })
}

func TestExecutorBatchTakesNoMoreTasksThanItsCapacity(t *testing.T) {
	cfg := testConfig("http://127.0.0.1:1")
	cfg.Capacity = 3
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var ran atomic.Int32
	RetryableOn(c, "batch-cap", func(context.Context, int) error { ran.Add(1); return nil })
	var tasks []protocol.ExecuteRequest
	for i := range 5 {
		tasks = append(tasks, task(int64(i+1), "batch-cap", `1`))
	}
	res := decodeBatch(t, executeBatch(t, c, tasks...), 5)
	for i, r := range res {
		want := protocol.ExecuteSucceeded
		if i >= 3 {
			want = protocol.ExecuteBusy
		}
		if r.Status != want {
			t.Errorf("task %d answered %+v, want %s", i+1, r, want)
		}
	}
	if n := ran.Load(); n != 3 {
		t.Errorf("%d tasks ran, want 3 (the capacity)", n)
	}
	if n := c.Stats().InFlight; n != 0 {
		t.Errorf("in flight %d after the batch, want 0", n)
	}
	// An empty batch takes and gives back its slot.
	decodeBatch(t, executeBatch(t, c), 0)
	if n := c.Stats().InFlight; n != 0 {
		t.Errorf("in flight %d after an empty batch, want 0", n)
	}
}

func TestHeartbeatRegistersTheBatchSize(t *testing.T) {
	for _, tc := range []struct {
		url       string
		capacity  int
		wantBatch int
	}{{"http://127.0.0.1:9/x", 16, 16}, {"http://127.0.0.1:9/x", 500, MaxBatch}, {"", 16, 0}} {
		h := &heartbeat{executorURL: tc.url, capacity: tc.capacity}
		if got := h.maxBatch(); got != tc.wantBatch {
			t.Errorf("executor %q, capacity %d: registers max_batch %d, want %d", tc.url, tc.capacity, got, tc.wantBatch)
		}
	}
}

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/app"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

func TestReportedTaskIsReplayed(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 5, nil)
		in := testkit.NewInstance(t, testToken, testkit.Succeed)
		w.register("i1", in.URL(), 4)

		res := w.report(item("notify", "order-1"))
		if res[0].Status != protocol.ReportCreated || res[0].TaskID == 0 {
			t.Fatalf("report result %+v", res[0])
		}
		tk := w.waitTask(res[0].TaskID, 10*time.Second, "succeeded", func(tk retry.Task) bool { return tk.State == retry.Succeeded })
		if tk.Attempts != 1 || tk.EndedAt == nil || tk.CallbackState != retry.CallbackNone {
			t.Fatalf("succeeded task: %+v", tk)
		}
		calls := in.CallsOf(protocol.KindReplay)
		if len(calls) != 1 {
			t.Fatalf("%d replay calls, want 1", len(calls))
		}
		c := calls[0]
		if c.Scene != "notify" || c.IdempotencyKey != "order-1" || string(c.Args) != `{"order":"order-1"}` ||
			c.Group != "orders" || c.Namespace != w.group.Namespace || c.Attempt != 1 || c.TaskID != tk.ID {
			t.Fatalf("replay call: %+v", c)
		}
		atts := w.attempts(tk.ID)
		if len(atts) != 1 || atts[0].Outcome != retry.OutcomeSucceeded || atts[0].InstanceID != "i1" || atts[0].NodeID != "n1" {
			t.Fatalf("attempts: %+v", atts)
		}
	})
}

func TestFailingTaskIsExhaustedWithEveryAttemptRecorded(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 3, nil)
		in := testkit.NewInstance(t, testToken, fail("partner says 503"))
		w.register("i1", in.URL(), 4)

		id := w.report(item("notify", "order-2"))[0].TaskID
		tk := w.waitTask(id, 15*time.Second, "exhausted", func(tk retry.Task) bool { return tk.State == retry.Exhausted })
		if tk.Attempts != 3 || tk.LastError != "partner says 503 (attempt 3)" || tk.EndedAt == nil {
			t.Fatalf("exhausted task: %+v", tk)
		}
		atts := w.attempts(id)
		if len(atts) != 3 {
			t.Fatalf("%d attempts recorded, want 3", len(atts))
		}
		for i, a := range atts {
			if a.Number != i+1 || a.Outcome != retry.OutcomeFailed || a.Kind != retry.KindReplay ||
				!strings.Contains(a.Error, "503") || a.InstanceID != "i1" {
				t.Fatalf("attempt %d: %+v", i+1, a)
			}
		}
		// A dead letter stays as it is: no further calls, however many rounds the claimer makes.
		waitRounds(t, node, 2)
		if n := len(in.CallsOf(protocol.KindReplay)); n != 3 {
			t.Fatalf("%d replay calls, want 3", n)
		}
		// A new report with the same key starts a new task: the old one has ended.
		again := w.report(item("notify", "order-2"))[0]
		if again.Status != protocol.ReportCreated || again.TaskID == id {
			t.Fatalf("same key after exhaustion: %+v", again)
		}
	})
}

func TestPermanentFailureExhaustsAtOnce(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 10, nil)
		in := testkit.NewInstance(t, testToken, func(protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
			return http.StatusOK, protocol.ExecuteResponse{Status: protocol.ExecuteFailed, Error: "card declined", Permanent: true}
		})
		w.register("i1", in.URL(), 4)
		id := w.report(item("notify", "order-p"))[0].TaskID
		tk := w.waitTask(id, 10*time.Second, "exhausted", func(tk retry.Task) bool { return tk.State == retry.Exhausted })
		if tk.Attempts != 1 || tk.LastError != "card declined" {
			t.Fatalf("permanent failure: %+v", tk)
		}
	})
}

func TestCallbackAfterSuccessAndAfterExhaustion(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 2, func(sc *retry.Scene) {
			sc.Callback.Enabled = true
			sc.Callback.MaxAttempts = 3
		})
		var callbackFailures atomic.Int32
		in := testkit.NewInstance(t, testToken, func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
			if req.Kind == protocol.KindCallback {
				// The first callback call fails: callbacks are retried by their own policy.
				if req.IdempotencyKey == "good" && callbackFailures.Add(1) == 1 {
					return http.StatusOK, protocol.ExecuteResponse{Status: protocol.ExecuteFailed, Error: "callback store down"}
				}
				return testkit.Succeed(req)
			}
			if req.IdempotencyKey == "good" {
				return testkit.Succeed(req)
			}
			return http.StatusOK, protocol.ExecuteResponse{Status: protocol.ExecuteFailed, Error: "still broken"}
		})
		w.register("i1", in.URL(), 8)
		res := w.report(item("notify", "good"), item("notify", "bad"))
		good, bad := res[0].TaskID, res[1].TaskID

		g := w.waitTask(good, 10*time.Second, "called back", func(tk retry.Task) bool { return tk.CallbackState == retry.CallbackSucceeded })
		if g.State != retry.Succeeded || g.CallbackAttempts != 2 {
			t.Fatalf("good task: %+v", g)
		}
		b := w.waitTask(bad, 10*time.Second, "called back", func(tk retry.Task) bool { return tk.CallbackState == retry.CallbackSucceeded })
		if b.State != retry.Exhausted || b.Attempts != 2 || b.CallbackAttempts != 1 {
			t.Fatalf("bad task: %+v", b)
		}
		outcomes := map[string]string{}
		for _, c := range in.CallsOf(protocol.KindCallback) {
			if c.Callback == nil {
				t.Fatalf("callback call without outcome: %+v", c)
			}
			outcomes[c.IdempotencyKey] = c.Callback.Outcome
			if c.IdempotencyKey == "bad" && (c.Callback.LastError != "still broken" || c.Callback.Attempts != 2) {
				t.Fatalf("exhausted callback info: %+v", c.Callback)
			}
		}
		if outcomes["good"] != protocol.OutcomeSucceeded || outcomes["bad"] != protocol.OutcomeExhausted {
			t.Fatalf("callback outcomes: %v", outcomes)
		}
		kinds := map[retry.AttemptKind]int{}
		for _, a := range w.attempts(good) {
			kinds[a.Kind]++
		}
		if kinds[retry.KindReplay] != 1 || kinds[retry.KindCallback] != 2 {
			t.Fatalf("attempts of the good task by kind: %v", kinds)
		}
	})
}

func TestCallbackThatKeepsFailingEndsExhausted(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 1, func(sc *retry.Scene) {
			sc.Callback.Enabled = true
			sc.Callback.MaxAttempts = 2
		})
		in := testkit.NewInstance(t, testToken, func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
			if req.Kind == protocol.KindCallback {
				return http.StatusOK, protocol.ExecuteResponse{Status: protocol.ExecuteFailed, Error: "no"}
			}
			return testkit.Succeed(req)
		})
		w.register("i1", in.URL(), 8)
		id := w.report(item("notify", "k"))[0].TaskID
		tk := w.waitTask(id, 10*time.Second, "callback exhausted", func(tk retry.Task) bool { return tk.CallbackState == retry.CallbackExhausted })
		if tk.State != retry.Succeeded || tk.CallbackAttempts != 2 || tk.CallbackError != "no" {
			t.Fatalf("task: %+v", tk)
		}
	})
}

func TestDuplicateKeyMerges(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 5, nil)
		// No instance: the task stays active, so repeats merge into it.
		first := w.report(item("notify", "dup"))[0]
		second := w.report(item("notify", "dup"), item("notify", "dup"), item("notify", "other"))
		if second[0].Status != protocol.ReportMerged || second[0].TaskID != first.TaskID ||
			second[1].Status != protocol.ReportMerged || second[1].TaskID != first.TaskID ||
			second[2].Status != protocol.ReportCreated {
			t.Fatalf("results %+v after %+v", second, first)
		}
		if n := w.countTasks(); n != 2 {
			t.Fatalf("%d tasks stored, want 2", n)
		}
		if tk := w.task(first.TaskID); tk.Merges != 2 {
			t.Fatalf("merges %d, want 2", tk.Merges)
		}
	})
}

func TestNoInstanceWaitsThenRunsWhenOneRegisters(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 2, nil)
		id := w.report(item("notify", "patient"))[0].TaskID
		// With no instance it is held (claimed once, not over and over): it neither fails nor
		// uses up its attempts.
		held := w.waitTask(id, 10*time.Second, "held", func(tk retry.Task) bool { return tk.State == retry.Held })
		waitRounds(t, node, 2)
		tk := w.task(id)
		if tk.State != retry.Held || tk.Attempts != 0 || len(w.attempts(id)) != 0 || !tk.UpdatedAt.Equal(held.UpdatedAt) {
			t.Fatalf("without an instance the task is %s with %d attempts, updated %s after %s (claimed again?)",
				tk.State, tk.Attempts, tk.UpdatedAt, held.UpdatedAt)
		}
		in := testkit.NewInstance(t, testToken, testkit.Succeed)
		w.register("late", in.URL(), 2)
		w.waitTask(id, 10*time.Second, "succeeded", func(tk retry.Task) bool { return tk.State == retry.Succeeded })
	})
}

func TestBusyInstanceIsBackPressureNotFailure(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 2, nil)
		var busy atomic.Int32
		in := testkit.NewInstance(t, testToken, func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
			if busy.Add(1) <= 3 {
				return http.StatusTooManyRequests, protocol.ExecuteResponse{}
			}
			return testkit.Succeed(req)
		})
		w.register("i1", in.URL(), 2)
		id := w.report(item("notify", "bp"))[0].TaskID
		tk := w.waitTask(id, 15*time.Second, "succeeded", func(tk retry.Task) bool { return tk.State == retry.Succeeded })
		if tk.Attempts != 1 {
			t.Fatalf("busy answers were counted as attempts: %d attempts", tk.Attempts)
		}
	})
}

func TestForgedExecutorAnswerIsNotTrusted(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 1, nil)
		// This instance holds a different token: it refuses the server's calls as forged.
		in := testkit.NewInstance(t, "some-other-token-000000", testkit.Succeed)
		w.register("i1", in.URL(), 2)
		id := w.report(item("notify", "x"))[0].TaskID
		tk := w.waitTask(id, 10*time.Second, "exhausted", func(tk retry.Task) bool { return tk.State == retry.Exhausted })
		if !strings.Contains(tk.LastError, "401") {
			t.Fatalf("last error %q", tk.LastError)
		}
		if forged := in.Forged(); forged != 1 {
			t.Fatalf("instance saw %d unverifiable calls, want 1", forged)
		}
	})
}

func TestPausedSceneHoldsItsTasks(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 3, func(sc *retry.Scene) { sc.Enabled = false })
		in := testkit.NewInstance(t, testToken, testkit.Succeed)
		w.register("i1", in.URL(), 2)
		id := w.report(item("notify", "held"))[0].TaskID
		// Claimed once, it is held: not claimed again while the scene is paused, and not run.
		held := w.waitTask(id, 10*time.Second, "held", func(tk retry.Task) bool { return tk.State == retry.Held })
		waitRounds(t, node, 2)
		if tk := w.task(id); tk.State != retry.Held || tk.Attempts != 0 || len(in.CallsOf(protocol.KindReplay)) != 0 || len(w.attempts(id)) != 0 {
			t.Fatalf("a paused scene's task ran: %+v", tk)
		} else if !tk.UpdatedAt.Equal(held.UpdatedAt) {
			t.Fatalf("a held task was claimed again (updated %s, then %s)", held.UpdatedAt, tk.UpdatedAt)
		}
		sc := w.scene
		sc.Enabled = true
		if _, err := node.Store.UpdateScene(context.Background(), sc); err != nil {
			t.Fatal(err)
		}
		w.waitTask(id, 10*time.Second, "succeeded", func(tk retry.Task) bool { return tk.State == retry.Succeeded })
	})
}

func TestHealth(t *testing.T) {
	node := startNode(t, testConfig(storagetest.SQLite(t)), "n1")
	type health struct {
		Status       string `json:"status"`
		NodeID       string `json:"node_id"`
		Database     string `json:"database"`
		BucketsHeld  int    `json:"buckets_held"`
		Leader       bool   `json:"leader"`
		SweepSkipped *int64 `json:"sweep_skipped"`
		QueuedBytes  *int64 `json:"queued_bytes"`
	}
	get := func() (int, health) {
		resp, err := http.Get(node.URL() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var h health
		if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, h
	}
	status, h := get()
	if status != 200 || h.Status != "ok" || h.NodeID != "n1" || h.Database != "ok" || h.BucketsHeld != 128 ||
		h.SweepSkipped == nil || h.QueuedBytes == nil {
		t.Fatalf("health %d %+v", status, h)
	}
	// A lone node leads the singleton work.
	waitFor(t, 10*time.Second, "the lone node to lead", func() bool {
		_, h := get()
		return h.Leader
	})
}

// waitRounds waits until node's claimer has ended n more rounds than it had: long enough for
// anything due to have been claimed, without waiting on the clock.
func waitRounds(t *testing.T, node *app.App, n int64) {
	t.Helper()
	from := node.Claimer.Rounds()
	waitFor(t, 30*time.Second, fmt.Sprintf("%d claim rounds", n), func() bool { return node.Claimer.Rounds() >= from+n })
}

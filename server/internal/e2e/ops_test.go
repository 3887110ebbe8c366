package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/ops"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/scheduler"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

func TestOperatorActions(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		ctx := context.Background()
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 2, func(sc *retry.Scene) {
			// Slow back-off: between replays, the operator acts.
			sc.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Hour)}
		})
		var healthy atomic.Bool
		in := testkit.NewInstance(t, testToken, func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
			if healthy.Load() {
				return testkit.Succeed(req)
			}
			return http.StatusOK, protocol.ExecuteResponse{Status: protocol.ExecuteFailed, Error: "down"}
		})
		w.register("i1", in.URL(), 8)
		res := w.report(item("notify", "a"), item("notify", "b"), item("notify", "c"), item("notify", "d"))
		a, b, c, d := res[0].TaskID, res[1].TaskID, res[2].TaskID, res[3].TaskID
		// Their first replay is an hour away.
		apply := func(action storage.Action, ids []int64, at time.Time) storage.ActionResult {
			t.Helper()
			r, err := node.Ops.Apply(ctx, "tester", action, ids, at)
			if err != nil {
				t.Fatalf("%s: %v", action, err)
			}
			return r
		}
		// Trigger now: runs and fails once; the next replay is an hour away again.
		apply(storage.TriggerNow, []int64{a, b}, time.Time{})
		w.waitTask(a, 10*time.Second, "replayed once", func(tk retry.Task) bool { return tk.Attempts == 1 && tk.State == retry.Waiting })
		w.waitTask(b, 10*time.Second, "replayed once", func(tk retry.Task) bool { return tk.Attempts == 1 && tk.State == retry.Waiting })
		// The second trigger uses up b's last attempt: b is a dead letter.
		apply(storage.TriggerNow, []int64{b}, time.Time{})
		w.waitTask(b, 10*time.Second, "exhausted", func(tk retry.Task) bool { return tk.State == retry.Exhausted })

		// Pause, then trigger: a paused task is triggered (it waits again, due now).
		if r := apply(storage.Pause, []int64{c, b}, time.Time{}); r.Changed != 1 || r.Skipped != 1 {
			t.Fatalf("pause: %+v", r)
		}
		if tk := w.task(c); tk.State != retry.Paused {
			t.Fatalf("paused: %s", tk.State)
		}
		if r := apply(storage.Resume, []int64{c}, time.Time{}); r.Changed != 1 {
			t.Fatalf("resume: %+v", r)
		}
		at := time.Now().Add(200 * time.Millisecond)
		apply(storage.SetNextAt, []int64{c}, at)
		w.waitTask(c, 10*time.Second, "replayed at the set time", func(tk retry.Task) bool { return tk.Attempts == 1 })

		// Cancel ends d for good.
		if r := apply(storage.Cancel, []int64{d}, time.Time{}); r.Changed != 1 {
			t.Fatalf("cancel: %+v", r)
		}
		if tk := w.task(d); tk.State != retry.Cancelled || tk.EndedAt == nil {
			t.Fatalf("cancelled: %+v", tk)
		}

		// The client is fixed: replaying the dead letter runs it with a fresh set of attempts.
		healthy.Store(true)
		if r := apply(storage.Replay, []int64{b, a}, time.Time{}); r.Changed != 1 || r.Skipped != 1 {
			t.Fatalf("replay: %+v", r)
		}
		tk := w.waitTask(b, 10*time.Second, "succeeded after the replay", func(tk retry.Task) bool { return tk.State == retry.Succeeded })
		if tk.Attempts != 1 || len(w.attempts(b)) != 3 {
			t.Fatalf("replayed dead letter: %d attempts now, %d recorded in all", tk.Attempts, len(w.attempts(b)))
		}

		// Discard: a dead letter ends as cancelled and is kept.
		healthy.Store(false)
		apply(storage.TriggerNow, []int64{a}, time.Time{})
		w.waitTask(a, 10*time.Second, "exhausted", func(tk retry.Task) bool { return tk.State == retry.Exhausted })
		if r := apply(storage.Discard, []int64{a}, time.Time{}); r.Changed != 1 {
			t.Fatalf("discard: %+v", r)
		}
		if tk := w.task(a); tk.State != retry.Cancelled {
			t.Fatalf("discarded: %s", tk.State)
		}

		// Bad requests change nothing.
		for _, bad := range []struct {
			action storage.Action
			ids    []int64
			at     time.Time
		}{
			{storage.Pause, nil, time.Time{}},
			{storage.Pause, make([]int64, ops.MaxIDs+1), time.Time{}},
			{"explode", []int64{c}, time.Time{}},
			{storage.SetNextAt, []int64{c}, time.Time{}},
		} {
			if _, err := node.Ops.Apply(ctx, "tester", bad.action, bad.ids, bad.at); !errors.Is(err, retry.ErrInvalid) {
				t.Errorf("%s on %d ids: %v", bad.action, len(bad.ids), err)
			}
		}
	})
}

func TestBulkActionByFilterWorksInBatchesWithProgress(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		ctx := context.Background()
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 3, func(sc *retry.Scene) {
			sc.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Hour)}
		})
		const n = 1234
		for start := 0; start < n; start += 500 {
			var items []protocol.ReportItem
			for i := start; i < min(start+500, n); i++ {
				items = append(items, item("notify", fmt.Sprintf("bulk-%d", i)))
			}
			status, body := w.call(http.MethodPost, protocol.PathReports, protocol.ReportRequest{Items: items})
			if status != http.StatusOK {
				t.Fatalf("report: %d %s", status, body)
			}
		}
		var updates []ops.Progress
		f := storage.TaskFilter{SceneIDs: []int64{w.scene.ID}, States: []retry.State{retry.Waiting}}
		p, err := node.Ops.ApplyFilter(ctx, "tester", storage.Pause, f, time.Time{}, func(p ops.Progress) { updates = append(updates, p) })
		if err != nil {
			t.Fatal(err)
		}
		if !p.Done || p.Seen != n || p.Changed != n || p.Skipped != 0 {
			t.Fatalf("bulk pause: %+v", p)
		}
		if len(updates) < 3 || updates[0].Seen != ops.BatchSize || !updates[len(updates)-1].Done {
			t.Fatalf("progress: %+v", updates)
		}
		paused, _ := node.Store.TaskIDs(ctx, storage.TaskFilter{GroupID: w.group.ID, States: []retry.State{retry.Paused}}, 0, 5000)
		if len(paused) != n {
			t.Fatalf("%d paused, want %d", len(paused), n)
		}
	})
}

func TestRetentionDeletesOldEndedWorkAndKeepsDeadLetters(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		ctx := context.Background()
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 2, func(sc *retry.Scene) {
			sc.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Hour)}
		})
		in := testkit.NewInstance(t, testToken, func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
			switch req.IdempotencyKey {
			case "dead":
				return http.StatusOK, protocol.ExecuteResponse{Status: protocol.ExecuteFailed, Error: "no", Permanent: true}
			case "live":
				return http.StatusOK, protocol.ExecuteResponse{Status: protocol.ExecuteFailed, Error: "later"}
			}
			return testkit.Succeed(req)
		})
		w.register("i1", in.URL(), 8)
		res := w.report(item("notify", "done"), item("notify", "dead"), item("notify", "live"))
		done, dead, live := res[0].TaskID, res[1].TaskID, res[2].TaskID
		if _, err := node.Ops.Apply(ctx, "tester", storage.TriggerNow, []int64{done, dead, live}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		w.waitTask(done, 10*time.Second, "succeeded", func(tk retry.Task) bool { return tk.State == retry.Succeeded })
		w.waitTask(dead, 10*time.Second, "exhausted", func(tk retry.Task) bool { return tk.State == retry.Exhausted })
		w.waitTask(live, 10*time.Second, "failed once", func(tk retry.Task) bool { return tk.Attempts == 1 })
		// Retention runs a second later by its clock, past the tasks' 1 ms retention.
		later := func() time.Time { return time.Now().Add(time.Second) }
		j, err := scheduler.NewJanitor(scheduler.JanitorParams{Store: node.Store, ForgetAfter: time.Hour, Log: testkit.Logger(t),
			Retention: config.Retention{Succeeded: time.Millisecond, Attempts: 0, Batch: 1}, Now: later})
		if err != nil {
			t.Fatal(err)
		}
		sw, err := j.Exec(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if sw.Ended != 1 || sw.DeadLetters != 0 {
			t.Fatalf("swept %+v", sw)
		}
		if _, err := node.Store.Task(ctx, done); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("old succeeded task kept: %v", err)
		}
		if len(w.attempts(done)) != 0 {
			t.Fatal("the deleted task's attempts are kept")
		}
		w.task(dead)
		w.task(live)
		// With dead-letter retention set, old dead letters go too, and old attempts.
		if j, err = scheduler.NewJanitor(scheduler.JanitorParams{Store: node.Store, ForgetAfter: time.Hour, Log: testkit.Logger(t),
			Retention: config.Retention{DeadLetters: time.Millisecond, Attempts: time.Millisecond, Batch: 1}}); err != nil {
			t.Fatal(err)
		}
		if sw, err = j.Exec(ctx); err != nil || sw.DeadLetters != 1 {
			t.Fatalf("swept %+v %v", sw, err)
		}
		w.task(live)
	})
}

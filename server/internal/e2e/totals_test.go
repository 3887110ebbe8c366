package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/client-sdk/retryhub"
	"github.com/retryhub/retryhub/server/internal/app"
	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/scheduler"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// countStates counts the scene's tasks per state in the task table, every state named.
func (w *sdkWorld) countStates(sceneID int64) map[retry.State]int64 {
	w.t.Helper()
	out := map[retry.State]int64{}
	for _, st := range retry.States() {
		n, err := w.store.CountTasks(context.Background(), storage.TaskFilter{SceneIDs: []int64{sceneID}, States: []retry.State{st}})
		if err != nil {
			w.t.Fatal(err)
		}
		if n != 0 {
			out[st] = n
		}
	}
	return out
}

// checkTotals fails the test unless the scene's state totals equal a count of its tasks.
func (w *sdkWorld) checkTotals(sceneID int64, when string) {
	w.t.Helper()
	totals, err := w.store.SceneStateTotals(context.Background(), []int64{sceneID})
	if err != nil {
		w.t.Fatal(err)
	}
	if counted := w.countStates(sceneID); !maps.Equal(totals[sceneID], counted) {
		w.t.Errorf("%s: the totals say %v, a count of the tasks %v", when, totals[sceneID], counted)
	} else {
		w.t.Logf("%s: %v", when, counted)
	}
}

// ids returns the ids of the scene's tasks in the states.
func (w *sdkWorld) ids(sceneID int64, states ...retry.State) []int64 {
	w.t.Helper()
	ids, err := w.store.TaskIDs(context.Background(), storage.TaskFilter{SceneIDs: []int64{sceneID}, States: states}, 0, 1000)
	if err != nil {
		w.t.Fatal(err)
	}
	return ids
}

// The tasks-by-state totals equal a full count of the tasks after a mixed run on two nodes: two
// SDK clients report the same keys at once (merging), half the replays fail and some tasks
// exhaust, callbacks run, an operator pauses, resumes, cancels, triggers, replays and discards,
// the scene is paused (holding tasks) and resumed, retention deletes ended tasks, and one node
// is killed mid-run and started again (its claims taken back by the sweeper).
func TestTaskTotalsEqualACountAfterAMixedRun(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		ctx := context.Background()
		w := newSDKWorld(t, target)
		sc := w.scene("pay", protocol.Remote, func(sc *retry.Scene) { sc.Callback.Enabled = true })
		cfg := testConfig(target)
		cfg.Catalog.TTL = catalogTTL
		a := startNode(t, cfg, "node-a")
		b := startNode(t, cfg, "node-b")

		// The first call fails and is reported; an order of amount 0 fails every replay (and
		// exhausts), the others fail their odd replays and succeed on the even ones.
		fn := func(ctx context.Context, o Order) error {
			r, replay := retryhub.ReplayOf(ctx)
			switch {
			case !replay:
				return errors.New("partner down")
			case o.Amount == 0:
				return errors.New("card declined")
			case r.Attempt%2 == 1:
				return fmt.Errorf("partner flaky (replay %d)", r.Attempt)
			}
			return nil
		}
		key := retryhub.WithKey(func(o Order) string { return o.ID })
		callback := retryhub.WithCallback(func(context.Context, retryhub.CallbackEvent[Order]) error { return nil })
		ca := w.client(a.URL(), func(c *retryhub.Config) { c.Servers = []string{a.URL(), b.URL()} })
		cb := w.client(b.URL(), func(c *retryhub.Config) { c.Servers = []string{b.URL(), a.URL()} })
		clients := []*retryhub.Client{ca, cb}
		pays := []func(context.Context, Order) error{retryhub.RetryableOn(ca, "pay", fn, key, callback),
			retryhub.RetryableOn(cb, "pay", fn, key, callback)}
		start(t, ca)
		start(t, cb)
		calls := make([]uint64, len(clients))
		// report has both clients call the same n orders at once.
		report := func(round, n int) {
			t.Helper()
			var wg sync.WaitGroup
			for c, pay := range pays {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range n {
						if err := pay(ctx, Order{ID: fmt.Sprintf("r%d-%d", round, i), Amount: i % 4}); !errors.Is(err, retryhub.ErrReported) {
							t.Errorf("round %d order %d: %v", round, i, err)
							return
						}
						calls[c]++
					}
				}()
			}
			wg.Wait()
		}
		delivered := func() {
			t.Helper()
			testkit.WaitUntil(t, 30*time.Second, "the clients to deliver every report", func() bool {
				for i, c := range clients {
					if st := c.Stats(); st.Queued != 0 || st.Delivered < calls[i] {
						return false
					}
				}
				return true
			})
		}
		act := func(action retry.Action, ids []int64) {
			t.Helper()
			if len(ids) == 0 {
				return
			}
			if _, err := a.Ops.Apply(ctx, "tester", action, ids, time.Now().Add(200*time.Millisecond)); err != nil {
				t.Fatal(err)
			}
		}
		retention := func(deadLetters time.Duration) {
			t.Helper()
			j, err := scheduler.NewJanitor(scheduler.JanitorParams{Store: w.store, ForgetAfter: time.Hour, Log: testkit.Logger(t),
				Retention: config.Retention{Succeeded: time.Millisecond, DeadLetters: deadLetters, Attempts: time.Millisecond, Batch: 5},
				Now:       func() time.Time { return time.Now().Add(time.Second) }})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := j.Exec(ctx); err != nil {
				t.Fatal(err)
			}
		}

		report(0, 40)
		delivered()
		first := w.ids(sc.ID)
		act(retry.Pause, first[:10])
		act(retry.Cancel, first[10:15])
		act(retry.SetNextAt, first[15:20])

		// Node b dies mid-run; its clients' reports go to node a meanwhile.
		b.Kill()
		report(1, 40)
		// The scene is paused long enough to hold some of its tasks, then resumed.
		paused := sc
		paused.Enabled = false
		if _, err := w.store.UpdateScene(ctx, paused); err != nil {
			t.Fatal(err)
		}
		testkit.WaitUntil(t, 30*time.Second, "a task to be held", func() bool { return len(w.ids(sc.ID, retry.Held)) > 0 })
		if _, err := w.store.UpdateScene(ctx, sc); err != nil {
			t.Fatal(err)
		}
		b = startNode(t, cfg, "node-b")
		w.t.Logf("node-b started again at %s", b.URL())
		act(retry.TriggerNow, first[:5])
		act(retry.Resume, first[5:10])
		testkit.WaitUntil(t, 30*time.Second, "a dead letter", func() bool { return len(w.ids(sc.ID, retry.Exhausted)) > 1 })
		dead := w.ids(sc.ID, retry.Exhausted)
		act(retry.Replay, dead[:len(dead)/2])
		act(retry.Discard, dead[len(dead)/2:])
		retention(0)
		report(2, 40)
		delivered()
		act(retry.Resume, first[:10])

		// Settled: every task has ended, and stays so (a late result changes nothing).
		testkit.WaitUntil(t, 90*time.Second, "every task to end", func() bool {
			return len(w.ids(sc.ID, retry.Waiting, retry.Held, retry.Running, retry.Paused)) == 0
		})
		w.checkTotals(sc.ID, "after the run")
		retention(time.Millisecond)
		w.checkTotals(sc.ID, "after retention")
		// The nodes' own view agrees: every node reads the same totals.
		for _, node := range []*app.App{a, b} {
			totals, err := node.Store.SceneStateTotals(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			if counted := w.countStates(sc.ID); !maps.Equal(totals[sc.ID], counted) {
				t.Errorf("node %s reads %v, counted %v", node.URL(), totals[sc.ID], counted)
			}
		}
	})
}

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/client-sdk/retryhub"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// Order is what the business functions in these tests take.
type Order struct {
	ID     string `json:"id"`
	Amount int    `json:"amount"`
}

// sdkWorld is a namespace and group made directly in a database, with scenes in it, so that a
// client can be started before any server node is.
type sdkWorld struct {
	t     *testing.T
	store *storage.Store
	group retry.Group
}

func newSDKWorld(t *testing.T, target storagetest.Target) *sdkWorld {
	t.Helper()
	store := storagetest.Open(t, target)
	g := testkit.NewGroup(t, store, storagetest.RandomName("ns"), testToken)
	return &sdkWorld{t: t, store: store, group: g}
}

// scene creates a scene: fast local and remote back-offs, then edit.
func (w *sdkWorld) scene(name string, mode protocol.Mode, edit func(*retry.Scene)) retry.Scene {
	w.t.Helper()
	sc := retry.DefaultScene(w.group.ID, name)
	sc.Mode = mode
	sc.LocalAttempts = 3
	sc.LocalBackoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(10 * time.Millisecond)}
	sc.MaxAttempts = 3
	sc.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(100 * time.Millisecond)}
	sc.Timeout = 5 * time.Second
	sc.Callback.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(100 * time.Millisecond)}
	if edit != nil {
		edit(&sc)
	}
	sc, err := w.store.CreateScene(context.Background(), sc)
	if err != nil {
		w.t.Fatal(err)
	}
	return sc
}

// client makes a started SDK client of the world's group against serverURL, stopped when the
// test ends.
func (w *sdkWorld) client(serverURL string, edit func(*retryhub.Config)) *retryhub.Client {
	w.t.Helper()
	cfg := retryhub.Config{Servers: []string{serverURL}, Namespace: w.group.Namespace, Group: w.group.Name,
		Token: testToken, ListenAddr: "127.0.0.1:0", Capacity: 8, ReportInterval: 10 * time.Millisecond,
		PolicyRefreshInterval: 100 * time.Millisecond, HeartbeatInterval: 500 * time.Millisecond,
		RetryMinDelay: 20 * time.Millisecond, RetryMaxDelay: 300 * time.Millisecond,
		ConfigErrorDelay: 300 * time.Millisecond, Logger: testkit.Logger(w.t)}
	if edit != nil {
		edit(&cfg)
	}
	c, err := retryhub.NewClient(cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	return c
}

func start(t *testing.T, c *retryhub.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Shutdown(ctx)
	})
}

// tasks returns the group's tasks by key.
func (w *sdkWorld) tasks() map[string][]retry.Task {
	w.t.Helper()
	all, err := w.store.ListTasks(context.Background(), storage.TaskFilter{GroupID: w.group.ID}, 0, 100000)
	if err != nil {
		w.t.Fatal(err)
	}
	out := map[string][]retry.Task{}
	for _, tk := range all {
		out[tk.IdempotencyKey] = append(out[tk.IdempotencyKey], tk)
	}
	return out
}

func (w *sdkWorld) waitTasks(timeout time.Duration, what string, ok func(map[string][]retry.Task) bool) map[string][]retry.Task {
	w.t.Helper()
	var ts map[string][]retry.Task
	testkit.WaitEvery(w.t, 20*time.Millisecond, timeout, what, func() bool {
		ts = w.tasks()
		return ok(ts)
	})
	return ts
}

// flaky is a business function that fails its first n calls per order.
type flaky struct {
	mu      sync.Mutex
	n       int
	calls   map[string]int
	replays map[string]int
	permErr bool
}

func newFlaky(n int) *flaky { return &flaky{n: n, calls: map[string]int{}, replays: map[string]int{}} }

func (f *flaky) fn(ctx context.Context, o Order) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[o.ID]++
	if _, ok := retryhub.ReplayOf(ctx); ok {
		f.replays[o.ID]++
	}
	if f.calls[o.ID] <= f.n {
		if f.permErr {
			return retryhub.Permanent(fmt.Errorf("order %s is invalid", o.ID))
		}
		return fmt.Errorf("partner down (call %d)", f.calls[o.ID])
	}
	return nil
}

func (f *flaky) count(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[id]
}

func TestSDKModesAgainstTheServer(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		w := newSDKWorld(t, target)
		w.scene("local-only", protocol.Local, nil)
		w.scene("remote-only", protocol.Remote, nil)
		w.scene("local-then-remote", protocol.LocalRemote, nil)
		node := startNode(t, testConfig(target), "n1")
		c := w.client(node.URL(), nil)
		localFn, remoteFn, bothFn := newFlaky(100), newFlaky(100), newFlaky(3)
		local := retryhub.RetryableOn(c, "local-only", localFn.fn)
		remote := retryhub.RetryableOn(c, "remote-only", remoteFn.fn)
		both := retryhub.RetryableOn(c, "local-then-remote", bothFn.fn)
		start(t, c)
		ctx := context.Background()

		// LOCAL: three local attempts, then the error comes back; nothing is reported.
		err := local(ctx, Order{ID: "L1"})
		if err == nil || errors.Is(err, retryhub.ErrReported) || localFn.count("L1") != 3 {
			t.Fatalf("local: err %v after %d calls", err, localFn.count("L1"))
		}
		// REMOTE: one call, then reported at once.
		if err := remote(ctx, Order{ID: "R1"}); !errors.Is(err, retryhub.ErrReported) || remoteFn.count("R1") != 1 {
			t.Fatalf("remote: err %v after %d calls", err, remoteFn.count("R1"))
		}
		// LOCAL_REMOTE: three local attempts, reported, then the server's replay through this
		// client's executor succeeds (the fourth call).
		if err := both(ctx, Order{ID: "B1", Amount: 42}); !errors.Is(err, retryhub.ErrReported) || bothFn.count("B1") != 3 {
			t.Fatalf("local-remote: err %v after %d calls", err, bothFn.count("B1"))
		}
		ts := w.waitTasks(15*time.Second, "the local-remote task to testkit.Succeed", func(ts map[string][]retry.Task) bool {
			for _, tks := range ts {
				for _, tk := range tks {
					if tk.LocalAttempts == 3 && tk.State == retry.Succeeded {
						return true
					}
				}
			}
			return false
		})
		if bothFn.count("B1") != 4 || bothFn.replays["B1"] != 1 {
			t.Fatalf("local-remote function ran %d times (%d in a replay), want 4 (1)", bothFn.count("B1"), bothFn.replays["B1"])
		}
		var succeeded retry.Task
		for _, tks := range ts {
			for _, tk := range tks {
				if tk.State == retry.Succeeded {
					succeeded = tk
				}
			}
		}
		var args Order
		if err := json.Unmarshal(succeeded.Args, &args); err != nil || args != (Order{ID: "B1", Amount: 42}) {
			t.Fatalf("stored arguments %s (%v)", succeeded.Args, err)
		}
		// Nothing was stored for the local-only scene.
		for _, tks := range ts {
			for _, tk := range tks {
				if sc, _ := w.store.Scene(ctx, tk.SceneID); sc.Name == "local-only" {
					t.Fatalf("a local-only call was reported: %+v", tk)
				}
			}
		}
		if len(ts) != 2 {
			t.Fatalf("%d keys stored, want 2 (remote and local-remote)", len(ts))
		}
	})
}

func TestSDKPermanentErrorsAreNotReported(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		w := newSDKWorld(t, target)
		w.scene("charge", protocol.LocalRemote, nil)
		node := startNode(t, testConfig(target), "n1")
		c := w.client(node.URL(), nil)
		f := newFlaky(100)
		f.permErr = true
		charge := retryhub.RetryableOn(c, "charge", f.fn)
		start(t, c)
		err := charge(context.Background(), Order{ID: "P1"})
		if err == nil || errors.Is(err, retryhub.ErrReported) || !retryhub.IsPermanent(err) || f.count("P1") != 1 {
			t.Fatalf("permanent error: %v after %d calls", err, f.count("P1"))
		}
		// Shutdown delivers whatever the client queued: after it, a report would be stored.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		if n, st := len(w.tasks()), c.Stats(); n != 0 || st.Delivered != 0 {
			t.Fatalf("%d tasks stored (%d reports delivered) for a permanent error", n, st.Delivered)
		}
	})
}

func TestSDKCallbackRuns(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		w := newSDKWorld(t, target)
		w.scene("notify", protocol.Remote, func(sc *retry.Scene) {
			sc.MaxAttempts = 2
			sc.Callback.Enabled = true
		})
		node := startNode(t, testConfig(target), "n1")
		c := w.client(node.URL(), nil)
		var mu sync.Mutex
		events := map[string]retryhub.CallbackEvent[Order]{}
		fn := func(ctx context.Context, o Order) error {
			if o.ID == "never" {
				return errors.New("partner rejects it")
			}
			if _, replay := retryhub.ReplayOf(ctx); replay {
				return nil
			}
			return errors.New("first call fails")
		}
		notify := retryhub.RetryableOn(c, "notify", fn, retryhub.WithCallback(func(ctx context.Context, ev retryhub.CallbackEvent[Order]) error {
			mu.Lock()
			defer mu.Unlock()
			events[ev.Args.ID] = ev
			return nil
		}))
		start(t, c)
		for _, id := range []string{"fine", "never"} {
			if err := notify(context.Background(), Order{ID: id, Amount: 7}); !errors.Is(err, retryhub.ErrReported) {
				t.Fatalf("%s: %v", id, err)
			}
		}
		waitFor(t, 20*time.Second, "both callbacks", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(events) == 2
		})
		mu.Lock()
		defer mu.Unlock()
		if ev := events["fine"]; ev.Outcome != protocol.OutcomeSucceeded || ev.Args.Amount != 7 || ev.Attempts != 1 {
			t.Fatalf("callback after success: %+v", ev)
		}
		if ev := events["never"]; ev.Outcome != protocol.OutcomeExhausted || ev.Attempts != 2 || ev.LastError == "" {
			t.Fatalf("callback after exhaustion: %+v", ev)
		}
		w.waitTasks(10*time.Second, "callbacks settled", func(ts map[string][]retry.Task) bool {
			for _, tks := range ts {
				if tks[0].CallbackState != retry.CallbackSucceeded {
					return false
				}
			}
			return len(ts) == 2
		})
	})
}

func TestSDKReportsWaitForTheServer(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		w := newSDKWorld(t, target)
		w.scene("publish", protocol.Remote, func(sc *retry.Scene) {
			sc.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Hour)}
		})
		addr := testkit.FreeAddr(t)
		c := w.client("http://"+addr, nil)
		f := newFlaky(1000)
		publish := retryhub.RetryableOn(c, "publish", f.fn, retryhub.WithMode(retryhub.Remote))
		start(t, c)
		// The server is down: every failed call is queued, none is lost or refused.
		const n = 200
		for i := range n {
			if err := publish(context.Background(), Order{ID: fmt.Sprintf("o-%d", i%150)}); !errors.Is(err, retryhub.ErrReported) {
				t.Fatalf("call %d: %v", i, err)
			}
		}
		if q := c.Stats().Queued; q != n {
			t.Fatalf("%d reports queued, want %d", q, n)
		}
		// The server comes up on that address: every report arrives, once per key.
		cfg := testConfig(target)
		cfg.Server.Listen = addr
		startNode(t, cfg, "n1")
		ts := w.waitTasks(20*time.Second, "150 keys", func(ts map[string][]retry.Task) bool { return len(ts) == 150 })
		merges := 0
		for key, tks := range ts {
			if len(tks) != 1 {
				t.Fatalf("key %s stored %d times", key, len(tks))
			}
			merges += tks[0].Merges
		}
		if merges != n-150 {
			t.Fatalf("%d merges, want %d (the repeated keys)", merges, n-150)
		}
		waitFor(t, 5*time.Second, "the queue to drain", func() bool { return c.Stats().Queued == 0 })
		if st := c.Stats(); st.Delivered != n || st.Rejected != 0 {
			t.Fatalf("client stats %+v", st)
		}
	})
}

func TestSDKSpoolSurvivesARestartOfTheBusinessProcess(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		w := newSDKWorld(t, target)
		w.scene("publish", protocol.Remote, func(sc *retry.Scene) {
			sc.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Hour)}
		})
		addr := testkit.FreeAddr(t)
		spool := t.TempDir()
		first := w.client("http://"+addr, func(c *retryhub.Config) { c.SpoolDir = spool })
		f := newFlaky(1000)
		publish := retryhub.RetryableOn(first, "publish", f.fn)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := first.Start(ctx); err != nil {
			t.Fatal(err)
		}
		const n = 50
		for i := range n {
			if err := publish(context.Background(), Order{ID: fmt.Sprintf("s-%d", i)}); !errors.Is(err, retryhub.ErrReported) {
				t.Fatalf("call %d: %v", i, err)
			}
		}
		// The process stops before the server was ever reachable.
		gone, stop := context.WithCancel(context.Background())
		stop()
		first.Shutdown(gone)

		// The server comes up; the process starts again on the same spool.
		cfg := testConfig(target)
		cfg.Server.Listen = addr
		startNode(t, cfg, "n1")
		second := w.client("http://"+addr, func(c *retryhub.Config) { c.SpoolDir = spool })
		retryhub.RetryableOn(second, "publish", f.fn)
		start(t, second)
		ts := w.waitTasks(20*time.Second, "every spooled report", func(ts map[string][]retry.Task) bool { return len(ts) == n })
		for key, tks := range ts {
			if len(tks) != 1 || tks[0].Merges != 0 {
				t.Fatalf("key %s: %d tasks, %d merges", key, len(tks), tks[0].Merges)
			}
		}
	})
}

func TestSDKExecutorRefusesForgeriesAndAnswersBusy(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		w := newSDKWorld(t, target)
		w.scene("slow", protocol.Remote, nil)
		node := startNode(t, testConfig(target), "n1")
		c := w.client(node.URL(), func(c *retryhub.Config) { c.Capacity = 1 })
		var running, most, ran atomic.Int32
		slow := retryhub.RetryableOn(c, "slow", func(ctx context.Context, o Order) error {
			if _, replay := retryhub.ReplayOf(ctx); !replay {
				return errors.New("first call fails")
			}
			ran.Add(1)
			if now := running.Add(1); now > most.Load() {
				most.Store(now)
			}
			defer running.Add(-1)
			time.Sleep(150 * time.Millisecond)
			return nil
		})
		start(t, c)

		// A forged replay: signed with another token. It is refused and runs nothing.
		live, err := w.store.LiveInstances(context.Background(), time.Now().Add(-time.Minute))
		if err != nil || len(live) != 1 {
			t.Fatalf("instances: %+v %v", live, err)
		}
		body, _ := json.Marshal(protocol.ExecuteRequest{Kind: protocol.KindReplay, TaskID: 1, Scene: "slow",
			IdempotencyKey: "x", Args: json.RawMessage(`{"id":"forged"}`), Attempt: 1})
		req, _ := http.NewRequest(http.MethodPost, live[0].ExecutorURL, bytes.NewReader(body))
		protocol.SignRequest(req, "a-forged-token-000000", body, time.Now())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || ran.Load() != 0 {
			t.Fatalf("forged replay: %d, ran %d", resp.StatusCode, ran.Load())
		}

		// Capacity 1: the server's extra calls are answered 429 and retried later, without
		// using attempts; every task succeeds with one attempt.
		for i := range 5 {
			if err := slow(context.Background(), Order{ID: fmt.Sprintf("c-%d", i)}); !errors.Is(err, retryhub.ErrReported) {
				t.Fatal(err)
			}
		}
		ts := w.waitTasks(20*time.Second, "five successes", func(ts map[string][]retry.Task) bool {
			done := 0
			for _, tks := range ts {
				if tks[0].State == retry.Succeeded {
					done++
				}
			}
			return done == 5
		})
		for key, tks := range ts {
			if tks[0].Attempts != 1 {
				t.Fatalf("task %s used %d attempts; busy answers must not count", key, tks[0].Attempts)
			}
		}
		if most.Load() != 1 {
			t.Fatalf("%d replays ran at once on an instance of capacity 1", most.Load())
		}
	})
}

func TestSDKFollowsAPolicyEditWithoutARestart(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		w := newSDKWorld(t, target)
		sc := w.scene("check", protocol.Local, nil)
		node := startNode(t, testConfig(target), "n1")
		c := w.client(node.URL(), nil)
		f := newFlaky(1 << 30)
		check := retryhub.RetryableOn(c, "check", f.fn, retryhub.WithLocalAttempts(5))
		start(t, c)
		// The server's policy (3 local attempts) overrides the code's 5.
		check(context.Background(), Order{ID: "a"})
		if got := f.count("a"); got != 3 {
			t.Fatalf("%d local attempts, want the server's 3", got)
		}
		sc.LocalAttempts = 1
		if _, err := w.store.UpdateScene(context.Background(), sc); err != nil {
			t.Fatal(err)
		}
		i := 0
		waitFor(t, 10*time.Second, "the edit to reach the client", func() bool {
			i++
			id := fmt.Sprintf("b-%d", i)
			check(context.Background(), Order{ID: id})
			return f.count(id) == 1
		})
	})
}

func TestSDKDeclaredScenesAreCreatedAsDeclared(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		w := newSDKWorld(t, target)
		g := w.group
		g.AutoCreateScenes = true
		if err := w.store.UpdateGroup(context.Background(), g); err != nil {
			t.Fatal(err)
		}
		// A scene the server already has keeps the server's policy.
		w.scene("existing", protocol.Local, nil)
		node := startNode(t, testConfig(target), "n1")
		c := w.client(node.URL(), nil)
		noop := func(context.Context, Order) error { return nil }
		retryhub.RetryableOn(c, "declared", noop, retryhub.WithMode(retryhub.Remote), retryhub.WithLocalAttempts(1),
			retryhub.WithCallback(func(context.Context, retryhub.CallbackEvent[Order]) error { return nil }))
		// Its server-side policy declared too: taken on creation only.
		fixed := backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(42 * time.Second)}
		ladder := backoff.Policy{Strategy: backoff.Levels, Levels: []backoff.Duration{backoff.Duration(time.Second), backoff.Duration(time.Minute)}}
		retryhub.RetryableOn(c, "declared-remote", noop, retryhub.WithRemotePolicy(protocol.RemotePolicy{MaxAttempts: 7,
			Backoff: &fixed, CallbackMaxAttempts: 4, CallbackBackoff: &ladder}))
		retryhub.RetryableOn(c, "existing", noop, retryhub.WithMode(retryhub.Remote),
			retryhub.WithRemotePolicy(protocol.RemotePolicy{MaxAttempts: 9}))
		start(t, c)
		ctx := context.Background()
		sc, err := w.store.SceneByName(ctx, g.ID, "declared")
		if err != nil {
			t.Fatalf("the declared scene was not created at registration: %v", err)
		}
		if sc.Mode != protocol.Remote || sc.LocalAttempts != 1 || !sc.Callback.Enabled || sc.MaxAttempts != retry.DefaultScene(0, "x").MaxAttempts {
			t.Fatalf("declared scene: %+v", sc)
		}
		rs, err := w.store.SceneByName(ctx, g.ID, "declared-remote")
		if err != nil {
			t.Fatalf("the scene declared with a remote policy was not created: %v", err)
		}
		if rs.MaxAttempts != 7 || rs.Backoff.Strategy != backoff.Fixed || rs.Backoff.Interval != fixed.Interval ||
			rs.Callback.MaxAttempts != 4 || rs.Callback.Backoff.Strategy != backoff.Levels || len(rs.Callback.Backoff.Levels) != 2 {
			t.Fatalf("declared remote policy not taken: max %d backoff %+v callback %+v", rs.MaxAttempts, rs.Backoff, rs.Callback)
		}
		if ex, _ := w.store.SceneByName(ctx, g.ID, "existing"); ex.Mode != protocol.Local || ex.MaxAttempts == 9 {
			t.Fatalf("an existing scene was changed by a declaration: %s, %d attempts", ex.Mode, ex.MaxAttempts)
		}
	})
}

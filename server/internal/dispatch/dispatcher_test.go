package dispatch_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/catalog"
	"github.com/retryhub/retryhub/server/internal/dispatch"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// The delays a released task waits, one per reason, so that a task's next trigger tells why it
// was given back.
const (
	busyDelay       = time.Hour
	noInstanceDelay = 2 * time.Hour
	pausedDelay     = 3 * time.Hour
)

// rig is a dispatcher with its registry and settler over a fixture's database.
type rig struct {
	*fixture
	reg     *dispatch.Registry
	settler *dispatch.Settler
	d       *dispatch.Dispatcher
}

// newRig starts a dispatcher for a new group and scene (see newFixture); editParams changes its
// parameters. It is stopped when the test ends.
func newRig(t *testing.T, s *storage.Store, editScene func(*retry.Scene), editParams func(*dispatch.Params)) *rig {
	t.Helper()
	f := newFixture(t, s, editScene)
	log := testkit.Logger(t)
	// A zero TTL reads the scene for every dispatch, so a test's edit shows at once.
	cat := catalog.New(catalog.Params{Store: s})
	reg := dispatch.NewRegistry(dispatch.RegistryParams{Store: s, TTL: time.Minute, Interval: time.Hour, Log: log})
	settler := dispatch.NewSettler(dispatch.SettlerParams{Store: s, Batch: 100, Interval: 2 * time.Millisecond, Log: log})
	p := dispatch.Params{NodeID: "node-1", Store: s, Catalog: cat, Registry: reg, Settler: settler, Log: log, Concurrency: 8, QueueSize: 1000, DefaultTimeout: 5 * time.Second,
		NoInstanceDelay: noInstanceDelay, BusyDelay: busyDelay, PausedDelay: pausedDelay, ClaimTimeout: time.Minute}
	if editParams != nil {
		editParams(&p)
	}
	d := dispatch.NewDispatcher(p)
	startSettler(t, settler)
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d.Stop(ctx)
		settler.Stop(ctx)
	})
	return &rig{fixture: f, reg: reg, settler: settler, d: d}
}

// register lists an instance of the rig's group, in the database and in the registry.
func (r *rig) register(id, url string, capacity int) {
	r.T.Helper()
	in := retry.Instance{ID: id, GroupID: r.Group.ID, ExecutorURL: url, Capacity: capacity}
	if err := r.Store.UpsertInstance(context.Background(), in, time.Now().Add(-time.Minute)); err != nil {
		r.T.Fatal(err)
	}
	r.reg.Observe(in)
}

// run reports a task per key due now, claims and submits them, and waits until none is running.
func (r *rig) run(keys ...string) []int64 {
	r.T.Helper()
	ids := r.Add(time.Now(), keys...)
	claims := r.claim(retry.KindReplay, time.Now())
	if len(claims) != len(keys) {
		r.T.Fatalf("claimed %d tasks, want %d", len(claims), len(keys))
	}
	r.d.Submit(claims)
	for _, id := range ids {
		r.waitTask(id, "settled", notRunning)
	}
	return ids
}

// released checks that a task was given back without using an attempt, to wait about delay.
func (r *rig) released(id int64, delay time.Duration, why string) {
	r.T.Helper()
	tk := r.Task(id)
	atts := r.Attempts(id)
	if tk.State != retry.Waiting || tk.Attempts != 0 || len(atts) != 0 || tk.ClaimToken != 0 {
		r.T.Fatalf("%s: task %d is %s with %d attempts (%d recorded), claim token %d; want waiting with none",
			why, id, tk.State, tk.Attempts, len(atts), tk.ClaimToken)
	}
	if wait := time.Until(tk.NextAt); wait < delay-time.Minute || wait > delay {
		r.T.Fatalf("%s: task %d is due in %s, want about %s", why, id, wait.Round(time.Second), delay)
	}
}

// held checks that a task run by run was given back as held, without an attempt and keeping
// its due time (when run added it).
func (r *rig) held(id int64, why string) {
	r.T.Helper()
	tk := r.Task(id)
	atts := r.Attempts(id)
	if tk.State != retry.Held || tk.Attempts != 0 || len(atts) != 0 || tk.ClaimToken != 0 {
		r.T.Fatalf("%s: task %d is %s with %d attempts (%d recorded), claim token %d; want held with none",
			why, id, tk.State, tk.Attempts, len(atts), tk.ClaimToken)
	}
	if tk.NextAt.After(time.Now()) || time.Since(tk.NextAt) > time.Minute {
		r.T.Fatalf("%s: held task %d is due %s, want the due time it had kept", why, id, tk.NextAt)
	}
}

func TestDispatcherSettlesWhatTheInstanceAnswers(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		r := newRig(t, s, nil, nil)
		ex := newExecutor(t, func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
			switch req.IdempotencyKey {
			case "fails":
				return http.StatusOK, protocol.ExecuteResponse{Status: protocol.ExecuteFailed, Error: "partner down"}
			case "fails-for-good":
				return http.StatusOK, protocol.ExecuteResponse{Status: protocol.ExecuteFailed, Error: "no such order", Permanent: true}
			case "errors":
				return http.StatusInternalServerError, protocol.ExecuteResponse{}
			}
			return testkit.Succeed(req)
		})
		r.register("i1", ex.URL(), 0)
		ids := r.run("succeeds", "fails", "fails-for-good", "errors")
		ok, failed, permanent, errored := r.Task(ids[0]), r.Task(ids[1]), r.Task(ids[2]), r.Task(ids[3])

		if ok.State != retry.Succeeded || ok.Attempts != 1 || ok.EndedAt == nil {
			t.Errorf("succeeded call: task is %s with %d attempts", ok.State, ok.Attempts)
		}
		atts := r.Attempts(ok.ID)
		if len(atts) != 1 || atts[0].Outcome != retry.OutcomeSucceeded || atts[0].NodeID != "node-1" ||
			atts[0].InstanceID != "i1" || atts[0].Number != 1 || atts[0].Kind != retry.KindReplay {
			t.Errorf("succeeded call: attempts %+v", atts)
		}
		if failed.State != retry.Waiting || failed.Attempts != 1 || failed.LastError != "partner down" ||
			time.Until(failed.NextAt) < 50*time.Minute {
			t.Errorf("failed call: task is %s with %d attempts, error %q, due %s; want waiting an hour (the back-off)",
				failed.State, failed.Attempts, failed.LastError, failed.NextAt)
		}
		if atts := r.Attempts(failed.ID); len(atts) != 1 || atts[0].Outcome != retry.OutcomeFailed || atts[0].Error != "partner down" {
			t.Errorf("failed call: attempts %+v", atts)
		}
		if permanent.State != retry.Exhausted || permanent.Attempts != 1 || permanent.LastError != "no such order" {
			t.Errorf("permanent failure: task is %s with %d attempts, error %q; want exhausted after 1",
				permanent.State, permanent.Attempts, permanent.LastError)
		}
		if errored.State != retry.Waiting || errored.Attempts != 1 || !strings.Contains(errored.LastError, "500") {
			t.Errorf("HTTP 500: task is %s with %d attempts, error %q; want a failed attempt naming the status",
				errored.State, errored.Attempts, errored.LastError)
		}

		// The call carries what the client needs to run the function again.
		calls := ex.received()
		if len(calls) != 4 {
			t.Fatalf("the instance received %d calls, want 4", len(calls))
		}
		for _, c := range calls {
			if c.IdempotencyKey != "succeeds" {
				continue
			}
			var args map[string]string
			if err := json.Unmarshal(c.Args, &args); err != nil || args["order"] != "succeeds" {
				t.Errorf("call arguments %s", c.Args)
			}
			if c.Kind != protocol.KindReplay || c.TaskID != ok.ID || c.Namespace != r.Group.Namespace ||
				c.Group != r.Group.Name || c.Scene != "notify" || c.Attempt != 1 || time.Duration(c.Timeout) != time.Second ||
				c.Callback != nil {
				t.Errorf("call %+v", c)
			}
		}
		if r.d.Pending() != 0 || r.d.Room() != 1000 {
			t.Errorf("after every claim settled: pending %d, room %d; want 0 and 1000", r.d.Pending(), r.d.Room())
		}
	})
}

func TestDispatcherTriesAnotherInstanceWhenOneIsBusy(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		r := newRig(t, s, nil, nil)
		busyEx, okEx := newExecutor(t, busy), newExecutor(t, testkit.Succeed)
		// Round robin starts with the first by id: the busy one.
		r.register("a-busy", busyEx.URL(), 0)
		r.register("b-ok", okEx.URL(), 0)
		id := r.run("k")[0]
		tk := r.Task(id)
		atts := r.Attempts(id)
		if tk.State != retry.Succeeded || tk.Attempts != 1 || len(atts) != 1 || atts[0].InstanceID != "b-ok" {
			t.Fatalf("task is %s with %d attempts %+v; want succeeded once, on b-ok", tk.State, tk.Attempts, atts)
		}
		if n := len(busyEx.received()); n != 1 {
			t.Fatalf("the busy instance received %d calls, want 1", n)
		}

		// When every instance answers busy, the task waits without using an attempt.
		r2 := newRig(t, s, nil, nil)
		onlyBusy := newExecutor(t, busy)
		r2.register("busy-1", onlyBusy.URL(), 0)
		r2.register("busy-2", onlyBusy.URL(), 0)
		id = r2.run("k2")[0]
		r2.released(id, busyDelay, "every instance busy")
		if n := len(onlyBusy.received()); n != 2 {
			t.Fatalf("the busy instances received %d calls, want one each", n)
		}
		// Both now sit out their busy window: the next task is given back without a call.
		id = r2.run("k3")[0]
		r2.released(id, busyDelay, "every instance in its busy window")
		if n := len(onlyBusy.received()); n != 2 {
			t.Fatalf("instances in their busy window were called: %d calls, want still 2", n)
		}
	})
}

// closedURL is an executor URL where nothing listens.
func closedURL(t *testing.T) string {
	t.Helper()
	return "http://" + testkit.FreeAddr(t) + "/retryhub/execute"
}

func TestDispatcherSkipsAnUnreachableInstance(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		r := newRig(t, s, nil, nil)
		ok := newExecutor(t, testkit.Succeed)
		r.register("a-gone", closedURL(t), 0)
		r.register("b-ok", ok.URL(), 0)
		id := r.run("k")[0]
		tk := r.Task(id)
		atts := r.Attempts(id)
		if tk.State != retry.Succeeded || tk.Attempts != 1 || len(atts) != 1 || atts[0].InstanceID != "b-ok" {
			t.Fatalf("task is %s with %d attempts %+v; want succeeded once, on b-ok", tk.State, tk.Attempts, atts)
		}
		// The unreachable instance is marked down: it is not offered for the next call.
		if _, err := r.reg.Pick(r.Group.ID, retry.RoundRobin, "x", map[string]bool{"b-ok": true}); err != dispatch.ErrNoInstance {
			t.Fatalf("pick with only the unreachable instance left: %v, want ErrNoInstance", err)
		}

		// With no instance reachable the task waits, without using an attempt, to be tried again
		// after a while; with none at all it is held (until one registers).
		r2 := newRig(t, s, nil, nil)
		r2.register("gone", closedURL(t), 0)
		r2.released(r2.run("k2")[0], noInstanceDelay, "the only instance unreachable")
		r3 := newRig(t, s, nil, nil)
		r3.held(r3.run("k3")[0], "no instance")
	})
}

// A process restarted on the same address with a new instance id refuses the calls signed for
// the old id, which stays listed until its heartbeats lapse: such a refusal did not run the call,
// so it uses no attempt, and the old instance is passed over as an unreachable one.
func TestDispatcherPassesOverAnInstanceThatIsNoLongerAtItsURL(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		r := newRig(t, s, nil, nil)
		ok := newExecutor(t, testkit.Succeed)
		refusal := []byte(`{"error":{"code":"wrong_instance","message":"this is instance b-new, not a-old"}}`)
		r.register("a-old", newRawServer(t, http.StatusBadRequest, refusal), 0)
		r.register("b-new", ok.URL(), 0)
		id := r.run("k")[0]
		tk := r.Task(id)
		atts := r.Attempts(id)
		if tk.State != retry.Succeeded || tk.Attempts != 1 || len(atts) != 1 || atts[0].InstanceID != "b-new" {
			t.Fatalf("task is %s with %d attempts %+v; want succeeded once, on b-new", tk.State, tk.Attempts, atts)
		}
		if _, err := r.reg.Pick(r.Group.ID, retry.RoundRobin, "x", map[string]bool{"b-new": true}); err != dispatch.ErrNoInstance {
			t.Fatalf("pick with only the refusing instance left: %v, want ErrNoInstance", err)
		}

		// Any other 400 is the call's failure, as before.
		r2 := newRig(t, s, nil, nil)
		r2.register("bad", newRawServer(t, http.StatusBadRequest, []byte(`{"error":{"code":"wrong_group","message":"no"}}`)), 0)
		id = r2.run("k2")[0]
		if tk := r2.Task(id); tk.Attempts != 1 || !strings.Contains(tk.LastError, "wrong_group") {
			t.Fatalf("a wrong_group refusal: task has %d attempts, last error %q; want one failed attempt", tk.Attempts, tk.LastError)
		}
	})
}

func TestDispatcherTimesOutAnInstanceThatNeverAnswers(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		t.Parallel()
		r := newRig(t, s, func(sc *retry.Scene) { sc.Timeout = 50 * time.Millisecond }, nil)
		silent := newExecutor(t, func(protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
			return testkit.Hang, protocol.ExecuteResponse{}
		})
		r.register("silent", silent.URL(), 0)
		id := r.run("k")[0]
		tk := r.Task(id)
		atts := r.Attempts(id)
		if tk.State != retry.Waiting || tk.Attempts != 1 || len(atts) != 1 || atts[0].Outcome != retry.OutcomeTimedOut ||
			atts[0].InstanceID != "silent" || !strings.Contains(tk.LastError, "no answer") {
			t.Fatalf("task is %s with %d attempts %+v, error %q; want a timed-out attempt", tk.State, tk.Attempts, atts, tk.LastError)
		}
	})
}

func TestDispatcherHoldsTasksOfAPausedScene(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		r := newRig(t, s, func(sc *retry.Scene) { sc.Enabled = false }, nil)
		ex := newExecutor(t, testkit.Succeed)
		r.register("i1", ex.URL(), 0)
		r.held(r.run("k")[0], "paused scene")
		if n := len(ex.received()); n != 0 {
			t.Fatalf("a task of a paused scene was sent to the instance (%d calls)", n)
		}
	})
}

func TestDispatcherHoldsTasksOfADisabledNamespace(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		r := newRig(t, s, nil, nil)
		ns, err := s.NamespaceByName(context.Background(), r.Group.Namespace)
		if err != nil {
			t.Fatal(err)
		}
		ns.Enabled = false
		if err := s.UpdateNamespace(context.Background(), ns); err != nil {
			t.Fatal(err)
		}
		ex := newExecutor(t, testkit.Succeed)
		r.register("i1", ex.URL(), 0)
		r.held(r.run("k")[0], "disabled namespace")
		if n := len(ex.received()); n != 0 {
			t.Fatalf("a task of a disabled namespace was sent to the instance (%d calls)", n)
		}
	})
}

func TestDispatcherRunsCallbacksWithTheOutcome(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		r := newRig(t, s, func(sc *retry.Scene) { sc.Callback.Enabled = true }, nil)
		ex := newExecutor(t, func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
			if req.Kind == protocol.KindReplay && req.IdempotencyKey == "lost" {
				return http.StatusOK, protocol.ExecuteResponse{Status: protocol.ExecuteFailed, Error: "card declined", Permanent: true}
			}
			return testkit.Succeed(req)
		})
		r.register("i1", ex.URL(), 0)
		ids := r.run("won", "lost")
		for _, id := range ids {
			if tk := r.Task(id); tk.CallbackState != retry.CallbackWaiting {
				t.Fatalf("task %d ended %s with callback %s, want its callback waiting", id, tk.State, tk.CallbackState)
			}
		}
		cbs := r.claim(retry.KindCallback, time.Now())
		if len(cbs) != 2 {
			t.Fatalf("claimed %d callbacks, want 2", len(cbs))
		}
		r.d.Submit(cbs)
		for _, id := range ids {
			r.waitTask(id, "ran its callback", func(tk retry.Task) bool { return tk.CallbackState != retry.CallbackRunning })
		}
		// LastError is the task's last failure, even for a task that finally succeeded (here the
		// reported one).
		want := map[string]protocol.CallbackInfo{
			"won":  {Outcome: protocol.OutcomeSucceeded, LastError: "partner timed out", Attempts: 1},
			"lost": {Outcome: protocol.OutcomeExhausted, LastError: "card declined", Attempts: 1},
		}
		n := 0
		for _, c := range ex.received() {
			if c.Kind != protocol.KindCallback {
				continue
			}
			n++
			if c.Callback == nil || *c.Callback != want[c.IdempotencyKey] || c.Attempt != 1 {
				t.Errorf("callback call for %s: attempt %d, %+v; want %+v", c.IdempotencyKey, c.Attempt, c.Callback, want[c.IdempotencyKey])
			}
		}
		if n != 2 {
			t.Fatalf("%d callback calls, want 2", n)
		}
		for i, id := range ids {
			tk := r.Task(id)
			wantState := []retry.State{retry.Succeeded, retry.Exhausted}[i]
			if tk.State != wantState || tk.CallbackState != retry.CallbackSucceeded || tk.CallbackAttempts != 1 || tk.Attempts != 1 {
				t.Errorf("task %d after its callback: %s (want %s), callback %s after %d, %d attempts",
					id, tk.State, wantState, tk.CallbackState, tk.CallbackAttempts, tk.Attempts)
			}
			atts := r.Attempts(id)
			if len(atts) != 2 || atts[1].Kind != retry.KindCallback || atts[1].Outcome != retry.OutcomeSucceeded || atts[1].Number != 1 {
				t.Errorf("task %d attempts: %+v", id, atts)
			}
		}
	})
}

func TestDispatcherDoesNotRunAClaimThatNoLongerHolds(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		r := newRig(t, s, nil, nil)
		ex := newExecutor(t, testkit.Succeed)
		r.register("i1", ex.URL(), 0)
		id := r.Add(time.Now(), "k")[0]
		// A claim too short for the attempt (1 s plus the grace) must be extended before the call.
		claims, err := s.Claim(ctx, storage.ClaimParams{Kind: retry.KindReplay, Buckets: testkit.AllBuckets(), DueBy: time.Now(),
			PerBucket: 10, Token: 77, Node: "node-1", Deadline: time.Now().Add(100 * time.Millisecond)})
		if err != nil || len(claims) != 1 {
			t.Fatalf("claim: %d %v", len(claims), err)
		}
		// Meanwhile the claim lapsed and the task went back to waiting, and someone else holds it.
		if _, err := s.Settle(ctx, []retry.Settlement{retry.Release(&claims[0], time.Now())}); err != nil {
			t.Fatal(err)
		}
		other, err := s.Claim(ctx, storage.ClaimParams{Kind: retry.KindReplay, Buckets: testkit.AllBuckets(), DueBy: time.Now(),
			PerBucket: 10, Token: 78, Node: "node-2", Deadline: time.Now().Add(time.Hour)})
		if err != nil || len(other) != 1 {
			t.Fatalf("claim by node-2: %d %v", len(other), err)
		}
		r.d.Submit(claims)
		testkit.WaitUntil(t, 10*time.Second, "the dispatcher to drop the stale claim", func() bool { return r.d.Pending() == 0 })
		if n := len(ex.received()); n != 0 {
			t.Fatalf("a claim that no longer held was sent to the instance (%d calls)", n)
		}
		if tk := r.Task(id); tk.State != retry.Running || tk.ClaimToken != 78 || tk.Attempts != 0 {
			t.Fatalf("task is %s under token %d with %d attempts; want node-2's claim untouched", tk.State, tk.ClaimToken, tk.Attempts)
		}

		// A short claim that still holds is extended to cover the attempt, then run.
		id = r.Add(time.Now(), "short")[0]
		claims, err = s.Claim(ctx, storage.ClaimParams{Kind: retry.KindReplay, Buckets: testkit.AllBuckets(), DueBy: time.Now(),
			PerBucket: 10, Token: 79, Node: "node-1", Deadline: time.Now().Add(100 * time.Millisecond)})
		if err != nil || len(claims) != 1 {
			t.Fatalf("claim: %d %v", len(claims), err)
		}
		r.d.Submit(claims)
		r.waitTask(id, "succeeded", func(tk retry.Task) bool { return tk.State == retry.Succeeded })
	})
}

func TestDispatcherStopGivesBackClaimsNotStarted(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		r := newRig(t, s, nil, func(p *dispatch.Params) { p.Concurrency = 1 })
		release := make(chan struct{})
		var first atomic.Bool
		ex := newExecutor(t, func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
			if first.CompareAndSwap(false, true) {
				<-release
			}
			return testkit.Succeed(req)
		})
		r.register("i1", ex.URL(), 0)
		now := time.Now()
		later := now.Add(700 * time.Millisecond)
		ids := append(r.Add(now.Add(-time.Minute), "q1", "q2", "q3"), r.Add(later, "later")...)
		claims := r.claim(retry.KindReplay, now.Add(time.Second))
		if len(claims) != 4 {
			t.Fatalf("claimed %d, want 4", len(claims))
		}
		r.d.Submit(claims)
		testkit.WaitUntil(t, 10*time.Second, "the first call", func() bool { return len(ex.received()) == 1 })
		inFlight := ex.received()[0].TaskID

		stopped := make(chan struct{})
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r.d.Stop(ctx)
			close(stopped)
		}()
		// What was not started goes back at once, while the call in flight goes on.
		for _, id := range ids {
			if id != inFlight {
				r.waitTask(id, "given back", notRunning)
			}
		}
		if r.d.Room() != 0 {
			t.Errorf("a stopping dispatcher offers room %d, want 0", r.d.Room())
		}
		select {
		case <-stopped:
			t.Fatal("Stop returned before the call in flight ended")
		default:
		}
		close(release)
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			t.Fatal("Stop never returned after the call in flight ended")
		}
		r.settler.Stop(context.Background())

		for i, id := range ids {
			tk := r.Task(id)
			if id == inFlight {
				if tk.State != retry.Succeeded || tk.Attempts != 1 {
					t.Errorf("the call in flight: task is %s with %d attempts, want it to finish and count", tk.State, tk.Attempts)
				}
				continue
			}
			due := retry.Truncate(now.Add(-time.Minute))
			if i == 3 {
				due = retry.Truncate(later)
			}
			if tk.State != retry.Waiting || tk.Attempts != 0 || !tk.NextAt.Equal(due) || len(r.Attempts(id)) != 0 {
				t.Errorf("task %d given back: %s with %d attempts, due %s; want waiting, no attempt, still due %s",
					id, tk.State, tk.Attempts, tk.NextAt.Format(time.StampMilli), due.Format(time.StampMilli))
			}
		}
		if n := len(ex.received()); n != 1 {
			t.Errorf("the instance received %d calls, want only the one in flight", n)
		}
		if r.d.Pending() != 0 {
			t.Errorf("pending %d after Stop, want 0", r.d.Pending())
		}
	})
}

func TestDispatcherStopPastItsDeadlineCancelsCallsWithoutCountingThem(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		r := newRig(t, s, nil, nil)
		ex := newExecutor(t, func(protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
			return testkit.Hang, protocol.ExecuteResponse{}
		})
		r.register("i1", ex.URL(), 0)
		id := r.Add(time.Now(), "k")[0]
		r.d.Submit(r.claim(retry.KindReplay, time.Now()))
		testkit.WaitUntil(t, 10*time.Second, "the call", func() bool { return len(ex.received()) == 1 })
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		r.d.Stop(ctx)
		r.settler.Stop(context.Background())
		tk := r.Task(id)
		if tk.State != retry.Waiting || tk.Attempts != 0 || len(r.Attempts(id)) != 0 {
			t.Fatalf("a cancelled call: task is %s with %d attempts; want waiting, no attempt counted", tk.State, tk.Attempts)
		}
	})
}

// TestDispatcherAccountsForEveryClaim runs claims down every path (success, busy, no instance,
// paused scene, rate limit) and checks that the dispatcher holds none afterwards.
func TestDispatcherAccountsForEveryClaim(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		var rooms atomic.Int32
		r := newRig(t, s, nil, func(p *dispatch.Params) {
			p.QueueSize = 400
			p.OnRoom = func() { rooms.Add(1) }
		})
		ok := newExecutor(t, testkit.Succeed)
		r.register("ok", ok.URL(), 4)
		// More scenes of the same group: paused, and rate limited.
		paused := retry.DefaultScene(r.Group.ID, "paused")
		paused.Enabled = false
		limited := retry.DefaultScene(r.Group.ID, "limited")
		limited.RateLimit = 25
		var extra []storage.NewTask
		for _, sc := range []retry.Scene{paused, limited} {
			created, err := s.CreateScene(ctx, sc)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys(sc.Name, 40) {
				extra = append(extra, storage.NewTask{GroupID: r.Group.ID, SceneID: created.ID,
					Bucket: retry.BucketOf(k, storagetest.Buckets), Key: k, Args: []byte(`{}`), State: retry.Waiting, NextAt: time.Now()})
			}
		}
		if _, err := s.Ingest(ctx, extra); err != nil {
			t.Fatal(err)
		}
		r.Add(time.Now(), keys("ok", 100)...)
		// Another group whose only instance is busy, and one with no instance.
		busyGroup := newFixture(t, s, nil)
		busyGroup.Add(time.Now(), keys("busy", 20)...)
		if err := s.UpsertInstance(ctx, retry.Instance{ID: "busy-of-other", GroupID: busyGroup.Group.ID,
			ExecutorURL: newExecutor(t, busy).URL()}, time.Now().Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		if err := r.reg.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		newFixture(t, s, nil).Add(time.Now(), keys("alone", 20)...)

		claims := r.claim(retry.KindReplay, time.Now())
		if len(claims) != 220 {
			t.Fatalf("claimed %d, want 220", len(claims))
		}
		r.d.Submit(claims)
		if p := r.d.Pending(); p > 220 || r.d.Room() != 400-p {
			t.Fatalf("after submitting 220: pending %d, room %d", p, r.d.Room())
		}
		testkit.WaitUntil(t, 15*time.Second, "every claim to be settled or given back", func() bool { return r.d.Pending() == 0 })
		if r.d.Room() != 400 {
			t.Fatalf("room %d with nothing pending, want 400", r.d.Room())
		}
		if rooms.Load() == 0 {
			t.Fatal("OnRoom was never called, though the queue went from over half full to empty")
		}
		for _, c := range claims {
			if tk := r.waitTask(c.TaskID, "settled", notRunning); tk.State == retry.Running {
				t.Fatalf("task %d still running", tk.ID)
			}
		}
	})
}

func TestDispatcherRateLimitSpreadsDispatches(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		const limit = 4
		r := newRig(t, s, func(sc *retry.Scene) { sc.RateLimit = limit }, nil)
		ex := newExecutor(t, testkit.Succeed)
		r.register("i1", ex.URL(), 0)
		start := time.Now()
		ids := r.run(keys("k", 5*limit)...)
		succeeded := 0
		for _, id := range ids {
			tk := r.Task(id)
			switch {
			case tk.State == retry.Succeeded && tk.Attempts == 1:
				succeeded++
			case tk.State == retry.Waiting && tk.Attempts == 0 && tk.NextAt.After(start):
				// Given back to wait for its turn, without using an attempt.
			default:
				t.Fatalf("task %d is %s with %d attempts, due %s", id, tk.State, tk.Attempts, tk.NextAt)
			}
		}
		// The first second's worth (the burst, then what the limit allows within a second) is
		// sent; the rest waits for later rather than going out at once.
		if succeeded < limit || succeeded == len(ids) {
			t.Fatalf("%d of %d tasks sent at %d/s; want at least the burst of %d and not all", succeeded, len(ids), limit, limit)
		}
	})
}

// An instance (or a proxy in front of it) may answer an error page in any encoding. Its text is
// stored as the task's last error; bytes that are not UTF-8 must not make the settlement fail
// (MySQL refuses them in a utf8mb4 column), which would keep the settler retrying the batch
// forever and every task in it running.
func TestDispatcherStoresAnErrorPageThatIsNotUTF8(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		r := newRig(t, s, nil, nil)
		srv := newRawServer(t, http.StatusBadGateway, []byte("Passerelle d\xe9faillante \xff\xfe"))
		r.register("i1", srv, 0)
		id := r.run("latin1")[0]
		tk := r.Task(id)
		if tk.State != retry.Waiting || tk.Attempts != 1 || !strings.Contains(tk.LastError, "502") ||
			!utf8.ValidString(tk.LastError) {
			t.Fatalf("task is %s with %d attempts, error %q; want a failed attempt naming the status", tk.State, tk.Attempts, tk.LastError)
		}
		if atts := r.Attempts(id); len(atts) != 1 || !utf8.ValidString(atts[0].Error) {
			t.Fatalf("attempts %+v", atts)
		}
	})
}

// TestWaitingClaimsDoNotLapse queues more claims than one worker can start before their
// deadline: the keeper extends them, so the sweeper never finds one to take back, and every
// task is tried once, successfully, with no attempt charged for a call never made.
func TestWaitingClaimsDoNotLapse(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		r := newRig(t, s, nil, func(p *dispatch.Params) {
			p.Concurrency = 1
			p.ClaimTimeout = 400 * time.Millisecond
		})
		ex := newExecutor(t, func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
			time.Sleep(150 * time.Millisecond)
			return testkit.Succeed(req)
		})
		r.register("i1", ex.URL(), 1)
		ids := r.Add(time.Now(), keys("slow", 8)...)
		claims, err := s.Claim(context.Background(), storage.ClaimParams{Kind: retry.KindReplay, Buckets: testkit.AllBuckets(),
			DueBy: time.Now(), PerBucket: 100, Token: 77, Node: "node-1", Deadline: time.Now().Add(400 * time.Millisecond)})
		if err != nil || len(claims) != 8 {
			t.Fatalf("claimed %d: %v", len(claims), err)
		}
		r.d.Submit(claims)
		// Eight calls of 150 ms in a row take over a second: far past the claims' first deadline.
		for _, id := range ids {
			testkit.WaitUntil(t, 30*time.Second, "every task to succeed", func() bool {
				stuck, err := s.Stuck(context.Background(), retry.KindReplay, testkit.AllBuckets(), time.Now(), 100)
				if err != nil {
					t.Fatal(err)
				}
				if len(stuck) > 0 {
					t.Fatalf("claim of task %d lapsed while it waited for the worker", stuck[0].TaskID)
				}
				return r.Task(id).State == retry.Succeeded
			})
		}
		for _, id := range ids {
			if atts := r.Attempts(id); len(atts) != 1 || atts[0].Outcome != retry.OutcomeSucceeded {
				t.Fatalf("task %d attempts: %+v", id, atts)
			}
		}
	})
}

// A dispatcher whose cached scene is old (nothing reads a paused scene while its tasks are held)
// reads it again before holding a task: a resumed scene's first tasks run, not held again.
func TestDispatcherHoldsOnlyOnAFreshView(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		r := newRig(t, s, func(sc *retry.Scene) { sc.Enabled = false }, nil)
		ex := newExecutor(t, testkit.Succeed)
		r.register("i1", ex.URL(), 0)
		r.held(r.run("before")[0], "paused scene")
		sc := r.Scene
		sc.Enabled = true
		if _, err := s.UpdateScene(context.Background(), sc); err != nil {
			t.Fatal(err)
		}
		// The catalog still holds "paused" (its entry has expired, and the first read after
		// that serves it while it refreshes).
		id := r.run("after")[0]
		if tk := r.Task(id); tk.State != retry.Succeeded {
			t.Fatalf("the first task after the scene resumed is %s, want succeeded", tk.State)
		}
	})
}

// Callbacks are few while a scene is paused (its tasks do not end), so they are not held: they
// wait and are looked at again after PausedDelay, or NoInstanceDelay with no instance, without
// using a callback attempt.
func TestDispatcherGivesBackCallbacksItCannotRun(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		// A task of a paused scene that ended anyway (it was running when the scene was paused).
		paused := newRig(t, s, func(sc *retry.Scene) { sc.Enabled = false; sc.Callback.Enabled = true }, nil)
		paused.register("i1", newExecutor(t, testkit.Succeed).URL(), 0)
		id := paused.Add(time.Now(), "won")[0]
		pol, err := paused.Scene.Compile()
		if err != nil {
			t.Fatal(err)
		}
		claims := paused.claim(retry.KindReplay, time.Now())
		won := retry.SettleReplay(&claims[0], &paused.Scene, pol, retry.Result{Outcome: retry.OutcomeSucceeded}, nil, time.Now())
		if n, err := s.Settle(context.Background(), []retry.Settlement{won}); err != nil || n != 1 {
			t.Fatalf("settle: %d %v", n, err)
		}
		paused.callbackGivenBack(id, pausedDelay, "paused scene")

		// A task whose group's last instance went away after it succeeded.
		gone := newRig(t, s, func(sc *retry.Scene) { sc.Callback.Enabled = true }, nil)
		gone.register("i2", newExecutor(t, testkit.Succeed).URL(), 0)
		id = gone.run("won")[0]
		gone.reg.Forget("i2")
		gone.callbackGivenBack(id, noInstanceDelay, "no instance")
	})
}

// callbackGivenBack claims and submits the callback of task id, which must be waiting, and
// checks that it was given back to wait about delay, without a callback attempt.
func (r *rig) callbackGivenBack(id int64, delay time.Duration, why string) {
	r.T.Helper()
	if tk := r.Task(id); tk.State != retry.Succeeded || tk.CallbackState != retry.CallbackWaiting {
		r.T.Fatalf("%s: task is %s with callback %s", why, tk.State, tk.CallbackState)
	}
	cbs := r.claim(retry.KindCallback, time.Now())
	if len(cbs) != 1 {
		r.T.Fatalf("%s: claimed %d callbacks, want 1", why, len(cbs))
	}
	r.d.Submit(cbs)
	tk := r.waitTask(id, "callback given back", func(tk retry.Task) bool { return tk.CallbackState != retry.CallbackRunning })
	for _, a := range r.Attempts(id) {
		if a.Kind == retry.KindCallback {
			r.T.Fatalf("%s: a callback attempt was recorded: %+v", why, a)
		}
	}
	if tk.State != retry.Succeeded || tk.CallbackState != retry.CallbackWaiting || tk.CallbackAttempts != 0 || tk.CallbackNextAt == nil {
		r.T.Fatalf("%s: task is %s, callback %s with %d attempts; want the callback waiting, unused",
			why, tk.State, tk.CallbackState, tk.CallbackAttempts)
	}
	if wait := time.Until(*tk.CallbackNextAt); wait < delay-time.Minute || wait > delay {
		r.T.Fatalf("%s: callback due in %s, want about %s", why, wait.Round(time.Second), delay)
	}
}

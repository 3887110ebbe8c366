package storage_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// checkTotals fails the test unless the state totals of every scene equal a count of rh_task by
// scene and state.
func checkTotals(t testing.TB, s *storage.Store, when string) {
	t.Helper()
	ctx := context.Background()
	got, err := s.SceneStateTotals(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, err := s.CountTaskStates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(got, want, maps.Equal) {
		t.Errorf("%s: the totals say %v, a count of the tasks %v", when, got, want)
	}
}

// keyed returns the claims by their key.
func keyed(claims []retry.Claim) map[string]*retry.Claim {
	out := map[string]*retry.Claim{}
	for i := range claims {
		out[claims[i].IdempotencyKey] = &claims[i]
	}
	return out
}

// Every way a task is made, changes state or goes keeps its scene's totals equal to a count of
// the tasks: ingest (new, paused, merged), claims, settlements to each outcome (given back,
// held, late, taken back after the deadline, without an attempt recorded), callbacks, bringing
// held tasks back, every operator action (a replay that conflicts too), and retention.
func TestStateTotalsFollowEveryPath(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := t.Context()
		f := setup(t, s)
		sc := f.scene
		sc.MaxAttempts = 5
		sc.Callback.Enabled = true
		sc, err := s.UpdateScene(ctx, sc)
		if err != nil {
			t.Fatal(err)
		}
		pol := compile(t, sc)
		other, err := s.CreateScene(ctx, retry.DefaultScene(f.group.ID, "other"))
		if err != nil {
			t.Fatal(err)
		}
		otherPol := compile(t, other)
		now := time.Now()
		due, later := now.Add(-time.Minute), now.Add(time.Hour)
		in := func(scene retry.Scene, key string, at time.Time) storage.NewTask {
			tk := f.task(key, at)
			tk.SceneID = scene.ID
			return tk
		}
		checkTotals(t, s, "before any task")

		paused := in(sc, "p1", due)
		paused.State = retry.Paused
		batch := []storage.NewTask{paused, in(sc, "a1", due), in(sc, "a1", due)}
		for i := 2; i <= 8; i++ {
			batch = append(batch, in(sc, fmt.Sprint("a", i), due))
		}
		batch = append(batch, in(other, "b1", due), in(other, "b2", due), in(other, "b3", due))
		ingest(t, s, batch...)
		checkTotals(t, s, "after an ingest with a repeated key")
		if r := ingest(t, s, in(sc, "a1", due), in(sc, "a2", due), in(sc, "a9", later)); !r[0].Merged || !r[1].Merged || r[2].Merged {
			t.Fatalf("second ingest: %+v", r)
		}
		checkTotals(t, s, "after an ingest that merges")

		claims := keyed(claim(t, s, storage.ClaimParams{Kind: retry.KindReplay, Buckets: testkit.AllBuckets(), DueBy: now,
			PerBucket: 100, Token: 1, Node: "n", Deadline: now.Add(time.Minute)}))
		if len(claims) != 11 {
			t.Fatalf("claimed %d, want 11", len(claims))
		}
		checkTotals(t, s, "after a claim")

		att := func(o retry.Outcome) *retry.Attempt {
			return &retry.Attempt{Kind: retry.KindReplay, Number: 1, NodeID: "n", StartedAt: now, Outcome: o}
		}
		ok, failed := retry.Result{Outcome: retry.OutcomeSucceeded}, retry.Result{Outcome: retry.OutcomeFailed, Error: "down"}
		late := *claims["a6"]
		late.Token = 999
		lapsed := retry.SettleReplay(claims["b2"], &other, otherPol, retry.Result{Outcome: retry.OutcomeTimedOut, Error: "no answer"},
			att(retry.OutcomeTimedOut), now)
		lapse := now.Add(time.Hour)
		lapsed.Lapsed = &lapse
		settle(t, s, []retry.Settlement{
			retry.SettleReplay(claims["a1"], &sc, pol, ok, att(retry.OutcomeSucceeded), now),
			retry.SettleReplay(claims["a2"], &sc, pol, failed, att(retry.OutcomeFailed), now),
			retry.SettleReplay(claims["a3"], &sc, pol, retry.Result{Outcome: retry.OutcomeFailed, Error: "gone", Permanent: true},
				att(retry.OutcomeFailed), now),
			retry.Release(claims["a4"], later),
			retry.Hold(claims["a5"]),
			retry.SettleReplay(&late, &sc, pol, ok, att(retry.OutcomeSucceeded), now),
			retry.SettleReplay(claims["a7"], &sc, pol, ok, nil, now),
			retry.SettleReplay(claims["b1"], &other, otherPol, retry.Result{Outcome: retry.OutcomeFailed, Error: "gone", Permanent: true},
				att(retry.OutcomeFailed), now),
			lapsed,
		}, 8)
		checkTotals(t, s, "after settlements to every outcome")

		// A callback changes no task's state.
		cbs := claim(t, s, storage.ClaimParams{Kind: retry.KindCallback, Buckets: testkit.AllBuckets(), DueBy: now.Add(time.Second),
			PerBucket: 100, Token: 2, Node: "n", Deadline: now.Add(time.Minute)})
		if len(cbs) != 3 {
			t.Fatalf("claimed %d callbacks, want 3 (a1, a3, a7)", len(cbs))
		}
		checkTotals(t, s, "after a callback claim")
		var cbBatch []retry.Settlement
		for i := range cbs {
			cbBatch = append(cbBatch, retry.SettleCallback(&cbs[i], &sc, pol, ok,
				&retry.Attempt{Kind: retry.KindCallback, Number: 1, NodeID: "n", StartedAt: now, Outcome: retry.OutcomeSucceeded}, now))
		}
		cbBatch[0] = retry.Release(&cbs[0], now)
		settle(t, s, cbBatch, 3)
		checkTotals(t, s, "after callbacks")

		// The held task comes back once its group has a live instance.
		if err := s.UpsertInstance(ctx, retry.Instance{ID: "i1", GroupID: f.group.ID, ExecutorURL: "http://i"}, now); err != nil {
			t.Fatal(err)
		}
		if n, _, err := s.Unhold(ctx, now.Add(-time.Minute), 100); err != nil || n != 1 {
			t.Fatalf("unhold: %d %v", n, err)
		}
		checkTotals(t, s, "after held tasks came back")

		ids := map[string]int64{}
		all, err := s.ListTasks(ctx, storage.TaskFilter{}, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		var every []int64
		for _, tk := range all {
			if tk.State.Active() {
				ids[tk.IdempotencyKey] = tk.ID
			} else if _, seen := ids[tk.IdempotencyKey]; !seen {
				ids[tk.IdempotencyKey] = tk.ID
			}
			every = append(every, tk.ID)
		}
		// a3 ended; a new report of its key starts a new task, so replaying a3 conflicts.
		ingest(t, s, in(sc, "a3", later))
		for _, step := range []struct {
			action storage.Action
			keys   []string
		}{
			{storage.Pause, []string{"a2", "a5", "a9", "a1"}},
			{storage.Resume, []string{"a2", "p1"}},
			{storage.TriggerNow, []string{"a5", "a9", "a4"}},
			{storage.SetNextAt, []string{"a4", "a5"}},
			{storage.Replay, []string{"a3", "b1", "a1"}},
			{storage.Discard, []string{"a7"}},
			{storage.Cancel, []string{"a6", "b3", "a9", "a8"}},
		} {
			var list []int64
			for _, k := range step.keys {
				list = append(list, ids[k])
			}
			apply(t, s, step.action, list, later)
			checkTotals(t, s, fmt.Sprintf("after %s %v", step.action, step.keys))
		}
		// One action over tasks of every state and both scenes at once.
		apply(t, s, storage.Cancel, every, time.Time{})
		checkTotals(t, s, "after cancelling every task")

		// The per-scene read and the read with names agree with the totals of every scene.
		one, err := s.SceneStateTotals(ctx, []int64{other.ID})
		if err != nil {
			t.Fatal(err)
		}
		want, err := s.CountTaskStates(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(one) != 1 || !maps.Equal(one[other.ID], want[other.ID]) {
			t.Errorf("the other scene's totals %v, counted %v", one, want[other.ID])
		}
		named, err := s.StateTotals(ctx, storage.StateFilter{NamespaceIDs: []int64{f.group.NamespaceID}, GroupID: f.group.ID})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range named {
			if n.GroupID != f.group.ID || n.NamespaceID != f.group.NamespaceID || !maps.Equal(n.States, want[n.SceneID]) {
				t.Errorf("totals with names: %+v, counted %v", n, want[n.SceneID])
			}
		}
		if len(named) != len(want) {
			t.Errorf("totals with names of %d scenes, counted %d", len(named), len(want))
		}
		deleted, err := s.DeleteEndedTasks(ctx, []retry.State{retry.Succeeded, retry.Cancelled}, now.Add(time.Hour), 3)
		if err != nil || deleted != 3 {
			t.Fatalf("retention deleted %d: %v", deleted, err)
		}
		checkTotals(t, s, "after a retention batch")
		if _, err := s.DeleteEndedTasks(ctx, retry.EndedStates(), now.Add(time.Hour), 1000); err != nil {
			t.Fatal(err)
		}
		checkTotals(t, s, "after retention")

		if none, err := s.StateTotals(ctx, storage.StateFilter{NamespaceIDs: []int64{}}); err != nil || len(none) != 0 {
			t.Errorf("no namespace: %v %v", none, err)
		}
	})
}

// A recount repairs totals that went wrong, and a node's first start on a database whose totals
// were never kept counts them once; later starts change nothing.
func TestRecountStateTotals(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		s := storagetest.Open(t, target)
		ctx := t.Context()
		f := setup(t, s)
		now := time.Now()
		ingest(t, s, f.task("a", now), f.task("b", now), f.task("c", now.Add(time.Hour)))
		claim(t, s, storage.ClaimParams{Kind: retry.KindReplay, Buckets: testkit.AllBuckets(), DueBy: now,
			PerBucket: 100, Token: 1, Node: "n", Deadline: now.Add(time.Minute)})
		if err := s.SpoilStateTotals(ctx, f.scene.ID, retry.Exhausted, 7); err != nil {
			t.Fatal(err)
		}
		if err := s.SpoilStateTotals(ctx, f.scene.ID+100, retry.Waiting, -2); err != nil {
			t.Fatal(err)
		}
		if err := s.RecountStateTotals(ctx); err != nil {
			t.Fatal(err)
		}
		checkTotals(t, s, "after a recount")

		// An earlier version's database: tasks, no totals.
		if err := s.ForgetStateTotals(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.Migrate(ctx, storagetest.Buckets); err != nil {
			t.Fatal(err)
		}
		checkTotals(t, s, "after the first start of this version")
		// The totals are marked kept: another start counts nothing again.
		if err := s.SpoilStateTotals(ctx, f.scene.ID, retry.Paused, 1); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := storagetest.Open(t, target).Migrate(ctx, storagetest.Buckets); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.SceneStateTotals(ctx, []int64{f.scene.ID})
		if err != nil {
			t.Fatal(err)
		}
		if got[f.scene.ID][retry.Paused] != 1 {
			t.Errorf("a later start recounted: %v", got)
		}
		if err := s.SpoilStateTotals(ctx, f.scene.ID, retry.Paused, -1); err != nil {
			t.Fatal(err)
		}
	})
}

// Nodes that ingest overlapping keys, claim and settle their own buckets, act on tasks, delete
// ended ones and recount, all at once, keep the totals exact. On MySQL some of these statements
// deadlock on the task rows and indexes they share (a settlement that frees a key and an ingest
// that merges into it, a claim's range next to another node's settlement); the store tries
// them again, and one that still fails after its tries changes neither the tasks nor the
// totals: the test counts those and goes on.
func TestStateTotalsStayExactUnderConcurrentWriters(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := t.Context()
		f := setup(t, s)
		other, err := s.CreateScene(ctx, retry.DefaultScene(f.group.ID, "other"))
		if err != nil {
			t.Fatal(err)
		}
		scenes := []retry.Scene{f.scene, other}
		pols := []retry.Policies{compile(t, f.scene), compile(t, other)}
		const rounds = 15
		var (
			wg              sync.WaitGroup
			done, brokenOff atomic.Int64
		)
		errs := make(chan error, 64)
		run := func(name string, fn func(r *rand.Rand, round int) error) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(len(name)), 7))
				for round := range rounds {
					err := fn(r, round)
					var me *mysql.MySQLError
					switch {
					case err == nil:
						done.Add(1)
					case errors.As(err, &me) && (me.Number == 1213 || me.Number == 1205):
						brokenOff.Add(1)
						t.Logf("%s round %d: %v", name, round, err)
					default:
						errs <- fmt.Errorf("%s round %d: %w", name, round, err)
						return
					}
				}
			}()
		}
		for w := range 3 {
			run(fmt.Sprint("ingest", w), func(r *rand.Rand, round int) error {
				var batch []storage.NewTask
				for range 60 {
					sc := scenes[r.IntN(2)]
					tk := f.task(fmt.Sprint("k", r.IntN(500)), time.Now().Add(-time.Second))
					tk.SceneID = sc.ID
					if r.IntN(10) == 0 {
						tk.State = retry.Paused
					}
					batch = append(batch, tk)
				}
				_, err := s.Ingest(ctx, batch)
				return err
			})
		}
		for node := range 2 {
			var buckets []int
			for b := node; b < storagetest.Buckets; b += 2 {
				buckets = append(buckets, b)
			}
			run(fmt.Sprint("node", node), func(r *rand.Rand, round int) error {
				now := time.Now()
				claims, err := s.Claim(ctx, storage.ClaimParams{Kind: retry.KindReplay, Buckets: buckets, DueBy: now,
					PerBucket: 5, Token: int64(node*1000 + round + 1), Node: fmt.Sprint("n", node), Deadline: now.Add(time.Minute)})
				if err != nil {
					return err
				}
				var batch []retry.Settlement
				for i := range claims {
					c := &claims[i]
					i := 0
					if c.SceneID == other.ID {
						i = 1
					}
					a := &retry.Attempt{Kind: retry.KindReplay, Number: c.Number(), NodeID: "n", StartedAt: now}
					switch r.IntN(5) {
					case 0:
						a.Outcome = retry.OutcomeSucceeded
						batch = append(batch, retry.SettleReplay(c, &scenes[i], pols[i], retry.Result{Outcome: retry.OutcomeSucceeded}, a, now))
					case 1:
						a.Outcome = retry.OutcomeFailed
						batch = append(batch, retry.SettleReplay(c, &scenes[i], pols[i],
							retry.Result{Outcome: retry.OutcomeFailed, Error: "x", Permanent: true}, a, now))
					case 2:
						a.Outcome = retry.OutcomeFailed
						batch = append(batch, retry.SettleReplay(c, &scenes[i], pols[i], retry.Result{Outcome: retry.OutcomeFailed, Error: "x"}, a, now))
					case 3:
						batch = append(batch, retry.Hold(c))
					default:
						batch = append(batch, retry.Release(c, now))
					}
				}
				_, err = s.Settle(ctx, batch)
				return err
			})
		}
		run("operator", func(r *rand.Rand, round int) error {
			ids, err := s.TaskIDs(ctx, storage.TaskFilter{}, 0, 1000)
			if err != nil || len(ids) == 0 {
				return err
			}
			var pick []int64
			for range 40 {
				pick = append(pick, ids[r.IntN(len(ids))])
			}
			actions := retry.Actions()
			_, err = s.Apply(ctx, actions[r.IntN(len(actions))], pick, time.Now())
			return err
		})
		run("janitor", func(r *rand.Rand, round int) error {
			if _, _, err := s.Unhold(ctx, time.Now().Add(-time.Hour), 50); err != nil {
				return err
			}
			_, err := s.DeleteEndedTasks(ctx, retry.EndedStates(), time.Now().Add(time.Hour), 30)
			return err
		})
		if err := s.UpsertInstance(ctx, retry.Instance{ID: "i1", GroupID: f.group.ID, ExecutorURL: "http://i"}, time.Now()); err != nil {
			t.Fatal(err)
		}
		run("recount", func(r *rand.Rand, round int) error {
			if round%5 != 0 {
				return nil
			}
			return s.RecountStateTotals(ctx)
		})
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if done.Load() < brokenOff.Load() {
			t.Errorf("%d steps done, %d broken off: too few done to tell", done.Load(), brokenOff.Load())
		}
		checkTotals(t, s, "after the concurrent writers")
	})
}

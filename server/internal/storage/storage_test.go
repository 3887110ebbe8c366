package storage_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

type fixture struct {
	s     *storage.Store
	group retry.Group
	scene retry.Scene
}

func setup(t *testing.T, s *storage.Store) fixture {
	t.Helper()
	f := testkit.NewFixture(t, s, "shop", "0123456789abcdef0123", nil)
	// Whatever a test does to tasks, the state totals must equal a count of them after it.
	t.Cleanup(func() { checkTotals(t, s, "at the end of the test") })
	return fixture{s: s, group: f.Group, scene: f.Scene}
}

func (f fixture) task(key string, nextAt time.Time) storage.NewTask {
	return storage.NewTask{GroupID: f.group.ID, SceneID: f.scene.ID, Bucket: retry.BucketOf(key, storagetest.Buckets),
		Key: key, Args: []byte(`{"k":"` + key + `"}`), Error: "first failure", LocalAttempts: 3,
		State: retry.Waiting, NextAt: nextAt}
}

func TestCatalog(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := setup(t, s)
		if _, err := s.CreateNamespace(ctx, retry.Namespace{Name: "shop"}); !errors.Is(err, storage.ErrConflict) {
			t.Errorf("duplicate namespace: %v", err)
		}
		if _, err := s.CreateNamespace(ctx, retry.Namespace{Name: "bad name"}); !errors.Is(err, retry.ErrInvalid) {
			t.Errorf("bad namespace name: %v", err)
		}
		g, err := s.GroupByName(ctx, "shop", "orders")
		if err != nil || g.ID != f.group.ID || g.Namespace != "shop" || g.Token != f.group.Token {
			t.Fatalf("group by name: %+v %v", g, err)
		}
		if _, err := s.GroupByName(ctx, "shop", "nope"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("unknown group: %v", err)
		}
		// Every way of reading a group gives all of it, with its namespace's state: a disabled
		// namespace makes its enabled groups inactive.
		ns, err := s.NamespaceByName(ctx, "shop")
		if err != nil {
			t.Fatal(err)
		}
		ns.Enabled = false
		if err := s.UpdateNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
		byName, err1 := s.GroupByName(ctx, "shop", "orders")
		byID, err2 := s.Group(ctx, g.ID)
		all, err3 := s.ListGroups(ctx)
		if err := errors.Join(err1, err2, err3); err != nil {
			t.Fatal(err)
		}
		if len(all) != 1 {
			t.Fatalf("listed %d groups, want 1", len(all))
		}
		for _, got := range []retry.Group{byName, byID, all[0]} {
			if got.ID != g.ID || got.Name != "orders" || got.Namespace != "shop" || got.Token != f.group.Token ||
				!got.Enabled || got.NamespaceEnabled || got.Active() || got.CreatedAt.IsZero() {
				t.Fatalf("group read as %+v; want it whole, enabled, in a disabled namespace", got)
			}
		}
		if err := s.UpdateNamespace(ctx, retry.Namespace{ID: 9999}); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("updating an unknown namespace: %v", err)
		}
		ns.Enabled = true
		if err := s.UpdateNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
		if g, err = s.Group(ctx, g.ID); err != nil || !g.Active() {
			t.Fatalf("group after the namespace is enabled again: %+v %v", g, err)
		}
		if _, err := s.CreateScene(ctx, retry.DefaultScene(g.ID, "notify")); !errors.Is(err, storage.ErrConflict) {
			t.Errorf("duplicate scene: %v", err)
		}
		// The policy survives the round trip.
		sc := f.scene
		sc.MaxAttempts = 5
		sc.Callback.Enabled = true
		sc.Timeout = 1500 * time.Millisecond
		up, err := s.UpdateScene(ctx, sc)
		if err != nil {
			t.Fatal(err)
		}
		if up.Version != 2 || up.MaxAttempts != 5 || !up.Callback.Enabled || up.Timeout != 1500*time.Millisecond ||
			up.Backoff.Strategy != sc.Backoff.Strategy || up.LocalBackoff.Base != sc.LocalBackoff.Base {
			t.Fatalf("updated scene: %+v", up)
		}
		// Concurrent auto-creation yields one scene.
		var wg sync.WaitGroup
		ids := make([]int64, 8)
		for i := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, err := s.EnsureScene(ctx, retry.DefaultScene(g.ID, "auto"))
				if err != nil {
					t.Error(err)
					return
				}
				ids[i] = got.ID
			}()
		}
		wg.Wait()
		for _, id := range ids {
			if id != ids[0] || id == 0 {
				t.Fatalf("concurrent EnsureScene gave ids %v", ids)
			}
		}
	})
}

func TestIngestMergesActiveKeys(t *testing.T) {
	storagetest.EachStore(t, ingestMerges)
}

// On a database whose upserts take no RETURNING (MySQL), an ingest reads its rows back with a
// second statement, with the same results.
func TestIngestMergesActiveKeysWithoutReturning(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		s.SetReturning(false)
		ingestMerges(t, s)
	})
}

func ingestMerges(t *testing.T, s *storage.Store) {
	ctx := context.Background()
	f := setup(t, s)
	now := time.Now()
	res, err := s.Ingest(ctx, []storage.NewTask{f.task("a", now), f.task("b", now), f.task("a", now)})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Merged || res[1].Merged || !res[2].Merged || res[2].TaskID != res[0].TaskID || res[0].TaskID == res[1].TaskID {
		t.Fatalf("first batch: %+v", res)
	}
	again := f.task("a", now)
	again.Error = "second failure"
	res2, err := s.Ingest(ctx, []storage.NewTask{again, f.task("c", now)})
	if err != nil {
		t.Fatal(err)
	}
	if !res2[0].Merged || res2[0].TaskID != res[0].TaskID || res2[1].Merged {
		t.Fatalf("second batch: %+v", res2)
	}
	task, err := s.Task(ctx, res[0].TaskID)
	if err != nil {
		t.Fatal(err)
	}
	if task.Merges != 2 || task.LastError != "second failure" || task.State != retry.Waiting ||
		string(task.Args) != `{"k":"a"}` || task.LocalAttempts != 3 {
		t.Fatalf("merged task: %+v", task)
	}
	// Once the task has ended, the same key starts a new task.
	if _, err := s.Apply(ctx, storage.Cancel, []int64{task.ID}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	res3, err := s.Ingest(ctx, []storage.NewTask{f.task("a", now)})
	if err != nil {
		t.Fatal(err)
	}
	if res3[0].Merged || res3[0].TaskID == task.ID {
		t.Fatalf("key of an ended task: %+v", res3)
	}
	// Same key in another scene is another task.
	other, err := s.CreateScene(ctx, retry.DefaultScene(f.group.ID, "other"))
	if err != nil {
		t.Fatal(err)
	}
	nt := f.task("a", now)
	nt.SceneID = other.ID
	res4, err := s.Ingest(ctx, []storage.NewTask{nt})
	if err != nil || res4[0].Merged {
		t.Fatalf("same key other scene: %+v %v", res4, err)
	}
}

// A batch larger than SQLite takes in one statement (32766 bound parameters, about 2000
// reports; client_api.max_batch may allow more) is stored whole, merges included.
func TestIngestOfALargeBatch(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := setup(t, s)
		now := time.Now()
		batch := make([]storage.NewTask, 2500)
		for i := range batch {
			batch[i] = f.task(fmt.Sprintf("k-%d", i%2200), now) // the last 300 repeat the first
		}
		res, err := s.Ingest(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		ids := map[int64]bool{}
		for i, r := range res {
			ids[r.TaskID] = true
			if r.Merged != (i >= 2200) || (i >= 2200 && r.TaskID != res[i-2200].TaskID) {
				t.Fatalf("report %d: %+v (first of its key %+v)", i, r, res[i%2200])
			}
		}
		if len(ids) != 2200 {
			t.Fatalf("%d tasks, want 2200", len(ids))
		}
	})
}

// An ingest that fails changes nothing, so that the client, told to send the batch again, does
// not find half of it stored. MySQL ignores trailing spaces when it compares keys, so a key
// that differs from an active one only by them (which the client API refuses) merges in the
// database but cannot be matched back to its report: the batch must then roll back.
func TestIngestThatFailsStoresNothing(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := setup(t, s)
		now := time.Now()
		first, err := s.Ingest(ctx, []storage.NewTask{f.task("k", now)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Ingest(ctx, []storage.NewTask{f.task("fresh", now), f.task("k ", now)})
		if err == nil {
			return // SQLite tells the keys apart: two tasks, nothing to roll back
		}
		ids, err := s.TaskIDs(ctx, storage.TaskFilter{}, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		tk, err := s.Task(ctx, first[0].TaskID)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) != 1 || tk.Merges != 0 {
			t.Fatalf("a failed ingest left %d tasks and %d merges, want 1 task and none", len(ids), tk.Merges)
		}
	})
}

func TestClaimTakesWhatIsDueOnce(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := setup(t, s)
		now := time.Now()
		var batch []storage.NewTask
		for i := range 20 {
			batch = append(batch, f.task(fmt.Sprintf("due-%d", i), now.Add(-time.Duration(i)*time.Second)))
		}
		for i := range 5 {
			batch = append(batch, f.task(fmt.Sprintf("later-%d", i), now.Add(time.Hour)))
		}
		if _, err := s.Ingest(ctx, batch); err != nil {
			t.Fatal(err)
		}
		deadline := now.Add(time.Minute)
		p := storage.ClaimParams{Kind: retry.KindReplay, Buckets: testkit.AllBuckets(), DueBy: now, PerBucket: 100,
			Token: 42, Node: "n1", Deadline: deadline}
		claims, err := s.Claim(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(claims) != 20 {
			t.Fatalf("claimed %d, want the 20 due", len(claims))
		}
		for _, c := range claims {
			if c.Token != 42 || c.Kind != retry.KindReplay || c.State != retry.Running || c.ArgsSize == 0 ||
				!c.RunDeadline.Equal(retry.Truncate(deadline)) || c.GroupID != f.group.ID || c.DueAt.After(now) {
				t.Fatalf("claim %+v", c)
			}
		}
		p.Token = 43
		again, err := s.Claim(ctx, p)
		if err != nil || len(again) != 0 {
			t.Fatalf("second claim took %d (%v), want none", len(again), err)
		}
		task := testkit.Task(t, s, claims[0].TaskID)
		if task.State != retry.Running || task.ClaimedBy != "n1" || task.ClaimToken != 42 {
			t.Fatalf("claimed task: %+v", task)
		}
	})
}

// A claim that fails leaves nothing claimed: a task stamped running under a claim no one reads
// back would wait for the sweeper, which charges it a timed-out attempt for a call never made.
// A node holding more than 250 buckets claims them in several statements; here the second one
// waits for a row lock until the claim's context ends.
func TestClaimThatFailsClaimsNothing(t *testing.T) {
	target := storagetest.MySQL(t)
	s := storagetest.Open(t, target)
	ctx := context.Background()
	f := setup(t, s)
	now := time.Now()
	first, second := f.task("first", now.Add(-time.Second)), f.task("second", now.Add(-time.Second))
	first.Bucket, second.Bucket = 0, 260
	res, err := s.Ingest(ctx, []storage.NewTask{first, second})
	if err != nil {
		t.Fatal(err)
	}
	dsn, err := config.ParseDSN(target.DSN)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("mysql", dsn.MySQL.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := raw.Close(); err != nil {
			t.Error(err)
		}
	}()
	lock, err := raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rollback(t, lock)
	if _, err := lock.ExecContext(ctx, "SELECT id FROM rh_task WHERE id = ? FOR UPDATE", res[1].TaskID); err != nil {
		t.Fatal(err)
	}
	buckets := make([]int, 300)
	for i := range buckets {
		buckets[i] = i
	}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	claims, err := s.Claim(cctx, storage.ClaimParams{Kind: retry.KindReplay, Buckets: buckets, DueBy: now,
		PerBucket: 10, Token: 9, Node: "n", Deadline: now.Add(time.Minute)})
	if err == nil {
		t.Fatalf("the claim went through a locked row: %+v", claims)
	}
	if err := lock.Rollback(); err != nil {
		t.Fatal(err)
	}
	tk, err := s.Task(ctx, res[0].TaskID)
	if err != nil {
		t.Fatal(err)
	}
	if tk.State != retry.Waiting || tk.ClaimToken != 0 {
		t.Fatalf("after a failed claim the task of the first statement is %s under claim %d; want it waiting, unclaimed",
			tk.State, tk.ClaimToken)
	}
}

func TestClaimPerBucketLimitAndBucketFilter(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := setup(t, s)
		now := time.Now()
		var batch []storage.NewTask
		for i := range 300 {
			batch = append(batch, f.task(fmt.Sprintf("k-%d", i), now.Add(-time.Second)))
		}
		if _, err := s.Ingest(ctx, batch); err != nil {
			t.Fatal(err)
		}
		perBucket := map[int]int{}
		for _, nt := range batch {
			perBucket[nt.Bucket]++
		}
		var some []int
		want := 0
		for b, n := range perBucket {
			if len(some) < 10 {
				some = append(some, b)
				want += min(n, 1)
			}
		}
		sort.Ints(some)
		claims, err := s.Claim(ctx, storage.ClaimParams{Kind: retry.KindReplay, Buckets: some, DueBy: now,
			PerBucket: 1, Token: 7, Node: "n", Deadline: now.Add(time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		if len(claims) != want {
			t.Fatalf("claimed %d, want one per bucket = %d", len(claims), want)
		}
		in := map[int]bool{}
		for _, b := range some {
			in[b] = true
		}
		for _, c := range claims {
			if !in[c.Bucket] {
				t.Fatalf("claimed from bucket %d, not asked for", c.Bucket)
			}
		}
	})
}

func TestSettleIsConditionalOnTheClaim(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := setup(t, s)
		sc := f.scene
		sc.Callback.Enabled = true
		sc, err := s.UpdateScene(ctx, sc)
		if err != nil {
			t.Fatal(err)
		}
		pol := compile(t, sc)
		now := time.Now()
		if _, err := s.Ingest(ctx, []storage.NewTask{f.task("ok", now), f.task("fail", now), f.task("stale", now)}); err != nil {
			t.Fatal(err)
		}
		claims, err := s.Claim(ctx, storage.ClaimParams{Kind: retry.KindReplay, Buckets: testkit.AllBuckets(), DueBy: now,
			PerBucket: 10, Token: 1, Node: "n", Deadline: now.Add(time.Minute)})
		if err != nil || len(claims) != 3 {
			t.Fatalf("claim: %d %v", len(claims), err)
		}
		byKey := map[string]*retry.Claim{}
		for i := range claims {
			byKey[claims[i].IdempotencyKey] = &claims[i]
		}
		att := func(c *retry.Claim, o retry.Outcome, e string) *retry.Attempt {
			return &retry.Attempt{TaskID: c.TaskID, Kind: retry.KindReplay, Number: c.Number(), NodeID: "n",
				InstanceID: "i1", StartedAt: now, Duration: 12 * time.Millisecond, Outcome: o, Error: e}
		}
		stale := *byKey["stale"]
		stale.Token = 999 // a settlement from a claim that no longer holds
		batch := []retry.Settlement{
			retry.SettleReplay(byKey["ok"], &sc, pol, retry.Result{Outcome: retry.OutcomeSucceeded}, att(byKey["ok"], retry.OutcomeSucceeded, ""), now),
			retry.SettleReplay(byKey["fail"], &sc, pol, retry.Result{Outcome: retry.OutcomeFailed, Error: "503"}, att(byKey["fail"], retry.OutcomeFailed, "503"), now),
			retry.SettleReplay(&stale, &sc, pol, retry.Result{Outcome: retry.OutcomeSucceeded}, att(&stale, retry.OutcomeSucceeded, ""), now),
		}
		n, err := s.Settle(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		if n != 2 {
			t.Fatalf("settled %d, want 2 (the stale one must not apply)", n)
		}
		ok := testkit.Task(t, s, byKey["ok"].TaskID)
		if ok.State != retry.Succeeded || ok.Attempts != 1 || ok.EndedAt == nil || ok.CallbackState != retry.CallbackWaiting {
			t.Fatalf("succeeded task: %+v", ok)
		}
		fail := testkit.Task(t, s, byKey["fail"].TaskID)
		if fail.State != retry.Waiting || fail.Attempts != 1 || fail.LastError != "503" || !fail.NextAt.After(now) {
			t.Fatalf("failed task: %+v", fail)
		}
		st := testkit.Task(t, s, byKey["stale"].TaskID)
		if st.State != retry.Running {
			t.Fatalf("stale settlement changed the task: %+v", st)
		}
		if atts := testkit.Attempts(t, s, st.ID); len(atts) != 0 {
			t.Fatalf("a stale settlement recorded %d attempts", len(atts))
		}
		atts := testkit.Attempts(t, s, fail.ID)
		if len(atts) != 1 || atts[0].Outcome != retry.OutcomeFailed || atts[0].Error != "503" || atts[0].InstanceID != "i1" ||
			atts[0].Duration != 12*time.Millisecond || atts[0].Number != 1 {
			t.Fatalf("attempts: %+v", atts)
		}
		// The succeeded task's key is free again.
		res, err := s.Ingest(ctx, []storage.NewTask{f.task("ok", now)})
		if err != nil || res[0].Merged {
			t.Fatalf("key after success: %+v %v", res, err)
		}

		// The callback is claimed and settled on its own index.
		cbs, err := s.Claim(ctx, storage.ClaimParams{Kind: retry.KindCallback, Buckets: testkit.AllBuckets(), DueBy: time.Now(),
			PerBucket: 10, Token: 2, Node: "n", Deadline: now.Add(time.Minute)})
		if err != nil || len(cbs) != 1 || cbs[0].TaskID != ok.ID || cbs[0].State != retry.Succeeded {
			t.Fatalf("callback claim: %+v %v", cbs, err)
		}
		if _, err := s.Settle(ctx, []retry.Settlement{retry.SettleCallback(&cbs[0], &sc, pol,
			retry.Result{Outcome: retry.OutcomeSucceeded}, nil, now)}); err != nil {
			t.Fatal(err)
		}
		ok = testkit.Task(t, s, ok.ID)
		if ok.CallbackState != retry.CallbackSucceeded || ok.CallbackAttempts != 1 || ok.State != retry.Succeeded {
			t.Fatalf("after callback: %+v", ok)
		}
	})
}

func TestStuckAndExtend(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := setup(t, s)
		now := time.Now()
		if _, err := s.Ingest(ctx, []storage.NewTask{f.task("x", now), f.task("y", now)}); err != nil {
			t.Fatal(err)
		}
		claims := claim(t, s, storage.ClaimParams{Kind: retry.KindReplay, Buckets: testkit.AllBuckets(), DueBy: now,
			PerBucket: 10, Token: 5, Node: "dead", Deadline: now.Add(time.Second)})
		if len(claims) != 2 {
			t.Fatalf("claimed %d", len(claims))
		}
		stuck, err := s.Stuck(ctx, retry.KindReplay, testkit.AllBuckets(), now, 10)
		if err != nil || len(stuck) != 0 {
			t.Fatalf("stuck before the deadline: %d %v", len(stuck), err)
		}
		okExt, err := s.ExtendClaim(ctx, &claims[0], now.Add(time.Hour))
		if err != nil || !okExt {
			t.Fatalf("extend: %v %v", okExt, err)
		}
		stuck, err = s.Stuck(ctx, retry.KindReplay, testkit.AllBuckets(), now.Add(2*time.Second), 10)
		if err != nil || len(stuck) != 1 || stuck[0].TaskID != claims[1].TaskID || stuck[0].Token != 5 {
			t.Fatalf("stuck after the deadline: %+v %v", stuck, err)
		}
	})
}

func TestLeases(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		now := time.Now()
		held, err := s.AcquireBuckets(ctx, "a", []int{0, 1, 2, 3}, now, now.Add(10*time.Second))
		if err != nil || len(held) != 4 {
			t.Fatalf("a acquires: %v %v", held, err)
		}
		held, err = s.AcquireBuckets(ctx, "b", []int{2, 3, 4}, now, now.Add(10*time.Second))
		if err != nil || len(held) != 1 || held[0] != 4 {
			t.Fatalf("b may take only the free bucket 4: %v %v", held, err)
		}
		if err := s.ReleaseBuckets(ctx, "a", []int{3}); err != nil {
			t.Fatal(err)
		}
		held, err = s.AcquireBuckets(ctx, "b", []int{2, 3, 4}, now, now.Add(10*time.Second))
		if err != nil || len(held) != 2 {
			t.Fatalf("b after a released 3: %v", held)
		}
		// An expired lease may be taken.
		later := now.Add(11 * time.Second)
		held, err = s.AcquireBuckets(ctx, "b", []int{0, 1, 2, 3, 4}, later, later.Add(10*time.Second))
		if err != nil || len(held) != 5 {
			t.Fatalf("b after a's leases expired: %v", held)
		}
		if h, err := s.HeldBuckets(ctx, "a", later); err != nil || len(h) != 0 {
			t.Fatalf("a still holds %v (%v)", h, err)
		}
	})
}

func TestActions(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := setup(t, s)
		now := time.Now()
		res, err := s.Ingest(ctx, []storage.NewTask{f.task("p", now.Add(time.Hour)), f.task("d", now), f.task("d2", now)})
		if err != nil {
			t.Fatal(err)
		}
		p, d, d2 := res[0].TaskID, res[1].TaskID, res[2].TaskID
		r, err := s.Apply(ctx, storage.Pause, []int64{p, 424242}, time.Time{})
		if err != nil || r.Changed != 1 || r.Skipped != 1 {
			t.Fatalf("pause: %+v %v", r, err)
		}
		if tk := testkit.Task(t, s, p); tk.State != retry.Paused {
			t.Fatalf("paused: %s", tk.State)
		}
		claims := claim(t, s, storage.ClaimParams{Kind: retry.KindReplay, Buckets: testkit.AllBuckets(), DueBy: now.Add(2 * time.Hour),
			PerBucket: 10, Token: 3, Node: "n", Deadline: now.Add(time.Minute)})
		for _, c := range claims {
			if c.TaskID == p {
				t.Fatal("a paused task was claimed")
			}
		}
		if r := apply(t, s, storage.Resume, []int64{p}, time.Time{}); r.Changed != 1 {
			t.Fatalf("resume: %+v", r)
		}
		at := now.Add(30 * time.Minute).Truncate(time.Millisecond)
		if r := apply(t, s, storage.SetNextAt, []int64{p}, at); r.Changed != 1 {
			t.Fatalf("set next: %+v", r)
		}
		if tk := testkit.Task(t, s, p); !tk.NextAt.Equal(at) || tk.State != retry.Waiting {
			t.Fatalf("after set next: %+v", tk)
		}
		if r := apply(t, s, storage.TriggerNow, []int64{p}, time.Time{}); r.Changed != 1 {
			t.Fatalf("trigger: %+v", r)
		}
		// Exhaust d and d2 through a settlement, then replay and discard them.
		sc := f.scene
		sc.MaxAttempts = 1
		pol := compile(t, sc)
		var batch []retry.Settlement
		for i := range claims {
			if claims[i].TaskID == d || claims[i].TaskID == d2 {
				batch = append(batch, retry.SettleReplay(&claims[i], &sc, pol, retry.Result{Outcome: retry.OutcomeFailed, Error: "x"}, nil, now))
			}
		}
		if n, err := s.Settle(ctx, batch); err != nil || n != 2 {
			t.Fatalf("exhaust: %d %v", n, err)
		}
		// A new report with d2's key starts an active task, so replaying d2 conflicts.
		if _, err := s.Ingest(ctx, []storage.NewTask{f.task("d2", now)}); err != nil {
			t.Fatal(err)
		}
		r, err = s.Apply(ctx, storage.Replay, []int64{d, d2, p}, time.Time{})
		if err != nil || r.Changed != 1 || len(r.Conflicts) != 1 || r.Conflicts[0] != d2 || r.Skipped != 1 {
			t.Fatalf("replay: %+v %v", r, err)
		}
		if tk := testkit.Task(t, s, d); tk.State != retry.Waiting || tk.Attempts != 0 || tk.EndedAt != nil {
			t.Fatalf("replayed dead letter: %+v", tk)
		}
		if res := ingest(t, s, f.task("d", now)); !res[0].Merged || res[0].TaskID != d {
			t.Fatalf("a replayed task owns its key again: %+v", res)
		}
		if r := apply(t, s, storage.Discard, []int64{d2}, time.Time{}); r.Changed != 1 {
			t.Fatalf("discard: %+v", r)
		}
		if tk := testkit.Task(t, s, d2); tk.State != retry.Cancelled {
			t.Fatalf("discarded: %s", tk.State)
		}
		if r := apply(t, s, storage.Cancel, []int64{p}, time.Time{}); r.Changed != 1 {
			t.Fatalf("cancel: %+v", r)
		}
		ids, err := s.TaskIDs(ctx, storage.TaskFilter{States: []retry.State{retry.Cancelled}}, 0, 10)
		if err != nil || len(ids) != 2 {
			t.Fatalf("filter cancelled: %v %v", ids, err)
		}
		ids, err = s.TaskIDs(ctx, storage.TaskFilter{GroupID: f.group.ID, ErrorContains: "first"}, 0, 100)
		if err != nil || len(ids) == 0 {
			t.Fatalf("filter by error text found %v (%v)", ids, err)
		}
	})
}

// A held task is not claimed again, merges a repeated key like any active task, and takes the
// operator actions a waiting one takes.
func TestHeldTasks(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := setup(t, s)
		now := time.Now()
		res, err := s.Ingest(ctx, []storage.NewTask{f.task("a", now), f.task("b", now), f.task("c", now)})
		if err != nil {
			t.Fatal(err)
		}
		claim := func() []retry.Claim {
			claims, err := s.Claim(ctx, storage.ClaimParams{Kind: retry.KindReplay, Buckets: testkit.AllBuckets(), DueBy: now.Add(time.Hour),
				PerBucket: 10, Token: now.UnixNano(), Node: "n", Deadline: now.Add(time.Minute)})
			if err != nil {
				t.Fatal(err)
			}
			return claims
		}
		claims := claim()
		holds := make([]retry.Settlement, len(claims))
		for i := range claims {
			holds[i] = retry.Hold(&claims[i])
		}
		if n, err := s.Settle(ctx, holds); err != nil || n != 3 {
			t.Fatalf("hold: %d %v", n, err)
		}
		if again := claim(); len(again) != 0 {
			t.Fatalf("claimed %d held tasks", len(again))
		}
		if r := ingest(t, s, f.task("a", now)); !r[0].Merged || r[0].TaskID != res[0].TaskID {
			t.Fatalf("a repeated key did not merge into its held task: %+v", r)
		}
		a, b, c := res[0].TaskID, res[1].TaskID, res[2].TaskID
		at := now.Add(time.Hour).Truncate(time.Millisecond)
		if r := apply(t, s, storage.SetNextAt, []int64{a}, at); r.Changed != 1 {
			t.Fatalf("set next on a held task: %+v", r)
		}
		if tk := testkit.Task(t, s, a); tk.State != retry.Held || !tk.NextAt.Equal(at) {
			t.Fatalf("after set next the task is %s due %s; want still held, due %s", tk.State, tk.NextAt, at)
		}
		if r := apply(t, s, storage.TriggerNow, []int64{a}, time.Time{}); r.Changed != 1 {
			t.Fatalf("trigger a held task: %+v", r)
		}
		if tk := testkit.Task(t, s, a); tk.State != retry.Waiting || tk.NextAt.After(time.Now()) {
			t.Fatalf("a triggered held task is %s due %s; want waiting, due now", tk.State, tk.NextAt)
		}
		if r := apply(t, s, storage.Pause, []int64{b}, time.Time{}); r.Changed != 1 {
			t.Fatalf("pause a held task: %+v", r)
		}
		if r := apply(t, s, storage.Cancel, []int64{c}, time.Time{}); r.Changed != 1 {
			t.Fatalf("cancel a held task: %+v", r)
		}
		if tk := testkit.Task(t, s, c); tk.State != retry.Cancelled || tk.EndedAt == nil {
			t.Fatalf("a cancelled held task is %s, ended %v", tk.State, tk.EndedAt)
		}
	})
}

func TestRetention(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := setup(t, s)
		now := time.Now()
		res := ingest(t, s, f.task("old", now), f.task("live", now))
		if _, err := s.Apply(ctx, storage.Cancel, []int64{res[0].TaskID}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		n, err := s.DeleteEndedTasks(ctx, []retry.State{retry.Cancelled, retry.Succeeded}, now.Add(-time.Hour), 100)
		if err != nil || n != 0 {
			t.Fatalf("nothing is old enough yet: %d %v", n, err)
		}
		n, err = s.DeleteEndedTasks(ctx, []retry.State{retry.Cancelled, retry.Succeeded}, now.Add(time.Hour), 100)
		if err != nil || n != 1 {
			t.Fatalf("delete ended: %d %v", n, err)
		}
		if _, err := s.Task(ctx, res[0].TaskID); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("deleted task still there: %v", err)
		}
		if _, err := s.Task(ctx, res[1].TaskID); err != nil {
			t.Fatalf("active task deleted: %v", err)
		}
	})
}

// exhausted stores n tasks and ends them as dead letters, returning their ids.
func (f fixture) exhausted(t *testing.T, prefix string, n int) []int64 {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	batch := make([]storage.NewTask, n)
	for i := range batch {
		batch[i] = f.task(fmt.Sprintf("%s-%d", prefix, i), now.Add(-time.Minute))
	}
	if _, err := f.s.Ingest(ctx, batch); err != nil {
		t.Fatal(err)
	}
	claims, err := f.s.Claim(ctx, storage.ClaimParams{Kind: retry.KindReplay, Buckets: testkit.AllBuckets(), DueBy: now,
		PerBucket: n, Token: 42, Node: "n", Deadline: now.Add(time.Minute)})
	if err != nil || len(claims) != n {
		t.Fatalf("claimed %d of %d: %v", len(claims), n, err)
	}
	ids := make([]int64, n)
	settle := make([]retry.Settlement, n)
	for i := range claims {
		ids[i] = claims[i].TaskID
		settle[i] = retry.Settlement{Kind: retry.KindReplay, TaskID: claims[i].TaskID, Token: claims[i].Token,
			State: retry.Exhausted, Attempts: 1, NextAt: now, LastError: "gave up", EndedAt: &now}
	}
	if _, err := f.s.Settle(ctx, settle); err != nil {
		t.Fatal(err)
	}
	return ids
}

// Retention deletes dead letters only while they are dead letters: one an operator replays
// while the janitor runs is either replayed (and kept) or deleted (and not replayed), never
// reported replayed and then deleted.
func TestRetentionNeverDeletesATaskReplayedMeanwhile(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := setup(t, s)
		for round := range 10 {
			ids := f.exhausted(t, fmt.Sprint("r", round), 40)
			var (
				wg       sync.WaitGroup
				replayed storage.ActionResult
				rerr     error
			)
			wg.Add(2)
			go func() {
				defer wg.Done()
				replayed, rerr = s.Apply(ctx, storage.Replay, ids, time.Time{})
			}()
			go func() {
				defer wg.Done()
				if _, err := s.DeleteEndedTasks(ctx, []retry.State{retry.Exhausted}, time.Now().Add(time.Hour), 1000); err != nil {
					t.Error(err)
				}
			}()
			wg.Wait()
			if rerr != nil {
				t.Fatal(rerr)
			}
			waiting, err := s.TaskIDs(ctx, storage.TaskFilter{States: []retry.State{retry.Waiting}}, 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(waiting)) != replayed.Changed {
				t.Fatalf("round %d: %d dead letters replayed, but %d tasks wait: retention deleted replayed tasks",
					round, replayed.Changed, len(waiting))
			}
			// Clear the round's survivors away.
			if _, err := s.Apply(ctx, storage.Cancel, waiting, time.Time{}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.DeleteEndedTasks(ctx, []retry.State{retry.Cancelled}, time.Now().Add(time.Hour), 1000); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func TestInstanceIDsCannotBeTakenFromALiveInstanceOfAnotherGroup(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := setup(t, s)
		other, err := s.CreateGroup(ctx, retry.Group{NamespaceID: f.group.NamespaceID, Name: "payments", Token: "0123456789abcdef0123", Enabled: true})
		if err != nil {
			t.Fatal(err)
		}
		live := time.Now().Add(-time.Minute)
		if err := s.UpsertInstance(ctx, retry.Instance{ID: "i1", GroupID: f.group.ID, ExecutorURL: "http://a"}, live); err != nil {
			t.Fatal(err)
		}
		// The same group registers again: fine.
		if err := s.UpsertInstance(ctx, retry.Instance{ID: "i1", GroupID: f.group.ID, ExecutorURL: "http://a2"}, live); err != nil {
			t.Fatal(err)
		}
		if err := s.UpsertInstance(ctx, retry.Instance{ID: "i1", GroupID: other.ID, ExecutorURL: "http://b"}, live); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("another group took a live instance id: %v", err)
		}
		insts, err := s.LiveInstances(ctx, live)
		if err != nil {
			t.Fatal(err)
		}
		if len(insts) != 1 || insts[0].GroupID != f.group.ID || insts[0].ExecutorURL != "http://a2" {
			t.Fatalf("instances: %+v", insts)
		}
		// Once the first is silent, the id may be reused.
		if err := s.UpsertInstance(ctx, retry.Instance{ID: "i1", GroupID: other.ID, ExecutorURL: "http://b"}, time.Now().Add(time.Minute)); err != nil {
			t.Fatalf("a silent instance's id could not be reused: %v", err)
		}
	})
}

// The helpers below fail the test on any error.

func ingest(t *testing.T, s *storage.Store, tasks ...storage.NewTask) []storage.IngestResult {
	t.Helper()
	res, err := s.Ingest(context.Background(), tasks)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func claim(t *testing.T, s *storage.Store, p storage.ClaimParams) []retry.Claim {
	t.Helper()
	claims, err := s.Claim(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return claims
}

func apply(t *testing.T, s *storage.Store, action storage.Action, ids []int64, at time.Time) storage.ActionResult {
	t.Helper()
	r, err := s.Apply(context.Background(), action, ids, at)
	if err != nil {
		t.Fatalf("%s: %v", action, err)
	}
	return r
}

func compile(t *testing.T, sc retry.Scene) retry.Policies {
	t.Helper()
	p, err := sc.Compile()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// rollback rolls tx back unless it has ended already.
func rollback(t *testing.T, tx *sql.Tx) {
	t.Helper()
	if err := tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		t.Error(err)
	}
}

func TestWriters(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		s := storagetest.Open(t, target)
		want := 4
		if target.Name == config.SQLite {
			want = 1
		}
		if got := s.Writers(4); got != want {
			t.Fatalf("%d writers on %s, want %d", got, target.Name, want)
		}
		if got := s.Writers(0); got != 1 {
			t.Fatalf("%d writers asked for none, want 1", got)
		}
	})
}

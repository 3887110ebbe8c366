package scheduler_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/config"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/scheduler"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// end settles every task due now as of an hour ago: succeeded, or exhausted when fail is set.
func (f *fixture) end(fail bool) {
	f.T.Helper()
	claims := f.Claim(retry.KindReplay, "node-1", time.Now(), time.Now().Add(time.Minute))
	outcome := retry.OutcomeSucceeded
	if fail {
		outcome = retry.OutcomeFailed
	}
	if n := f.settle(claims, outcome, time.Now().Add(-time.Hour)); n != int64(len(claims)) {
		f.T.Fatalf("settled %d of %d", n, len(claims))
	}
}

func (f *fixture) gone(id int64) bool {
	f.T.Helper()
	_, err := f.Store.Task(context.Background(), id)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		f.T.Fatal(err)
	}
	return errors.Is(err, storage.ErrNotFound)
}

func TestJanitorDeletesOldEndedTasksInBatchesAndKeepsTheRest(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		due := time.Now().Add(-2 * time.Hour)
		f := newFixture(t, s, func(sc *retry.Scene) { sc.MaxAttempts = 1 })
		succeeded := f.addMany(1, 7, due)
		f.end(false)
		dead := f.addMany(1, 2, due)
		f.end(true)
		live := f.addMany(1, 2, time.Now().Add(time.Hour))
		// A succeeded task whose callback has yet to run stays, however old.
		cb := newFixture(t, s, func(sc *retry.Scene) { sc.Callback.Enabled = true })
		pending := cb.addMany(2, 1, due)[0]
		cb.end(false)

		j := newJanitor(t, s, config.Retention{Succeeded: 30 * time.Minute, DeadLetters: 0, Attempts: 0, Batch: 3}, time.Hour)
		sw, err := j.Exec(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if sw.Ended != 7 || sw.DeadLetters != 0 || sw.Attempts != 0 {
			t.Fatalf("swept %+v; want the 7 old succeeded tasks, over several batches of 3, and nothing else", sw)
		}
		for _, id := range succeeded {
			if !f.gone(id) || len(f.Attempts(id)) != 0 {
				t.Fatalf("old succeeded task %d or its attempts kept", id)
			}
		}
		for _, id := range append(append(dead, live...), pending) {
			if f.gone(id) {
				t.Fatalf("task %d deleted; dead letters (retention 0), live tasks and pending callbacks stay", id)
			}
		}
		if tk := f.Task(dead[0]); tk.State != retry.Exhausted || len(f.Attempts(dead[0])) != 1 {
			t.Fatalf("kept dead letter is %s with %d attempt records", tk.State, len(f.Attempts(dead[0])))
		}

		// Dead-letter retention set: old dead letters go too. Recent ended tasks stay.
		recent := f.addMany(1, 1, time.Now().Add(-time.Minute))[0]
		claims := f.Claim(retry.KindReplay, "node-1", time.Now(), time.Now().Add(time.Minute))
		f.settle(claims, retry.OutcomeFailed, time.Now())
		j = newJanitor(t, s, config.Retention{Succeeded: 30 * time.Minute, DeadLetters: 30 * time.Minute, Batch: 1}, time.Hour)
		if sw, err = j.Exec(ctx); err != nil || sw.DeadLetters != 2 || sw.Ended != 0 {
			t.Fatalf("swept %+v (%v); want the 2 old dead letters", sw, err)
		}
		if f.gone(recent) || !f.gone(dead[0]) || !f.gone(dead[1]) {
			t.Fatal("dead-letter retention deleted the wrong tasks")
		}
	})
}

func TestJanitorPrunesOldAttemptsAndForgetsSilentInstancesAndNodes(t *testing.T) {
	t.Parallel()
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		f := newFixture(t, s, nil)
		// Failed attempts an hour ago leave the tasks waiting, with old attempt records; one
		// task's attempt is recent.
		ids := f.addMany(4, 5, time.Now().Add(-2*time.Hour))
		recent := f.addMany(4, 1, time.Now().Add(-time.Minute))[0]
		var old, young []retry.Claim
		for _, c := range f.Claim(retry.KindReplay, "node-1", time.Now(), time.Now().Add(time.Minute)) {
			if c.TaskID == recent {
				young = append(young, c)
			} else {
				old = append(old, c)
			}
		}
		f.settle(old, retry.OutcomeFailed, time.Now().Add(-time.Hour))
		f.settle(young, retry.OutcomeFailed, time.Now())

		if err := s.UpsertInstance(ctx, retry.Instance{ID: "i-old", GroupID: f.Group.ID, ExecutorURL: "http://x.invalid"}, time.Now().Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		if err := s.HeartbeatNode(ctx, retry.Node{ID: "node-old", StartedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
		// They are older than the janitor's forget-after (700 ms) as its clock reads; the next
		// two, listed once the wall clock has passed the cut-off, are younger.
		cutoff := time.Now().Add(5 * time.Millisecond)
		testkit.WaitUntil(t, 10*time.Second, "the clock to pass the cut-off", func() bool {
			return time.Now().After(cutoff.Add(2 * time.Millisecond))
		})
		if err := s.UpsertInstance(ctx, retry.Instance{ID: "i-new", GroupID: f.Group.ID, ExecutorURL: "http://y.invalid"}, time.Now().Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		if err := s.HeartbeatNode(ctx, retry.Node{ID: "node-new", StartedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}

		j, err := scheduler.NewJanitor(scheduler.JanitorParams{Store: s, Retention: config.Retention{Attempts: 30 * time.Minute, Batch: 2},
			ForgetAfter: 700 * time.Millisecond, Now: func() time.Time { return cutoff.Add(700 * time.Millisecond) }, Log: testkit.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		sw, err := j.Exec(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if sw.Attempts != 5 || sw.Instances != 1 || sw.Ended != 0 {
			t.Fatalf("swept %+v; want the 5 old attempt records and the silent instance", sw)
		}
		for _, id := range ids {
			if tk := f.Task(id); tk.State != retry.Waiting || tk.Attempts != 1 || len(f.Attempts(id)) != 0 {
				t.Fatalf("task %d: %s with %d attempts and %d records; want the task kept, its old records gone",
					id, tk.State, tk.Attempts, len(f.Attempts(id)))
			}
		}
		if len(f.Attempts(recent)) != 1 {
			t.Fatal("a recent attempt record was deleted")
		}
		instances, err := s.LiveInstances(ctx, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if len(instances) != 1 || instances[0].ID != "i-new" {
			t.Fatalf("instances left %+v, want only i-new", instances)
		}
		nodes, err := s.LiveNodes(ctx, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes) != 1 || nodes[0].ID != "node-new" {
			t.Fatalf("nodes left %+v, want only node-new", nodes)
		}
	})
}

func newJanitor(t *testing.T, s *storage.Store, r config.Retention, forgetAfter time.Duration) *scheduler.Janitor {
	t.Helper()
	j, err := scheduler.NewJanitor(scheduler.JanitorParams{Store: s, Retention: r, ForgetAfter: forgetAfter, Log: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

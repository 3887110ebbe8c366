package ops_test

import (
	"context"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/ops"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// startRunner starts a runner for node, stopped when the test ends.
func startRunner(t *testing.T, s *storage.Store, node string, rate int, lease time.Duration) *ops.Runner {
	t.Helper()
	r := ops.NewRunner(ops.RunnerParams{Store: s, NodeID: node, Rate: rate, Interval: 50 * time.Millisecond,
		Lease: lease, Log: testkit.Logger(t)})
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop(context.Background()) })
	return r
}

// newJob makes a job acting on every task of the fixture's group.
func newJob(t *testing.T, s *storage.Store, f *testkit.Fixture, action retry.Action) storage.Job {
	t.Helper()
	filter := storage.TaskFilter{GroupID: f.Group.ID}
	total, err := s.CountTasks(t.Context(), filter)
	if err != nil {
		t.Fatal(err)
	}
	maxID, err := s.MaxTaskID(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	j, err := s.CreateJob(t.Context(), storage.Job{Action: action, NamespaceID: f.Group.NamespaceID, CreatedBy: "tester",
		Request: storage.JobRequest{Filter: &filter}, Total: total, MaxTaskID: maxID})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func job(t *testing.T, s *storage.Store, id int64) storage.Job {
	t.Helper()
	j, err := s.Job(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// waitJob waits until the job satisfies ok, checking that its progress never goes back.
func waitJob(t *testing.T, s *storage.Store, id int64, what string, ok func(storage.Job) bool) storage.Job {
	t.Helper()
	var j storage.Job
	var done int64
	testkit.WaitEvery(t, 10*time.Millisecond, 60*time.Second, what, func() bool {
		j = job(t, s, id)
		if j.Done < done {
			t.Fatalf("job %d went back from %d to %d done", id, done, j.Done)
		}
		done = j.Done
		return ok(j)
	})
	return j
}

func countState(t *testing.T, s *storage.Store, f *testkit.Fixture, st retry.State) int64 {
	t.Helper()
	n, err := s.CountTasks(context.Background(), storage.TaskFilter{GroupID: f.Group.ID, States: []retry.State{st}})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func ended(j storage.Job) bool { return j.Ended() }

// A filter job works through every match, the tasks made after it excepted, and ends done with
// its counts in its row and in the audit log.
func TestRunnerFinishesAFilterJob(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := testkit.NewFixture(t, s, "shop", "0123456789abcdef0123", nil)
		n := 3*ops.BatchSize + 17
		f.Add(time.Now().Add(time.Hour), keys("k", n)...)
		j := newJob(t, s, f, retry.Pause)
		late := f.Add(time.Now().Add(time.Hour), "made-after-the-job")
		startRunner(t, s, "node-a", 0, 0)
		j = waitJob(t, s, j.ID, "the job ends", ended)
		if j.State != storage.JobDone || j.Done != int64(n) || j.Total != int64(n) || j.Failed != 0 || j.EndedAt == nil {
			t.Fatalf("job %+v; want done with all %d", j, n)
		}
		if got := countState(t, s, f, retry.Paused); got != int64(n) {
			t.Fatalf("%d paused, want %d", got, n)
		}
		if tk := f.Task(late[0]); tk.State != retry.Waiting {
			t.Fatalf("a task made after the job was %s", tk.State)
		}
		audit, err := s.ListAudit(t.Context(), storage.AuditFilter{Action: ops.JobEndAction}, 1)
		if err != nil || len(audit) != 1 || audit[0].Actor != "tester" || audit[0].Outcome != "ok" {
			t.Fatalf("audit of the end: %+v %v", audit, err)
		}
	})
}

// An id job acts on its tasks; those in a state the action does not apply to count as failed.
func TestRunnerFinishesAnIDJob(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := testkit.NewFixture(t, s, "shop", "0123456789abcdef0123", nil)
		ids := f.Add(time.Now().Add(time.Hour), keys("k", ops.BatchSize+3)...)
		if _, err := s.Apply(t.Context(), retry.Pause, ids[:2], time.Time{}); err != nil {
			t.Fatal(err)
		}
		j, err := s.CreateJob(t.Context(), storage.Job{Action: retry.Resume, CreatedBy: "token:ci",
			Request: storage.JobRequest{IDs: ids[:4]}, Total: 4})
		if err != nil {
			t.Fatal(err)
		}
		r := startRunner(t, s, "node-a", 0, 0)
		r.Wake()
		j = waitJob(t, s, j.ID, "the job ends", ended)
		if j.State != storage.JobDone || j.Done != 4 || j.Failed != 2 {
			t.Fatalf("job %+v; want 4 done, 2 of them failed", j)
		}
		if got := countState(t, s, f, retry.Paused); got != 0 {
			t.Fatalf("%d still paused", got)
		}
	})
}

// A cancelled job stops before its next batch: what it did stays, nothing more is done.
func TestRunnerStopsACancelledJob(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		f := testkit.NewFixture(t, s, "shop", "0123456789abcdef0123", nil)
		n := 600
		f.Add(time.Now().Add(time.Hour), keys("k", n)...)
		j := newJob(t, s, f, retry.Pause)
		startRunner(t, s, "node-a", 150, 0) // batches of 150 a second: 4 s for the whole
		waitJob(t, s, j.ID, "some progress", func(j storage.Job) bool { return j.Done > 0 })
		if _, err := s.CancelJob(t.Context(), j.ID); err != nil {
			t.Fatal(err)
		}
		// The runner drops it: its lease is let go of without a further batch.
		testkit.WaitUntil(t, 10*time.Second, "the runner drops the job", func() bool {
			return job(t, s, j.ID).Owner == "" && countState(t, s, f, retry.Paused) == job(t, s, j.ID).Done
		})
		j = job(t, s, j.ID)
		if j.State != storage.JobCancelled || j.Done >= int64(n) || j.Failed != 0 {
			t.Fatalf("job %+v; want cancelled part way", j)
		}
		if got := countState(t, s, f, retry.Paused); got != j.Done {
			t.Fatalf("%d paused, the job says %d done", got, j.Done)
		}
	})
}

// A job whose node stops, gracefully or as in a crash, is taken up by another node from its
// cursor and finished, each task acted on exactly once.
func TestRunnerJobIsTakenOver(t *testing.T) {
	for _, how := range []string{"stop", "kill"} {
		t.Run(how, func(t *testing.T) {
			storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
				f := testkit.NewFixture(t, s, "shop", "0123456789abcdef0123", nil)
				n := 600
				f.Add(time.Now().Add(time.Hour), keys("k", n)...)
				j := newJob(t, s, f, retry.Pause)
				lease := time.Second
				a := startRunner(t, s, "node-a", 150, lease) // batches of 150 a second
				waitJob(t, s, j.ID, "node a works on it", func(j storage.Job) bool { return j.Done > 0 && j.Owner == "node-a" })
				if how == "stop" {
					a.Stop(t.Context())
					if j := job(t, s, j.ID); j.Owner != "" || j.State != storage.JobRunning {
						t.Fatalf("a stopped runner left %+v; want it running, no one's", j)
					}
				} else {
					a.Kill()
				}
				mid := job(t, s, j.ID)
				if mid.Done >= int64(n) {
					t.Fatalf("node a finished the job before it stopped: %+v", mid)
				}
				startRunner(t, s, "node-b", 0, lease)
				j = waitJob(t, s, j.ID, "node b finishes it", ended)
				// A batch acted on twice would find its tasks paused already, and count them failed.
				if j.State != storage.JobDone || j.Done != int64(n) || j.Failed != 0 {
					t.Fatalf("job %+v; want all %d done once", j, n)
				}
				if got := countState(t, s, f, retry.Paused); got != int64(n) {
					t.Fatalf("%d paused, want %d", got, n)
				}
			})
		})
	}
}

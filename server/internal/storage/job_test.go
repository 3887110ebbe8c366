package storage_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

func jobKeys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("job-%d", i)
	}
	return out
}

// A job is claimed by one node at a time, worked through in batches that move its cursor with
// the tasks' changes, and taken over from its cursor once its holder's lease has passed.
func TestJobClaimBatchAndTakeOver(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := t.Context()
		f := testkit.NewFixture(t, s, "shop", "0123456789abcdef0123", nil)
		ids := f.Add(time.Now().Add(time.Hour), jobKeys(6)...)
		maxID, err := s.MaxTaskID(ctx)
		if err != nil || maxID != ids[5] {
			t.Fatalf("max task id %d, %v; want %d", maxID, err, ids[5])
		}
		j, err := s.CreateJob(ctx, storage.Job{Action: retry.Pause, CreatedBy: "ops",
			Request: storage.JobRequest{Filter: &storage.TaskFilter{GroupID: f.Group.ID}}, Total: 6, MaxTaskID: maxID})
		if err != nil {
			t.Fatal(err)
		}
		if j.State != storage.JobRunning || j.Owner != "" || j.Request.Filter.GroupID != f.Group.ID {
			t.Fatalf("created %+v", j)
		}
		now := time.Now()
		a, ok, err := s.ClaimJob(ctx, "node-a", now, now.Add(time.Minute))
		if err != nil || !ok || a.ID != j.ID || a.Owner != "node-a" {
			t.Fatalf("claim: %+v %v %v", a, ok, err)
		}
		if _, ok, err := s.ClaimJob(ctx, "node-b", now, now.Add(time.Minute)); ok || err != nil {
			t.Fatalf("a held job was claimed again: %v %v", ok, err)
		}
		// A task already paused counts as failed: the action does not apply to it.
		if _, err := s.Apply(ctx, retry.Pause, ids[1:2], time.Time{}); err != nil {
			t.Fatal(err)
		}
		res, err := s.ApplyJobBatch(ctx, storage.JobBatch{Job: a, Node: "node-a", IDs: ids[:3], LeaseUntil: now.Add(time.Second)})
		if err != nil || res.Changed != 2 {
			t.Fatalf("batch: %+v %v", res, err)
		}
		// A batch from a stale cursor is refused and changes nothing.
		if _, err := s.ApplyJobBatch(ctx, storage.JobBatch{Job: a, Node: "node-a", IDs: ids[3:4],
			LeaseUntil: now.Add(time.Minute)}); !errors.Is(err, storage.ErrJobLost) {
			t.Fatalf("stale batch: %v", err)
		}
		if tk := f.Task(ids[3]); tk.State != retry.Waiting {
			t.Fatalf("a refused batch changed a task: %s", tk.State)
		}
		got, err := s.Job(ctx, j.ID)
		if err != nil || got.Done != 3 || got.Failed != 1 || got.Cursor != ids[2] {
			t.Fatalf("after a batch: %+v %v", got, err)
		}
		// Node a's lease passes: node b takes the job over from its cursor, and a is locked out.
		later := now.Add(2 * time.Second)
		b, ok, err := s.ClaimJob(ctx, "node-b", later, later.Add(time.Minute))
		if err != nil || !ok || b.Owner != "node-b" || b.Cursor != ids[2] {
			t.Fatalf("take over: %+v %v %v", b, ok, err)
		}
		if _, err := s.ApplyJobBatch(ctx, storage.JobBatch{Job: got, Node: "node-a", IDs: ids[3:],
			LeaseUntil: later.Add(time.Minute)}); !errors.Is(err, storage.ErrJobLost) {
			t.Fatalf("batch of the node that lost the job: %v", err)
		}
		if err := s.RenewJob(ctx, j.ID, "node-a", later.Add(time.Minute)); !errors.Is(err, storage.ErrJobLost) {
			t.Fatalf("renew by the node that lost the job: %v", err)
		}
		if tk := f.Task(ids[3]); tk.State != retry.Waiting {
			t.Fatalf("the node that lost the job changed a task: %s", tk.State)
		}
		if _, err := s.ApplyJobBatch(ctx, storage.JobBatch{Job: b, Node: "node-b", IDs: ids[3:], LeaseUntil: later.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		// Given back, it is free at once; ended, it is no one's.
		if err := s.ReleaseJob(ctx, j.ID, "node-b"); err != nil {
			t.Fatal(err)
		}
		c, ok, err := s.ClaimJob(ctx, "node-c", now, now.Add(time.Minute))
		if err != nil || !ok || c.Done != 6 || c.Failed != 1 {
			t.Fatalf("claim a job given back: %+v %v %v", c, ok, err)
		}
		if err := s.FinishJob(ctx, j.ID, "node-c", storage.JobDone, "", nil); err != nil {
			t.Fatal(err)
		}
		end, err := s.Job(ctx, j.ID)
		if err != nil || end.State != storage.JobDone || end.EndedAt == nil || end.Owner != "" {
			t.Fatalf("finished: %+v %v", end, err)
		}
		if _, ok, _ := s.ClaimJob(ctx, "node-c", later, later); ok {
			t.Fatal("an ended job was claimed")
		}
		if _, err := s.CancelJob(ctx, j.ID); !errors.Is(err, storage.ErrConflict) {
			t.Fatalf("cancel an ended job: %v", err)
		}
		for _, id := range ids {
			if tk := f.Task(id); tk.State != retry.Paused {
				t.Fatalf("task %d is %s", id, tk.State)
			}
		}
	})
}

// A cancelled job's next batch is refused: the tasks stay as they are.
func TestCancelledJobChangesNothingMore(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := t.Context()
		f := testkit.NewFixture(t, s, "shop", "0123456789abcdef0123", nil)
		ids := f.Add(time.Now().Add(time.Hour), jobKeys(3)...)
		j, err := s.CreateJob(ctx, storage.Job{Action: retry.Cancel, CreatedBy: "ops", NamespaceID: f.Group.NamespaceID,
			Request: storage.JobRequest{IDs: []int64{ids[2], ids[0], ids[1], ids[0]}}, Total: 3})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(j.Request.IDs) != fmt.Sprint(ids) {
			t.Fatalf("ids %v, want them sorted without repeats: %v", j.Request.IDs, ids)
		}
		now := time.Now()
		j, _, err = s.ClaimJob(ctx, "node-a", now, now.Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		c, err := s.CancelJob(ctx, j.ID)
		if err != nil || c.State != storage.JobCancelled || c.EndedAt == nil {
			t.Fatalf("cancel: %+v %v", c, err)
		}
		if _, err := s.ApplyJobBatch(ctx, storage.JobBatch{Job: j, Node: "node-a", IDs: ids, LeaseUntil: now.Add(time.Minute)}); !errors.Is(err, storage.ErrJobLost) {
			t.Fatalf("batch of a cancelled job: %v", err)
		}
		if err := s.FinishJob(ctx, j.ID, "node-a", storage.JobDone, "", nil); !errors.Is(err, storage.ErrJobLost) {
			t.Fatalf("finish a cancelled job: %v", err)
		}
		if tk := f.Task(ids[0]); tk.State != retry.Waiting {
			t.Fatalf("a cancelled job changed a task: %s", tk.State)
		}
		if _, err := s.Job(ctx, j.ID+100); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("read a job that does not exist: %v", err)
		}
	})
}

// Jobs list newest first, a page at a time, narrowed by state and namespace (or creator).
func TestListJobs(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := t.Context()
		var made []storage.Job
		for i, ns := range []int64{1, 2, 1, 0} {
			j, err := s.CreateJob(ctx, storage.Job{Action: retry.TriggerNow, NamespaceID: ns, CreatedBy: fmt.Sprintf("user-%d", i),
				Request: storage.JobRequest{IDs: []int64{int64(i + 1)}}, Total: 1})
			if err != nil {
				t.Fatal(err)
			}
			made = append(made, j)
		}
		if _, err := s.CancelJob(ctx, made[1].ID); err != nil {
			t.Fatal(err)
		}
		ids := func(jobs []storage.Job) (out []int64) {
			for _, j := range jobs {
				out = append(out, j.ID)
			}
			return out
		}
		tests := []struct {
			name   string
			f      storage.JobFilter
			before int64
			want   []int64
		}{
			{"all", storage.JobFilter{}, 0, []int64{made[3].ID, made[2].ID, made[1].ID, made[0].ID}},
			{"a page on", storage.JobFilter{}, made[2].ID, []int64{made[1].ID, made[0].ID}},
			{"cancelled", storage.JobFilter{States: []storage.JobState{storage.JobCancelled}}, 0, []int64{made[1].ID}},
			{"namespace 1", storage.JobFilter{NamespaceIDs: []int64{1}}, 0, []int64{made[2].ID, made[0].ID}},
			{"namespace 1 or mine", storage.JobFilter{NamespaceIDs: []int64{1}, OrCreatedBy: "user-3"}, 0,
				[]int64{made[3].ID, made[2].ID, made[0].ID}},
			{"no namespace", storage.JobFilter{NamespaceIDs: []int64{}}, 0, nil},
		}
		for _, tt := range tests {
			got, err := s.ListJobs(ctx, tt.f, tt.before, 10)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(ids(got)) != fmt.Sprint(tt.want) {
				t.Errorf("%s: %v, want %v", tt.name, ids(got), tt.want)
			}
		}
	})
}

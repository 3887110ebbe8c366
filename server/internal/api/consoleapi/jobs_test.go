package consoleapi_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
	"github.com/retryhub/retryhub/server/internal/ops"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// runJobs starts a job runner on the env's database, stopped when the test ends.
func (e *env) runJobs(node string, rate int) *ops.Runner {
	e.t.Helper()
	r := ops.NewRunner(ops.RunnerParams{Store: e.store, NodeID: node, Rate: rate, Interval: 20 * time.Millisecond,
		Lease: time.Second, Log: testkit.Logger(e.t)})
	if err := r.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { r.Stop(context.Background()) })
	return r
}

// createJob posts a job as who and returns it; the status must be 202.
func (e *env) createJob(who string, body any) consoleapi.Job {
	e.t.Helper()
	status, out := e.as(who, http.MethodPost, consoleapi.Prefix+"/jobs", body)
	if status != http.StatusAccepted {
		e.t.Fatalf("create job as %s: %d %s", who, status, out)
	}
	return decode[consoleapi.Job](e.t, out)
}

func (e *env) getJob(who string, id int64) consoleapi.Job {
	e.t.Helper()
	status, out := e.as(who, http.MethodGet, fmt.Sprintf("%s/jobs/%d", consoleapi.Prefix, id), nil)
	if status != http.StatusOK {
		e.t.Fatalf("read job %d as %s: %d %s", id, who, status, out)
	}
	return decode[consoleapi.Job](e.t, out)
}

// pollJob reads the job over HTTP until ok, checking that done only grows and never passes
// total; it returns the job and the distinct done counts seen.
func (e *env) pollJob(who string, id int64, what string, ok func(consoleapi.Job) bool) (consoleapi.Job, []int64) {
	e.t.Helper()
	var (
		j    consoleapi.Job
		seen []int64
	)
	testkit.WaitEvery(e.t, 10*time.Millisecond, 60*time.Second, what, func() bool {
		j = e.getJob(who, id)
		if n := len(seen); n > 0 && j.Done < seen[n-1] {
			e.t.Fatalf("job %d went back from %d done to %d", id, seen[n-1], j.Done)
		}
		if j.Done > j.Total {
			e.t.Fatalf("job %d: %d done of %d", id, j.Done, j.Total)
		}
		if n := len(seen); n == 0 || seen[n-1] != j.Done {
			seen = append(seen, j.Done)
		}
		return ok(j)
	})
	return j, seen
}

func jobEnded(j consoleapi.Job) bool { return j.State != "running" }

func (e *env) countIn(f *testkit.Fixture, st retry.State) int64 {
	e.t.Helper()
	n, err := e.store.CountTasks(context.Background(), storage.TaskFilter{GroupID: f.Group.ID, States: []retry.State{st}})
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func manyKeys(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// A job over a filter works through every task it matched, with its progress readable while
// it runs, and ends done with done = total; the tasks outside the filter are left alone.
func TestJobOverAFilter(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		e := newEnv(t, target, false)
		f := e.tasks()
		n := 3*ops.BatchSize + 21
		f.Add(time.Now().Add(time.Hour), manyKeys("bulk", n)...)
		other := e.fixtureIn(e.nsB, "billing").Add(time.Now().Add(time.Hour), "not-mine")
		// Batches of 500 at 500 tasks a second: a batch a second, long enough to read between.
		e.runJobs("node-a", 500)
		j := e.createJob(operatorA, map[string]any{"action": "pause", "filter": map[string]string{"state": "waiting"}})
		if j.State != "running" || j.Total != int64(n) || j.Done != 0 || j.Action != "pause" || j.CreatedBy != operatorA {
			t.Fatalf("created %+v; want running over %d", j, n)
		}
		j, seen := e.pollJob(operatorA, j.ID, "the job ends", jobEnded)
		if j.State != "done" || j.Done != int64(n) || j.Failed != 0 || j.EndedAt == nil {
			t.Fatalf("job %+v; want done with all %d", j, n)
		}
		if !slices.ContainsFunc(seen, func(d int64) bool { return d > 0 && d < int64(n) }) {
			t.Errorf("progress seen %v; want some part way", seen)
		}
		if got := e.countIn(f, retry.Paused); got != int64(n) {
			t.Fatalf("%d paused, want %d", got, n)
		}
		if tk := testkit.Task(t, e.store, other[0]); tk.State != retry.Waiting {
			t.Fatalf("a task of namespace B, which the operator of A does not operate, is %s", tk.State)
		}
		// The end is in the audit log, with its counts.
		end, err := e.store.ListAudit(t.Context(), storage.AuditFilter{Action: ops.JobEndAction}, 1)
		if err != nil || len(end) != 1 || end[0].Actor != operatorA || !strings.Contains(end[0].Detail, fmt.Sprintf("%d of %d", n, n)) {
			t.Fatalf("audit of the end: %+v %v", end, err)
		}
	})
}

// A job over ids acts on those tasks; a task in a state the action does not apply to counts
// as failed. An id that names no task is refused: a task made later could take it, in a
// namespace the caller may not act in.
func TestJobOverIDs(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		e := newEnv(t, target, false)
		dead := []int64{e.taskIn(retry.Exhausted), e.taskIn(retry.Exhausted)}
		waiting := e.taskIn(retry.Waiting)
		e.runJobs("node-a", 0)
		e.wantField(operatorA, http.MethodPost, consoleapi.Prefix+"/jobs", map[string]any{"action": "replay", "ids": []int64{dead[0], 999999}}, "ids")
		// Not even a viewer elsewhere may aim a job at ids that no task has yet.
		e.wantField(viewerA, http.MethodPost, consoleapi.Prefix+"/jobs", map[string]any{"action": "discard", "ids": []int64{999998, 999999}}, "ids")
		j := e.createJob(operatorA, map[string]any{"action": "replay", "ids": []int64{dead[1], dead[0], waiting, dead[0]}})
		if j.Total != 3 {
			t.Fatalf("total %d, want the 3 distinct ids", j.Total)
		}
		j, _ = e.pollJob(viewerA, j.ID, "the job ends", jobEnded)
		if j.State != "done" || j.Done != 3 || j.Failed != 1 {
			t.Fatalf("job %+v; want 3 done, 1 of them failed", j)
		}
		for _, id := range dead {
			if tk := testkit.Task(t, e.store, id); tk.State != retry.Waiting || tk.Attempts != 0 {
				t.Fatalf("task %d after replay: %s, %d attempts", id, tk.State, tk.Attempts)
			}
		}
		// set_next takes its time.
		at := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
		j = e.createJob(operatorA, map[string]any{"action": "set_next", "ids": []int64{waiting}, "at": at})
		e.pollJob(operatorA, j.ID, "the job ends", jobEnded)
		if tk := testkit.Task(t, e.store, waiting); !tk.NextAt.Equal(at) {
			t.Fatalf("next trigger %s, want %s", tk.NextAt, at)
		}
	})
}

// Cancelling a job stops it between batches, with what it did done; an ended job cannot be
// cancelled again.
func TestCancelJob(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		e := newEnv(t, target, false)
		f := e.tasks()
		n := 600
		f.Add(time.Now().Add(time.Hour), manyKeys("bulk", n)...)
		e.runJobs("node-a", 100) // a batch of 100 a second: 6 s for the whole
		j := e.createJob(operatorA, map[string]any{"action": "cancel", "filter": map[string]string{"namespace": "ns-a"}})
		e.pollJob(viewerA, j.ID, "some progress", func(j consoleapi.Job) bool { return j.Done > 0 })
		path := fmt.Sprintf("%s/jobs/%d/cancel", consoleapi.Prefix, j.ID)
		if status, out := e.as(viewerA, http.MethodPost, path, nil); status != http.StatusForbidden {
			t.Fatalf("a viewer cancelled a job: %d %s", status, out)
		}
		status, out := e.as(operatorA, http.MethodPost, path, nil)
		if status != http.StatusOK {
			t.Fatalf("cancel: %d %s", status, out)
		}
		c := decode[consoleapi.Job](t, out)
		if c.State != "cancelled" || c.EndedAt == nil || c.Done >= int64(n) {
			t.Fatalf("cancelled %+v", c)
		}
		// Nothing more happens to the tasks: the runner's next batch is refused.
		testkit.WaitUntil(t, 10*time.Second, "the runner lets the job go", func() bool {
			got, err := e.store.Job(context.Background(), j.ID)
			return err == nil && got.Owner == ""
		})
		after := e.getJob(operatorA, j.ID)
		if after.Done != c.Done || e.countIn(f, retry.Cancelled) != c.Done {
			t.Fatalf("after the cancel: %+v, %d tasks cancelled; want %d", after, e.countIn(f, retry.Cancelled), c.Done)
		}
		if status, out := e.as(operatorA, http.MethodPost, path, nil); status != http.StatusConflict {
			t.Fatalf("cancel an ended job: %d %s", status, out)
		}
		if status, _ := e.as(operatorA, http.MethodPost, consoleapi.Prefix+"/jobs/99999/cancel", nil); status != http.StatusNotFound {
			t.Fatalf("cancel a job that does not exist: %d", status)
		}
	})
}

// Jobs list newest first by cursor, narrowed by state, and only in the namespaces the caller
// reads.
func TestListJobs(t *testing.T) {
	e := newEnv(t, storagetest.SQLite(t), false)
	var ids []int64
	for range 3 {
		ids = append(ids, e.createJob(operatorA, map[string]any{"action": "trigger", "filter": map[string]string{"namespace": "ns-a"}}).ID)
	}
	if status, out := e.as(operatorA, http.MethodPost, fmt.Sprintf("%s/jobs/%d/cancel", consoleapi.Prefix, ids[0]), nil); status != http.StatusOK {
		t.Fatalf("cancel: %d %s", status, out)
	}
	type page struct {
		Items      []consoleapi.Job `json:"items"`
		NextCursor string           `json:"next_cursor"`
	}
	list := func(who, query string) page {
		status, out := e.as(who, http.MethodGet, consoleapi.Prefix+"/jobs?"+query, nil)
		if status != http.StatusOK {
			t.Fatalf("list %s as %s: %d %s", query, who, status, out)
		}
		return decode[page](t, out)
	}
	first := list(viewerA, "limit=2")
	if len(first.Items) != 2 || first.Items[0].ID != ids[2] || first.NextCursor == "" {
		t.Fatalf("first page %+v", first)
	}
	second := list(viewerA, "limit=2&cursor="+first.NextCursor)
	if len(second.Items) != 1 || second.Items[0].ID != ids[0] || second.NextCursor != "" {
		t.Fatalf("second page %+v", second)
	}
	if c := list(global, "state=cancelled"); len(c.Items) != 1 || c.Items[0].ID != ids[0] {
		t.Fatalf("cancelled %+v", c)
	}
	if b := list(adminB, ""); len(b.Items) != 0 {
		t.Fatalf("an admin of B sees jobs of A: %+v", b)
	}
	if status, out := e.as(adminB, http.MethodGet, fmt.Sprintf("%s/jobs/%d", consoleapi.Prefix, ids[1]), nil); status != http.StatusForbidden {
		t.Fatalf("an admin of B read a job of A: %d %s", status, out)
	}
	if status, out := e.as(viewerA, http.MethodGet, consoleapi.Prefix+"/jobs?state=bogus", nil); status != http.StatusBadRequest ||
		decode[errorBody](t, out).Error.Details[0].Field != "state" {
		t.Fatalf("a bad state: %d %s", status, out)
	}
}

// Bad requests are answered 400 naming the field, and change nothing; a viewer may not make a
// job.
func TestCreateJobRefusesBadInput(t *testing.T) {
	e := newEnv(t, storagetest.SQLite(t), false)
	id := e.taskIn(retry.Waiting)
	b := e.fixtureIn(e.nsB, "billing").Add(time.Now().Add(time.Hour), "of-b")[0]
	tests := []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"neither ids nor filter", map[string]any{"action": "pause"}, "ids"},
		{"both ids and filter", map[string]any{"action": "pause", "ids": []int64{id}, "filter": map[string]string{}}, "filter"},
		{"an unknown action", map[string]any{"action": "explode", "ids": []int64{id}}, "action"},
		{"no action", map[string]any{"ids": []int64{id}}, "action"},
		{"set_next without a time", map[string]any{"action": "set_next", "ids": []int64{id}}, "at"},
		{"a time without set_next", map[string]any{"action": "pause", "ids": []int64{id}, "at": time.Now()}, "at"},
		{"a bad id", map[string]any{"action": "pause", "ids": []int64{id, 0}}, "ids[1]"},
		{"a bad state", map[string]any{"action": "pause", "filter": map[string]string{"state": "sleeping"}}, "filter.state"},
		{"an unknown namespace", map[string]any{"action": "pause", "filter": map[string]string{"namespace": "nope"}}, "filter.namespace"},
		{"a bad arg", map[string]any{"action": "pause", "filter": map[string]string{"arg": "orderId"}}, "filter.arg"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, out := e.as(operatorA, http.MethodPost, consoleapi.Prefix+"/jobs", tt.body)
			if status != http.StatusBadRequest {
				t.Fatalf("%d %s, want 400", status, out)
			}
			eb := decode[errorBody](t, out)
			if len(eb.Error.Details) == 0 || eb.Error.Details[0].Field != tt.field {
				t.Fatalf("error %s, want it to name %s", out, tt.field)
			}
		})
	}
	for who, body := range map[string]map[string]any{
		viewerA:   {"action": "pause", "filter": map[string]string{"namespace": "ns-a"}},
		operatorA: {"action": "pause", "ids": []int64{id, b}}, // b is in namespace B
	} {
		if status, out := e.as(who, http.MethodPost, consoleapi.Prefix+"/jobs", body); status != http.StatusForbidden {
			t.Fatalf("%s made a job %v: %d %s", who, body, status, out)
		}
	}
	jobs, err := e.store.ListJobs(context.Background(), storage.JobFilter{}, 0, 10)
	if err != nil || len(jobs) != 0 {
		t.Fatalf("refused requests made jobs: %+v %v", jobs, err)
	}
}

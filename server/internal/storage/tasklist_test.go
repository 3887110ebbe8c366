package storage_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// listWorld is the tasks of the task-list tests: two namespaces, a scene in each and a second
// scene in the first; tasks spread over them with varied errors, arguments, due times and
// states (waiting, paused, cancelled).
type listWorld struct {
	a, b   *testkit.Fixture
	second retry.Scene // the first group's second scene
}

// fillList ingests n tasks over the three scenes of w in batches and pauses or cancels some.
func fillList(t *testing.T, s *storage.Store, n int) listWorld {
	t.Helper()
	ctx := context.Background()
	w := listWorld{a: testkit.NewFixture(t, s, "shop", "token-0123456789abcdef", nil),
		b: testkit.NewFixture(t, s, "billing", "token-abcdef0123456789", nil)}
	second, err := s.CreateScene(ctx, retry.DefaultScene(w.a.Group.ID, "audit"))
	if err != nil {
		t.Fatal(err)
	}
	w.second = second
	scenes := []retry.Scene{w.a.Scene, w.second, w.b.Scene}
	base := time.Now().Add(time.Hour).Truncate(time.Second)
	var paused, cancelled []int64
	for first := 0; first < n; first += 1000 {
		var batch []storage.NewTask
		for i := first; i < min(first+1000, n); i++ {
			sc := scenes[i%3]
			key := fmt.Sprintf("order-%d", i)
			errText := "partner timed out"
			if i%17 == 0 {
				errText = fmt.Sprintf("order %d not found", i)
			}
			batch = append(batch, storage.NewTask{GroupID: sc.GroupID, SceneID: sc.ID, Bucket: retry.BucketOf(key, storagetest.Buckets),
				Key: key, Args: []byte(fmt.Sprintf(`{"orderId":"%d","kind":"k%d"}`, i, i%5)), Error: errText, LocalAttempts: 1,
				State: retry.Waiting, NextAt: base.Add(time.Duration((i*7919)%5000) * time.Second)})
		}
		res, err := s.Ingest(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		for j, r := range res {
			switch (first + j) % 10 {
			case 3:
				paused = append(paused, r.TaskID)
			case 7:
				cancelled = append(cancelled, r.TaskID)
			}
		}
	}
	for _, a := range []struct {
		action retry.Action
		ids    []int64
	}{{storage.Pause, paused}, {storage.Cancel, cancelled}} {
		for len(a.ids) > 0 {
			k := min(len(a.ids), 500)
			if _, err := s.Apply(ctx, a.action, a.ids[:k], time.Time{}); err != nil {
				t.Fatal(err)
			}
			a.ids = a.ids[k:]
		}
	}
	return w
}

// listShape is one list the console asks for.
type listShape struct {
	name  string
	f     storage.TaskFilter
	o     storage.TaskOrder
	after *storage.TaskCursor
	// want is the index every read of rh_task may use besides the primary key, and that one
	// of them must use ("PRIMARY" for the primary key alone; "" for any index).
	want string
	// also are more indexes the optimizer may choose for a read that is bounded anyway.
	also []string
}

func listShapes(w listWorld, now time.Time) []listShape {
	ns := []int64{w.a.Group.NamespaceID}
	from, to := now.Add(-time.Hour), now.Add(time.Hour)
	sc := []int64{w.a.Scene.ID}
	return []listShape{
		{name: "newest first", want: "PRIMARY"},
		{name: "newest first, next page", after: &storage.TaskCursor{ID: 2000}, want: "PRIMARY"},
		{name: "a namespace", f: storage.TaskFilter{NamespaceIDs: ns}, want: "idx_task_scene"},
		{name: "a group", f: storage.TaskFilter{GroupID: w.a.Group.ID}, want: "idx_task_scene"},
		{name: "a scene", f: storage.TaskFilter{SceneIDs: sc}, want: "idx_task_scene"},
		{name: "a scene, next page", f: storage.TaskFilter{SceneIDs: sc}, after: &storage.TaskCursor{ID: 2000}, want: "idx_task_scene"},
		{name: "a scene in a state", f: storage.TaskFilter{SceneIDs: sc, States: []retry.State{retry.Paused}}, want: "idx_task_scene"},
		{name: "a state", f: storage.TaskFilter{States: []retry.State{retry.Exhausted}}, want: "idx_task_scene"},
		{name: "a group's dead letters", f: storage.TaskFilter{GroupID: w.a.Group.ID, States: []retry.State{retry.Exhausted}}, want: "idx_task_scene"},
		{name: "a key", f: storage.TaskFilter{Key: "order-77"}, want: "idx_task_key"},
		{name: "a key in a namespace", f: storage.TaskFilter{Key: "order-77", NamespaceIDs: ns}, want: "idx_task_key"},
		{name: "created in a range", f: storage.TaskFilter{CreatedFrom: &from, CreatedTo: &to}, want: "PRIMARY", also: []string{"idx_task_created"}},
		{name: "error text", f: storage.TaskFilter{ErrorContains: "not found"}, want: "PRIMARY"},
		{name: "error text, next page", f: storage.TaskFilter{ErrorContains: "not found"}, after: &storage.TaskCursor{ID: 20000}, want: "PRIMARY"},
		{name: "error text in a scene", f: storage.TaskFilter{SceneIDs: sc, ErrorContains: "not found"}, want: "PRIMARY", also: []string{"idx_task_scene"}},
		{name: "an argument", f: storage.TaskFilter{Arg: &storage.ArgMatch{Path: "orderId", Value: "42"}}, want: "PRIMARY"},
		{name: "next trigger in a range", f: storage.TaskFilter{NextFrom: &from, NextTo: &to}, want: "PRIMARY"},
		{name: "by due time", o: storage.ByDue, want: "idx_task_due"},
		{name: "by due time, next page", o: storage.ByDue, after: &storage.TaskCursor{Order: storage.ByDue, Due: to, ID: 300}, want: "idx_task_due"},
		{name: "paused by due time", f: storage.TaskFilter{States: []retry.State{retry.Paused}}, o: storage.ByDue, want: "idx_task_due"},
		// Sorted: it costs what its filter selects in the due states, through whichever index
		// the optimizer finds best for the data.
		{name: "a scene by due time", f: storage.TaskFilter{SceneIDs: sc}, o: storage.ByDue},
	}
}

// TestTaskListUsesIndexes checks on MariaDB, with 24,000 tasks analyzed, that every shape of
// the console's task list reads rh_task through the index that bounds it (EXPLAIN of the
// statement ListTaskPage sends), never by a full scan, and that the default order does not sort
// the table. Dropping one of those indexes fails it.
func TestTaskListUsesIndexes(t *testing.T) {
	target := storagetest.MySQL(t)
	s := storagetest.Open(t, target)
	ctx := context.Background()
	w := fillList(t, s, 24000)
	if _, err := rawMySQL(t, target).Exec("ANALYZE TABLE rh_task"); err != nil {
		t.Fatal(err)
	}
	for _, sh := range listShapes(w, time.Now()) {
		rows, err := s.ExplainTaskPage(ctx, sh.f, sh.o, sh.after, 50)
		if err != nil {
			t.Fatalf("%s: %v", sh.name, err)
		}
		allowed := append([]string{"PRIMARY", sh.want}, sh.also...)
		used := false
		for _, r := range rows {
			if r["table"] != "rh_task" && r["table"] != "t" {
				continue
			}
			// A full index scan is bounded only when it is an ordered one cut by the LIMIT.
			if r["key"] == "" || r["type"] == "ALL" || (r["type"] == "index" && r["rows"] != "51") {
				t.Errorf("%s: rh_task read without bounds: %v", sh.name, r)
			}
			if sh.want != "" && !slices.Contains(allowed, r["key"]) {
				t.Errorf("%s: index %s, want %s: %v", sh.name, r["key"], strings.Join(allowed, " or "), r)
			}
			if r["key"] == sh.want {
				used = true
			}
			if sh.want == "PRIMARY" && len(sh.also) == 0 && sh.f.Key == "" && strings.Contains(r["Extra"], "filesort") {
				t.Errorf("%s: sorts the table: %v", sh.name, r)
			}
		}
		if !used && sh.want != "" {
			t.Errorf("%s: no read of rh_task uses %s: %v", sh.name, sh.want, rows)
		}
	}
}

// TestTaskPagesListEachTaskOnce pages through every list shape, on SQLite and MariaDB, with a
// scan window of 50 ids, and checks that the pages hold exactly the tasks the filter matches,
// in the list's order: the merges, windows and created-time narrowing change the cost, never
// the answer.
func TestTaskPagesListEachTaskOnce(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		s.SetScanWindow(50)
		w := fillList(t, s, 600)
		for _, sh := range listShapes(w, time.Now()) {
			if sh.after != nil {
				continue // the shapes from the start cover the pages after
			}
			all, err := s.ListTasks(ctx, sh.f, 0, 100000)
			if err != nil {
				t.Fatal(err)
			}
			var want []int64
			if sh.o == storage.ByDue {
				states := sh.f.States
				if len(states) == 0 {
					states = []retry.State{retry.Waiting}
				}
				all = slices.DeleteFunc(all, func(x retry.Task) bool { return !slices.Contains(states, x.State) })
				slices.SortFunc(all, func(x, y retry.Task) int {
					if c := x.NextAt.Compare(y.NextAt); c != 0 {
						return c
					}
					return int(x.ID - y.ID)
				})
			} else {
				slices.Reverse(all)
			}
			for _, x := range all {
				want = append(want, x.ID)
			}
			var got []int64
			var after *storage.TaskCursor
			partial := false
			for pages := 0; ; pages++ {
				if pages > 1000 {
					t.Fatalf("%s: more than 1000 pages", sh.name)
				}
				page, err := s.ListTaskPage(ctx, sh.f, sh.o, after, 7)
				if err != nil {
					t.Fatalf("%s: %v", sh.name, err)
				}
				for _, x := range page.Tasks {
					got = append(got, x.ID)
				}
				partial = partial || page.Partial
				if page.Next == nil {
					break
				}
				after = page.Next
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s: listed %d tasks %v…, want %d %v…", sh.name, len(got), head(got), len(want), head(want))
			}
			if sh.f.ErrorContains != "" && !partial {
				t.Errorf("%s: no page stopped at the scan window", sh.name)
			}
		}
		if _, err := s.ListTaskPage(ctx, storage.TaskFilter{States: []retry.State{retry.Cancelled}}, storage.ByDue, nil, 10); err == nil {
			t.Error("cancelled tasks listed by due time: want an error")
		}
	})
}

func head(ids []int64) []int64 { return ids[:min(len(ids), 10)] }

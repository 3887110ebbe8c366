package consoleapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// tasks is the fixture of the task tests: group "orders" with scene "notify" in namespace A,
// made on first use.
func (e *env) tasks() *testkit.Fixture {
	e.t.Helper()
	return e.fixtureIn(e.nsA, "orders")
}

func (e *env) fixtureIn(ns retry.Namespace, group string) *testkit.Fixture {
	e.t.Helper()
	ctx := context.Background()
	g, err := e.store.GroupByName(ctx, ns.Name, group)
	if err != nil {
		if g, err = e.store.CreateGroup(ctx, retry.Group{NamespaceID: ns.ID, Name: group,
			Token: "token-of-" + group + "-0123456789", Enabled: true}); err != nil {
			e.t.Fatal(err)
		}
	}
	sc, err := e.store.SceneByName(ctx, g.ID, "notify")
	if err != nil {
		def := retry.DefaultScene(g.ID, "notify")
		testkit.RemoteScene(3, time.Minute, 0, nil)(&def)
		if sc, err = e.store.CreateScene(ctx, def); err != nil {
			e.t.Fatal(err)
		}
	}
	return &testkit.Fixture{T: e.t, Store: e.store, Group: g, Scene: sc}
}

// oldDue is the due time of the tasks taskIn claims: long past, so a claim up to it takes
// only them.
var oldDue = time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)

// taskIn makes a task of the fixture in state (waiting, running or exhausted).
func (e *env) taskIn(st retry.State) int64 {
	e.t.Helper()
	f := e.tasks()
	key := unique("task")
	if st == retry.Waiting {
		return f.Add(time.Now().Add(time.Hour), key)[0]
	}
	id := f.Add(oldDue, key)[0]
	claims := f.Claim(retry.KindReplay, "node-1", oldDue, time.Now().Add(time.Hour))
	if len(claims) != 1 || claims[0].TaskID != id {
		e.t.Fatalf("claimed %+v, want task %d", claims, id)
	}
	if st == retry.Exhausted {
		pol, err := f.Scene.Compile()
		if err != nil {
			e.t.Fatal(err)
		}
		now := time.Now()
		set := retry.SettleReplay(&claims[0], &f.Scene, pol,
			retry.Result{Outcome: retry.OutcomeFailed, Error: "no such order", Permanent: true},
			&retry.Attempt{Kind: retry.KindReplay, Number: 1, InstanceID: "inst-1", NodeID: "node-1", StartedAt: now,
				Duration: 12 * time.Millisecond, Outcome: retry.OutcomeFailed, Error: "no such order"}, now)
		if _, err := e.store.Settle(context.Background(), []retry.Settlement{set}); err != nil {
			e.t.Fatal(err)
		}
	}
	if got := testkit.Task(e.t, e.store, id).State; got != st {
		e.t.Fatalf("task %d is %s, want %s", id, got, st)
	}
	return id
}

type taskList struct {
	Items      []consoleapi.Task `json:"items"`
	NextCursor string            `json:"next_cursor"`
}

type taskDetail struct {
	consoleapi.Task
	Attempts []consoleapi.Attempt `json:"attempts"`
}

// list lists tasks as who with the query, every page of limit, and returns the ids in order.
func (e *env) list(who, query string, limit int) []int64 {
	e.t.Helper()
	return e.listWith(who, query, limit, nil)
}

// listWith is list, calling between (when not nil) after each page.
func (e *env) listWith(who, query string, limit int, between func(page int)) []int64 {
	e.t.Helper()
	var ids []int64
	cursor := ""
	for pages := 0; ; pages++ {
		q := fmt.Sprintf("%s/tasks?limit=%d&%s", consoleapi.Prefix, limit, query)
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		status, body := e.as(who, http.MethodGet, q, nil)
		if status != http.StatusOK {
			e.t.Fatalf("GET %s as %s: %d %s", q, who, status, body)
		}
		page := decode[taskList](e.t, body)
		for _, it := range page.Items {
			ids = append(ids, it.ID)
		}
		if page.NextCursor == "" {
			return ids
		}
		if between != nil {
			between(pages)
		}
		cursor = page.NextCursor
		if pages > 10000 {
			e.t.Fatal("the pages never end")
		}
	}
}

func sameIDs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[int64]int{}
	for _, id := range a {
		seen[id]++
	}
	for _, id := range b {
		if seen[id] == 0 {
			return false
		}
		seen[id]--
	}
	return true
}

// TestTaskListFilters checks that each filter of the task list narrows it to the tasks it
// names, that a caller sees only its namespaces' tasks, and that long arguments are cut.
func TestTaskListFilters(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		e := newEnv(t, target, false)
		ctx := context.Background()
		f := e.tasks()
		other := e.fixtureIn(e.nsA, "billing")
		inB := e.fixtureIn(e.nsB, "orders")
		now := time.Now()
		mk := func(fx *testkit.Fixture, key, args, errText string, due time.Time) int64 {
			res, err := e.store.Ingest(ctx, []storage.NewTask{{GroupID: fx.Group.ID, SceneID: fx.Scene.ID,
				Bucket: retry.BucketOf(key, storagetest.Buckets), Key: key, Args: []byte(args), Error: errText,
				State: retry.Waiting, NextAt: due}})
			if err != nil {
				t.Fatal(err)
			}
			return res[0].TaskID
		}
		o42 := mk(f, "k-42", `{"orderId":42,"customer":{"name":"ann"}}`, "partner timed out", now.Add(time.Hour))
		o43 := mk(f, "k-43", `{"orderId":"43","customer":{"name":"bob"}}`, "connection refused", now.Add(2*time.Hour))
		long := mk(f, "k-long", `{"orderId":44,"note":"`+strings.Repeat("é", 300)+`"}`, "partner timed out", now.Add(3*time.Hour))
		bill := mk(other, "k-bill", `{"invoice":9}`, "partner timed out", now.Add(time.Hour))
		notJSON := mk(f, "k-text", `not json`, "x", now.Add(time.Hour))
		b1 := mk(inB, "k-b", `{"orderId":42}`, "partner timed out", now.Add(time.Hour))
		dead := e.taskIn(retry.Exhausted)
		allA := []int64{o42, o43, long, bill, notJSON, dead}

		cases := []struct {
			query string
			want  []int64
		}{
			{"namespace=ns-a", allA},
			{"", allA}, // a viewer of A: every namespace it may read
			{fmt.Sprintf("group_id=%d", other.Group.ID), []int64{bill}},
			{fmt.Sprintf("scene_id=%d", f.Scene.ID), []int64{o42, o43, long, notJSON, dead}},
			{"state=exhausted", []int64{dead}},
			{"state=waiting,exhausted&namespace=ns-a", allA},
			{"key=k-43", []int64{o43}},
			{"error=" + url.QueryEscape("refused"), []int64{o43}},
			{"error=" + url.QueryEscape("%"), nil},
			{"arg=orderId%3D42", []int64{o42}},
			{"arg=args.orderId%3D43", []int64{o43}},
			{"arg=customer.name%3Dbob", []int64{o43}},
			{"arg=orderId%3D99", nil},
			{"next_from=" + url.QueryEscape(now.Add(90*time.Minute).UTC().Format(time.RFC3339)) +
				"&next_to=" + url.QueryEscape(now.Add(150*time.Minute).UTC().Format(time.RFC3339)), []int64{o43}},
			{"created_from=" + url.QueryEscape(now.Add(time.Hour).UTC().Format(time.RFC3339)), nil},
			{"created_to=" + url.QueryEscape(now.Add(time.Hour).UTC().Format(time.RFC3339)), allA},
		}
		for _, c := range cases {
			if got := e.list(viewerA, c.query, 2); !sameIDs(got, c.want) {
				t.Errorf("%q: %v, want %v", c.query, got, c.want)
			}
		}
		// The count of a filter is the length of its list.
		for _, c := range cases {
			status, body := e.as(viewerA, http.MethodGet, consoleapi.Prefix+"/tasks/count?"+c.query, nil)
			if n := decode[map[string]int64](t, body)["count"]; status != http.StatusOK || n != int64(len(c.want)) {
				t.Errorf("count %q: %d %s, want %d", c.query, status, body, len(c.want))
			}
		}
		if got := e.list(adminB, "", 50); !sameIDs(got, []int64{b1}) {
			t.Errorf("admin of B sees %v, want only %d", got, b1)
		}
		if got := e.list(global, "arg=orderId%3D42", 50); !sameIDs(got, []int64{o42, b1}) {
			t.Errorf("global admin, orderId=42: %v", got)
		}
		if status, body := e.as(adminB, http.MethodGet, consoleapi.Prefix+"/tasks?namespace=ns-a", nil); status != http.StatusForbidden {
			t.Errorf("admin of B lists A: %d %s", status, body)
		}
		for _, q := range []string{"state=lost", "arg=orderId", "arg=a%20b%3D1", "cursor=zz", "order=due&cursor=" +
			url.QueryEscape(storage.TaskCursor{ID: 5}.String()), "namespace=nope", "order=due&state=exhausted"} {
			status, body := e.as(viewerA, http.MethodGet, consoleapi.Prefix+"/tasks?"+q, nil)
			if status != http.StatusBadRequest {
				t.Errorf("%s: %d %s", q, status, body)
				continue
			}
			if eb := decode[errorBody](t, body); len(eb.Error.Details) == 0 || eb.Error.Details[0].Field == "" {
				t.Errorf("%s: no field named: %s", q, body)
			}
		}
		// The list cuts the arguments; the detail has them whole.
		_, body := e.as(viewerA, http.MethodGet, consoleapi.Prefix+"/tasks?key=k-long", nil)
		it := decode[taskList](t, body).Items[0]
		if !it.ArgsTruncated || len(it.Args) > storage.ListArgsBytes || !strings.HasPrefix(it.Args, `{"orderId":44`) {
			t.Errorf("listed args: %d bytes, truncated %v", len(it.Args), it.ArgsTruncated)
		}
		_, body = e.as(viewerA, http.MethodGet, fmt.Sprintf("%s/tasks/%d", consoleapi.Prefix, long), nil)
		if d := decode[taskDetail](t, body); d.ArgsTruncated || !strings.HasSuffix(d.Args, `"}`) || len(d.Args) < 600 {
			t.Errorf("detail args: %d bytes", len(d.Args))
		}
		// Orders: newest first, and by due time.
		if got := e.list(viewerA, fmt.Sprintf("scene_id=%d&state=waiting", f.Scene.ID), 1); fmt.Sprint(got) != fmt.Sprint([]int64{notJSON, long, o43, o42}) {
			t.Errorf("newest first: %v", got)
		}
		if got := e.list(viewerA, fmt.Sprintf("scene_id=%d&state=waiting&order=due", f.Scene.ID), 1); fmt.Sprint(got) != fmt.Sprint([]int64{o42, notJSON, o43, long}) {
			t.Errorf("by due time: %v", got)
		}
	})
}

// TestTaskListPagingWithInserts pages through the list, in both orders, while tasks are added
// between the pages: every task that was there before is listed exactly once, and none twice.
func TestTaskListPagingWithInserts(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		e := newEnv(t, target, false)
		f := e.tasks()
		base := time.Now().Add(time.Hour).Truncate(time.Second)
		var before []int64
		for i := 0; i < 150; i++ {
			// Several tasks share each due time, so the cursor's id breaks ties.
			before = append(before, f.Add(base.Add(time.Duration(i%10)*time.Second), fmt.Sprintf("before-%d", i))...)
		}
		for _, order := range []string{"newest", "due"} {
			// Between pages, tasks are added before and after the page's end, in both orders.
			got := e.listWith(viewerA, "order="+order, 7, func(page int) {
				var batch []storage.NewTask
				for i := 0; i < 3; i++ {
					batch = append(batch, storage.NewTask{GroupID: f.Group.ID, SceneID: f.Scene.ID, Bucket: 1,
						Key: fmt.Sprintf("during-%s-%d-%d", order, page, i), Args: []byte(`{}`), State: retry.Waiting,
						NextAt: base.Add(time.Duration((page+i)%10) * time.Second)})
				}
				if _, err := e.store.Ingest(context.Background(), batch); err != nil {
					t.Fatalf("insert during paging: %v", err)
				}
			})
			seen := map[int64]int{}
			for _, id := range got {
				seen[id]++
				if seen[id] > 1 {
					t.Errorf("%s: task %d listed twice", order, id)
				}
			}
			for _, id := range before {
				if seen[id] != 1 {
					t.Errorf("%s: task %d listed %d times", order, id, seen[id])
				}
			}
		}
	})
}

// TestTaskDetailAndActions reads a task with its attempts, takes each action, and checks that
// an action the task's state does not allow is answered 409 and changes nothing.
func TestTaskDetailAndActions(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		e := newEnv(t, target, false)
		p := consoleapi.Prefix
		act := func(who string, id int64, action string, want int) consoleapi.Task {
			t.Helper()
			status, body := e.as(who, http.MethodPost, fmt.Sprintf("%s/tasks/%d/%s", p, id, action), nil)
			if status != want {
				t.Fatalf("%s task %d: %d, want %d: %s", action, id, status, want, body)
			}
			if status != http.StatusOK {
				return consoleapi.Task{}
			}
			return decode[consoleapi.Task](t, body)
		}
		get := func(id int64) taskDetail {
			t.Helper()
			status, body := e.as(viewerA, http.MethodGet, fmt.Sprintf("%s/tasks/%d", p, id), nil)
			if status != http.StatusOK {
				t.Fatalf("get task %d: %d %s", id, status, body)
			}
			return decode[taskDetail](t, body)
		}

		dead := e.taskIn(retry.Exhausted)
		d := get(dead)
		if d.State != "exhausted" || len(d.Attempts) != 1 || d.Attempts[0].InstanceID != "inst-1" || d.Attempts[0].NodeID != "node-1" ||
			d.Attempts[0].Kind != "replay" || d.Attempts[0].DurationMs != 12 || d.Attempts[0].Error != "no such order" ||
			d.Callback.State == "" {
			t.Fatalf("dead letter detail: %+v", d)
		}
		running := e.taskIn(retry.Running)
		for _, action := range []string{"replay", "discard", "pause", "resume", "trigger"} {
			act(operatorA, running, action, http.StatusConflict)
		}
		if tk := testkit.Task(t, e.store, running); tk.State != retry.Running || tk.ClaimToken == 0 {
			t.Fatalf("a refused action changed the running task: %+v", tk)
		}
		status, body := e.as(operatorA, http.MethodPut, fmt.Sprintf("%s/tasks/%d/args", p, running), map[string]any{"args": []int{1}})
		if status != http.StatusConflict {
			t.Fatalf("edit a running task's args: %d %s", status, body)
		}
		if got := act(operatorA, dead, "replay", http.StatusOK); got.State != "waiting" || got.Attempts != 0 {
			t.Fatalf("replayed: %+v", got)
		}
		act(operatorA, dead, "replay", http.StatusConflict)
		act(viewerA, dead, "pause", http.StatusForbidden)
		act(operatorA, 1<<40, "pause", http.StatusNotFound)
		act(operatorA, dead, "explode", http.StatusBadRequest)
		if got := act(operatorA, dead, "pause", http.StatusOK); got.State != "paused" {
			t.Fatalf("paused: %+v", got)
		}
		if got := act(operatorA, dead, "resume", http.StatusOK); got.State != "waiting" {
			t.Fatalf("resumed: %+v", got)
		}
		at := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Millisecond)
		status, body = e.as(operatorA, http.MethodPut, fmt.Sprintf("%s/tasks/%d/next-at", p, dead), map[string]any{"at": at})
		if got := decode[consoleapi.Task](t, body); status != http.StatusOK || !got.NextAt.Equal(at) {
			t.Fatalf("set next: %d %s", status, body)
		}
		if got := act(operatorA, dead, "trigger", http.StatusOK); !got.NextAt.Before(at) {
			t.Fatalf("triggered: %+v", got)
		}
		status, body = e.as(operatorA, http.MethodPut, fmt.Sprintf("%s/tasks/%d/args", p, dead), map[string]any{"args": map[string]int{"orderId": 43}})
		if status != http.StatusOK || decode[consoleapi.Task](t, body).Args != `{"orderId":43}` {
			t.Fatalf("set args: %d %s", status, body)
		}
		// Bad arguments: not JSON, too big; nothing changes.
		for _, raw := range []string{`{"args": {"a":}`, `{"args": "` + strings.Repeat("x", 300<<10) + `"}`, `{}`} {
			req, _ := http.NewRequest(http.MethodPut, e.srv.URL+fmt.Sprintf("%s/tasks/%d/args", p, dead), strings.NewReader(raw))
			req.Header.Set("Authorization", e.bearer(operatorA))
			req.Header.Set("Content-Type", "application/json")
			r, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			r.Body.Close()
			if r.StatusCode != http.StatusBadRequest {
				t.Errorf("args %.40s…: %d, want 400", raw, r.StatusCode)
			}
		}
		if got := get(dead); got.Args != `{"orderId":43}` {
			t.Fatalf("bad args changed the task: %s", got.Args)
		}
		if got := act(operatorA, dead, "cancel", http.StatusOK); got.State != "cancelled" || got.EndedAt == nil {
			t.Fatalf("cancelled: %+v", got)
		}
		act(operatorA, dead, "cancel", http.StatusConflict)
		// A task made by hand, then the same key again: merged into it.
		e.tasks()
		mk := func(key string) (int, map[string]any) {
			status, body := e.as(operatorA, http.MethodPost, p+"/tasks", map[string]any{"namespace": "ns-a", "group": "orders",
				"scene": "notify", "key": key, "args": map[string]int{"orderId": 5}})
			return status, decode[map[string]any](t, body)
		}
		s1, c1 := mk("hand-1")
		s2, c2 := mk("hand-1")
		if s1 != http.StatusCreated || s2 != http.StatusCreated || c1["id"] != c2["id"] || c1["merged"] != false || c2["merged"] != true {
			t.Fatalf("create: %d %v, again: %d %v", s1, c1, s2, c2)
		}
		if st, _ := mk(""); st != http.StatusCreated {
			t.Fatalf("create without a key: %d", st)
		}
		status, body = e.as(operatorA, http.MethodPost, p+"/tasks", map[string]any{"namespace": "ns-a", "group": "orders",
			"scene": "nope", "args": 1})
		if status != http.StatusNotFound {
			t.Fatalf("create in an unknown scene: %d %s", status, body)
		}
		// Every change is in the audit log, refusals too.
		list, err := e.store.ListAudit(context.Background(), storage.AuditFilter{}, 200)
		if err != nil {
			t.Fatal(err)
		}
		var acts, refused int
		for _, a := range list {
			if a.Action == "tasks-act" {
				acts++
				if a.Outcome == "refused" {
					refused++
				}
			}
		}
		if acts < 10 || refused < 5 {
			t.Fatalf("audit: %d task actions, %d refused", acts, refused)
		}
	})
}

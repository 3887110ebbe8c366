package consoleapi_test

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

type dashboardBody struct {
	Resolution  string                   `json:"resolution"`
	From        time.Time                `json:"from"`
	Until       time.Time                `json:"until"`
	Series      []consoleapi.SceneSeries `json:"series"`
	Truncated   bool                     `json:"truncated"`
	States      map[string]int64         `json:"states"`
	SceneStates []consoleapi.SceneStates `json:"scene_states"`
}

// addScene creates a scene with the default policy in the group.
func (e *env) addScene(g retry.Group, name string) retry.Scene {
	e.t.Helper()
	sc, err := e.store.CreateScene(context.Background(), retry.DefaultScene(g.ID, name))
	if err != nil {
		e.t.Fatal(err)
	}
	return sc
}

// report ingests one report per key in the scene.
func (e *env) report(sc retry.Scene, keys ...string) {
	e.t.Helper()
	batch := make([]storage.NewTask, len(keys))
	for i, k := range keys {
		batch[i] = storage.NewTask{GroupID: sc.GroupID, SceneID: sc.ID, Bucket: retry.BucketOf(k, storagetest.Buckets), Key: k,
			Args: []byte(`{}`), Error: "down", State: retry.Waiting, NextAt: time.Now().Add(-time.Second)}
	}
	if _, err := e.store.Ingest(context.Background(), batch); err != nil {
		e.t.Fatal(err)
	}
}

// TestDashboardSeriesPerSceneFromSummaries: reports and results show in their scene's series;
// a viewer of A sees only A's scenes, a global admin every one; a range after the events is
// empty, a week is answered by the hour, and a range over 90 days or ending before it starts is a 400 naming the parameter.
func TestDashboardSeriesPerSceneFromSummaries(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		e := newEnv(t, target, false)
		ctx := context.Background()
		scA := e.addScene(e.addGroup(e.nsA.ID, "shop"), "pay")
		scB := e.addScene(e.addGroup(e.nsB.ID, "mail"), "send")
		e.report(scA, "o-1", "o-2", "o-1")
		e.report(scB, "m-1")
		now := time.Now()
		claims, err := e.store.Claim(ctx, storage.ClaimParams{Kind: retry.KindReplay, Buckets: testkit.AllBuckets(), DueBy: now,
			PerBucket: 10, Token: 5, Node: "n", Deadline: now.Add(time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		var batch []retry.Settlement
		for _, c := range claims {
			if c.SceneID != scA.ID {
				continue
			}
			batch = append(batch, retry.Settlement{Kind: retry.KindReplay, TaskID: c.TaskID, Token: c.Token, State: retry.Succeeded,
				Attempts: 1, NextAt: now, EndedAt: &now,
				Attempt: &retry.Attempt{Kind: retry.KindReplay, Number: 1, NodeID: "n", StartedAt: now, Outcome: retry.OutcomeSucceeded}})
		}
		if n, err := e.store.Settle(ctx, batch); err != nil || n != 2 {
			t.Fatalf("settled %d: %v", n, err)
		}
		get := func(who, query string) dashboardBody {
			t.Helper()
			status, body := e.as(who, http.MethodGet, consoleapi.Prefix+"/dashboard"+query, nil)
			if status != http.StatusOK {
				t.Fatalf("%s %s: %d %s", who, query, status, body)
			}
			return decode[dashboardBody](t, body)
		}
		a := get(viewerA, "")
		if len(a.Series) != 1 || a.Series[0].SceneID != scA.ID || a.Series[0].Scene != "pay" || a.Series[0].Group != "shop" ||
			a.Series[0].NamespaceID != e.nsA.ID {
			t.Fatalf("viewer of A: %+v", a.Series)
		}
		want := consoleapi.SummaryCounts{Reported: 3, Merged: 1, Replayed: 2, Succeeded: 2}
		if a.Series[0].Totals != want || len(a.Series[0].Points) == 0 {
			t.Errorf("scene pay: totals %+v, want %+v; points %+v", a.Series[0].Totals, want, a.Series[0].Points)
		}
		if a.Until.Sub(a.From) < time.Hour || a.Until.Sub(a.From) > time.Hour+time.Minute {
			t.Errorf("default range %s .. %s", a.From, a.Until)
		}
		all := get(global, "")
		if len(all.Series) != 2 || all.Series[1].SceneID != scB.ID || all.Series[1].Totals != (consoleapi.SummaryCounts{Reported: 1}) {
			t.Errorf("global admin: %+v", all.Series)
		}
		if one := get(global, fmt.Sprintf("?scene_id=%d", scB.ID)); len(one.Series) != 1 || one.Series[0].SceneID != scB.ID {
			t.Errorf("one scene: %+v", one.Series)
		}
		later := now.Add(2 * time.Hour)
		q := "?from=" + url.QueryEscape(later.Format(time.RFC3339)) + "&until=" + url.QueryEscape(later.Add(time.Hour).Format(time.RFC3339))
		if empty := get(global, q); len(empty.Series) != 0 || empty.Resolution != "minute" {
			t.Errorf("a later range: %s %+v", empty.Resolution, empty.Series)
		}
		week := get(viewerA, "?from="+url.QueryEscape(now.Add(-7*24*time.Hour).Format(time.RFC3339)))
		if week.Resolution != "hour" || len(week.Series) != 1 || week.Series[0].Totals != want || week.From.Minute() != 0 ||
			!week.Series[0].Points[0].Minute.Equal(week.Series[0].Points[0].Minute.Truncate(time.Hour)) {
			t.Errorf("a week by the hour: %+v", week)
		}
		for query, field := range map[string]string{
			"?from=" + url.QueryEscape(now.Add(-91*24*time.Hour).Format(time.RFC3339)):                                                     "from",
			"?until=" + url.QueryEscape(now.Add(-2*time.Hour).Format(time.RFC3339)) + "&from=" + url.QueryEscape(now.Format(time.RFC3339)): "until",
		} {
			status, body := e.as(global, http.MethodGet, consoleapi.Prefix+"/dashboard"+query, nil)
			eb := decode[errorBody](t, body)
			if status != http.StatusBadRequest || len(eb.Error.Details) == 0 || eb.Error.Details[0].Field != field {
				t.Errorf("%s: %d %s, want 400 naming %s", query, status, body, field)
			}
		}
		if status, _ := e.as(viewerA, http.MethodGet, fmt.Sprintf("%s/dashboard?namespace_id=%d", consoleapi.Prefix, e.nsB.ID), nil); status != http.StatusForbidden {
			t.Errorf("viewer of A asking for B: %d", status)
		}
	})
}

// counted counts the tasks of the filter per state name in the task table itself, every state
// named, as the dashboard's totals must say.
func (e *env) counted(f storage.TaskFilter) map[string]int64 {
	e.t.Helper()
	out := map[string]int64{}
	for _, st := range retry.States() {
		f.States = []retry.State{st}
		n, err := e.store.CountTasks(context.Background(), f)
		if err != nil {
			e.t.Fatal(err)
		}
		out[st.String()] = n
	}
	return out
}

// TestDashboardTasksByState: the dashboard's tasks by state, in all and per scene, equal a count
// of the tasks after reports, merges, claims, results, actions and a task made by hand, for
// every filter (namespace, group, scene) and only over what the caller may read; an admin of
// every namespace may recount them, no one else.
func TestDashboardTasksByState(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		e := newEnv(t, target, false)
		ctx := context.Background()
		p := consoleapi.Prefix
		shop := e.addGroup(e.nsA.ID, "shop")
		pay, refund := e.addScene(shop, "pay"), e.addScene(e.addGroup(e.nsA.ID, "money"), "refund")
		send := e.addScene(e.addGroup(e.nsB.ID, "mail"), "send")
		e.report(pay, "o-1", "o-2", "o-3", "o-4", "o-1")
		e.report(refund, "r-1", "r-2")
		e.report(send, "m-1")
		now := time.Now()
		claims, err := e.store.Claim(ctx, storage.ClaimParams{Kind: retry.KindReplay, Buckets: testkit.AllBuckets(), DueBy: now,
			PerBucket: 10, Token: 5, Node: "n", Deadline: now.Add(time.Minute)})
		if err != nil || len(claims) != 7 {
			t.Fatalf("claimed %d: %v", len(claims), err)
		}
		byKey := map[string]retry.Claim{}
		for _, c := range claims {
			byKey[c.IdempotencyKey] = c
		}
		settled := func(key string, st retry.State) retry.Settlement {
			c := byKey[key]
			return retry.Settlement{Kind: retry.KindReplay, TaskID: c.TaskID, Token: c.Token, State: st, Attempts: 1, NextAt: now,
				EndedAt: &now, Attempt: &retry.Attempt{Kind: retry.KindReplay, Number: 1, NodeID: "n", StartedAt: now, Outcome: retry.OutcomeFailed}}
		}
		if _, err := e.store.Settle(ctx, []retry.Settlement{settled("o-1", retry.Succeeded), settled("o-2", retry.Exhausted),
			retry.Release(ptr(byKey["o-3"]), now.Add(time.Hour)), settled("r-1", retry.Exhausted)}); err != nil {
			t.Fatal(err)
		}
		if status, body := e.as(operatorA, http.MethodPost, fmt.Sprintf("%s/tasks/%d/replay", p, byKey["o-2"].TaskID), nil); status != http.StatusOK {
			t.Fatalf("replay: %d %s", status, body)
		}
		if status, body := e.as(operatorA, http.MethodPost, fmt.Sprintf("%s/tasks/%d/cancel", p, byKey["r-2"].TaskID), nil); status != http.StatusOK {
			t.Fatalf("cancel: %d %s", status, body)
		}
		if status, body := e.as(operatorA, http.MethodPost, p+"/tasks", map[string]any{"namespace": "ns-a", "group": "shop",
			"scene": "pay", "key": "hand-1", "args": map[string]int{"orderId": 5}}); status != http.StatusCreated {
			t.Fatalf("create: %d %s", status, body)
		}
		get := func(who, query string) dashboardBody {
			t.Helper()
			status, body := e.as(who, http.MethodGet, p+"/dashboard"+query, nil)
			if status != http.StatusOK {
				t.Fatalf("%s %s: %d %s", who, query, status, body)
			}
			return decode[dashboardBody](t, body)
		}
		for _, c := range []struct {
			who, query string
			filter     storage.TaskFilter
			scenes     []int64
		}{
			{viewerA, "", storage.TaskFilter{NamespaceIDs: []int64{e.nsA.ID}}, []int64{pay.ID, refund.ID}},
			{global, "", storage.TaskFilter{}, []int64{pay.ID, refund.ID, send.ID}},
			{global, fmt.Sprintf("?namespace_id=%d", e.nsB.ID), storage.TaskFilter{NamespaceIDs: []int64{e.nsB.ID}}, []int64{send.ID}},
			{viewerA, fmt.Sprintf("?group_id=%d", shop.ID), storage.TaskFilter{GroupID: shop.ID}, []int64{pay.ID}},
			{viewerA, fmt.Sprintf("?scene_id=%d", refund.ID), storage.TaskFilter{SceneIDs: []int64{refund.ID}}, []int64{refund.ID}},
			{viewerA, fmt.Sprintf("?scene_id=%d", send.ID), storage.TaskFilter{SceneIDs: []int64{}, NamespaceIDs: []int64{}}, nil},
		} {
			d := get(c.who, c.query)
			if want := e.counted(c.filter); !maps.Equal(d.States, want) {
				t.Errorf("%s %q: states %v, counted %v", c.who, c.query, d.States, want)
			}
			if len(d.SceneStates) != len(c.scenes) {
				t.Fatalf("%s %q: scene states %+v, want scenes %v", c.who, c.query, d.SceneStates, c.scenes)
			}
			for i, ss := range d.SceneStates {
				if ss.SceneID != c.scenes[i] || !maps.Equal(ss.States, e.counted(storage.TaskFilter{SceneIDs: []int64{ss.SceneID}})) {
					t.Errorf("%s %q: scene %d: %+v", c.who, c.query, c.scenes[i], ss)
				}
			}
		}
		if d := get(viewerA, ""); d.SceneStates[0].Scene != "pay" || d.SceneStates[0].Group != "shop" || d.SceneStates[0].NamespaceID != e.nsA.ID ||
			d.States["waiting"] != 3 || d.States["succeeded"] != 1 || d.States["running"] != 1 || d.States["cancelled"] != 1 || d.States["exhausted"] != 1 {
			t.Errorf("namespace A: %+v", d)
		}
		if status, body := e.as(global, http.MethodPost, p+"/dashboard/recount", nil); status != http.StatusNoContent {
			t.Fatalf("recount: %d %s", status, body)
		}
		if d, want := get(global, ""), e.counted(storage.TaskFilter{}); !maps.Equal(d.States, want) {
			t.Errorf("after a recount: %v, counted %v", d.States, want)
		}
	})
}

func ptr[T any](v T) *T { return &v }

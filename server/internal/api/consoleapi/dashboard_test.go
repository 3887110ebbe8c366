package consoleapi_test

import (
	"context"
	"fmt"
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
	Resolution string                   `json:"resolution"`
	From       time.Time                `json:"from"`
	Until      time.Time                `json:"until"`
	Series     []consoleapi.SceneSeries `json:"series"`
	Truncated  bool                     `json:"truncated"`
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

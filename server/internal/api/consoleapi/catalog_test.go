package consoleapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
)

type page[T any] struct {
	Items     []T   `json:"items"`
	NextAfter int64 `json:"next_after"`
}

type createdGroup struct {
	consoleapi.Group
	Token string `json:"token"`
}

// call sends a request as who and fails the test unless the answer has status want.
func (e *env) call(who, method, path string, body any, want int) []byte {
	e.t.Helper()
	status, out := e.as(who, method, path, body)
	if status != want {
		e.t.Fatalf("%s %s as %s: %d, want %d: %s", method, path, who, status, want, out)
	}
	return out
}

// wantField checks that a 400 names field.
func (e *env) wantField(who, method, path string, body any, field string) {
	e.t.Helper()
	out := e.call(who, method, path, body, http.StatusBadRequest)
	eb := decode[errorBody](e.t, out)
	for _, d := range eb.Error.Details {
		if d.Field == field {
			return
		}
	}
	e.t.Errorf("%s %s %v: 400 %s, want the field %s named", method, path, body, out, field)
}

func TestNamespaces(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		e := newEnv(t, target, false)
		p := consoleapi.Prefix
		ns := decode[consoleapi.Namespace](t, e.call(global, http.MethodPost, p+"/namespaces",
			map[string]any{"name": "ns-c", "description": "third"}, http.StatusCreated))
		if !ns.Enabled || ns.Name != "ns-c" || ns.Description != "third" {
			t.Fatalf("created %+v", ns)
		}
		e.call(global, http.MethodPost, p+"/namespaces", map[string]any{"name": "ns-c"}, http.StatusConflict)
		e.wantField(global, http.MethodPost, p+"/namespaces", map[string]any{"name": "bad name!"}, "name")
		e.call(global, http.MethodGet, p+"/namespaces/999999", nil, http.StatusNotFound)

		// A user sees the namespaces where it has a role.
		got := decode[page[consoleapi.Namespace]](t, e.call(viewerA, http.MethodGet, p+"/namespaces", nil, http.StatusOK))
		if len(got.Items) != 1 || got.Items[0].ID != e.nsA.ID || got.NextAfter != 0 {
			t.Fatalf("viewer of A lists %+v", got)
		}
		// Paged by id, filtered by name.
		first := decode[page[consoleapi.Namespace]](t, e.call(global, http.MethodGet, p+"/namespaces?name=ns-&limit=2", nil, http.StatusOK))
		if len(first.Items) != 2 || first.NextAfter != first.Items[1].ID {
			t.Fatalf("first page %+v", first)
		}
		rest := decode[page[consoleapi.Namespace]](t, e.call(global, http.MethodGet,
			fmt.Sprintf("%s/namespaces?name=ns-&limit=2&after=%d", p, first.NextAfter), nil, http.StatusOK))
		if len(rest.Items) != 1 || rest.Items[0].Name != "ns-c" || rest.NextAfter != 0 {
			t.Fatalf("second page %+v", rest)
		}
		if got := decode[page[consoleapi.Namespace]](t, e.call(global, http.MethodGet, p+"/namespaces?name=_", nil, http.StatusOK)); len(got.Items) != 0 {
			t.Fatalf("name=_ matches %+v: the wildcard is not escaped", got.Items)
		}

		// Disabling a namespace disables its groups' clients.
		g := e.groupInA()
		e.call(adminA, http.MethodPatch, fmt.Sprintf("%s/namespaces/%d", p, e.nsA.ID), map[string]any{"enabled": false}, http.StatusOK)
		sg, err := e.store.Group(context.Background(), g.ID)
		if err != nil || sg.Active() {
			t.Fatalf("group of a disabled namespace: %+v %v", sg, err)
		}
		off := decode[page[consoleapi.Namespace]](t, e.call(global, http.MethodGet, p+"/namespaces?enabled=false", nil, http.StatusOK))
		if len(off.Items) != 1 || off.Items[0].ID != e.nsA.ID {
			t.Fatalf("disabled namespaces %+v", off)
		}
		if a := e.newestAudit(); a.Action != "namespaces-update" || a.Actor != adminA || !strings.Contains(a.Detail, "enabled false") {
			t.Fatalf("audit %+v", a)
		}
	})
}

func TestGroups(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		e := newEnv(t, target, false)
		p := consoleapi.Prefix
		create := fmt.Sprintf("%s/namespaces/%d/groups", p, e.nsA.ID)
		g := decode[createdGroup](t, e.call(operatorA, http.MethodPost, create,
			map[string]any{"name": "billing", "auto_create_scenes": true}, http.StatusCreated))
		if len(g.Token) < 32 || !g.Enabled || !g.AutoCreateScenes || g.Namespace != "ns-a" {
			t.Fatalf("created %+v", g)
		}
		stored, err := e.store.Group(context.Background(), g.ID)
		if err != nil || stored.Token != g.Token {
			t.Fatalf("stored %+v %v", stored, err)
		}
		e.call(operatorA, http.MethodPost, create, map[string]any{"name": "billing"}, http.StatusConflict)
		e.wantField(operatorA, http.MethodPost, create, map[string]any{"name": "no spaces"}, "name")
		e.call(global, http.MethodPost, p+"/namespaces/999999/groups", map[string]any{"name": "x"}, http.StatusNotFound)
		e.call(global, http.MethodGet, p+"/groups/999999", nil, http.StatusNotFound)
		// The token is shown once: reads never carry it.
		if out := e.call(viewerA, http.MethodGet, fmt.Sprintf("%s/groups/%d", p, g.ID), nil, http.StatusOK); strings.Contains(string(out), g.Token) {
			t.Fatalf("get shows the token: %s", out)
		}

		e.call(operatorA, http.MethodPost, create, map[string]any{"name": "orders", "enabled": false}, http.StatusCreated)
		list := decode[page[consoleapi.Group]](t, e.call(viewerA, http.MethodGet, create+"?name=bill", nil, http.StatusOK))
		if len(list.Items) != 1 || list.Items[0].ID != g.ID {
			t.Fatalf("name=bill %+v", list)
		}
		list = decode[page[consoleapi.Group]](t, e.call(viewerA, http.MethodGet, create+"?enabled=false", nil, http.StatusOK))
		if len(list.Items) != 1 || list.Items[0].Name != "orders" {
			t.Fatalf("enabled=false %+v", list)
		}
		list = decode[page[consoleapi.Group]](t, e.call(viewerA, http.MethodGet, create+"?limit=1", nil, http.StatusOK))
		if len(list.Items) != 1 || list.NextAfter != g.ID {
			t.Fatalf("limit=1 %+v", list)
		}

		path := fmt.Sprintf("%s/groups/%d", p, g.ID)
		up := decode[consoleapi.Group](t, e.call(operatorA, http.MethodPatch, path,
			map[string]any{"description": "pays", "enabled": false}, http.StatusOK))
		if up.Description != "pays" || up.Enabled || !up.AutoCreateScenes {
			t.Fatalf("edited %+v", up)
		}

		e.wantField(operatorA, http.MethodPost, path+"/rotate-token", map[string]any{"grace": "8d"}, "grace")
		e.wantField(operatorA, http.MethodPost, path+"/rotate-token", map[string]any{"grace": "169h"}, "grace")
		e.wantField(operatorA, http.MethodPost, path+"/rotate-token", map[string]any{"grace": "-1s"}, "grace")
		rot := decode[createdGroup](t, e.call(operatorA, http.MethodPost, path+"/rotate-token", map[string]any{"grace": "2h"}, http.StatusOK))
		if rot.Token == g.Token || rot.PrevTokenUntil == nil || time.Until(*rot.PrevTokenUntil) < time.Hour {
			t.Fatalf("rotated %+v", rot)
		}
		stored, _ = e.store.Group(context.Background(), g.ID)
		if toks := stored.Tokens(time.Now()); len(toks) != 2 || toks[0] != rot.Token || toks[1] != g.Token {
			t.Fatalf("accepted tokens %v", toks)
		}
		if a := e.newestAudit(); a.Action != "groups-rotate-token" || strings.Contains(a.Detail, rot.Token) {
			t.Fatalf("audit %+v", a)
		}

		resp, out := e.request(http.MethodGet, path+"/snippet", nil, "Authorization", e.bearer(viewerA))
		snip := decode[struct{ Code string }](t, out)
		host := strings.TrimPrefix(e.srv.URL, "http://")
		for _, want := range []string{`"http://` + host + `"`, `"ns-a"`, `"billing"`, `os.Getenv("RETRYHUB_TOKEN")`, "retryhub.Config{"} {
			if resp.StatusCode != http.StatusOK || !strings.Contains(snip.Code, want) {
				t.Fatalf("snippet %d lacks %s:\n%s", resp.StatusCode, want, snip.Code)
			}
		}
	})
}

func TestScenes(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		e := newEnv(t, target, false)
		p := consoleapi.Prefix
		g := e.groupInA()
		create := fmt.Sprintf("%s/groups/%d/scenes", p, g.ID)
		sc := decode[consoleapi.Scene](t, e.call(operatorA, http.MethodPost, create, map[string]any{
			"name": "charge", "mode": "REMOTE", "max_attempts": 5, "timeout": "10s", "deadline": "24h",
			"backoff": map[string]any{"strategy": "exponential", "base": "1s", "cap": "1m", "multiplier": 3, "jitter": "equal"},
			"routing": "consistent_hash", "rate_limit": 20,
			"callback": map[string]any{"enabled": true, "max_attempts": 4, "backoff": map[string]any{"strategy": "levels", "levels": []string{"1s", "5s"}}},
		}, http.StatusCreated))
		stored, err := e.store.Scene(context.Background(), sc.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := retry.DefaultScene(g.ID, "charge")
		want.Mode, want.MaxAttempts, want.Timeout, want.Deadline = "REMOTE", 5, 10*time.Second, 24*time.Hour
		want.Backoff = backoff.Policy{Strategy: backoff.Exponential, Base: backoff.Duration(time.Second),
			Cap: backoff.Duration(time.Minute), Multiplier: 3, Jitter: backoff.EqualJitter}
		want.Routing, want.RateLimit = retry.ConsistentHash, 20
		want.Callback.Enabled, want.Callback.MaxAttempts = true, 4
		want.Callback.Backoff = backoff.Policy{Strategy: backoff.Levels, Levels: []backoff.Duration{backoff.Duration(time.Second), backoff.Duration(5 * time.Second)}}
		want.ID, want.Version, want.CreatedAt, want.UpdatedAt = stored.ID, 1, stored.CreatedAt, stored.UpdatedAt
		if fmt.Sprintf("%+v", stored) != fmt.Sprintf("%+v", want) {
			t.Fatalf("stored\n%+v\nwant\n%+v", stored, want)
		}
		e.call(operatorA, http.MethodPost, create, map[string]any{"name": "charge"}, http.StatusConflict)
		e.call(global, http.MethodGet, p+"/scenes/999999", nil, http.StatusNotFound)
		e.call(global, http.MethodGet, p+"/groups/999999/scenes", nil, http.StatusNotFound)

		path := fmt.Sprintf("%s/scenes/%d", p, sc.ID)
		for _, c := range []struct {
			body  map[string]any
			field string
		}{
			{map[string]any{"max_attempts": 0}, "max_attempts"},
			{map[string]any{"max_attempts": 1001}, "max_attempts"},
			{map[string]any{"local_attempts": 0}, "local_attempts"},
			{map[string]any{"mode": "SOMETIMES"}, "mode"},
			{map[string]any{"routing": "nearest"}, "routing"},
			{map[string]any{"timeout": "25h"}, "timeout"},
			{map[string]any{"timeout": "soon"}, "timeout"},
			{map[string]any{"deadline": "-1h"}, "deadline"},
			{map[string]any{"rate_limit": -1}, "rate_limit"},
			{map[string]any{"backoff": map[string]any{"strategy": "fixed"}}, "backoff"},
			{map[string]any{"backoff": map[string]any{"strategy": "exponential", "base": "later"}}, "backoff.base"},
			{map[string]any{"backoff": map[string]any{"strategy": "cron", "cron": "not cron"}}, "backoff"},
			{map[string]any{"local_backoff": map[string]any{"strategy": "random", "min": "5s", "max": "1s"}}, "local_backoff"},
			{map[string]any{"callback": map[string]any{"max_attempts": 0}}, "callback.max_attempts"},
			{map[string]any{"callback": map[string]any{"backoff": map[string]any{"strategy": "levels", "levels": []string{"1s", "x"}}}}, "callback.backoff.levels[1]"},
		} {
			e.wantField(operatorA, http.MethodPatch, path, c.body, c.field)
		}
		if again, _ := e.store.Scene(context.Background(), sc.ID); again.Version != 1 {
			t.Fatalf("a refused edit changed the scene: %+v", again)
		}

		up := decode[consoleapi.Scene](t, e.call(operatorA, http.MethodPatch, path,
			map[string]any{"max_attempts": 7, "backoff": map[string]any{"strategy": "cron", "cron": "@every 30s"}}, http.StatusOK))
		if up.Version != 2 || up.MaxAttempts != 7 || up.Backoff.Cron != "@every 30s" || up.Mode != "REMOTE" {
			t.Fatalf("edited %+v", up)
		}
		paused := decode[consoleapi.Scene](t, e.call(operatorA, http.MethodPost, path+"/pause", nil, http.StatusOK))
		if paused.Enabled || paused.Version != 3 {
			t.Fatalf("paused %+v", paused)
		}
		if a := e.newestAudit(); a.Action != "scenes-pause" || a.NamespaceID != e.nsA.ID || a.Target != fmt.Sprintf("scene %d", sc.ID) {
			t.Fatalf("audit %+v", a)
		}
		e.call(viewerA, http.MethodPost, path+"/resume", nil, http.StatusForbidden)
		if resumed := decode[consoleapi.Scene](t, e.call(operatorA, http.MethodPost, path+"/resume", nil, http.StatusOK)); !resumed.Enabled {
			t.Fatalf("resumed %+v", resumed)
		}

		e.call(operatorA, http.MethodPost, create, map[string]any{"name": "refund", "enabled": false}, http.StatusCreated)
		list := decode[page[consoleapi.Scene]](t, e.call(viewerA, http.MethodGet, create+"?enabled=false", nil, http.StatusOK))
		if len(list.Items) != 1 || list.Items[0].Name != "refund" {
			t.Fatalf("enabled=false %+v", list)
		}
		list = decode[page[consoleapi.Scene]](t, e.call(viewerA, http.MethodGet, create+"?name=char&limit=1", nil, http.StatusOK))
		if len(list.Items) != 1 || list.Items[0].ID != sc.ID || list.NextAfter != sc.ID {
			t.Fatalf("name=char %+v", list)
		}
	})
}

// The preview gives the times the scheduler gives a task that fails at each replay: the
// report's first step, then the step SettleReplay takes after each failed replay.
func TestPreviewMatchesTheScheduler(t *testing.T) {
	e := newEnv(t, storagetest.SQLite(t), false)
	for _, c := range []map[string]any{
		{"strategy": "fixed", "interval": "45s"},
		{"strategy": "exponential", "base": "2s", "multiplier": 1.5, "cap": "1m"},
		{"strategy": "levels"},
		{"strategy": "levels", "levels": []string{"1s", "1m", "1h"}},
		{"strategy": "cron", "cron": "*/7 * * * *"},
	} {
		out := decode[struct {
			From  time.Time
			Times []time.Time
		}](t, e.call(viewerA, http.MethodPost, consoleapi.Prefix+"/scenes/preview", map[string]any{"backoff": c, "count": 12}, http.StatusOK))
		b := policyOf(t, c).MustCompile()
		sc := retry.DefaultScene(1, "preview")
		sc.MaxAttempts = retry.MaxRemoteAttempts
		want := []time.Time{retry.FirstDue(b, out.From, out.From)}
		for k := 1; k < 12; k++ {
			s := retry.SettleReplay(&retry.Claim{Attempts: k - 1}, &sc, retry.Policies{Replay: b},
				retry.Result{Outcome: retry.OutcomeFailed, Error: "boom"}, nil, want[k-1])
			want = append(want, s.NextAt)
		}
		if fmt.Sprint(out.Times) != fmt.Sprint(want) {
			t.Errorf("%v from %v:\n got %v\nwant %v", c, out.From, out.Times, want)
		}
	}
	// Random draws stay within the bounds; the count is bounded, and by max_attempts.
	out := decode[struct {
		From  time.Time
		Times []time.Time
	}](t, e.call(viewerA, http.MethodPost, consoleapi.Prefix+"/scenes/preview",
		map[string]any{"backoff": map[string]any{"strategy": "random", "min": "1s", "max": "3s"}, "count": 50, "max_attempts": 4}, http.StatusOK))
	prev := out.From
	for _, tm := range out.Times {
		if d := tm.Sub(prev); d < time.Second || d > 3*time.Second {
			t.Errorf("random step %s", d)
		}
		prev = tm
	}
	if len(out.Times) != 4 {
		t.Errorf("max_attempts 4 gave %d times", len(out.Times))
	}
	e.wantField(viewerA, http.MethodPost, consoleapi.Prefix+"/scenes/preview", map[string]any{"backoff": map[string]any{"strategy": "fixed"}, "count": 5}, "backoff")
	e.wantField(viewerA, http.MethodPost, consoleapi.Prefix+"/scenes/preview", map[string]any{"backoff": map[string]any{"strategy": "fixed", "interval": "1s"}, "count": 51}, "count")
}

func policyOf(t *testing.T, m map[string]any) backoff.Policy {
	t.Helper()
	p := backoff.Policy{Strategy: backoff.Strategy(m["strategy"].(string))}
	d := func(k string) backoff.Duration {
		s, _ := m[k].(string)
		if s == "" {
			return 0
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		return backoff.Duration(v)
	}
	p.Interval, p.Base, p.Cap = d("interval"), d("base"), d("cap")
	if v, ok := m["multiplier"].(float64); ok {
		p.Multiplier = v
	}
	if c, ok := m["cron"].(string); ok {
		p.Cron = c
	}
	if ls, ok := m["levels"].([]string); ok {
		for _, l := range ls {
			v, _ := time.ParseDuration(l)
			p.Levels = append(p.Levels, backoff.Duration(v))
		}
	}
	return p
}

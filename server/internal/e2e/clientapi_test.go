package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
)

// rawCall sends a request with the given headers as they are, unsigned unless they say so.
func rawCall(t *testing.T, url string, h http.Header, body []byte) (int, protocol.ErrorBody) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb protocol.ErrorBody
	json.NewDecoder(resp.Body).Decode(&eb)
	return resp.StatusCode, eb
}

func TestBadInputIsRefusedAndStoresNothing(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		cfg := testConfig(target)
		cfg.ClientAPI.MaxBodyBytes = 64 << 10
		cfg.ClientAPI.MaxPayloadBytes = 1 << 10
		cfg.ClientAPI.MaxBatch = 10
		node := startNode(t, cfg, "n1")
		w := newWorld(t, node, 3, nil)
		url := node.URL() + protocol.PathReports
		good, _ := json.Marshal(protocol.ReportRequest{Items: []protocol.ReportItem{item("notify", "k1")}})
		named := func() http.Header {
			h := http.Header{}
			h.Set(protocol.HeaderNamespace, w.group.Namespace)
			h.Set(protocol.HeaderGroup, w.group.Name)
			return h
		}
		signed := func(token string, body []byte, at time.Time) http.Header {
			req, _ := http.NewRequest(http.MethodPost, url, nil)
			req.Header = named()
			protocol.SignRequest(req, token, body, at)
			return req.Header
		}
		big := bytes.Repeat([]byte("x"), 70<<10)
		bigArgs, _ := json.Marshal(protocol.ReportRequest{Items: []protocol.ReportItem{{Scene: "notify", IdempotencyKey: "k",
			Args: json.RawMessage(`"` + strings.Repeat("a", 2000) + `"`)}}})
		many := protocol.ReportRequest{}
		for i := range 11 {
			many.Items = append(many.Items, item("notify", "m"+strconv.Itoa(i)))
		}
		manyBody, _ := json.Marshal(many)
		otherGroup := signed(testToken, good, time.Now())
		otherGroup.Set(protocol.HeaderGroup, "payments")
		otherNS := signed(testToken, good, time.Now())
		otherNS.Set(protocol.HeaderNamespace, "nowhere")

		cases := []struct {
			name   string
			header http.Header
			body   []byte
			status int
			code   string
		}{
			{"no group named", http.Header{}, good, 401, "missing_group"},
			{"unsigned", named(), good, 401, "missing_signature"},
			{"signed with another token", signed("not-the-group-token-000", good, time.Now()), good, 401, "bad_signature"},
			{"body changed after signing", signed(testToken, good, time.Now()), []byte(strings.Replace(string(good), "k1", "k2", 1)), 401, "bad_signature"},
			{"stale timestamp", signed(testToken, good, time.Now().Add(-10*time.Minute)), good, 401, "bad_timestamp"},
			{"timestamp from the future", signed(testToken, good, time.Now().Add(10*time.Minute)), good, 401, "bad_timestamp"},
			{"unknown group", otherGroup, good, 401, "unknown_group"},
			{"unknown namespace", otherNS, good, 401, "unknown_group"},
			{"malformed JSON", signed(testToken, []byte(`{"items":[`), time.Now()), []byte(`{"items":[`), 400, "bad_json"},
			{"wrong JSON shape", signed(testToken, []byte(`{"items":"many"}`), time.Now()), []byte(`{"items":"many"}`), 400, "bad_json"},
			{"no items", signed(testToken, []byte(`{"items":[]}`), time.Now()), []byte(`{"items":[]}`), 400, "no_items"},
			{"oversized body", signed(testToken, big, time.Now()), big, 413, "body_too_large"},
			{"oversized arguments", signed(testToken, bigArgs, time.Now()), bigArgs, 413, "payload_too_large"},
			{"too many items", signed(testToken, manyBody, time.Now()), manyBody, 413, "too_many_items"},
		}
		for _, c := range cases {
			status, eb := rawCall(t, url, c.header, c.body)
			if status != c.status || eb.Error.Code != c.code || eb.Error.Message == "" {
				t.Errorf("%s: got %d %+v, want %d %s with a message", c.name, status, eb.Error, c.status, c.code)
			}
		}
		if n := w.countTasks(); n != 0 {
			t.Fatalf("refused requests stored %d tasks", n)
		}

		// An unknown scene, in a group that does not create scenes, is refused.
		status, body := w.call(http.MethodPost, protocol.PathReports, protocol.ReportRequest{Items: []protocol.ReportItem{item("refund", "r1")}})
		if status != http.StatusUnprocessableEntity || !strings.Contains(string(body), "not defined") ||
			!strings.Contains(string(body), `"rejected"`) {
			t.Fatalf("unknown scene: %d %s", status, body)
		}
		if n := w.countTasks(); n != 0 {
			t.Fatalf("an unknown scene stored %d tasks", n)
		}
		// In a mixed batch the good items are stored and the bad ones say why they were not.
		res := w.report(item("notify", "ok"), item("refund", "r2"), protocol.ReportItem{Scene: "notify", IdempotencyKey: ""},
			protocol.ReportItem{Scene: "bad scene!", IdempotencyKey: "x"})
		if res[0].Status != protocol.ReportCreated || res[1].Status != protocol.ReportRejected ||
			res[2].Status != protocol.ReportRejected || !strings.Contains(res[2].Reason, "idempotency key") ||
			res[3].Status != protocol.ReportRejected || !strings.Contains(res[3].Reason, "scene name") {
			t.Fatalf("mixed batch: %+v", res)
		}
		if n := w.countTasks(); n != 1 {
			t.Fatalf("%d tasks stored, want 1", n)
		}

		// A disabled group is refused.
		g := w.group
		g.Enabled = false
		if err := node.Store.UpdateGroup(context.Background(), g); err != nil {
			t.Fatal(err)
		}
		node.Catalog.Invalidate()
		status, body = w.call(http.MethodPost, protocol.PathReports, protocol.ReportRequest{Items: []protocol.ReportItem{item("notify", "z")}})
		if status != http.StatusForbidden || !strings.Contains(string(body), "group_disabled") {
			t.Fatalf("disabled group: %d %s", status, body)
		}
		// So is every group of a disabled namespace, though the group itself is enabled.
		g.Enabled = true
		if err := node.Store.UpdateGroup(context.Background(), g); err != nil {
			t.Fatal(err)
		}
		ns, err := node.Store.NamespaceByName(context.Background(), g.Namespace)
		if err != nil {
			t.Fatal(err)
		}
		ns.Enabled = false
		if err := node.Store.UpdateNamespace(context.Background(), ns); err != nil {
			t.Fatal(err)
		}
		node.Catalog.Invalidate()
		status, body = w.call(http.MethodPost, protocol.PathReports, protocol.ReportRequest{Items: []protocol.ReportItem{item("notify", "z")}})
		if status != http.StatusForbidden || !strings.Contains(string(body), "namespace_disabled") {
			t.Fatalf("disabled namespace: %d %s", status, body)
		}
		if n := w.countTasks(); n != 1 {
			t.Fatalf("%d tasks stored after the refusals, want 1", n)
		}
	})
}

// Items the database could not store as they are (or could not tell apart) are rejected one by
// one with a reason, beside the good items of their batch. Before, MySQL refused them and the
// whole batch was answered 503 "try again", which the SDK does forever; a key with a trailing
// space even had the batch committed first.
func TestReportItemsTheDatabaseCannotKeepAreRejected(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 3, nil)
		w.report(item("notify", "active"))
		body := []byte(`{"items":[` +
			`{"scene":"notify","idempotency_key":"ok","args":{"n":1}},` +
			`{"scene":"notify","idempotency_key":"latin1","args":"d` + "\xe9" + `faut"},` +
			`{"scene":"notify","idempotency_key":"many","args":1,"local_attempts":3000000000},` +
			`{"scene":"notify","idempotency_key":"active ","args":1},` +
			`{"scene":"notify","idempotency_key":"ok ","args":1}]}`)
		status, out := w.call(http.MethodPost, protocol.PathReports, body)
		var resp protocol.ReportResponse
		if status != http.StatusOK || json.Unmarshal(out, &resp) != nil || len(resp.Results) != 5 {
			t.Fatalf("report: %d %s", status, out)
		}
		if resp.Results[0].Status != protocol.ReportCreated {
			t.Errorf("the good item: %+v", resp.Results[0])
		}
		for i, want := range map[int]string{1: "UTF-8", 2: "local_attempts", 3: "space", 4: "space"} {
			if r := resp.Results[i]; r.Status != protocol.ReportRejected || !strings.Contains(r.Reason, want) {
				t.Errorf("item %d: %+v, want rejected naming %q", i, r, want)
			}
		}
		if n := w.countTasks(); n != 2 {
			t.Fatalf("%d tasks stored, want the first report's and the good item's", n)
		}
		if tk := w.task(1); tk.Merges != 0 {
			t.Fatalf("the active task counts %d merges, want none", tk.Merges)
		}
	})
}

func TestAutoCreatedScene(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 3, nil)
		g := w.group
		g.AutoCreateScenes = true
		if err := node.Store.UpdateGroup(context.Background(), g); err != nil {
			t.Fatal(err)
		}
		node.Catalog.Invalidate()
		res := w.report(item("refund", "r1"), item("refund", "r2"))
		if res[0].Status != protocol.ReportCreated || res[1].Status != protocol.ReportCreated {
			t.Fatalf("auto-created scene: %+v", res)
		}
		sc, err := node.Store.SceneByName(context.Background(), g.ID, "refund")
		if err != nil {
			t.Fatal(err)
		}
		def := retry.DefaultScene(g.ID, "refund")
		if sc.MaxAttempts != def.MaxAttempts || sc.Mode != def.Mode || sc.Backoff.Strategy != def.Backoff.Strategy {
			t.Fatalf("auto-created scene policy: %+v", sc)
		}
		// Its first replay waits for the first step of the default ladder.
		tk := w.task(res[0].TaskID)
		if d := tk.NextAt.Sub(tk.CreatedAt); d < 9*time.Second || d > 11*time.Second {
			t.Fatalf("first replay after %s, want 10s", d)
		}
	})
}

func TestInstancesAndPolicies(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 3, nil)

		for _, bad := range []protocol.RegisterRequest{
			{InstanceID: "", ExecutorURL: "http://x"},
			{InstanceID: "has space", ExecutorURL: "http://x"},
			{InstanceID: "i", ExecutorURL: "ftp://x/y"},
			{InstanceID: "i", ExecutorURL: "/relative"},
			{InstanceID: "i", Capacity: -1},
		} {
			if status, body := w.call(http.MethodPost, protocol.PathRegister, bad); status != http.StatusBadRequest {
				t.Errorf("register %+v: %d %s", bad, status, body)
			}
		}
		status, body := w.call(http.MethodPost, protocol.PathRegister, protocol.RegisterRequest{InstanceID: "i1", ExecutorURL: "http://127.0.0.1:1/x"})
		if status != http.StatusOK {
			t.Fatalf("register: %d %s", status, body)
		}
		var reg protocol.RegisterResponse
		json.Unmarshal(body, &reg)
		if reg.HeartbeatInterval <= 0 || reg.InstanceTTL <= reg.HeartbeatInterval || reg.MaxPayloadBytes <= 0 || reg.MaxBatch <= 0 {
			t.Fatalf("register answer: %+v", reg)
		}
		if status, _ := w.call(http.MethodPost, protocol.PathHeartbeat, protocol.HeartbeatRequest{InstanceID: "i1"}); status != http.StatusNoContent {
			t.Fatalf("heartbeat: %d", status)
		}
		if status, body := w.call(http.MethodPost, protocol.PathHeartbeat, protocol.HeartbeatRequest{InstanceID: "ghost"}); status != http.StatusNotFound ||
			!strings.Contains(string(body), "unknown_instance") {
			t.Fatalf("heartbeat of an unknown instance: %d %s", status, body)
		}
		live, _ := node.Store.LiveInstances(context.Background(), time.Now().Add(-time.Minute))
		if len(live) != 1 || live[0].Capacity != 16 {
			t.Fatalf("live instances: %+v", live)
		}
		if status, _ := w.call(http.MethodPost, protocol.PathDeregister, protocol.DeregisterRequest{InstanceID: "i1"}); status != http.StatusNoContent {
			t.Fatalf("deregister: %d", status)
		}
		live, _ = node.Store.LiveInstances(context.Background(), time.Now().Add(-time.Minute))
		if len(live) != 0 {
			t.Fatalf("instance still listed after deregistering: %+v", live)
		}

		// Policies: an ETag makes an unchanged poll cost nothing; an edit changes it.
		get := func(etag string) (int, string, protocol.ScenesResponse) {
			req, _ := http.NewRequest(http.MethodGet, node.URL()+protocol.PathScenes, nil)
			req.Header.Set(protocol.HeaderNamespace, w.group.Namespace)
			req.Header.Set(protocol.HeaderGroup, w.group.Name)
			if etag != "" {
				req.Header.Set("If-None-Match", etag)
			}
			protocol.SignRequest(req, testToken, nil, time.Now())
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var sr protocol.ScenesResponse
			json.NewDecoder(resp.Body).Decode(&sr)
			return resp.StatusCode, resp.Header.Get("ETag"), sr
		}
		status, etag, sr := get("")
		if status != http.StatusOK || etag == "" || len(sr.Scenes) != 1 || sr.Scenes[0].Name != "notify" || sr.Scenes[0].MaxAttempts != 3 {
			t.Fatalf("scenes: %d %q %+v", status, etag, sr)
		}
		if status, _, _ := get(etag); status != http.StatusNotModified {
			t.Fatalf("unchanged poll: %d, want 304", status)
		}
		sc := w.scene
		sc.MaxAttempts = 7
		if _, err := node.Store.UpdateScene(context.Background(), sc); err != nil {
			t.Fatal(err)
		}
		node.Catalog.Invalidate()
		status, etag2, sr := get(etag)
		if status != http.StatusOK || etag2 == etag || sr.Scenes[0].MaxAttempts != 7 {
			t.Fatalf("after an edit: %d %q %+v", status, etag2, sr)
		}
	})
}

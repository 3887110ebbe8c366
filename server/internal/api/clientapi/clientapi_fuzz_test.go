package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/api/httpx"
	"github.com/retryhub/retryhub/server/internal/catalog"
	"github.com/retryhub/retryhub/server/internal/dispatch"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// fuzzPaths are the client API's POST endpoints, picked by the fuzzer's first input.
var fuzzPaths = []string{protocol.PathRegister, protocol.PathHeartbeat, protocol.PathDeregister, protocol.PathReports}

// FuzzClientAPI sends the fuzzer's bodies, correctly signed, to the client API's POST
// endpoints on a real SQLite store, through the whole handler: decoding, validation, storage.
// No body may make the server fail (5xx, which a panic becomes) or answer outside the
// endpoint's documented statuses; a report it takes is stored as sent, and an instance it
// registers is known to the heartbeat.
func FuzzClientAPI(f *testing.F) {
	seeds := []struct {
		path int
		body string
	}{
		{0, `{"instance_id":"web-1","executor_url":"http://10.0.0.5:7070/retryhub/execute","capacity":16,"sdk_version":"0.9.0","host":"web-1","scenes":["send-email"],` +
			`"declarations":[{"name":"send-email","mode":"LOCAL_REMOTE","local_attempts":3,"local_backoff":{"strategy":"exponential","base":"100ms","cap":"2s","jitter":"equal"},"timeout":"30s","callback":true,` +
			`"remote":{"max_attempts":5,"backoff":{"strategy":"fixed","interval":"10s"},"callback_max_attempts":3,"callback_backoff":{"strategy":"levels"}}}]}`},
		{0, `{"instance_id":"web-2","declarations":[{"name":"charge","mode":"REMOTE","remote":{"backoff":{"strategy":"random","max":"2562047h47m16.854775807s"}}}]}`},
		{0, `{"instance_id":"","capacity":-1}`},
		{1, `{"instance_id":"web-1","in_flight":2}`},
		{1, `{"instance_id":"nobody"}`},
		{2, `{"instance_id":"web-1"}`},
		{3, `{"instance_id":"web-1","items":[{"scene":"send-email","idempotency_key":"order-1","args":{"to":"ann@example.com"},"error":"smtp: 451","local_attempts":3,"failed_at":1767225600000}]}`},
		{3, `{"items":[{"scene":"charge","idempotency_key":"o-2","args":[1,2]},{"scene":"charge","idempotency_key":"o-2","args":null},{"scene":"bad scene!","idempotency_key":"x"}]}`},
		{3, `{"items":[{"scene":"s","idempotency_key":"k","args":"\u00e9","local_attempts":-1,"failed_at":-9223372036854775808}]}`},
		{3, `{"items":[]}`},
		{3, `{"items":[{"scene":"s","idempotency_key":"k"}]} {}`},
		{3, `not json`},
	}
	for _, s := range seeds {
		f.Add(uint8(s.path), []byte(s.body))
	}

	ctx := context.Background()
	store := storagetest.Open(f, storagetest.SQLite(f))
	ns, err := store.CreateNamespace(ctx, retry.Namespace{Name: "shop", Enabled: true})
	if err != nil {
		f.Fatal(err)
	}
	g, err := store.CreateGroup(ctx, retry.Group{NamespaceID: ns.ID, Name: "orders", Token: token, Enabled: true, AutoCreateScenes: true})
	if err != nil {
		f.Fatal(err)
	}
	p := Params{MaxBodyBytes: 1 << 20, MaxPayloadBytes: 64 << 10, MaxBatch: 50, SignatureWindow: time.Minute,
		InstanceHeartbeat: time.Second, InstanceTTL: time.Hour, Buckets: storagetest.Buckets}
	log := testkit.Logger(f)
	a := New(p, store, catalog.New(catalog.Params{Store: store, TTL: 0}),
		dispatch.NewRegistry(dispatch.RegistryParams{Store: store, TTL: time.Hour, Interval: time.Second, Log: log}), log)
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(httpx.Recover(log)) // as the server mounts it: a panic is a 500, which fails the run
	a.Mount(r)
	send := func(path string, body []byte) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set(protocol.HeaderNamespace, "shop")
		req.Header.Set(protocol.HeaderGroup, g.Name)
		protocol.SignRequest(req, token, body, time.Now())
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		return w
	}

	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		path := fuzzPaths[int(which)%len(fuzzPaths)]
		w := send(path, body)
		allowed := map[string][]int{
			protocol.PathRegister:   {200, 400, 409, 413},
			protocol.PathHeartbeat:  {204, 400, 404, 413},
			protocol.PathDeregister: {204, 400, 413},
			protocol.PathReports:    {200, 400, 413, 422},
		}[path]
		if !contains(allowed, w.Code) {
			t.Fatalf("POST %s %q: %d %s, want one of %v", path, body, w.Code, w.Body.Bytes(), allowed)
		}
		if w.Code >= 400 {
			var eb protocol.ErrorBody
			if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || eb.Error.Code == "" {
				t.Fatalf("POST %s: %d with a body that is no error: %s", path, w.Code, w.Body.Bytes())
			}
		}
		switch {
		case path == protocol.PathRegister && w.Code == http.StatusOK:
			var req protocol.RegisterRequest
			mustDecode(t, body, &req)
			if !protocol.ValidInstanceID(req.InstanceID) {
				t.Fatalf("registered an invalid instance id %q", req.InstanceID)
			}
			hb, _ := json.Marshal(protocol.HeartbeatRequest{InstanceID: req.InstanceID})
			if w := send(protocol.PathHeartbeat, hb); w.Code != http.StatusNoContent {
				t.Fatalf("the heartbeat of the instance just registered (%q): %d %s", req.InstanceID, w.Code, w.Body.Bytes())
			}
		case path == protocol.PathReports && (w.Code == http.StatusOK || w.Code == http.StatusUnprocessableEntity):
			checkReports(t, store, g, body, w)
		}
	})
}

// checkReports checks a report answer against the request and what was stored.
func checkReports(t *testing.T, store *storage.Store, g retry.Group, body []byte, w *httptest.ResponseRecorder) {
	t.Helper()
	var req protocol.ReportRequest
	mustDecode(t, body, &req)
	var resp struct {
		Results []protocol.ReportResult `json:"results"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatalf("report answer %s: %v", w.Body.Bytes(), err)
	}
	if len(resp.Results) != len(req.Items) {
		t.Fatalf("%d results for %d items: %s", len(resp.Results), len(req.Items), w.Body.Bytes())
	}
	keys := map[string]int{}
	for _, it := range req.Items {
		keys[it.Scene+"\x00"+it.IdempotencyKey]++
	}
	for i, res := range resp.Results {
		it := req.Items[i]
		switch res.Status {
		case protocol.ReportRejected:
			if res.Reason == "" {
				t.Fatalf("item %d rejected without a reason", i)
			}
			continue
		case protocol.ReportCreated, protocol.ReportMerged:
		default:
			t.Fatalf("item %d: status %q", i, res.Status)
		}
		if w.Code != http.StatusOK {
			t.Fatalf("item %d %s in a %d answer", i, res.Status, w.Code)
		}
		if retry.ValidateName("scene", it.Scene) != nil || retry.ValidateKey(it.IdempotencyKey) != nil ||
			it.LocalAttempts < 0 || !utf8.Valid(it.Args) {
			t.Fatalf("item %d (%+v) was taken though invalid", i, it)
		}
		task, err := store.Task(context.Background(), res.TaskID)
		if err != nil {
			t.Fatalf("item %d: task %d: %v", i, res.TaskID, err)
		}
		if task.GroupID != g.ID || task.IdempotencyKey != it.IdempotencyKey {
			t.Fatalf("item %d: stored task %d has group %d key %q, want %d %q", i, task.ID, task.GroupID, task.IdempotencyKey, g.ID, it.IdempotencyKey)
		}
		if res.Status == protocol.ReportCreated && keys[it.Scene+"\x00"+it.IdempotencyKey] == 1 {
			want := []byte(it.Args)
			if len(want) == 0 {
				want = []byte("null")
			}
			if !sameJSON(task.Args, want) {
				t.Fatalf("item %d: stored args %q, sent %q", i, task.Args, want)
			}
		}
	}
}

func mustDecode(t *testing.T, body []byte, v any) {
	t.Helper()
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(v); err != nil {
		t.Fatalf("the server took a body that does not decode: %v", err)
	}
}

func sameJSON(a, b []byte) bool {
	var va, vb any
	da, db := json.NewDecoder(bytes.NewReader(a)), json.NewDecoder(bytes.NewReader(b))
	da.UseNumber()
	db.UseNumber()
	if da.Decode(&va) != nil || db.Decode(&vb) != nil {
		return bytes.Equal(a, b)
	}
	return reflect.DeepEqual(va, vb)
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

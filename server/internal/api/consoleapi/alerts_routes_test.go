package consoleapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/alert"
	"github.com/retryhub/retryhub/server/internal/alert/notify"
	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
)

// webhookReceiver is an HTTP server that takes alert webhooks, or refuses them while down.
type webhookReceiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bodies []string
	down   bool
}

func newWebhookReceiver(t *testing.T) *webhookReceiver {
	w := &webhookReceiver{}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.down {
			http.Error(rw, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		w.bodies = append(w.bodies, string(b))
	}))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *webhookReceiver) received() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.bodies...)
}

func (w *webhookReceiver) setDown(down bool) {
	w.mu.Lock()
	w.down = down
	w.mu.Unlock()
}

// testResult and messagePage are the bodies of a channel test and a page of history.
type testResult struct {
	Sent    bool                    `json:"sent"`
	Error   string                  `json:"error"`
	Message consoleapi.AlertMessage `json:"message"`
}

type messagePage struct {
	Items      []consoleapi.AlertMessage `json:"items"`
	NextBefore int64                     `json:"next_before"`
}

// testSealKey is the alert sealing key of the tests.
var testSealKey = []byte("0123456789abcdef0123456789abcdef")

func (e *env) newAlerts() {
	e.t.Helper()
	var err error
	if e.channels, err = alert.NewChannels(testSealKey, notify.Options{}); err != nil {
		e.t.Fatal(err)
	}
	e.hook = newWebhookReceiver(e.t)
}

// alertChannelIn stores a webhook channel to e.hook in the namespace, with a signing secret.
func (e *env) alertChannelIn(ns retry.Namespace) storage.AlertChannel {
	e.t.Helper()
	sealed, err := e.channels.Prepare(notify.KindWebhook, nil,
		json.RawMessage(fmt.Sprintf(`{"url":%q,"secret":"hook-secret-value"}`, e.hook.srv.URL)))
	if err != nil {
		e.t.Fatal(err)
	}
	ch, err := e.store.CreateAlertChannel(context.Background(), storage.AlertChannel{NamespaceID: ns.ID, Name: unique("hook"),
		Kind: notify.KindWebhook, Settings: sealed, Enabled: true})
	if err != nil {
		e.t.Fatal(err)
	}
	return ch
}

func (e *env) alertRuleIn(ns retry.Namespace) storage.AlertRule {
	e.t.Helper()
	r := storage.AlertRule{NamespaceID: ns.ID, Name: unique("rule"), Kind: alert.TasksExhausted, Enabled: true}
	if err := alert.Normalize(&r); err != nil {
		e.t.Fatal(err)
	}
	r, err := e.store.CreateAlertRule(context.Background(), r)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *env) alertSilenceIn(ns retry.Namespace) storage.AlertSilence {
	e.t.Helper()
	s, err := e.store.CreateAlertSilence(context.Background(), storage.AlertSilence{NamespaceID: ns.ID, StartsAt: time.Now(),
		EndsAt: time.Now().Add(time.Hour), Reason: "maintenance", CreatedBy: "test"})
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// alertRoutes are the rows of alert channels, rules, silences and the history. Viewers read;
// operators change rules and silences and test channels; admins change channels.
func alertRoutes() map[string]routeCase {
	p := consoleapi.Prefix
	nsA := func(suffix string, body func(e *env) any) func(*env, string) (string, any) {
		return func(e *env, _ string) (string, any) {
			var b any
			if body != nil {
				b = body(e)
			}
			return fmt.Sprintf("%s/namespaces/%d%s", p, e.nsA.ID, suffix), b
		}
	}
	channel := func(suffix string, body any) func(*env, string) (string, any) {
		return func(e *env, _ string) (string, any) {
			return fmt.Sprintf("%s/alert-channels/%d%s", p, e.alertChannelIn(e.nsA).ID, suffix), body
		}
	}
	rule := func(body any) func(*env, string) (string, any) {
		return func(e *env, _ string) (string, any) {
			return fmt.Sprintf("%s/alert-rules/%d", p, e.alertRuleIn(e.nsA).ID), body
		}
	}
	silence := func(body any) func(*env, string) (string, any) {
		return func(e *env, _ string) (string, any) {
			return fmt.Sprintf("%s/alert-silences/%d", p, e.alertSilenceIn(e.nsA).ID), body
		}
	}
	return map[string]routeCase{
		"alert-channels-list": {nsA("/alert-channels", nil), viewerOfA(http.StatusOK)},
		"alert-channels-get":  {channel("", nil), viewerOfA(http.StatusOK)},
		"alert-channels-create": {nsA("/alert-channels", func(e *env) any {
			return map[string]any{"name": unique("hook"), "kind": "webhook", "settings": map[string]any{"url": e.hook.srv.URL}}
		}), adminOfA(http.StatusCreated)},
		"alert-channels-update": {channel("", map[string]any{"enabled": false}), adminOfA(http.StatusOK)},
		"alert-channels-delete": {channel("", nil), adminOfA(http.StatusNoContent)},
		"alert-channels-test":   {channel("/test", nil), operatorOfA(http.StatusOK)},
		"alert-rules-list":      {nsA("/alert-rules", nil), viewerOfA(http.StatusOK)},
		"alert-rules-get":       {rule(nil), viewerOfA(http.StatusOK)},
		"alert-rules-create": {nsA("/alert-rules", func(*env) any {
			return map[string]any{"name": unique("rule"), "kind": "failure_ratio", "threshold": 50, "window": "10m"}
		}), operatorOfA(http.StatusCreated)},
		"alert-rules-update":    {rule(map[string]any{"threshold": 5}), operatorOfA(http.StatusOK)},
		"alert-rules-delete":    {rule(nil), operatorOfA(http.StatusNoContent)},
		"alert-silences-list":   {nsA("/alert-silences", nil), viewerOfA(http.StatusOK)},
		"alert-silences-create": {nsA("/alert-silences", func(*env) any { return map[string]any{"duration": "2h", "reason": "deploy"} }), operatorOfA(http.StatusCreated)},
		"alert-silences-update": {silence(map[string]any{"reason": "longer deploy"}), operatorOfA(http.StatusOK)},
		"alert-silences-delete": {silence(nil), operatorOfA(http.StatusNoContent)},
		"alert-messages-list":   {nsA("/alert-messages?status=sent&message=true", nil), viewerOfA(http.StatusOK)},
	}
}

// A channel's secrets are never returned: not when it is made, read, listed or edited; an
// edit that leaves the secret empty keeps it, as the test message's signature proves.
func TestAlertChannelSecretsAreNeverReturned(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		e := newEnv(t, target, false)
		p := consoleapi.Prefix
		status, out := e.as(adminA, http.MethodPost, fmt.Sprintf("%s/namespaces/%d/alert-channels", p, e.nsA.ID), map[string]any{
			"name": "ops-hook", "kind": "webhook", "settings": map[string]any{"url": e.hook.srv.URL, "secret": "s3cret-signing-key",
				"headers": map[string]string{"Authorization": "Bearer hidden-token"}}})
		if status != http.StatusCreated {
			t.Fatalf("create: %d %s", status, out)
		}
		ch := decode[consoleapi.AlertChannel](t, out)
		check := func(what string, b []byte) {
			t.Helper()
			for _, secret := range []string{"s3cret-signing-key", "hidden-token"} {
				if strings.Contains(string(b), secret) {
					t.Errorf("%s shows a secret: %s", what, b)
				}
			}
		}
		check("create", out)
		if ch.Settings["secret_set"] != true || ch.Settings["url"] != e.hook.srv.URL {
			t.Errorf("redacted settings: %v", ch.Settings)
		}
		_, out = e.as(viewerA, http.MethodGet, fmt.Sprintf("%s/alert-channels/%d", p, ch.ID), nil)
		check("get", out)
		_, out = e.as(viewerA, http.MethodGet, fmt.Sprintf("%s/namespaces/%d/alert-channels", p, e.nsA.ID), nil)
		check("list", out)
		// The stored row holds them sealed.
		stored, err := e.store.AlertChannel(context.Background(), ch.ID)
		if err != nil || strings.Contains(string(stored.Settings), "s3cret") {
			t.Fatalf("stored settings in the clear: %s (%v)", stored.Settings, err)
		}
		// An edit that sends back what it was shown keeps the secrets.
		status, out = e.as(adminA, http.MethodPatch, fmt.Sprintf("%s/alert-channels/%d", p, ch.ID), map[string]any{"settings": ch.Settings})
		if status != http.StatusOK {
			t.Fatalf("update: %d %s", status, out)
		}
		check("update", out)
		plain, err := e.channels.Open(stored)
		if err != nil {
			t.Fatal(err)
		}
		stored, _ = e.store.AlertChannel(context.Background(), ch.ID)
		again, err := e.channels.Open(stored)
		if err != nil || !strings.Contains(string(again), "s3cret-signing-key") || !strings.Contains(string(plain), "hidden-token") {
			t.Fatalf("the edit lost a secret: %s (%v)", again, err)
		}
		// The test message goes out and is recorded in the history.
		status, out = e.as(operatorA, http.MethodPost, fmt.Sprintf("%s/alert-channels/%d/test", p, ch.ID), nil)
		res := decode[testResult](t, out)
		if status != http.StatusOK || !res.Sent || res.Message.Kind != "test" || res.Message.Status != "sent" {
			t.Fatalf("test: %d %s", status, out)
		}
		if got := e.hook.received(); len(got) != 1 || !strings.Contains(got[0], "test") {
			t.Fatalf("webhook received %v", got)
		}
		// A channel that is down: the test answers why, and the history says so.
		e.hook.setDown(true)
		_, out = e.as(operatorA, http.MethodPost, fmt.Sprintf("%s/alert-channels/%d/test", p, ch.ID), nil)
		res = decode[testResult](t, out)
		if res.Sent || !strings.Contains(res.Error, "503") || res.Message.Status != "failed" {
			t.Fatalf("test while down: %s", out)
		}
		_, out = e.as(viewerA, http.MethodGet, fmt.Sprintf("%s/namespaces/%d/alert-messages?status=failed", p, e.nsA.ID), nil)
		hist := decode[messagePage](t, out)
		if len(hist.Items) != 1 || hist.Items[0].ID != res.Message.ID || hist.Items[0].ChannelID != ch.ID {
			t.Fatalf("history: %s", out)
		}
	})
}

// Bad rules, channels and silences are answered 400 naming the field, and change nothing.
func TestAlertValidation(t *testing.T) {
	e := newEnv(t, storagetest.SQLite(t), false)
	p := consoleapi.Prefix
	other := e.alertChannelIn(e.nsB)
	sceneB := e.fixtureIn(e.nsB, "billing").Scene
	rules := fmt.Sprintf("%s/namespaces/%d/alert-rules", p, e.nsA.ID)
	for name, c := range map[string]struct {
		path  string
		body  map[string]any
		field string
	}{
		"unknown kind":            {rules, map[string]any{"name": "r1", "kind": "cpu_hot"}, "kind"},
		"window too long":         {rules, map[string]any{"name": "r1", "kind": "tasks_exhausted", "window": "48h"}, "window"},
		"bad duration":            {rules, map[string]any{"name": "r1", "kind": "node_lost", "for": "soon"}, "for"},
		"ratio over 100":          {rules, map[string]any{"name": "r1", "kind": "failure_ratio", "threshold": 150}, "threshold"},
		"repeat too often":        {rules, map[string]any{"name": "r1", "kind": "tasks_exhausted", "repeat": "5s"}, "repeat"},
		"channel of another ns":   {rules, map[string]any{"name": "r1", "kind": "tasks_exhausted", "channel_ids": []int64{other.ID}}, "channel_ids"},
		"missing channel":         {rules, map[string]any{"name": "r1", "kind": "tasks_exhausted", "channel_ids": []int64{99999}}, "channel_ids"},
		"scene of another ns":     {rules, map[string]any{"name": "r1", "kind": "tasks_exhausted", "scene_ids": []int64{sceneB.ID}}, "scene_ids"},
		"bad name":                {rules, map[string]any{"name": "no spaces allowed", "kind": "tasks_exhausted"}, "name"},
		"bad severity":            {rules, map[string]any{"name": "r1", "kind": "tasks_exhausted", "severity": "meh"}, "severity"},
		"email without recipient": {fmt.Sprintf("%s/namespaces/%d/alert-channels", p, e.nsA.ID), map[string]any{"name": "mail", "kind": "email", "settings": map[string]any{"host": "smtp.example.com", "from": "a@example.com"}}, "settings"},
		"unknown setting":         {fmt.Sprintf("%s/namespaces/%d/alert-channels", p, e.nsA.ID), map[string]any{"name": "hook", "kind": "webhook", "settings": map[string]any{"url": "https://x.example.com", "colour": "red"}}, "settings"},
		"silence ends before":     {fmt.Sprintf("%s/namespaces/%d/alert-silences", p, e.nsA.ID), map[string]any{"starts_at": time.Now(), "ends_at": time.Now().Add(-time.Hour)}, "ends_at"},
		"silence without end":     {fmt.Sprintf("%s/namespaces/%d/alert-silences", p, e.nsA.ID), map[string]any{"reason": "x"}, "ends_at"},
		"silence of another ns":   {fmt.Sprintf("%s/namespaces/%d/alert-silences", p, e.nsA.ID), map[string]any{"duration": "1h", "scene_id": sceneB.ID}, "scene_id"},
	} {
		status, out := e.as(global, http.MethodPost, c.path, c.body)
		if status != http.StatusBadRequest {
			t.Errorf("%s: %d %s", name, status, out)
			continue
		}
		eb := decode[errorBody](t, out)
		if !strings.Contains(eb.Error.Message, c.field) {
			t.Errorf("%s: the error does not name %s: %s", name, c.field, out)
		}
	}
	if rs, _ := e.store.ListAlertRules(context.Background(), nil, false); len(rs) != 0 {
		t.Fatalf("a refused rule was stored: %+v", rs)
	}
	// A good rule gets its kind's defaults; the fields its kind does not read are cleared.
	status, out := e.as(operatorA, http.MethodPost, rules, map[string]any{"name": "dead-letters", "kind": "tasks_exhausted",
		"for": "10m", "repeat": "1h", "channel_ids": []int64{e.alertChannelIn(e.nsA).ID}})
	r := decode[consoleapi.AlertRule](t, out)
	if status != http.StatusCreated || r.Threshold != 1 || r.Window != "5m0s" || r.For != "0s" || r.Repeat != "1h0m0s" || r.Severity != "warning" {
		t.Fatalf("created %d %s", status, out)
	}
	status, out = e.as(operatorA, http.MethodPost, rules, map[string]any{"name": "dead-letters", "kind": "node_lost"})
	if status != http.StatusConflict {
		t.Fatalf("a taken name: %d %s", status, out)
	}
}

package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
)

// Every answer under /api/ is the JSON error body, whatever the method; before, a GET or HEAD of
// an unknown /api/ path fell through to the console's file server and got a plain-text 404.
func TestUnknownAPIPathsAnswerJSON(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		for _, path := range []string{"/api/", "/api/v1/nothing", "/api/v1/client/nothing", "/api/v1/console/tasks"} {
			for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodPost} {
				req, err := http.NewRequest(method, node.URL()+path, strings.NewReader("{}"))
				if err != nil {
					t.Fatal(err)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				var eb protocol.ErrorBody
				decodeErr := json.NewDecoder(resp.Body).Decode(&eb)
				resp.Body.Close()
				if resp.StatusCode != http.StatusNotFound || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
					t.Errorf("%s %s: %d %q, want 404 JSON", method, path, resp.StatusCode, resp.Header.Get("Content-Type"))
					continue
				}
				if method != http.MethodHead && (decodeErr != nil || eb.Error.Code != "not_found" || eb.Error.Message == "") {
					t.Errorf("%s %s: body %+v (%v), want the not_found error body", method, path, eb, decodeErr)
				}
			}
		}
		// The console is still served outside /api/.
		resp, err := http.Get(node.URL() + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("console: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	})
}

// A report's first replay and its deadline count from when the call failed, not from when the
// report arrived: a report spooled through an outage does not wait a further full step, and
// calls reported in one batch fall due one step after their own failures. A failure time ahead
// of the server's clock counts from the server's clock.
func TestReportFirstDueCountsFromTheFailure(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 3, func(sc *retry.Scene) {
			sc.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Hour)}
			sc.Deadline = 2 * time.Hour
		})
		before := time.Now()
		spooled := item("notify", "spooled")
		spooled.FailedAt = before.Add(-10 * time.Minute).UnixMilli()
		recent := item("notify", "recent")
		recent.FailedAt = before.Add(-3 * time.Second).UnixMilli()
		future := item("notify", "future")
		future.FailedAt = before.Add(time.Hour).UnixMilli()
		res := w.report(spooled, recent, future, item("notify", "untimed"))
		after := time.Now()
		for i, want := range []int64{spooled.FailedAt, recent.FailedAt} {
			tk := w.task(res[i].TaskID)
			if got := tk.NextAt.UnixMilli() - want; got != time.Hour.Milliseconds() {
				t.Errorf("item %d: first replay %s after the failure, want 1h", i, time.Duration(got)*time.Millisecond)
			}
			if tk.DeadlineAt == nil || tk.DeadlineAt.UnixMilli()-want != (2*time.Hour).Milliseconds() {
				t.Errorf("item %d: deadline %v, want 2h after the failure", i, tk.DeadlineAt)
			}
		}
		for _, i := range []int{2, 3} {
			tk := w.task(res[i].TaskID)
			if tk.NextAt.Before(before.Add(time.Hour).Truncate(time.Millisecond)) || tk.NextAt.After(after.Add(time.Hour)) {
				t.Errorf("item %d: first replay at %s, want an hour after the report arrived (%s)", i, tk.NextAt, before)
			}
		}
	})
}

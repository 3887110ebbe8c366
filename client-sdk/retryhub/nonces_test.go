package retryhub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// signedExecute builds an ExecuteRequest signed as the server signs a call meant for c's
// instance; edit runs before signing, to change headers the signature covers.
func signedExecute(t *testing.T, c *Client, token string, req protocol.ExecuteRequest, at time.Time, edit func(r *http.Request)) (*http.Request, []byte) {
	t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, ExecutorPath, bytes.NewReader(body))
	r.Header.Set(protocol.HeaderNamespace, c.cfg.Namespace)
	r.Header.Set(protocol.HeaderGroup, c.cfg.Group)
	r.Header.Set(protocol.HeaderInstance, c.cfg.InstanceID)
	if edit != nil {
		edit(r)
	}
	protocol.SignRequest(r, token, body, at)
	return r, body
}

// send serves a copy of r with a fresh body.
func send(h http.Handler, r *http.Request, body []byte) *httptest.ResponseRecorder {
	c := r.Clone(r.Context())
	c.Body = http.NoBody
	if body != nil {
		c.Body = &trackedBody{r: bytes.NewReader(body)}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, c)
	return w
}

// trackedBody is a request body that records whether it was read.
type trackedBody struct {
	r    *bytes.Reader
	read atomic.Bool
}

func (b *trackedBody) Read(p []byte) (int, error) { b.read.Store(true); return b.r.Read(p) }
func (b *trackedBody) Close() error               { return nil }

func TestExecutorAcceptsASignedRequestOnce(t *testing.T) {
	c := localClient(t)
	var runs atomic.Int32
	RetryableOn(c, "exec-once", func(context.Context, int) error { runs.Add(1); return nil })
	r, body := signedExecute(t, c, "secret", replayOf("exec-once", `1`), time.Now(), nil)
	if resp := decodeExec(t, send(c.Handler(), r, body)); resp.Status != protocol.ExecuteSucceeded {
		t.Fatalf("first delivery answered %+v", resp)
	}
	w := send(c.Handler(), r, body)
	if w.Code != http.StatusConflict || errorCode(t, w) != "replayed_request" {
		t.Fatalf("the same signed request again got %d %s, want 409 replayed_request", w.Code, w.Body)
	}
	if runs.Load() != 1 {
		t.Fatalf("the function ran %d times for one signed request, want 1", runs.Load())
	}
	// The server's next attempt is a new request with a new nonce: it runs.
	r2, body2 := signedExecute(t, c, "secret", replayOf("exec-once", `1`), time.Now(), nil)
	if resp := decodeExec(t, send(c.Handler(), r2, body2)); resp.Status != protocol.ExecuteSucceeded || runs.Load() != 2 {
		t.Fatalf("a freshly signed request answered %+v after %d runs", resp, runs.Load())
	}
}

func TestExecutorRefusesARequestMovedElsewhere(t *testing.T) {
	cfg := testConfig("http://127.0.0.1:1")
	cfg.InstanceID = "orders-1"
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int32
	RetryableOn(c, "exec-moved", func(context.Context, int) error { runs.Add(1); return nil })
	h := c.Handler()
	for name, tc := range map[string]struct {
		before, after func(r *http.Request)
		status        int
		code          string
	}{
		"another path": {after: func(r *http.Request) { r.URL.Path = "/elsewhere" + ExecutorPath },
			status: http.StatusUnauthorized, code: "bad_signature"},
		"another instance header": {after: func(r *http.Request) { r.Header.Set(protocol.HeaderInstance, "orders-2") },
			status: http.StatusUnauthorized, code: "bad_signature"},
		"another group header": {after: func(r *http.Request) { r.Header.Set(protocol.HeaderGroup, "billing") },
			status: http.StatusUnauthorized, code: "bad_signature"},
		"signed for another instance": {before: func(r *http.Request) { r.Header.Set(protocol.HeaderInstance, "orders-2") },
			status: http.StatusBadRequest, code: "wrong_instance"},
		"signed for another group": {before: func(r *http.Request) { r.Header.Set(protocol.HeaderGroup, "billing") },
			status: http.StatusBadRequest, code: "wrong_group"},
	} {
		t.Run(name, func(t *testing.T) {
			r, body := signedExecute(t, c, "secret", replayOf("exec-moved", `1`), time.Now(), tc.before)
			if tc.after != nil {
				tc.after(r)
			}
			if w := send(h, r, body); w.Code != tc.status || errorCode(t, w) != tc.code {
				t.Fatalf("got %d %s, want %d %s", w.Code, w.Body, tc.status, tc.code)
			}
		})
	}
	// Signed for this very instance, it runs.
	r, body := signedExecute(t, c, "secret", replayOf("exec-moved", `1`), time.Now(), func(r *http.Request) {
		r.Header.Set(protocol.HeaderInstance, "orders-1")
		r.Header.Set(protocol.HeaderGroup, "g")
	})
	if resp := decodeExec(t, send(h, r, body)); resp.Status != protocol.ExecuteSucceeded || runs.Load() != 1 {
		t.Fatalf("a request signed for this instance answered %+v after %d runs", resp, runs.Load())
	}
}

// A request whose headers already fail is refused before its body is read.
func TestExecutorRefusesBadStampsWithoutReadingTheBody(t *testing.T) {
	c := localClient(t)
	RetryableOn(c, "exec-stamp", func(context.Context, int) error { t.Error("a refused request ran"); return nil })
	now := time.Now()
	for name, tc := range map[string]struct {
		edit func(r *http.Request)
		code string
	}{
		"no signature": {func(r *http.Request) { r.Header.Del(protocol.HeaderSignature) }, "missing_signature"},
		"no nonce":     {func(r *http.Request) { r.Header.Del(protocol.HeaderNonce) }, "missing_signature"},
		"old version":  {func(r *http.Request) { r.Header.Set(protocol.HeaderProtocol, "1") }, "bad_protocol_version"},
		"no version":   {func(r *http.Request) { r.Header.Del(protocol.HeaderProtocol) }, "bad_protocol_version"},
		"stale": {func(r *http.Request) {
			r.Header.Set(protocol.HeaderTimestamp, strconv.FormatInt(now.Add(-protocol.SignatureWindow-time.Minute).UnixMilli(), 10))
		}, "bad_timestamp"},
		"bad nonce": {func(r *http.Request) { r.Header.Set(protocol.HeaderNonce, "not-hex") }, "bad_nonce"},
	} {
		t.Run(name, func(t *testing.T) {
			r, body := signedExecute(t, c, "secret", replayOf("exec-stamp", `1`), now, nil)
			tc.edit(r)
			tb := &trackedBody{r: bytes.NewReader(body)}
			r.Body = tb
			w := httptest.NewRecorder()
			c.Handler().ServeHTTP(w, r)
			if w.Code != http.StatusUnauthorized || errorCode(t, w) != tc.code {
				t.Fatalf("got %d %s, want 401 %s", w.Code, w.Body, tc.code)
			}
			if tb.read.Load() {
				t.Fatal("the body was read before the stamp was checked")
			}
		})
	}
}

func TestNonceMemoryForgetsExpiredNoncesAndRefusesWhenFull(t *testing.T) {
	const window = time.Minute
	t0 := time.Unix(1_800_000_000, 0)
	m := newNonceMemory(3)
	stamp := func(i int, at time.Time) protocol.Stamp {
		return protocol.Stamp{Nonce: fmt.Sprintf("%032x", i), Timestamp: at.UnixMilli()}
	}
	for i := range 3 {
		if err := m.remember(stamp(i, t0.Add(time.Duration(i)*time.Second)), t0.Add(time.Duration(i)*time.Second), window); err != nil {
			t.Fatalf("nonce %d: %v", i, err)
		}
	}
	if err := m.remember(stamp(1, t0), t0.Add(10*time.Second), window); !errors.Is(err, errReplayed) {
		t.Fatalf("a nonce seen before: %v, want errReplayed", err)
	}
	// Full, and nothing expired: a new nonce is refused, none forgotten.
	if err := m.remember(stamp(3, t0.Add(30*time.Second)), t0.Add(30*time.Second), window); !errors.Is(err, errNoncesFull) {
		t.Fatalf("a new nonce in a full memory: %v, want errNoncesFull", err)
	}
	if err := m.remember(stamp(0, t0), t0.Add(30*time.Second), window); !errors.Is(err, errReplayed) {
		t.Fatalf("the oldest nonce was forgotten to make room: %v", err)
	}
	// Once the first request leaves the window, its nonce makes room for a new one.
	later := t0.Add(window + 500*time.Millisecond)
	if err := m.remember(stamp(3, later), later, window); err != nil {
		t.Fatalf("after the oldest expired: %v", err)
	}
	if m.len() != 3 {
		t.Fatalf("%d nonces remembered, want 3", m.len())
	}
	// Much later every old nonce has expired.
	if err := m.remember(stamp(4, t0.Add(time.Hour)), t0.Add(time.Hour), window); err != nil || m.len() != 1 {
		t.Fatalf("an hour later: %v with %d nonces remembered, want 1", err, m.len())
	}
}

// A full nonce memory answers busy, which the server takes as back-pressure, not a failure.
func TestExecutorAnswersBusyWhenItCannotRememberMore(t *testing.T) {
	c := localClient(t)
	c.exec.nonces = newNonceMemory(1)
	var runs atomic.Int32
	RetryableOn(c, "exec-full", func(context.Context, int) error { runs.Add(1); return nil })
	decodeExec(t, execute(t, c, "secret", replayOf("exec-full", `1`)))
	w := execute(t, c, "secret", replayOf("exec-full", `2`))
	if w.Code != http.StatusTooManyRequests || errorCode(t, w) != "busy" || runs.Load() != 1 {
		t.Fatalf("with the nonce memory full got %d %s after %d runs, want 429 busy after 1", w.Code, w.Body, runs.Load())
	}
}

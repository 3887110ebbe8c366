package retryhub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
)

func replayOf(scene string, args string) protocol.ExecuteRequest {
	return protocol.ExecuteRequest{Kind: protocol.KindReplay, TaskID: 7, Namespace: "default", Group: "g",
		Scene: scene, IdempotencyKey: "k", Args: json.RawMessage(args), Attempt: 1}
}

func errorCode(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var eb protocol.ErrorBody
	if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil || eb.Error.Message == "" {
		t.Fatalf("answer %d %q is not an ErrorBody with a message", w.Code, w.Body)
	}
	return eb.Error.Code
}

func TestExecutorRunsReplays(t *testing.T) {
	c := localClient(t)
	var got email
	var inFlow bool
	var replay ReplayInfo
	RetryableOn(c, "exec-send", func(ctx context.Context, e email) error {
		got, inFlow = e, InFlow(ctx)
		replay, _ = ReplayOf(ctx)
		if e.To == "bad@example.com" {
			return Permanent(errors.New("mailbox does not exist"))
		}
		if e.To == "later@example.com" {
			return errBoom
		}
		return nil
	})

	resp := decodeExec(t, execute(t, c, "secret", replayOf("exec-send", `{"to":"a@example.com","subject":"hi"}`)))
	if resp.Status != protocol.ExecuteSucceeded || got.To != "a@example.com" || !inFlow || replay.Scene != "exec-send" || replay.Attempt < 1 {
		t.Fatalf("answer %+v, args %+v, in flow %v, replay %+v", resp, got, inFlow, replay)
	}
	if _, ok := ReplayOf(context.Background()); ok {
		t.Fatal("a plain context says it is a replay")
	}
	resp = decodeExec(t, execute(t, c, "secret", replayOf("exec-send", `{"to":"later@example.com"}`)))
	if resp.Status != protocol.ExecuteFailed || resp.Error != "boom" || resp.Permanent {
		t.Fatalf("a failing replay answered %+v", resp)
	}
	resp = decodeExec(t, execute(t, c, "secret", replayOf("exec-send", `{"to":"bad@example.com"}`)))
	if resp.Status != protocol.ExecuteFailed || !resp.Permanent || !strings.Contains(resp.Error, "mailbox") {
		t.Fatalf("a permanent failure answered %+v", resp)
	}
	// Arguments that do not decode can never succeed.
	resp = decodeExec(t, execute(t, c, "secret", replayOf("exec-send", `{"to":42}`)))
	if resp.Status != protocol.ExecuteFailed || !resp.Permanent || !strings.Contains(resp.Error, "decode arguments") {
		t.Fatalf("undecodable args answered %+v", resp)
	}
}

func TestExecutorRefusesForgedSignatures(t *testing.T) {
	c := localClient(t)
	var ran atomic.Bool
	RetryableOn(c, "exec-forged", func(context.Context, int) error { ran.Store(true); return nil })
	w := execute(t, c, "not-the-token", replayOf("exec-forged", `1`))
	if w.Code != http.StatusUnauthorized || errorCode(t, w) != "bad_signature" || ran.Load() {
		t.Fatalf("a forged request got %d %s (ran %v), want 401", w.Code, w.Body, ran.Load())
	}
	// A signed body that was changed afterwards.
	body, _ := json.Marshal(replayOf("exec-forged", `1`))
	r := httptest.NewRequest(http.MethodPost, ExecutorPath, bytes.NewReader(bytes.Replace(body, []byte(`1`), []byte(`2`), 1)))
	signFor(r, c, "secret", body)
	w = httptest.NewRecorder()
	c.Handler().ServeHTTP(w, r)
	if w.Code != http.StatusUnauthorized || ran.Load() {
		t.Fatalf("a tampered body got %d", w.Code)
	}
}

func TestExecutorUnknownScene(t *testing.T) {
	c := localClient(t)
	w := execute(t, c, "secret", replayOf("nobody-declared-this", `1`))
	if w.Code != http.StatusNotFound || errorCode(t, w) != "unknown_scene" || !strings.Contains(w.Body.String(), "nobody-declared-this") {
		t.Fatalf("unknown scene answered %d %s", w.Code, w.Body)
	}
}

func TestExecutorAppliesTheTimeout(t *testing.T) {
	c := localClient(t)
	// The function returns only when its context ends: only the request's timeout ends it.
	RetryableOn(c, "exec-slow", func(ctx context.Context, _ int) error {
		<-ctx.Done()
		return ctx.Err()
	})
	req := replayOf("exec-slow", `1`)
	req.Timeout = backoff.Duration(30 * time.Millisecond)
	resp := decodeExec(t, execute(t, c, "secret", req))
	if resp.Status != protocol.ExecuteFailed || !strings.Contains(resp.Error, "timed out after 30ms") {
		t.Fatalf("a slow replay answered %+v, want a failure that names the timeout", resp)
	}
}

func TestExecutorCapacity(t *testing.T) {
	cfg := testConfig("http://127.0.0.1:1")
	cfg.Capacity = 1
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}), make(chan struct{})
	RetryableOn(c, "exec-busy", func(ctx context.Context, _ int) error {
		close(started)
		<-release
		return nil
	})
	done := make(chan protocol.ExecuteResponse)
	go func() { done <- decodeExec(t, execute(t, c, "secret", replayOf("exec-busy", `1`))) }()
	select {
	case <-started:
	case resp := <-done:
		t.Fatalf("the first replay was answered %+v without running", resp)
	case <-time.After(10 * time.Second):
		t.Fatal("the first replay did not start")
	}
	// The first replay holds the only slot until release: the second is answered without it.
	w := execute(t, c, "secret", replayOf("exec-busy", `2`))
	if w.Code != http.StatusTooManyRequests || errorCode(t, w) != "busy" {
		t.Fatalf("beyond capacity got %d %s, want 429 busy", w.Code, w.Body)
	}
	if st := c.Stats(); st.InFlight != 1 {
		t.Errorf("in flight %d, want 1", st.InFlight)
	}
	// A forged request does not count against the slot: it is refused for its signature.
	r, body := signedExecute(t, c, "not-the-token", replayOf("exec-busy", `3`), time.Now(), nil)
	if w := send(c.Handler(), r, body); w.Code != http.StatusUnauthorized || errorCode(t, w) != "bad_signature" {
		t.Fatalf("a forged request at capacity got %d %s, want 401 bad_signature", w.Code, w.Body)
	}
	close(release)
	if resp := <-done; resp.Status != protocol.ExecuteSucceeded {
		t.Fatalf("the running replay answered %+v", resp)
	}
}

// Bodies that have not been verified are read by at most four times Capacity requests at
// once: senders that trickle their bodies (forged or not) cannot hold more, and a request
// beyond them is answered busy with its body unread.
func TestExecutorBoundsTheBodiesItReads(t *testing.T) {
	cfg := testConfig("http://127.0.0.1:1")
	cfg.Capacity = 1
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	RetryableOn(c, "exec-slow-body", func(context.Context, int) error { return nil })
	type slow struct {
		pw   *io.PipeWriter
		done chan int
	}
	var slows []slow
	for range readersPerSlot {
		r, _ := signedExecute(t, c, "secret", replayOf("exec-slow-body", `1`), time.Now(), nil)
		pr, pw := io.Pipe()
		r.Body = pr
		s := slow{pw: pw, done: make(chan int, 1)}
		go func() {
			w := httptest.NewRecorder()
			c.Handler().ServeHTTP(w, r)
			s.done <- w.Code
		}()
		slows = append(slows, s)
	}
	eventually(t, "four bodies being read", func() bool { return c.exec.reading.Load() == readersPerSlot })
	r, body := signedExecute(t, c, "secret", replayOf("exec-slow-body", `2`), time.Now(), nil)
	tb := &trackedBody{r: bytes.NewReader(body)}
	r.Body = tb
	w := httptest.NewRecorder()
	c.Handler().ServeHTTP(w, r)
	if w.Code != http.StatusTooManyRequests || tb.read.Load() {
		t.Fatalf("beyond the readers a request got %d with its body read %v, want 429 unread", w.Code, tb.read.Load())
	}
	for _, s := range slows {
		s.pw.CloseWithError(errors.New("sender gave up"))
		if code := <-s.done; code != http.StatusBadRequest {
			t.Fatalf("a body that never arrived got %d, want 400", code)
		}
	}
	// With the readers free again, a request is read and runs.
	if w := execute(t, c, "secret", replayOf("exec-slow-body", `3`)); w.Code != http.StatusOK {
		t.Fatalf("after the slow senders a request got %d %s", w.Code, w.Body)
	}
}

func TestExecutorRecoversPanics(t *testing.T) {
	c := localClient(t)
	RetryableOn(c, "exec-panic", func(context.Context, int) error { panic("nil map") })
	resp := decodeExec(t, execute(t, c, "secret", replayOf("exec-panic", `1`)))
	if resp.Status != protocol.ExecuteFailed || !strings.Contains(resp.Error, "panic: nil map") {
		t.Fatalf("a panicking replay answered %+v", resp)
	}
}

func TestExecutorDispatchesCallbacks(t *testing.T) {
	c := localClient(t)
	var ev CallbackEvent[email]
	RetryableOn(c, "exec-cb", alwaysFails, WithCallback(func(ctx context.Context, e CallbackEvent[email]) error {
		ev = e
		return nil
	}))
	RetryableOn(c, "exec-no-cb", alwaysFails)

	req := replayOf("exec-cb", `{"to":"a@example.com"}`)
	req.Kind, req.Attempt = protocol.KindCallback, 2
	req.Callback = &protocol.CallbackInfo{Outcome: protocol.OutcomeExhausted, LastError: "smtp 550", Attempts: 9}
	resp := decodeExec(t, execute(t, c, "secret", req))
	if resp.Status != protocol.ExecuteSucceeded {
		t.Fatalf("callback answered %+v", resp)
	}
	want := CallbackEvent[email]{Scene: "exec-cb", TaskID: 7, IdempotencyKey: "k", Outcome: protocol.OutcomeExhausted,
		Args: email{To: "a@example.com"}, LastError: "smtp 550", Attempts: 9, CallbackAttempt: 2}
	if ev != want {
		t.Fatalf("callback got %+v, want %+v", ev, want)
	}

	req.Scene = "exec-no-cb"
	if resp := decodeExec(t, execute(t, c, "secret", req)); resp.Status != protocol.ExecuteSucceeded {
		t.Fatalf("a scene without callback answered %+v, want succeeded", resp)
	}
	req.Kind = "dance"
	if w := execute(t, c, "secret", req); w.Code != http.StatusBadRequest || errorCode(t, w) != "unknown_kind" {
		t.Fatalf("unknown kind answered %d %s", w.Code, w.Body)
	}
}

func TestExecutorOnItsOwnListener(t *testing.T) {
	fs := newFakeServer(t, "secret")
	cfg := testConfig(fs.URL())
	cfg.ListenAddr = "127.0.0.1:0"
	var ran atomic.Bool
	c := startClient(t, cfg, func(c *Client) {
		RetryableOn(c, "listener", func(context.Context, int) error { ran.Store(true); return nil })
	})
	var reg protocol.RegisterRequest
	fs.get(func(fs *fakeServer) { reg = fs.registers[0] })
	if !strings.HasPrefix(reg.ExecutorURL, "http://127.0.0.1:") || !strings.HasSuffix(reg.ExecutorURL, ExecutorPath) {
		t.Fatalf("registered executor URL %q", reg.ExecutorURL)
	}
	body, _ := json.Marshal(replayOf("listener", `1`))
	r, _ := http.NewRequest(http.MethodPost, reg.ExecutorURL, bytes.NewReader(body))
	signFor(r, c, "secret", body)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var er protocol.ExecuteResponse
	json.NewDecoder(resp.Body).Decode(&er)
	if resp.StatusCode != http.StatusOK || er.Status != protocol.ExecuteSucceeded || !ran.Load() {
		t.Fatalf("replay through the listener: %d %+v", resp.StatusCode, er)
	}
}

func TestDeriveExecutorURL(t *testing.T) {
	cases := map[string]string{
		"10.1.2.3:7070": "http://10.1.2.3:7070" + ExecutorPath,
		"orders-1:7070": "http://orders-1:7070" + ExecutorPath,
		"[::1]:7070":    "http://[::1]:7070" + ExecutorPath,
	}
	for listen, want := range cases {
		if got := deriveExecutorURL(listen, &tcpAddr7070); got != want {
			t.Errorf("%s: %s, want %s", listen, got, want)
		}
	}
	if got := deriveExecutorURL(":7070", &tcpAddr7070); !strings.HasSuffix(got, ":7070"+ExecutorPath) || strings.Contains(got, "//:") {
		t.Errorf(":7070 gave %s", got)
	}
}

var tcpAddr7070 = net.TCPAddr{IP: net.IPv4zero, Port: 7070}

package retryhub

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// fakeServer stands for the network in these tests: it answers the client API as the contract
// in package protocol says, checks every signature, and records what it was sent. It holds no
// retry logic of its own.
type fakeServer struct {
	t     *testing.T
	srv   *httptest.Server
	token string

	mu sync.Mutex
	// down makes every endpoint answer 503 (nothing is committed).
	down bool
	// failNextCommitAnswers commits the next n report batches but answers 500, as when an
	// answer is lost.
	failNextCommitAnswers int
	// rejectScene makes the server reject items of this scene.
	rejectScene string
	// maxBody answers 413 to report bodies larger than this; 0 means no limit.
	maxBody  int
	register protocol.RegisterResponse
	// policies and etag are served on the scenes endpoint.
	policies []protocol.ScenePolicy
	etag     string

	registers     []protocol.RegisterRequest
	heartbeats    int
	deregisters   int
	instances     map[string]bool
	scenesGets    int
	notModified   int
	badSigs       int
	badSigReports int // report requests among them
	// refusedReports counts report requests answered 503 while down.
	refusedReports int
	batches        [][]protocol.ReportItem
	committed      map[string]int // by scene + key: how many times committed
	active         map[string]bool
	headers        []http.Header
}

func newFakeServer(t *testing.T, token string) *fakeServer {
	t.Helper()
	fs := newFake(t, token)
	fs.srv = httptest.NewServer(http.HandlerFunc(fs.serve))
	t.Cleanup(fs.srv.Close)
	return fs
}

// newFakeTLSServer is a fakeServer that serves HTTPS with a test certificate for 127.0.0.1,
// signed by a CA that no system trusts; CAFile writes that CA's PEM file for Config.CAFile.
func newFakeTLSServer(t *testing.T, token string) *fakeServer {
	t.Helper()
	fs := newFake(t, token)
	fs.srv = httptest.NewUnstartedServer(http.HandlerFunc(fs.serve))
	// Clients that refuse the certificate make the server log handshake errors: not news here.
	fs.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	fs.srv.StartTLS()
	t.Cleanup(fs.srv.Close)
	return fs
}

// CAFile writes the PEM of the TLS server's certificate, its own CA, to a file and returns its
// path.
func (fs *fakeServer) CAFile() string {
	fs.t.Helper()
	path := filepath.Join(fs.t.TempDir(), "ca.pem")
	block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: fs.srv.Certificate().Raw})
	if err := os.WriteFile(path, block, 0o600); err != nil {
		fs.t.Fatal(err)
	}
	return path
}

func newFake(t *testing.T, token string) *fakeServer {
	return &fakeServer{
		t:         t,
		token:     token,
		instances: map[string]bool{},
		committed: map[string]int{},
		active:    map[string]bool{},
		etag:      `"v0"`,
		register: protocol.RegisterResponse{
			HeartbeatInterval: backoff.Duration(50 * time.Millisecond),
			InstanceTTL:       backoff.Duration(time.Second),
			MaxBodyBytes:      4 << 20,
			MaxPayloadBytes:   64 << 10,
			MaxBatch:          500,
		},
	}
}

func (fs *fakeServer) URL() string { return fs.srv.URL }

func fail(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(protocol.ErrorBody{Error: protocol.ErrorDetail{Code: code, Message: msg}})
}

func (fs *fakeServer) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.down {
		if r.URL.Path == protocol.PathReports {
			fs.refusedReports++
		}
		fail(w, http.StatusServiceUnavailable, "unavailable", "the server is down")
		return
	}
	if _, err := protocol.VerifyRequest(r, fs.token, body, time.Now(), protocol.SignatureWindow); err != nil {
		fs.badSigs++
		if r.URL.Path == protocol.PathReports {
			fs.badSigReports++
		}
		fail(w, http.StatusUnauthorized, "bad_signature", err.Error())
		return
	}
	if r.Header.Get(protocol.HeaderNamespace) == "" || r.Header.Get(protocol.HeaderGroup) == "" {
		fail(w, http.StatusBadRequest, "missing_group", "namespace and group headers are required")
		return
	}
	fs.headers = append(fs.headers, r.Header.Clone())
	switch r.URL.Path {
	case protocol.PathRegister:
		var req protocol.RegisterRequest
		if err := json.Unmarshal(body, &req); err != nil {
			fail(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		fs.registers = append(fs.registers, req)
		fs.instances[req.InstanceID] = true
		writeJSON(w, http.StatusOK, fs.register)
	case protocol.PathHeartbeat:
		var req protocol.HeartbeatRequest
		json.Unmarshal(body, &req)
		fs.heartbeats++
		if !fs.instances[req.InstanceID] {
			fail(w, http.StatusNotFound, "unknown_instance", "no instance "+req.InstanceID)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case protocol.PathDeregister:
		var req protocol.DeregisterRequest
		json.Unmarshal(body, &req)
		fs.deregisters++
		delete(fs.instances, req.InstanceID)
		w.WriteHeader(http.StatusNoContent)
	case protocol.PathScenes:
		if r.Method != http.MethodGet {
			fail(w, http.StatusMethodNotAllowed, "method", "GET only")
			return
		}
		fs.scenesGets++
		if r.Header.Get("If-None-Match") == fs.etag {
			fs.notModified++
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", fs.etag)
		writeJSON(w, http.StatusOK, protocol.ScenesResponse{Namespace: "default", Group: "g", Scenes: fs.policies})
	case protocol.PathReports:
		if fs.maxBody > 0 && len(body) > fs.maxBody {
			fail(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body of %d bytes exceeds %d", len(body), fs.maxBody))
			return
		}
		var req protocol.ReportRequest
		if err := json.Unmarshal(body, &req); err != nil {
			fail(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		fs.batches = append(fs.batches, req.Items)
		resp := protocol.ReportResponse{Results: make([]protocol.ReportResult, len(req.Items))}
		for i, it := range req.Items {
			k := it.Scene + "\n" + it.IdempotencyKey
			switch {
			case it.Scene == fs.rejectScene:
				resp.Results[i] = protocol.ReportResult{Status: protocol.ReportRejected, Reason: "scene is closed"}
			case fs.active[k]:
				resp.Results[i] = protocol.ReportResult{Status: protocol.ReportMerged, TaskID: 1}
			default:
				fs.active[k] = true
				fs.committed[k]++
				resp.Results[i] = protocol.ReportResult{Status: protocol.ReportCreated, TaskID: int64(len(fs.committed))}
			}
		}
		if allRejected(resp.Results) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnprocessableEntity)
			json.NewEncoder(w).Encode(map[string]any{
				"error":   protocol.ErrorDetail{Code: "all_rejected", Message: "no item could be stored"},
				"results": resp.Results,
			})
			return
		}
		if fs.failNextCommitAnswers > 0 {
			fs.failNextCommitAnswers--
			fail(w, http.StatusInternalServerError, "internal", "answer lost")
			return
		}
		writeJSON(w, http.StatusOK, resp)
	default:
		fail(w, http.StatusNotFound, "not_found", r.URL.Path)
	}
}

func (fs *fakeServer) set(f func(fs *fakeServer)) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f(fs)
}

func (fs *fakeServer) get(f func(fs *fakeServer)) { fs.set(f) }

// items returns every report item received, in order.
func (fs *fakeServer) items() []protocol.ReportItem {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var out []protocol.ReportItem
	for _, b := range fs.batches {
		out = append(out, b...)
	}
	return out
}

// refusedReportCount returns how many report requests were answered 503 while down.
func (fs *fakeServer) refusedReportCount() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.refusedReports
}

func (fs *fakeServer) committedCount() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return len(fs.committed)
}

// execute sends a signed ExecuteRequest to h and returns the recorded answer.
func execute(t *testing.T, c *Client, token string, req protocol.ExecuteRequest) *httptest.ResponseRecorder {
	t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, ExecutorPath, bytes.NewReader(body))
	signFor(r, c, token, body)
	w := httptest.NewRecorder()
	c.Handler().ServeHTTP(w, r)
	return w
}

// signFor signs r the way the server signs a call meant for c's instance.
func signFor(r *http.Request, c *Client, token string, body []byte) {
	r.Header.Set(protocol.HeaderNamespace, c.cfg.Namespace)
	r.Header.Set(protocol.HeaderGroup, c.cfg.Group)
	r.Header.Set(protocol.HeaderInstance, c.cfg.InstanceID)
	protocol.SignRequest(r, token, body, time.Now())
}

func decodeExec(t *testing.T, w *httptest.ResponseRecorder) protocol.ExecuteResponse {
	t.Helper()
	if w.Code != http.StatusOK {
		t.Fatalf("executor answered %d %s, want 200", w.Code, w.Body)
	}
	var resp protocol.ExecuteResponse
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatalf("decode executor answer %q: %v", w.Body, err)
	}
	return resp
}

// logBuffer collects log records for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testConfig is a client configuration with short intervals.
func testConfig(servers ...string) Config {
	return Config{
		Servers:               servers,
		Group:                 "g",
		Token:                 "secret",
		ReportBatchSize:       10,
		ReportInterval:        10 * time.Millisecond,
		PolicyRefreshInterval: 20 * time.Millisecond,
		RetryMinDelay:         5 * time.Millisecond,
		RetryMaxDelay:         20 * time.Millisecond,
		ConfigErrorDelay:      50 * time.Millisecond,
		HTTPClient:            &http.Client{Timeout: 2 * time.Second},
		Logger:                slog.New(slog.DiscardHandler),
	}
}

// startClient starts an explicit client; declare runs before Start to declare its scenes.
func startClient(t *testing.T, cfg Config, declare func(c *Client)) *Client {
	t.Helper()
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if declare != nil {
		declare(c)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_ = c.Shutdown(ctx)
	})
	return c
}

// eventually is the tests' one polling helper: it checks cond every 5ms until it holds, and
// fails the test when it does not hold within 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

func fixed(d time.Duration) backoff.Policy {
	return backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(d)}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// scenePolicy returns the policy in force for a scene of c.
func (c *Client) scenePolicy(name string) *policy { return c.reg.get(name).pol.Load() }

func allRejected(rs []protocol.ReportResult) bool {
	for _, r := range rs {
		if r.Status != protocol.ReportRejected {
			return false
		}
	}
	return true
}

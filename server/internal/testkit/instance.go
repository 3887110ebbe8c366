package testkit

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// Behaviour is how an Instance answers a call: an HTTP status and the response body.
type Behaviour func(req protocol.ExecuteRequest) (int, protocol.ExecuteResponse)

// Hang, as the status a Behaviour returns, makes the instance never answer: it waits until the
// caller gives up.
const Hang = -1

// Succeed answers every call: succeeded.
func Succeed(protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
	return http.StatusOK, protocol.ExecuteResponse{Status: protocol.ExecuteSucceeded}
}

// Instance is a test HTTP server playing a client instance's executor: it checks the server's
// signature against its token, records each call it can verify and answers it as its Behaviour
// says. A call with a bad signature is counted and answered 401.
type Instance struct {
	srv    *httptest.Server
	token  string
	behave Behaviour

	mu     sync.Mutex
	calls  []protocol.ExecuteRequest
	forged int
}

// NewInstance starts an instance holding token; it stops when the test ends.
func NewInstance(t testing.TB, token string, behave Behaviour) *Instance {
	t.Helper()
	in := &Instance{token: token, behave: behave}
	in.srv = httptest.NewServer(http.HandlerFunc(in.serve))
	t.Cleanup(in.srv.Close)
	return in
}

func (in *Instance) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if _, err := protocol.VerifyRequest(r, in.token, body, time.Now(), protocol.SignatureWindow); err != nil {
		in.mu.Lock()
		in.forged++
		in.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var req protocol.ExecuteRequest
	if err := json.Unmarshal(body, &req); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	in.mu.Lock()
	in.calls = append(in.calls, req)
	in.mu.Unlock()
	status, resp := in.behave(req)
	if status == Hang {
		<-r.Context().Done()
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(resp)
}

// URL is the instance's executor URL.
func (in *Instance) URL() string { return in.srv.URL + "/retryhub/execute" }

// Calls returns the verified calls received so far.
func (in *Instance) Calls() []protocol.ExecuteRequest {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]protocol.ExecuteRequest(nil), in.calls...)
}

// CallsOf returns the verified calls of a kind received so far.
func (in *Instance) CallsOf(kind string) []protocol.ExecuteRequest {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []protocol.ExecuteRequest
	for _, c := range in.calls {
		if c.Kind == kind {
			out = append(out, c)
		}
	}
	return out
}

// Forged returns how many calls came with a signature the instance could not verify.
func (in *Instance) Forged() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.forged
}

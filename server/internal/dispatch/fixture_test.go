package dispatch_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/dispatch"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

const testToken = "dispatch-test-token-0123456789"

// fixture is one test's group (signed with testToken) and scene in a fresh database.
type fixture struct{ *testkit.Fixture }

// newFixture creates a group and a scene "notify": 3 attempts, fixed one-hour back-off (a failed
// task is not due again during the test), 1 s attempt timeout; edit changes it further.
func newFixture(t *testing.T, s *storage.Store, edit func(*retry.Scene)) *fixture {
	t.Helper()
	return &fixture{testkit.NewFixture(t, s, storagetest.RandomName("ns"), testToken,
		testkit.RemoteScene(3, time.Hour, time.Second, edit))}
}

// startSettler starts a settler, failing the test if it does not start.
func startSettler(t *testing.T, st *dispatch.Settler) {
	t.Helper()
	if err := st.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// keys returns n distinct keys with the prefix.
func keys(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// claim claims, as node-1, every replay (or callback) due by dueBy, holding each for a minute
// past now.
func (f *fixture) claim(kind retry.AttemptKind, dueBy time.Time) []retry.Claim {
	f.T.Helper()
	return f.Claim(kind, "node-1", dueBy, time.Now().Add(time.Minute))
}

// waitTask waits until the task satisfies ok, failing with its state after a generous timeout.
func (f *fixture) waitTask(id int64, what string, ok func(retry.Task) bool) retry.Task {
	f.T.Helper()
	var tk retry.Task
	testkit.WaitDescribed(f.T, 5*time.Millisecond, 10*time.Second, func() string {
		return fmt.Sprintf("task %d to be %s: it is %s after %d attempts (callback %s), next at %s, last error %q",
			id, what, tk.State, tk.Attempts, tk.CallbackState, tk.NextAt.Format(time.StampMilli), tk.LastError)
	}, func() bool {
		tk = f.Task(id)
		return ok(tk)
	})
	return tk
}

func notRunning(tk retry.Task) bool { return tk.State != retry.Running }

// executor is a fake client instance holding testToken (see testkit.Instance).
type executor struct {
	*testkit.Instance
	t *testing.T
}

func newExecutor(t *testing.T, behave testkit.Behaviour) *executor {
	t.Helper()
	return &executor{testkit.NewInstance(t, testToken, behave), t}
}

// received returns the calls received so far, failing the test if any came with a bad
// signature.
func (e *executor) received() []protocol.ExecuteRequest {
	if n := e.Forged(); n > 0 {
		e.t.Errorf("the executor received %d calls with a bad signature", n)
	}
	return e.Calls()
}

func busy(protocol.ExecuteRequest) (int, protocol.ExecuteResponse) {
	return http.StatusTooManyRequests, protocol.ExecuteResponse{}
}

// newRawServer is an executor that answers every call with status and body as they are.
func newRawServer(t *testing.T, status int, body []byte) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/html; charset=iso-8859-1")
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/retryhub/execute"
}

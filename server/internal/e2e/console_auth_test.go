package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
	"github.com/retryhub/retryhub/server/internal/app"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
)

// console sends a console API request to a node with an optional bearer token.
func console(t *testing.T, node *app.App, method, path, token string, body any) (int, []byte) {
	t.Helper()
	return send(t, method, node.URL()+path, token, body)
}

// send makes a request to url with an optional bearer token and JSON body, and returns the
// status and the body of the answer.
func send(t *testing.T, method, url, token string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

func consoleLogin(t *testing.T, node *app.App, user, password string) string {
	t.Helper()
	status, body := console(t, node, http.MethodPost, consoleapi.Prefix+"/auth/login", "", map[string]string{"username": user, "password": password})
	if status != http.StatusOK {
		t.Fatalf("login %s on %s: %d %s", user, node.NodeID, status, body)
	}
	var s struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(body, &s); err != nil || s.Token == "" {
		t.Fatalf("login answer %s: %v", body, err)
	}
	return s.Token
}

// TestConsoleSessionsWorkOnEveryNode: the first start creates admin with the configured
// password; a session from one node works on the other (they share the signing key through
// the database); a rotation on one node signs everyone out on both.
func TestConsoleSessionsWorkOnEveryNode(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		cfg := testConfig(target)
		cfg.Bootstrap.AdminPassword = "first-admin-password"
		a := startNode(t, cfg, "node-a")
		cfg.Bootstrap.AdminPassword = "another-password" // the admin exists: this changes nothing
		b := startNode(t, cfg, "node-b")

		token := consoleLogin(t, a, "admin", "first-admin-password")
		status, body := console(t, b, http.MethodGet, consoleapi.Prefix+"/auth/me", token, nil)
		if status != http.StatusOK || !bytes.Contains(body, []byte(`"namespace":"*","role":"admin"`)) {
			t.Fatalf("node A's session on node B: %d %s", status, body)
		}
		status, body = console(t, b, http.MethodPost, consoleapi.Prefix+"/users", token,
			map[string]any{"username": "olga", "password": "olga-password", "roles": []map[string]string{{"namespace": "*", "role": "viewer"}}})
		if status != http.StatusCreated {
			t.Fatalf("create a user on B: %d %s", status, body)
		}
		olga := consoleLogin(t, a, "olga", "olga-password")
		if status, _ := console(t, b, http.MethodGet, consoleapi.Prefix+"/users", olga, nil); status != http.StatusForbidden {
			t.Fatalf("a viewer lists users: %d", status)
		}

		if status, body := console(t, a, http.MethodPost, consoleapi.Prefix+"/auth/rotate-key", token, nil); status != http.StatusNoContent {
			t.Fatalf("rotate on A: %d %s", status, body)
		}
		for _, tok := range []string{token, olga} {
			if status, _ := console(t, b, http.MethodGet, consoleapi.Prefix+"/auth/me", tok, nil); status != http.StatusUnauthorized {
				t.Fatalf("a session from before the rotation on B: %d", status)
			}
		}
		fresh := consoleLogin(t, b, "admin", "first-admin-password")
		if status, _ := console(t, a, http.MethodGet, consoleapi.Prefix+"/auth/me", fresh, nil); status != http.StatusOK {
			t.Fatalf("a session signed with the new key on A: %d", status)
		}
		status, body = console(t, a, http.MethodGet, consoleapi.Prefix+"/audit?action=auth-rotate-key", fresh, nil)
		if status != http.StatusOK || !bytes.Contains(body, []byte(`"actor":"admin"`)) {
			t.Fatalf("the rotation is not in the audit log: %d %s", status, body)
		}
	})
}

// TestConsoleDocumentIsServed: the node serves the OpenAPI document and the reference page,
// and an unknown console path is a JSON 404 like every /api/ path.
func TestConsoleDocumentIsServed(t *testing.T) {
	node := startNode(t, testConfig(storagetest.SQLite(t)), "node-a")
	status, body := console(t, node, http.MethodGet, consoleapi.OpenAPIPath, "", nil)
	if status != http.StatusOK || !bytes.Contains(body, []byte(`"auth-login"`)) {
		t.Fatalf("%s: %d", consoleapi.OpenAPIPath, status)
	}
	if status, _ := console(t, node, http.MethodGet, consoleapi.DocsPath, "", nil); status != http.StatusOK {
		t.Fatalf("%s: %d", consoleapi.DocsPath, status)
	}
	status, body = console(t, node, http.MethodGet, consoleapi.Prefix+"/no-such-thing", "", nil)
	var eb protocol.ErrorBody
	if status != http.StatusNotFound || json.Unmarshal(body, &eb) != nil || eb.Error.Code != "not_found" {
		t.Fatalf("unknown console path: %d %s", status, body)
	}
}

// lockedBuffer is a log destination that nodes write to from many goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestFirstStartLogsAGeneratedAdminPassword: with no bootstrap.admin_password, the first start
// logs the admin's generated password once, and it signs in; a second node logs none.
func TestFirstStartLogsAGeneratedAdminPassword(t *testing.T) {
	cfg := testConfig(storagetest.SQLite(t))
	start := func(name string) (*app.App, *lockedBuffer) {
		var out lockedBuffer
		c := cfg
		c.Server.NodeID = name
		a, err := app.New(context.Background(), c, slog.New(slog.NewTextHandler(&out, nil)))
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			a.Shutdown(ctx)
		})
		return a, &out
	}
	a, logA := start("node-a")
	m := regexp.MustCompile(`created the user admin.* password=(\S+)`).FindStringSubmatch(logA.String())
	if m == nil {
		t.Fatalf("no generated password in the log:\n%s", logA)
	}
	consoleLogin(t, a, "admin", m[1])
	_, logB := start("node-b")
	if strings.Contains(logB.String(), "created the user admin") {
		t.Fatalf("the second node created the admin again:\n%s", logB)
	}
}

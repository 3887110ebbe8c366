package consoleapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/crypto/bcrypt"

	"github.com/retryhub/retryhub/server/internal/alert"
	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
	"github.com/retryhub/retryhub/server/internal/auth"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// env is a console API on a fresh database, served over real HTTP, with namespaces A and B
// and one user per principal of the route table.
type env struct {
	t      *testing.T
	store  *storage.Store
	svc    *auth.Service
	api    *consoleapi.API
	engine *gin.Engine
	srv    *httptest.Server
	nsA    retry.Namespace
	nsB    retry.Namespace
	users  map[string]storage.User
	// channels seals alert channels; hook receives their webhooks.
	channels *alert.Channels
	hook     *webhookReceiver
}

// The route table's principals.
const (
	anonymous = "anonymous"
	viewerA   = "viewer-a"
	operatorA = "operator-a"
	adminA    = "admin-a"
	adminB    = "admin-b" // a user of another namespace
	global    = "global-admin"
)

var principals = []string{anonymous, viewerA, operatorA, adminA, adminB, global}

func password(user string) string { return "pw-of-" + user }

func newEnv(t *testing.T, target storagetest.Target, tls bool) *env {
	t.Helper()
	ctx := context.Background()
	s := storagetest.Open(t, target)
	svc, err := auth.New(ctx, auth.Params{Store: s, TokenTTL: time.Hour, BcryptCost: bcrypt.MinCost, Log: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, store: s, svc: svc, users: map[string]storage.User{}}
	if e.nsA, err = s.CreateNamespace(ctx, retry.Namespace{Name: "ns-a", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	if e.nsB, err = s.CreateNamespace(ctx, retry.Namespace{Name: "ns-b", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	for name, g := range map[string]storage.Grant{
		viewerA: {NamespaceID: e.nsA.ID, Role: "viewer"}, operatorA: {NamespaceID: e.nsA.ID, Role: "operator"},
		adminA: {NamespaceID: e.nsA.ID, Role: "admin"}, adminB: {NamespaceID: e.nsB.ID, Role: "admin"},
		global: {NamespaceID: storage.AllNamespaces, Role: "admin"}, "victim": {NamespaceID: e.nsA.ID, Role: "viewer"},
	} {
		e.addUser(name, g)
	}
	gin.SetMode(gin.ReleaseMode)
	e.engine = gin.New()
	e.newAlerts()
	evaluator, err := alert.NewEvaluator(alert.Params{Store: s, Sender: e.channels.Sender, Log: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	e.api = consoleapi.New(consoleapi.Params{Store: s, Auth: svc, Version: "test", Log: testkit.Logger(t),
		Alerts: evaluator, Channels: e.channels})
	e.api.Mount(e.engine)
	if tls {
		e.srv = httptest.NewTLSServer(e.engine)
	} else {
		e.srv = httptest.NewServer(e.engine)
	}
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) addUser(name string, grants ...storage.Grant) storage.User {
	e.t.Helper()
	hash, err := e.svc.HashPassword(password(name))
	if err != nil {
		e.t.Fatal(err)
	}
	u, err := e.store.CreateUser(context.Background(), storage.User{Username: name, PasswordHash: hash, Grants: grants})
	if err != nil {
		e.t.Fatal(err)
	}
	e.users[name] = u
	return u
}

// bearer is an Authorization header with a fresh session of the user ("" for anonymous).
func (e *env) bearer(name string) string {
	e.t.Helper()
	if name == anonymous {
		return ""
	}
	u, err := e.store.User(context.Background(), e.users[name].ID)
	if err != nil {
		e.t.Fatal(err)
	}
	s, err := e.svc.Issue(context.Background(), u)
	if err != nil {
		e.t.Fatal(err)
	}
	return "Bearer " + s.Token
}

// request sends a request; headers are name, value pairs.
func (e *env) request(method, path string, body any, headers ...string) (*http.Response, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] != "" {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, out
}

// as sends a request as the principal.
func (e *env) as(name, method, path string, body any) (int, []byte) {
	e.t.Helper()
	resp, out := e.request(method, path, body, "Authorization", e.bearer(name))
	return resp.StatusCode, out
}

// decode reads a JSON body, failing the test when it is not one.
func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

// errorBody is the error every API answers.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Details []struct {
			Field  string `json:"field"`
			Reason string `json:"reason"`
		} `json:"details"`
	} `json:"error"`
}

// newestAudit is the newest audit entry (zero when there is none).
func (e *env) newestAudit() storage.AuditEntry {
	e.t.Helper()
	list, err := e.store.ListAudit(context.Background(), storage.AuditFilter{}, 1)
	if err != nil {
		e.t.Fatal(err)
	}
	if len(list) == 0 {
		return storage.AuditEntry{}
	}
	return list[0]
}

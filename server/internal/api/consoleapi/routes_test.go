package consoleapi_test

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/danielgtaylor/huma/v2"

	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
)

// routeCase is one operation of the route table: the request to send as each principal
// (path with its ids filled in, and body) and the status each principal gets.
type routeCase struct {
	prepare func(e *env, principal string) (path string, body any)
	want    map[string]int
}

// Who gets what.
func everyone(status int) map[string]int {
	m := map[string]int{}
	for _, p := range principals {
		m[p] = status
	}
	return m
}

func signedIn(status int) map[string]int {
	m := everyone(status)
	m[anonymous] = http.StatusUnauthorized
	return m
}

// operatorOfA: operators and admins of namespace A, and global admins.
func operatorOfA(status int) map[string]int {
	m := adminOfA(status)
	m[operatorA] = status
	return m
}

func globalAdmin(status int) map[string]int {
	m := signedIn(http.StatusForbidden)
	m[global] = status
	return m
}

// adminOfA is for what an admin of namespace A does in A.
func adminOfA(status int) map[string]int {
	m := globalAdmin(status)
	m[adminA] = status
	return m
}

func fixed(path string, body any) func(*env, string) (string, any) {
	return func(*env, string) (string, any) { return path, body }
}

var seq int

func unique(prefix string) string {
	seq++
	return fmt.Sprintf("%s-%d", prefix, seq)
}

// routeTable has one row per console operation, keyed by operation id: the rows of each part
// of the API, from the file that tests it.
func routeTable() map[string]routeCase {
	all := map[string]routeCase{}
	for _, part := range []map[string]routeCase{accountRoutes(), catalogRoutes(), taskRoutes(), dashboardRoutes(), jobRoutes(), alertRoutes()} {
		for id, c := range part {
			if _, dup := all[id]; dup {
				panic("route table: operation " + id + " has two rows")
			}
			all[id] = c
		}
	}
	return all
}

// accountRoutes are the rows of sessions, users, API tokens and the audit log.
func accountRoutes() map[string]routeCase {
	p := consoleapi.Prefix
	return map[string]routeCase{
		"auth-login":  {fixed(p+"/auth/login", map[string]string{"username": "victim", "password": password("victim")}), everyone(http.StatusOK)},
		"auth-me":     {fixed(p+"/auth/me", nil), signedIn(http.StatusOK)},
		"auth-logout": {fixed(p+"/auth/logout", nil), signedIn(http.StatusNoContent)},
		"auth-password": {func(_ *env, who string) (string, any) {
			return p + "/auth/password", map[string]string{"current_password": password(who), "new_password": password(who)}
		}, signedIn(http.StatusOK)},
		"auth-rotate-key": {fixed(p+"/auth/rotate-key", nil), globalAdmin(http.StatusNoContent)},
		"users-list":      {fixed(p+"/users?limit=10", nil), globalAdmin(http.StatusOK)},
		"users-get": {func(e *env, _ string) (string, any) {
			return fmt.Sprintf("%s/users/%d", p, e.users["victim"].ID), nil
		}, globalAdmin(http.StatusOK)},
		"users-create": {func(_ *env, _ string) (string, any) {
			return p + "/users", map[string]any{"username": unique("new"), "password": "a-long-password",
				"roles": []map[string]string{{"namespace": "ns-a", "role": "viewer"}}}
		}, globalAdmin(http.StatusCreated)},
		"users-update": {func(e *env, _ string) (string, any) {
			return fmt.Sprintf("%s/users/%d", p, e.users["victim"].ID), map[string]any{"roles": []map[string]string{{"namespace": "ns-a", "role": "viewer"}}}
		}, globalAdmin(http.StatusOK)},
		"users-reset-password": {func(e *env, _ string) (string, any) {
			return fmt.Sprintf("%s/users/%d/password", p, e.users["victim"].ID), map[string]string{"password": password("victim")}
		}, globalAdmin(http.StatusNoContent)},
		"tokens-list": {fixed(p+"/tokens", nil), func() map[string]int {
			m := adminOfA(http.StatusOK)
			m[adminB] = http.StatusOK // lists B's tokens
			return m
		}()},
		"tokens-create": {fixed(p+"/tokens", map[string]string{"name": "ci", "namespace": "ns-a", "role": "viewer"}), adminOfA(http.StatusCreated)},
		"tokens-revoke": {func(e *env, _ string) (string, any) {
			t, err := e.store.CreateAPIToken(context.Background(), storage.APIToken{Name: unique("t"), Hash: unique(strings.Repeat("0", 50)),
				Prefix: "rh_x", NamespaceID: e.nsA.ID, Role: "viewer", CreatedBy: "test"})
			if err != nil {
				panic(err)
			}
			return fmt.Sprintf("%s/tokens/%d", p, t.ID), nil
		}, adminOfA(http.StatusNoContent)},
		"audit-list": {fixed(p+"/audit", nil), globalAdmin(http.StatusOK)},
	}
}

type docOp struct {
	id, method, path string
	public           bool
}

func operations(doc *huma.OpenAPI) []docOp {
	var ops []docOp
	for path, item := range doc.Paths {
		for m, op := range map[string]*huma.Operation{"GET": item.Get, "POST": item.Post, "PUT": item.Put,
			"PATCH": item.Patch, "DELETE": item.Delete, "HEAD": item.Head, "OPTIONS": item.Options} {
			if op != nil {
				ops = append(ops, docOp{id: op.OperationID, method: m, path: path, public: len(op.Security) == 0})
			}
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].id < ops[j].id })
	return ops
}

// TestRouteTable sends every console operation as each principal and checks the status; an
// operation without a row fails it. Every change by a signed-in caller (and every login) is
// in the audit log; a change attempted without credentials writes nothing.
func TestRouteTable(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		e := newEnv(t, target, false)
		table := routeTable()
		ops := operations(e.api.OpenAPI())
		seen := map[string]bool{}
		for _, op := range ops {
			seen[op.id] = true
			row, ok := table[op.id]
			if !ok {
				t.Errorf("operation %s (%s %s) has no row in the route table", op.id, op.method, op.path)
				continue
			}
			for _, who := range principals {
				want, ok := row.want[who]
				if !ok {
					t.Fatalf("%s: no expectation for %s", op.id, who)
				}
				path, body := row.prepare(e, who)
				if !strings.HasPrefix(path, consoleapi.Prefix) {
					t.Fatalf("%s: path %s", op.id, path)
				}
				before := e.newestAudit()
				status, out := e.as(who, op.method, path, body)
				if status != want {
					t.Errorf("%s %s as %s: %d, want %d: %s", op.method, path, who, status, want, out)
					continue
				}
				if status >= 400 {
					eb := decode[errorBody](t, out)
					if eb.Error.Code == "" || eb.Error.Message == "" {
						t.Errorf("%s as %s: error body %s", op.id, who, out)
					}
				}
				after := e.newestAudit()
				switch {
				case op.method == http.MethodGet:
					if after.ID != before.ID {
						t.Errorf("%s as %s wrote an audit entry: %+v", op.id, who, after)
					}
				case who == anonymous && !op.public:
					if after.ID != before.ID {
						t.Errorf("%s without credentials wrote an audit entry: %+v", op.id, after)
					}
				default:
					if after.ID == before.ID || after.Action != op.id || after.Status != status {
						t.Errorf("%s as %s (%d): newest audit entry %+v", op.id, who, status, after)
					}
				}
			}
		}
		for id := range table {
			if !seen[id] {
				t.Errorf("the route table has a row for %s, which is not an operation", id)
			}
		}
	})
}

// TestEveryRouteIsDocumented checks that every route the API serves under /api/v1/ is in the
// document served at /api/openapi.json, with its method.
func TestEveryRouteIsDocumented(t *testing.T) {
	e := newEnv(t, storagetest.SQLite(t), false)
	resp, body := e.request(http.MethodGet, consoleapi.OpenAPIPath, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %d", consoleapi.OpenAPIPath, resp.StatusCode)
	}
	doc := decode[struct {
		OpenAPI string                               `json:"openapi"`
		Paths   map[string]map[string]map[string]any `json:"paths"`
	}](t, body)
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	n := 0
	for _, r := range e.engine.Routes() {
		if !strings.HasPrefix(r.Path, "/api/v1/") {
			continue
		}
		n++
		path := r.Path
		for _, seg := range strings.Split(r.Path, "/") {
			if strings.HasPrefix(seg, ":") {
				path = strings.Replace(path, seg, "{"+seg[1:]+"}", 1)
			}
		}
		if _, ok := doc.Paths[path][strings.ToLower(r.Method)]; !ok {
			t.Errorf("%s %s is served but not in %s", r.Method, path, consoleapi.OpenAPIPath)
		}
	}
	if n < len(routeTable()) {
		t.Fatalf("found %d routes, the table has %d rows", n, len(routeTable()))
	}
	// Every 4xx the document names has the API's error body, and bad input is documented 400.
	for path, item := range doc.Paths {
		for m, op := range item {
			resps, _ := op["responses"].(map[string]any)
			if _, ok := resps["422"]; ok {
				t.Errorf("%s %s documents 422; the API answers 400", m, path)
			}
		}
	}
	if !strings.Contains(string(body), `"details"`) {
		t.Error("the document's error schema has no details")
	}
}

package consoleapi_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/retryhub/retryhub/server/internal/api/consoleapi"
	"github.com/retryhub/retryhub/server/internal/auth"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
)

type session struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	CSRFToken string    `json:"csrf_token"`
	User      struct {
		Username string `json:"username"`
		Roles    []struct{ Namespace, Role string }
	} `json:"user"`
}

const p = consoleapi.Prefix

func (e *env) login(user, pw string) (*http.Response, []byte) {
	e.t.Helper()
	return e.request(http.MethodPost, p+"/auth/login", map[string]string{"username": user, "password": pw})
}

func cookie(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func TestLoginSetsCookiesAndTheCookieNeedsCSRFForChanges(t *testing.T) {
	for _, tls := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%t", tls), func(t *testing.T) {
			e := newEnv(t, storagetest.SQLite(t), tls)
			resp, body := e.login(global, password(global))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("login: %d %s", resp.StatusCode, body)
			}
			s := decode[session](t, body)
			if s.Token == "" || s.CSRFToken == "" || time.Until(s.ExpiresAt) < 30*time.Minute || s.User.Username != global ||
				len(s.User.Roles) != 1 || s.User.Roles[0].Namespace != "*" || s.User.Roles[0].Role != "admin" {
				t.Fatalf("session %+v", s)
			}
			sc, cc := cookie(resp, auth.SessionCookie), cookie(resp, auth.CSRFCookie)
			if sc == nil || sc.Value != s.Token || !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || sc.Secure != tls {
				t.Fatalf("session cookie %+v", sc)
			}
			if cc == nil || cc.Value != s.CSRFToken || cc.HttpOnly || cc.Secure != tls {
				t.Fatalf("csrf cookie %+v", cc)
			}
			withCookie := "retryhub_session=" + s.Token
			if resp, body := e.request(http.MethodGet, p+"/auth/me", nil, "Cookie", withCookie); resp.StatusCode != http.StatusOK {
				t.Fatalf("me with the cookie: %d %s", resp.StatusCode, body)
			}
			newUser := map[string]any{"username": "carl", "password": "a-long-password", "roles": []any{}}
			resp, body = e.request(http.MethodPost, p+"/users", newUser, "Cookie", withCookie)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), auth.CSRFHeader) {
				t.Fatalf("a change with the cookie and no CSRF header: %d %s", resp.StatusCode, body)
			}
			if a := e.newestAudit(); a.Action != "users-create" || a.Outcome != "denied" || a.Actor != global {
				t.Fatalf("the refused change is not audited: %+v", a)
			}
			resp, _ = e.request(http.MethodPost, p+"/users", newUser, "Cookie", withCookie, auth.CSRFHeader, "wrong")
			if resp.StatusCode != http.StatusForbidden {
				t.Fatalf("a wrong CSRF header: %d", resp.StatusCode)
			}
			resp, body = e.request(http.MethodPost, p+"/users", newUser, "Cookie", withCookie, auth.CSRFHeader, s.CSRFToken)
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("with the CSRF header: %d %s", resp.StatusCode, body)
			}
			// A bearer token needs no CSRF header: no browser sends it on its own.
			resp, body = e.request(http.MethodPost, p+"/users", map[string]any{"username": "dora", "password": "a-long-password", "roles": []any{}},
				"Authorization", "Bearer "+s.Token)
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("bearer: %d %s", resp.StatusCode, body)
			}
		})
	}
}

func TestWrongCredentialsLookAlikeAndRepeatedFailuresAreSlowedDown(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		e := newEnv(t, target, false)
		r1, b1 := e.login("nobody", "whatever-pw")
		r2, b2 := e.login(viewerA, "whatever-pw")
		if r1.StatusCode != http.StatusUnauthorized || r2.StatusCode != http.StatusUnauthorized || string(b1) != string(b2) {
			t.Fatalf("unknown user %d %s; wrong password %d %s", r1.StatusCode, b1, r2.StatusCode, b2)
		}
		if a := e.newestAudit(); a.Action != "auth-login" || a.Actor != viewerA || a.ActorKind != "anonymous" || a.Outcome != "denied" {
			t.Fatalf("failed login audit %+v", a)
		}
		for range 3 {
			e.login(viewerA, "whatever-pw")
		}
		// Five failures from one address block it: even the right password waits.
		resp, body := e.login(viewerA, password(viewerA))
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("after 5 failures: %d %s", resp.StatusCode, body)
		}
		if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || secs < 1 {
			t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
		}
		if eb := decode[errorBody](t, body); eb.Error.Code != "too_many_requests" {
			t.Fatalf("body %s", body)
		}
		// Any user from that address waits.
		if resp, _ := e.login(operatorA, password(operatorA)); resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("another user from the blocked address: %d", resp.StatusCode)
		}
	})
}

func TestLogoutAndPasswordChangeEndEarlierSessions(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		e := newEnv(t, target, false)
		_, body := e.login(operatorA, password(operatorA))
		first := decode[session](t, body)
		_, body = e.login(operatorA, password(operatorA))
		second := decode[session](t, body)
		me := func(tok string) int {
			resp, _ := e.request(http.MethodGet, p+"/auth/me", nil, "Authorization", "Bearer "+tok)
			return resp.StatusCode
		}
		resp, body := e.request(http.MethodPost, p+"/auth/password", map[string]string{"current_password": "not-it", "new_password": "new-password-1"},
			"Authorization", "Bearer "+first.Token)
		if eb := decode[errorBody](t, body); resp.StatusCode != http.StatusBadRequest || len(eb.Error.Details) != 1 || eb.Error.Details[0].Field != "current_password" {
			t.Fatalf("wrong current password: %d %s", resp.StatusCode, body)
		}
		resp, body = e.request(http.MethodPost, p+"/auth/password", map[string]string{"current_password": password(operatorA), "new_password": "new-password-1"},
			"Authorization", "Bearer "+first.Token)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("change password: %d %s", resp.StatusCode, body)
		}
		third := decode[session](t, body)
		if me(first.Token) != http.StatusUnauthorized || me(second.Token) != http.StatusUnauthorized || me(third.Token) != http.StatusOK {
			t.Fatal("the password change did not end the earlier sessions, or ended the new one")
		}
		if resp, _ := e.login(operatorA, password(operatorA)); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("the old password still works: %d", resp.StatusCode)
		}
		resp, _ = e.request(http.MethodPost, p+"/auth/logout", nil, "Authorization", "Bearer "+third.Token)
		if resp.StatusCode != http.StatusNoContent || cookie(resp, auth.SessionCookie) == nil || cookie(resp, auth.SessionCookie).MaxAge >= 0 {
			t.Fatalf("logout: %d %v", resp.StatusCode, resp.Cookies())
		}
		if me(third.Token) != http.StatusUnauthorized {
			t.Fatal("a session outlived the logout")
		}
		if a := e.newestAudit(); a.Action != "auth-logout" || a.Actor != operatorA || a.Outcome != "ok" {
			t.Fatalf("logout audit %+v", a)
		}
	})
}

func TestUsersCRUD(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		e := newEnv(t, target, false)
		status, body := e.as(global, http.MethodPost, p+"/users", map[string]any{"username": "bad name!", "password": "short",
			"roles": []map[string]string{{"namespace": "ns-a", "role": "king"}}})
		eb := decode[errorBody](t, body)
		fields := map[string]bool{}
		for _, d := range eb.Error.Details {
			fields[d.Field] = true
		}
		if status != http.StatusBadRequest || eb.Error.Code != "bad_request" || !fields["username"] || !fields["password"] || !fields["roles[0].role"] {
			t.Fatalf("bad input: %d %s", status, body)
		}
		status, body = e.as(global, http.MethodPost, p+"/users", map[string]any{"username": "erin", "password": "a-long-password",
			"roles": []map[string]string{{"namespace": "ns-zzz", "role": "viewer"}}})
		if eb := decode[errorBody](t, body); status != http.StatusBadRequest || len(eb.Error.Details) != 1 || eb.Error.Details[0].Field != "roles[0].namespace" {
			t.Fatalf("unknown namespace: %d %s", status, body)
		}
		status, body = e.as(global, http.MethodPost, p+"/users", map[string]any{"username": viewerA, "password": "a-long-password", "roles": []any{}})
		if status != http.StatusConflict {
			t.Fatalf("a taken name: %d %s", status, body)
		}
		if status, _ := e.as(global, http.MethodGet, p+"/users/999999", nil); status != http.StatusNotFound {
			t.Fatalf("unknown user: %d", status)
		}
		if status, _ := e.as(global, http.MethodPatch, p+"/users/999999", map[string]any{"disabled": true}); status != http.StatusNotFound {
			t.Fatalf("update unknown user: %d", status)
		}
		// Disabling ends the user's sessions and its logins.
		victim := e.users["victim"]
		tok := e.bearer("victim")
		status, body = e.as(global, http.MethodPatch, fmt.Sprintf("%s/users/%d", p, victim.ID), map[string]any{"disabled": true})
		if status != http.StatusOK || !strings.Contains(string(body), `"disabled":true`) {
			t.Fatalf("disable: %d %s", status, body)
		}
		if resp, _ := e.request(http.MethodGet, p+"/auth/me", nil, "Authorization", tok); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("a disabled user's session: %d", resp.StatusCode)
		}
		if resp, _ := e.login("victim", password("victim")); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("a disabled user's login: %d", resp.StatusCode)
		}
		// Admins cannot lock themselves out.
		status, _ = e.as(global, http.MethodPatch, fmt.Sprintf("%s/users/%d", p, e.users[global].ID), map[string]any{"disabled": true})
		if status != http.StatusConflict {
			t.Fatalf("disable yourself: %d", status)
		}
		// The list pages by id and filters by name prefix.
		var names []string
		after := int64(0)
		for {
			status, body = e.as(global, http.MethodGet, fmt.Sprintf("%s/users?name=admin-&limit=1&after=%d", p, after), nil)
			page := decode[struct {
				Items     []struct{ Username string } `json:"items"`
				NextAfter int64                       `json:"next_after"`
			}](t, body)
			for _, u := range page.Items {
				names = append(names, u.Username)
			}
			if page.NextAfter == 0 {
				break
			}
			after = page.NextAfter
		}
		if len(names) != 2 || !strings.HasPrefix(names[0], "admin-") || !strings.HasPrefix(names[1], "admin-") {
			t.Fatalf("admin-*: %v", names)
		}
		status, body = e.as(global, http.MethodPost, p+"/tokens", map[string]string{"name": "x", "role": "viewer"})
		if eb := decode[errorBody](t, body); status != http.StatusBadRequest || len(eb.Error.Details) != 1 || eb.Error.Details[0].Field != "namespace" {
			t.Fatalf("a missing field: %d %s", status, body)
		}
		if status, body := e.as(global, http.MethodGet, p+"/users?limit=0", nil); status != http.StatusBadRequest || !strings.Contains(string(body), `"limit"`) {
			t.Fatalf("limit=0: %d %s", status, body)
		}
	})
}

func TestAPITokensAreShownOnceAndRevoked(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		e := newEnv(t, target, false)
		status, body := e.as(adminA, http.MethodPost, p+"/tokens", map[string]string{"name": "deploy", "namespace": "ns-a", "role": "operator"})
		if status != http.StatusCreated {
			t.Fatalf("create: %d %s", status, body)
		}
		created := decode[struct {
			ID     int64  `json:"id"`
			Token  string `json:"token"`
			Prefix string `json:"prefix"`
		}](t, body)
		if !strings.HasPrefix(created.Token, auth.APITokenPrefix) || !strings.HasPrefix(created.Token, created.Prefix) {
			t.Fatalf("created %s", body)
		}
		resp, body := e.request(http.MethodGet, p+"/auth/me", nil, "Authorization", "Bearer "+created.Token)
		me := decode[struct {
			Kind     string `json:"kind"`
			Username string `json:"username"`
			Roles    []struct{ Namespace, Role string }
		}](t, body)
		if resp.StatusCode != http.StatusOK || me.Kind != "token" || me.Username != "deploy" || me.Roles[0].Namespace != "ns-a" || me.Roles[0].Role != "operator" {
			t.Fatalf("me as the token: %d %s", resp.StatusCode, body)
		}
		// An operator token cannot manage tokens, nor sign out as a user.
		if resp, _ := e.request(http.MethodGet, p+"/tokens", nil, "Authorization", "Bearer "+created.Token); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("token lists tokens: %d", resp.StatusCode)
		}
		if resp, _ := e.request(http.MethodPost, p+"/auth/logout", nil, "Authorization", "Bearer "+created.Token); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("token logs out: %d", resp.StatusCode)
		}
		if a := e.newestAudit(); a.Actor != "token:deploy" || a.ActorKind != "token" || a.Outcome != "denied" {
			t.Fatalf("audit of the token's attempt %+v", a)
		}
		status, body = e.as(adminA, http.MethodGet, p+"/tokens", nil)
		if status != http.StatusOK || strings.Contains(string(body), created.Token) || !strings.Contains(string(body), `"last_used_at":"`) {
			t.Fatalf("list shows the secret or no last use: %d %s", status, body)
		}
		if status, body := e.as(adminB, http.MethodGet, p+"/tokens", nil); status != http.StatusOK || strings.Contains(string(body), "deploy") {
			t.Fatalf("admin of B sees A's token: %s", body)
		}
		if status, _ := e.as(adminA, http.MethodDelete, p+"/tokens/999999", nil); status != http.StatusNotFound {
			t.Fatalf("revoke unknown: %d", status)
		}
		if status, _ := e.as(adminA, http.MethodDelete, fmt.Sprintf("%s/tokens/%d", p, created.ID), nil); status != http.StatusNoContent {
			t.Fatalf("revoke: %d", status)
		}
		if resp, _ := e.request(http.MethodGet, p+"/auth/me", nil, "Authorization", "Bearer "+created.Token); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("a revoked token: %d", resp.StatusCode)
		}
		// A token for every namespace needs an admin of every namespace.
		if status, _ := e.as(adminA, http.MethodPost, p+"/tokens", map[string]string{"name": "all", "namespace": "*", "role": "viewer"}); status != http.StatusForbidden {
			t.Fatalf("admin of A makes a * token: %d", status)
		}
	})
}

func TestAuditListFiltersAndPages(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		e := newEnv(t, target, false)
		e.login("nobody", "whatever-pw")
		for i := range 3 {
			e.as(global, http.MethodPost, p+"/users", map[string]any{"username": fmt.Sprintf("u%d", i), "password": "a-long-password", "roles": []any{}})
		}
		type page struct {
			Items []struct {
				ID     int64  `json:"id"`
				Actor  string `json:"actor"`
				Action string `json:"action"`
				Target string `json:"target"`
			} `json:"items"`
			NextBefore int64 `json:"next_before"`
		}
		var seen []string
		before := int64(0)
		for {
			status, body := e.as(global, http.MethodGet, fmt.Sprintf("%s/audit?action=users-create&limit=2&before=%d", p, before), nil)
			if status != http.StatusOK {
				t.Fatalf("%d %s", status, body)
			}
			pg := decode[page](t, body)
			for _, it := range pg.Items {
				seen = append(seen, it.Target)
			}
			if pg.NextBefore == 0 {
				break
			}
			before = pg.NextBefore
		}
		if len(seen) != 3 || !strings.Contains(seen[0], "u2") || !strings.Contains(seen[2], "u0") {
			t.Fatalf("users-create entries, newest first: %v", seen)
		}
		_, body := e.as(global, http.MethodGet, p+"/audit?actor=nobody", nil)
		if pg := decode[page](t, body); len(pg.Items) != 1 || pg.Items[0].Action != "auth-login" {
			t.Fatalf("nobody's: %s", body)
		}
		future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		_, body = e.as(global, http.MethodGet, p+"/audit?since="+future, nil)
		if pg := decode[page](t, body); len(pg.Items) != 0 {
			t.Fatalf("since the future: %s", body)
		}
		if status, _ := e.as(global, http.MethodGet, p+"/audit?since=yesterday", nil); status != http.StatusBadRequest {
			t.Fatalf("a bad time: %d", status)
		}
		// The log has no operation that changes it.
		for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			if status, _ := e.as(global, m, p+"/audit", nil); status != http.StatusNotFound && status != http.StatusMethodNotAllowed {
				t.Fatalf("%s /audit: %d", m, status)
			}
		}
	})
}

func TestDocsPageNeedsNothingFromElsewhere(t *testing.T) {
	e := newEnv(t, storagetest.SQLite(t), false)
	resp, body := e.request(http.MethodGet, consoleapi.DocsPath, nil)
	page := string(body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("%d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, id := range []string{"auth-login", "users-create", "tokens-revoke", "audit-list"} {
		if !strings.Contains(page, id) {
			t.Errorf("the page does not list %s", id)
		}
	}
	if strings.Contains(page, "<script") || strings.Contains(page, "https://") {
		t.Error("the page loads something from elsewhere")
	}
}

package auth_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/retryhub/retryhub/server/internal/auth"
	"github.com/retryhub/retryhub/server/internal/storage"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
)

func newService(t *testing.T, s *storage.Store, secret string) *auth.Service {
	t.Helper()
	svc, err := auth.New(context.Background(), auth.Params{Store: s, Secret: secret, TokenTTL: time.Hour,
		BcryptCost: bcrypt.MinCost, KeyCacheTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func TestSessionsAcrossServicesAndTheirEnd(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		a, b := newService(t, s, ""), newService(t, s, "")
		hash, err := a.HashPassword("secret-pw")
		if err != nil {
			t.Fatal(err)
		}
		u, err := s.CreateUser(ctx, storage.User{Username: "ann", PasswordHash: hash,
			Grants: []storage.Grant{{NamespaceID: 4, Role: "operator"}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Login(ctx, "ann", "wrong-pw", "10.0.0.1"); !errors.Is(err, auth.ErrBadCredentials) {
			t.Fatalf("wrong password: %v", err)
		}
		if _, err := a.Login(ctx, "nobody", "wrong-pw", "10.0.0.1"); !errors.Is(err, auth.ErrBadCredentials) {
			t.Fatalf("unknown user: %v", err)
		}
		u, err = a.Login(ctx, "ann", "secret-pw", "10.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		sess, err := a.Issue(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		// Another service on the same database (another node) accepts it.
		p, err := b.Authenticate(ctx, auth.Credentials{Authorization: "Bearer " + sess.Token})
		if err != nil || p.Name != "ann" || !p.Can(4, auth.Operator) || p.Can(4, auth.Admin) || p.Can(5, auth.Viewer) {
			t.Fatalf("on b: %+v %v", p, err)
		}
		// A cookie session needs the CSRF header to change anything.
		p, err = b.Authenticate(ctx, auth.Credentials{Cookie: sess.Token})
		if err != nil || !p.Cookie {
			t.Fatalf("cookie: %+v %v", p, err)
		}
		if err := auth.CheckCSRF(p, "POST", ""); !errors.Is(err, auth.ErrForbidden) {
			t.Fatalf("POST without CSRF: %v", err)
		}
		if auth.CheckCSRF(p, "POST", sess.CSRF) != nil || auth.CheckCSRF(p, "GET", "") != nil {
			t.Fatal("CSRF refused a good request")
		}
		// Ending the user's sessions ends this one everywhere.
		if _, err := s.UpdateUser(ctx, u.ID, storage.UserChange{EndSessions: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Authenticate(ctx, auth.Credentials{Authorization: "Bearer " + sess.Token}); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("ended session: %v", err)
		}
		// A rotation on a signs everyone out; b follows the new key id.
		u, _ = s.User(ctx, u.ID)
		sess, _ = a.Issue(ctx, u)
		if err := b.RotateKey(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Authenticate(ctx, auth.Credentials{Authorization: "Bearer " + sess.Token}); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("after rotation: %v", err)
		}
		u, _ = s.User(ctx, u.ID)
		sess, _ = b.Issue(ctx, u)
		if _, err := a.Authenticate(ctx, auth.Credentials{Authorization: "Bearer " + sess.Token}); err != nil {
			t.Fatalf("a new key's token on a: %v", err)
		}
		// After another rotation on b, a, whose copy of the key is from before it, signs with
		// the new key.
		if err := b.RotateKey(ctx); err != nil {
			t.Fatal(err)
		}
		u, _ = s.User(ctx, u.ID)
		sess, _ = a.Issue(ctx, u)
		if _, err := b.Authenticate(ctx, auth.Credentials{Authorization: "Bearer " + sess.Token}); err != nil {
			t.Fatalf("a's token after b's rotation, on b: %v", err)
		}
		// Garbage and tokens signed with another key are refused.
		other := newService(t, s, strings.Repeat("k", 32))
		if err := other.RotateKey(ctx); !errors.Is(err, auth.ErrFixedKey) {
			t.Fatalf("rotating a configured key: %v", err)
		}
		forged, _ := other.Issue(ctx, u)
		for _, tok := range []string{"x.y.z", forged.Token} {
			if _, err := a.Authenticate(ctx, auth.Credentials{Authorization: "Bearer " + tok}); !errors.Is(err, auth.ErrUnauthenticated) {
				t.Fatalf("%q: %v", tok, err)
			}
		}
	})
}

func TestAPITokens(t *testing.T) {
	storagetest.EachStore(t, func(t *testing.T, s *storage.Store) {
		ctx := context.Background()
		svc := newService(t, s, "")
		secret, hash, prefix := auth.NewAPIToken()
		if !strings.HasPrefix(secret, auth.APITokenPrefix) || !strings.HasPrefix(secret, prefix) || strings.Contains(hash, secret) {
			t.Fatalf("token %q %q %q", secret, hash, prefix)
		}
		tok, err := s.CreateAPIToken(ctx, storage.APIToken{Name: "ci", Hash: hash, Prefix: prefix, NamespaceID: 9, Role: "viewer", CreatedBy: "admin"})
		if err != nil {
			t.Fatal(err)
		}
		p, err := svc.Authenticate(ctx, auth.Credentials{Authorization: "Bearer " + secret})
		if err != nil || p.Kind != auth.KindToken || !p.Can(9, auth.Viewer) || p.Can(9, auth.Operator) || p.Actor() != "token:ci" {
			t.Fatalf("%+v %v", p, err)
		}
		if got, _ := s.APIToken(ctx, tok.ID); got.LastUsedAt == nil {
			t.Fatal("last use not recorded")
		}
		if err := s.RevokeAPIToken(ctx, tok.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Authenticate(ctx, auth.Credentials{Authorization: "Bearer " + secret}); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("revoked: %v", err)
		}
	})
}

func TestRequire(t *testing.T) {
	ctx := context.Background()
	if _, err := auth.Require(ctx, 1, auth.Viewer); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("anonymous: %v", err)
	}
	p := &auth.Principal{Kind: auth.KindUser, Name: "v", Grants: []auth.Grant{{NamespaceID: 1, Role: auth.Viewer}, {NamespaceID: 2, Role: auth.Admin}}}
	ctx = auth.WithPrincipal(ctx, p)
	for _, c := range []struct {
		ns   int64
		role auth.Role
		ok   bool
	}{{1, auth.Viewer, true}, {1, auth.Operator, false}, {2, auth.Admin, true}, {3, auth.Viewer, false}, {auth.AllNamespaces, auth.Viewer, false}} {
		_, err := auth.Require(ctx, c.ns, c.role)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, auth.ErrForbidden)) {
			t.Errorf("ns %d %s: %v", c.ns, c.role, err)
		}
	}
	global := auth.WithPrincipal(context.Background(), &auth.Principal{Grants: []auth.Grant{{NamespaceID: auth.AllNamespaces, Role: auth.Admin}}})
	if _, err := auth.Require(global, 77, auth.Admin); err != nil {
		t.Fatal(err)
	}
	if _, err := auth.Require(global, auth.AllNamespaces, auth.Admin); err != nil {
		t.Fatal(err)
	}
}

func TestLimiterBlocksGrowsAndStaysBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	l := auth.NewLimiter(3, func() time.Time { return now })
	for range 4 {
		l.Fail("u:ann")
	}
	if l.Wait("u:ann") != 0 {
		t.Fatal("blocked after 4 failures")
	}
	l.Fail("u:ann")
	first := l.Wait("u:ann", "a:x")
	if first <= 0 {
		t.Fatal("not blocked after 5 failures")
	}
	now = now.Add(first)
	l.Fail("u:ann")
	if second := l.Wait("u:ann"); second <= first {
		t.Fatalf("the wait did not grow: %s then %s", first, second)
	}
	l.Reset("u:ann")
	if l.Wait("u:ann") != 0 {
		t.Fatal("still blocked after a reset")
	}
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		l.Fail(k)
	}
	if l.Len() > 3 {
		t.Fatalf("%d keys held, bound 3", l.Len())
	}
}

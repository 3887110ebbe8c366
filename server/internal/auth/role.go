// Package auth authenticates the console's callers and decides what they may do: passwords
// (bcrypt), session tokens (JWT, HS256, signed with a key every node shares through the
// database), API tokens for automation (stored as SHA-256 hashes), the CSRF check for browser
// sessions, the slowing down of repeated login failures, and roles per namespace.
//
// Handlers ask for what they need with Require(ctx, namespaceID, role); the principal that
// made the request is put in the context by the console API's middleware (WithPrincipal).
package auth

import (
	"context"
	"errors"
	"fmt"

	"github.com/retryhub/retryhub/server/internal/storage"
)

// Role is what a grant allows; a higher role allows everything a lower one does.
type Role int

// The roles, from least to most.
const (
	// Viewer reads.
	Viewer Role = iota + 1
	// Operator also changes the scenes, groups and tasks of its namespaces.
	Operator
	// Admin also manages users, API tokens and the signing key.
	Admin
)

// String is the role's name, as the API and the database spell it.
func (r Role) String() string {
	switch r {
	case Viewer:
		return "viewer"
	case Operator:
		return "operator"
	case Admin:
		return "admin"
	}
	return fmt.Sprintf("role(%d)", int(r))
}

// ParseRole reads a role's name.
func ParseRole(s string) (Role, error) {
	switch s {
	case "viewer":
		return Viewer, nil
	case "operator":
		return Operator, nil
	case "admin":
		return Admin, nil
	}
	return 0, fmt.Errorf("unknown role %q: want admin, operator or viewer", s)
}

// AllNamespaces is the namespace id of a grant over every namespace ("*").
const AllNamespaces = storage.AllNamespaces

// Grant is a role in a namespace (AllNamespaces: in every one).
type Grant struct {
	NamespaceID int64
	Role        Role
}

// Principal kinds.
const (
	KindUser  = "user"
	KindToken = "token"
)

// Principal is who made a request: a user with a session token or an API token.
type Principal struct {
	Kind    string // KindUser or KindToken
	UserID  int64  // for a user
	TokenID int64  // for an API token
	Name    string // the user's or the token's name
	Grants  []Grant
	// Cookie is true when the session token came in the cookie, not the Authorization header:
	// the request then needs the CSRF header to change anything.
	Cookie bool
	// CSRF is the session's CSRF value, which the X-Retryhub-CSRF header must repeat.
	CSRF string
}

// Actor names the principal in the audit log: the user's name, or "token:" and the token's.
func (p *Principal) Actor() string {
	if p.Kind == KindToken {
		return "token:" + p.Name
	}
	return p.Name
}

// RoleIn is the principal's highest role in the namespace (0: none).
func (p *Principal) RoleIn(namespaceID int64) Role {
	var best Role
	for _, g := range p.Grants {
		if (g.NamespaceID == AllNamespaces || g.NamespaceID == namespaceID) && g.Role > best {
			best = g.Role
		}
	}
	return best
}

// Can reports whether the principal holds at least role in the namespace. AllNamespaces asks
// for a grant over every namespace.
func (p *Principal) Can(namespaceID int64, role Role) bool {
	if namespaceID == AllNamespaces {
		for _, g := range p.Grants {
			if g.NamespaceID == AllNamespaces && g.Role >= role {
				return true
			}
		}
		return false
	}
	return p.RoleIn(namespaceID) >= role
}

// Namespaces lists the namespaces where the principal holds at least role; all is true when
// it holds it in every namespace (the list is then empty).
func (p *Principal) Namespaces(role Role) (ids []int64, all bool) {
	for _, g := range p.Grants {
		if g.Role < role {
			continue
		}
		if g.NamespaceID == AllNamespaces {
			return nil, true
		}
		ids = append(ids, g.NamespaceID)
	}
	return ids, false
}

// ErrUnauthenticated means the request carries no valid credentials (401).
var ErrUnauthenticated = errors.New("sign in first: no valid session or API token")

// ErrForbidden means the principal lacks the role the request needs (403).
var ErrForbidden = errors.New("your role does not allow this")

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// From returns the principal in ctx, or nil.
func From(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}

// Require returns the principal in ctx when it holds at least role in the namespace
// (AllNamespaces: in every namespace); ErrUnauthenticated when ctx has none, ErrForbidden
// when its role falls short.
func Require(ctx context.Context, namespaceID int64, role Role) (*Principal, error) {
	p := From(ctx)
	if p == nil {
		return nil, ErrUnauthenticated
	}
	if !p.Can(namespaceID, role) {
		return p, fmt.Errorf("%w: it needs %s in %s", ErrForbidden, role, nsName(namespaceID))
	}
	return p, nil
}

// RequireUser returns the principal in ctx when it is a signed-in user (not an API token).
func RequireUser(ctx context.Context) (*Principal, error) {
	p := From(ctx)
	if p == nil {
		return nil, ErrUnauthenticated
	}
	if p.Kind != KindUser {
		return p, fmt.Errorf("%w: only a signed-in user can do this, not an API token", ErrForbidden)
	}
	return p, nil
}

func nsName(id int64) string {
	if id == AllNamespaces {
		return "every namespace (*)"
	}
	return fmt.Sprintf("namespace %d", id)
}

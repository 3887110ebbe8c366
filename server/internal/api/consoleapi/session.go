package consoleapi

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/retryhub/retryhub/server/internal/auth"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// LoginInput is a login.
type LoginInput struct {
	Body struct {
		Username string `json:"username" minLength:"1" maxLength:"64"`
		Password string `json:"password" minLength:"1" maxLength:"72"`
	}
}

// SessionBody is a new session: the token to send as a bearer token (or leave to the cookie)
// and the CSRF value a cookie session repeats in the X-Retryhub-CSRF header on changes.
type SessionBody struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	CSRFToken string    `json:"csrf_token"`
	User      User      `json:"user"`
}

// SessionOutput sets the session's cookies beside the body.
type SessionOutput struct {
	SetCookie []http.Cookie `header:"Set-Cookie"`
	Body      SessionBody
}

// MeOutput is the caller.
type MeOutput struct {
	Body Me
}

// Me is the caller: a user, or an API token.
type Me struct {
	Kind     string  `json:"kind" enum:"user,token"`
	ID       int64   `json:"id" doc:"the user's or the token's id"`
	Username string  `json:"username" doc:"the user's name, or the token's"`
	Roles    []Grant `json:"roles"`
}

// PasswordInput changes the caller's own password.
type PasswordInput struct {
	Body struct {
		CurrentPassword string `json:"current_password" minLength:"1" maxLength:"72"`
		NewPassword     string `json:"new_password" minLength:"8" maxLength:"72"`
	}
}

// LogoutOutput clears the session's cookies.
type LogoutOutput struct {
	SetCookie []http.Cookie `header:"Set-Cookie"`
}

// Empty is an input or output with nothing in it.
type Empty struct{}

func (a *API) registerAuth() {
	mutation(a, huma.Operation{OperationID: "auth-login", Method: http.MethodPost, Path: Prefix + "/auth/login",
		Summary: "Sign in", Tags: []string{"auth"}, Metadata: map[string]any{publicOp: true},
		Description: "Answers the session token and sets it as an HttpOnly, SameSite=Strict cookie (Secure under TLS) " +
			"beside a readable CSRF cookie. A wrong user name and a wrong password get the same 401. After 5 failures " +
			"within 15 minutes for one user name or one address, attempts are refused with 429 and Retry-After, for " +
			"a wait that doubles from 5 s up to 15 minutes (kept in each node's memory).",
		Errors: []int{400, 401, 403, 429}}, a.login)
	mutation(a, huma.Operation{OperationID: "auth-logout", Method: http.MethodPost, Path: Prefix + "/auth/logout",
		Summary: "Sign out everywhere", Tags: []string{"auth"}, Security: security, DefaultStatus: http.StatusNoContent,
		Description: "Ends every session of the caller, on every node, and clears the cookies.",
		Errors:      []int{401, 403}}, a.logout)
	query(a, huma.Operation{OperationID: "auth-me", Method: http.MethodGet, Path: Prefix + "/auth/me",
		Summary: "Who am I", Tags: []string{"auth"}, Security: security, Errors: []int{401}}, a.me)
	mutation(a, huma.Operation{OperationID: "auth-password", Method: http.MethodPost, Path: Prefix + "/auth/password",
		Summary: "Change my password", Tags: []string{"auth"}, Security: security,
		Description: "Ends every earlier session of the caller and answers a new one (with its cookies).",
		Errors:      []int{400, 401, 403}}, a.changePassword)
	mutation(a, huma.Operation{OperationID: "auth-rotate-key", Method: http.MethodPost, Path: Prefix + "/auth/rotate-key",
		Summary: "Rotate the signing key", Tags: []string{"auth"}, Security: security, DefaultStatus: http.StatusNoContent,
		Description: "Signs every user out on every node (API tokens keep working). Needs admin of every namespace. " +
			"409 when the key comes from the configuration (auth.jwt_secret).",
		Errors: []int{401, 403, 409}}, a.rotateKey)
}

func (a *API) login(ctx context.Context, in *LoginInput, ch *Change) (*SessionOutput, error) {
	ch.Actor, ch.Target = in.Body.Username, "user "+in.Body.Username
	u, err := a.auth.Login(ctx, in.Body.Username, in.Body.Password, info(ctx).remote)
	var th *auth.ThrottledError
	switch {
	case errors.As(err, &th):
		secs := int(math.Ceil(th.RetryAfter.Seconds()))
		return nil, huma.ErrorWithHeaders(huma.NewError(http.StatusTooManyRequests, th.Error()),
			http.Header{"Retry-After": {strconv.Itoa(secs)}})
	case errors.Is(err, auth.ErrBadCredentials):
		return nil, huma.NewError(http.StatusUnauthorized, err.Error())
	case errors.Is(err, auth.ErrDisabled):
		return nil, huma.NewError(http.StatusForbidden, err.Error())
	case err != nil:
		return nil, err
	}
	ch.Target = fmt.Sprintf("user %d", u.ID)
	return a.session(ctx, u)
}

// session issues a session for u and answers it with its cookies.
func (a *API) session(ctx context.Context, u storage.User) (*SessionOutput, error) {
	s, err := a.auth.Issue(ctx, u)
	if err != nil {
		return nil, err
	}
	user, err := a.user(ctx, u)
	if err != nil {
		return nil, err
	}
	secure := info(ctx).tls
	return &SessionOutput{
		SetCookie: []http.Cookie{
			{Name: auth.SessionCookie, Value: s.Token, Path: "/api/", Expires: s.ExpiresAt, HttpOnly: true,
				Secure: secure, SameSite: http.SameSiteStrictMode},
			{Name: auth.CSRFCookie, Value: s.CSRF, Path: "/", Expires: s.ExpiresAt, Secure: secure,
				SameSite: http.SameSiteStrictMode},
		},
		Body: SessionBody{Token: s.Token, ExpiresAt: s.ExpiresAt, CSRFToken: s.CSRF, User: user},
	}, nil
}

func (a *API) logout(ctx context.Context, _ *Empty, ch *Change) (*LogoutOutput, error) {
	p, err := auth.RequireUser(ctx)
	if err != nil {
		return nil, err
	}
	ch.Target = fmt.Sprintf("user %d", p.UserID)
	if _, err := a.store.UpdateUser(ctx, p.UserID, storage.UserChange{EndSessions: true}); err != nil {
		return nil, err
	}
	secure := info(ctx).tls
	return &LogoutOutput{SetCookie: []http.Cookie{
		{Name: auth.SessionCookie, Value: "", Path: "/api/", MaxAge: -1, HttpOnly: true, Secure: secure, SameSite: http.SameSiteStrictMode},
		{Name: auth.CSRFCookie, Value: "", Path: "/", MaxAge: -1, Secure: secure, SameSite: http.SameSiteStrictMode},
	}}, nil
}

func (a *API) me(ctx context.Context, _ *Empty) (*MeOutput, error) {
	p := auth.From(ctx)
	if p == nil {
		return nil, auth.ErrUnauthenticated
	}
	names, err := a.namespaceNames(ctx)
	if err != nil {
		return nil, err
	}
	me := Me{Kind: p.Kind, ID: p.UserID, Username: p.Name, Roles: grantsOut(p.Grants, names)}
	if p.Kind == auth.KindToken {
		me.ID = p.TokenID
	}
	return &MeOutput{Body: me}, nil
}

func (a *API) changePassword(ctx context.Context, in *PasswordInput, ch *Change) (*SessionOutput, error) {
	p, err := auth.RequireUser(ctx)
	if err != nil {
		return nil, err
	}
	ch.Target = fmt.Sprintf("user %d", p.UserID)
	u, err := a.store.User(ctx, p.UserID)
	if err != nil {
		return nil, err
	}
	if !auth.CheckPassword(u, in.Body.CurrentPassword) {
		return nil, badField("current_password", "is not your password")
	}
	hash, err := a.auth.HashPassword(in.Body.NewPassword)
	if err != nil {
		return nil, badField("new_password", err.Error())
	}
	u, err = a.store.UpdateUser(ctx, p.UserID, storage.UserChange{PasswordHash: &hash, EndSessions: true})
	if err != nil {
		return nil, err
	}
	return a.session(ctx, u)
}

func (a *API) rotateKey(ctx context.Context, _ *Empty, ch *Change) (*Empty, error) {
	if _, err := auth.Require(ctx, auth.AllNamespaces, auth.Admin); err != nil {
		return nil, err
	}
	ch.Target = "signing key"
	if err := a.auth.RotateKey(ctx); errors.Is(err, auth.ErrFixedKey) {
		return nil, huma.NewError(http.StatusConflict, err.Error())
	} else if err != nil {
		return nil, err
	}
	return &Empty{}, nil
}

package consoleapi

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/retryhub/retryhub/server/internal/auth"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// APIToken is an API token as listed (never its secret).
type APIToken struct {
	ID         int64      `json:"id"`
	Name       string     `json:"name"`
	Prefix     string     `json:"prefix" doc:"the token's first characters, to recognise it"`
	Namespace  string     `json:"namespace" doc:"a namespace's name, or * for every namespace"`
	Role       string     `json:"role" enum:"admin,operator,viewer"`
	CreatedBy  string     `json:"created_by"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at" doc:"recorded at most once a minute"`
	RevokedAt  *time.Time `json:"revoked_at"`
}

// CreateTokenInput is a new API token.
type CreateTokenInput struct {
	Body struct {
		Name      string `json:"name" minLength:"1" maxLength:"64"`
		Namespace string `json:"namespace" minLength:"1" maxLength:"64" doc:"a namespace's name, or * for every namespace"`
		Role      string `json:"role" enum:"admin,operator,viewer"`
	}
}

// CreatedToken is a new API token with its secret, shown only in this answer.
type CreatedToken struct {
	APIToken
	Token string `json:"token" doc:"the secret, shown only now: send it as Authorization: Bearer <token>"`
}

// CreatedTokenOutput is the answer to a creation.
type CreatedTokenOutput struct{ Body CreatedToken }

// TokenList is a page of API tokens.
type TokenList struct {
	Body struct {
		Items     []APIToken `json:"items"`
		NextAfter int64      `json:"next_after" doc:"pass as after for the next page; 0 when there is none"`
	}
}

// ListTokensInput pages the tokens by id.
type ListTokensInput struct {
	After int64 `query:"after" minimum:"0"`
	Limit int   `query:"limit" minimum:"1" maximum:"200" default:"50"`
}

// TokenIDInput names a token.
type TokenIDInput struct {
	ID int64 `path:"id" minimum:"1"`
}

func (a *API) registerTokens() {
	tags := []string{"api tokens"}
	query(a, huma.Operation{OperationID: "tokens-list", Method: http.MethodGet, Path: Prefix + "/tokens",
		Summary: "List API tokens", Description: "The tokens of the namespaces where the caller is admin, by id, with their last use.",
		Tags: tags, Security: security, Errors: []int{400, 401, 403}}, a.listTokens)
	mutation(a, huma.Operation{OperationID: "tokens-create", Method: http.MethodPost, Path: Prefix + "/tokens",
		Summary: "Create an API token", Description: "The secret is in this answer only; the server keeps its SHA-256. " +
			"Needs admin of the token's namespace (of every namespace for *).",
		Tags: tags, Security: security, DefaultStatus: http.StatusCreated, Errors: []int{400, 401, 403}}, a.createToken)
	mutation(a, huma.Operation{OperationID: "tokens-revoke", Method: http.MethodDelete, Path: Prefix + "/tokens/{id}",
		Summary: "Revoke an API token", Description: "At once, on every node. Revoking a revoked token changes nothing. " +
			"Needs admin of the token's namespace.",
		Tags: tags, Security: security, DefaultStatus: http.StatusNoContent, Errors: []int{401, 403, 404}}, a.revokeToken)
}

func (a *API) listTokens(ctx context.Context, in *ListTokensInput) (*TokenList, error) {
	p, err := requireSomeAdmin(ctx)
	if err != nil {
		return nil, err
	}
	ids, all := p.Namespaces(auth.Admin)
	if all {
		ids = nil
	}
	toks, err := a.store.ListAPITokens(ctx, ids, in.After, in.Limit)
	if err != nil {
		return nil, err
	}
	names, err := a.namespaceNames(ctx)
	if err != nil {
		return nil, err
	}
	out := &TokenList{}
	out.Body.Items = make([]APIToken, len(toks))
	for i, t := range toks {
		out.Body.Items[i] = tokenOut(t, names)
	}
	if len(toks) == in.Limit {
		out.Body.NextAfter = toks[len(toks)-1].ID
	}
	return out, nil
}

// requireSomeAdmin admits a principal that is admin of at least one namespace.
func requireSomeAdmin(ctx context.Context) (*auth.Principal, error) {
	p := auth.From(ctx)
	if p == nil {
		return nil, auth.ErrUnauthenticated
	}
	if ids, all := p.Namespaces(auth.Admin); !all && len(ids) == 0 {
		return p, fmt.Errorf("%w: it needs admin of a namespace", auth.ErrForbidden)
	}
	return p, nil
}

func (a *API) createToken(ctx context.Context, in *CreateTokenInput, ch *Change) (*CreatedTokenOutput, error) {
	ch.Target = "token " + in.Body.Name
	ch.Detail = in.Body.Role + "@" + in.Body.Namespace
	p, err := requireSomeAdmin(ctx)
	if err != nil {
		return nil, err
	}
	ns, err := a.namespaceID(ctx, in.Body.Namespace, "namespace")
	if err != nil {
		return nil, err
	}
	ch.NamespaceID = ns
	if _, err := auth.Require(ctx, ns, auth.Admin); err != nil {
		return nil, err
	}
	secret, hash, prefix := auth.NewAPIToken()
	t, err := a.store.CreateAPIToken(ctx, storage.APIToken{Name: in.Body.Name, Hash: hash, Prefix: prefix,
		NamespaceID: ns, Role: in.Body.Role, CreatedBy: p.Actor()})
	if err != nil {
		return nil, err
	}
	ch.Target = fmt.Sprintf("token %d (%s)", t.ID, t.Name)
	names, err := a.namespaceNames(ctx)
	if err != nil {
		return nil, err
	}
	return &CreatedTokenOutput{Body: CreatedToken{APIToken: tokenOut(t, names), Token: secret}}, nil
}

func (a *API) revokeToken(ctx context.Context, in *TokenIDInput, ch *Change) (*Empty, error) {
	ch.Target = fmt.Sprintf("token %d", in.ID)
	if _, err := requireSomeAdmin(ctx); err != nil {
		return nil, err
	}
	t, err := a.store.APIToken(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	ch.NamespaceID = t.NamespaceID
	ch.Target = fmt.Sprintf("token %d (%s)", t.ID, t.Name)
	if _, err := auth.Require(ctx, t.NamespaceID, auth.Admin); err != nil {
		return nil, err
	}
	if err := a.store.RevokeAPIToken(ctx, t.ID); err != nil {
		return nil, err
	}
	return &Empty{}, nil
}

func tokenOut(t storage.APIToken, names map[int64]string) APIToken {
	return APIToken{ID: t.ID, Name: t.Name, Prefix: t.Prefix, Namespace: nsLabel(t.NamespaceID, names), Role: t.Role,
		CreatedBy: t.CreatedBy, CreatedAt: t.CreatedAt, LastUsedAt: t.LastUsedAt, RevokedAt: t.RevokedAt}
}

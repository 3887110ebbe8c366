package consoleapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/retryhub/retryhub/server/internal/auth"
	"github.com/retryhub/retryhub/server/internal/retry"
)

// MaxTokenGrace bounds how long a group's previous token keeps working after a rotation.
const MaxTokenGrace = 7 * 24 * time.Hour

// Group is a group as the console shows it (never its token).
type Group struct {
	ID               int64      `json:"id"`
	NamespaceID      int64      `json:"namespace_id"`
	Namespace        string     `json:"namespace"`
	Name             string     `json:"name"`
	Description      string     `json:"description"`
	Enabled          bool       `json:"enabled" doc:"a disabled group's clients are refused and its tasks held"`
	AutoCreateScenes bool       `json:"auto_create_scenes" doc:"reports for unknown scenes create them with the default policy"`
	PrevTokenUntil   *time.Time `json:"prev_token_until" doc:"until when the token before the last rotation is still accepted; null when it is not"`
	CreatedAt        time.Time  `json:"created_at"`
	UpdatedAt        time.Time  `json:"updated_at"`
}

func groupOut(g retry.Group) Group {
	out := Group{ID: g.ID, NamespaceID: g.NamespaceID, Namespace: g.Namespace, Name: g.Name, Description: g.Description,
		Enabled: g.Enabled, AutoCreateScenes: g.AutoCreateScenes, CreatedAt: g.CreatedAt, UpdatedAt: g.UpdatedAt}
	if g.PrevToken != "" && g.PrevTokenUntil != nil && now().Before(*g.PrevTokenUntil) {
		out.PrevTokenUntil = g.PrevTokenUntil
	}
	return out
}

// GroupOutput answers with one group.
type GroupOutput struct{ Body Group }

// GroupWithToken is a group with its token, shown only in the answer that made it.
type GroupWithToken struct {
	Group
	Token string `json:"token" doc:"the group's token, shown only now: the SDK signs with it (retryhub.Config.Token)"`
}

// GroupTokenOutput answers a creation or a rotation.
type GroupTokenOutput struct{ Body GroupWithToken }

// GroupList is a page of groups.
type GroupList struct {
	Body struct {
		Items     []Group `json:"items"`
		NextAfter int64   `json:"next_after" doc:"pass as after for the next page; 0 when there is none"`
	}
}

// CreateGroupInput is a new group in namespace ID.
type CreateGroupInput struct {
	ID   int64 `path:"id" minimum:"1" doc:"the namespace"`
	Body struct {
		Name             string `json:"name" minLength:"1" maxLength:"64"`
		Description      string `json:"description,omitempty" maxLength:"512"`
		Enabled          *bool  `json:"enabled,omitempty" doc:"default true"`
		AutoCreateScenes bool   `json:"auto_create_scenes,omitempty"`
	}
}

// UpdateGroupInput changes a group; absent fields keep their value.
type UpdateGroupInput struct {
	ID   int64 `path:"id" minimum:"1"`
	Body struct {
		Description      *string `json:"description,omitempty" maxLength:"512"`
		Enabled          *bool   `json:"enabled,omitempty"`
		AutoCreateScenes *bool   `json:"auto_create_scenes,omitempty"`
	}
}

// RotateTokenInput rotates a group's token.
type RotateTokenInput struct {
	ID   int64 `path:"id" minimum:"1"`
	Body struct {
		Grace string `json:"grace" doc:"how long the old token keeps working, a duration such as 30m or 24h; 0 revokes it at once; at most 168h"`
	}
}

// SnippetOutput is the Go code that configures the SDK for a group.
type SnippetOutput struct {
	Body struct {
		Language string `json:"language" enum:"go"`
		Code     string `json:"code"`
	}
}

func (a *API) registerGroups() {
	tags := []string{"groups"}
	query(a, huma.Operation{OperationID: "groups-list", Method: http.MethodGet, Path: Prefix + "/namespaces/{id}/groups",
		Summary: "List a namespace's groups", Description: "By id. Needs viewer of the namespace.",
		Tags: tags, Security: security, Errors: []int{400, 401, 403}}, a.listGroups)
	query(a, huma.Operation{OperationID: "groups-get", Method: http.MethodGet, Path: Prefix + "/groups/{id}",
		Summary: "Get a group", Description: "Needs viewer of its namespace.",
		Tags: tags, Security: security, Errors: []int{401, 403, 404}}, a.getGroup)
	query(a, huma.Operation{OperationID: "groups-snippet", Method: http.MethodGet, Path: Prefix + "/groups/{id}/snippet",
		Summary: "The SDK snippet of a group", Description: "Go code that configures the SDK for the group, the token read from RETRYHUB_TOKEN.",
		Tags: tags, Security: security, Errors: []int{401, 403, 404}}, a.groupSnippet)
	mutation(a, huma.Operation{OperationID: "groups-create", Method: http.MethodPost, Path: Prefix + "/namespaces/{id}/groups",
		Summary: "Create a group", Description: "The answer holds the group's token, shown only there. Needs operator of the namespace.",
		Tags: tags, Security: security, DefaultStatus: http.StatusCreated, Errors: []int{400, 401, 403, 404, 409}}, a.createGroup)
	mutation(a, huma.Operation{OperationID: "groups-update", Method: http.MethodPatch, Path: Prefix + "/groups/{id}",
		Summary: "Edit, enable or disable a group", Description: "Every node obeys the change within the catalog's TTL. Needs operator of its namespace.",
		Tags: tags, Security: security, Errors: []int{400, 401, 403, 404}}, a.updateGroup)
	mutation(a, huma.Operation{OperationID: "groups-rotate-token", Method: http.MethodPost, Path: Prefix + "/groups/{id}/rotate-token",
		Summary: "Rotate a group's token", Description: "The new token is in this answer only; the old one keeps working for the grace " +
			"period (and replaces any earlier token still in its own). Every node accepts the new token within the catalog's TTL. " +
			"Needs operator of its namespace.",
		Tags: tags, Security: security, Errors: []int{400, 401, 403, 404}}, a.rotateGroupToken)
}

// groupFor reads a group and checks the caller's role in its namespace.
func (a *API) groupFor(ctx context.Context, id int64, role auth.Role) (retry.Group, error) {
	if auth.From(ctx) == nil {
		return retry.Group{}, auth.ErrUnauthenticated
	}
	g, err := a.store.Group(ctx, id)
	if err != nil {
		return g, err
	}
	_, err = auth.Require(ctx, g.NamespaceID, role)
	return g, err
}

func (a *API) listGroups(ctx context.Context, in *ListByParentInput) (*GroupList, error) {
	if _, err := auth.Require(ctx, in.ID, auth.Viewer); err != nil {
		return nil, err
	}
	gs, err := a.store.GroupPage(ctx, in.filter(in.ID))
	if err != nil {
		return nil, err
	}
	out := &GroupList{}
	out.Body.Items = make([]Group, len(gs))
	for i, g := range gs {
		out.Body.Items[i] = groupOut(g)
	}
	if len(gs) == in.Limit {
		out.Body.NextAfter = gs[len(gs)-1].ID
	}
	return out, nil
}

func (a *API) getGroup(ctx context.Context, in *IDInput) (*GroupOutput, error) {
	g, err := a.groupFor(ctx, in.ID, auth.Viewer)
	if err != nil {
		return nil, err
	}
	return &GroupOutput{Body: groupOut(g)}, nil
}

func (a *API) createGroup(ctx context.Context, in *CreateGroupInput, ch *Change) (*GroupTokenOutput, error) {
	ch.Target, ch.NamespaceID = "group "+in.Body.Name, in.ID
	if _, err := auth.Require(ctx, in.ID, auth.Operator); err != nil {
		return nil, err
	}
	if err := retry.ValidateName("group", in.Body.Name); err != nil {
		return nil, invalid(err, "name")
	}
	token, err := newGroupToken()
	if err != nil {
		return nil, err
	}
	g, err := a.store.CreateGroup(ctx, retry.Group{NamespaceID: in.ID, Name: in.Body.Name, Description: in.Body.Description,
		Token: token, Enabled: in.Body.Enabled == nil || *in.Body.Enabled, AutoCreateScenes: in.Body.AutoCreateScenes})
	if err != nil {
		return nil, err
	}
	ch.Target = fmt.Sprintf("group %d", g.ID)
	ch.Detail = fmt.Sprintf("name %s, enabled %t, auto_create_scenes %t", g.Name, g.Enabled, g.AutoCreateScenes)
	return &GroupTokenOutput{Body: GroupWithToken{Group: groupOut(g), Token: token}}, nil
}

func (a *API) updateGroup(ctx context.Context, in *UpdateGroupInput, ch *Change) (*GroupOutput, error) {
	ch.Target = fmt.Sprintf("group %d", in.ID)
	g, err := a.groupFor(ctx, in.ID, auth.Operator)
	ch.NamespaceID = g.NamespaceID
	if err != nil {
		return nil, err
	}
	var changed []string
	if in.Body.Description != nil {
		g.Description = *in.Body.Description
		changed = append(changed, "description")
	}
	if in.Body.Enabled != nil {
		g.Enabled = *in.Body.Enabled
		changed = append(changed, fmt.Sprintf("enabled %t", g.Enabled))
	}
	if in.Body.AutoCreateScenes != nil {
		g.AutoCreateScenes = *in.Body.AutoCreateScenes
		changed = append(changed, fmt.Sprintf("auto_create_scenes %t", g.AutoCreateScenes))
	}
	ch.Detail = strings.Join(changed, ", ")
	if err := a.store.UpdateGroup(ctx, g); err != nil {
		return nil, err
	}
	if g, err = a.store.Group(ctx, in.ID); err != nil {
		return nil, err
	}
	return &GroupOutput{Body: groupOut(g)}, nil
}

func (a *API) rotateGroupToken(ctx context.Context, in *RotateTokenInput, ch *Change) (*GroupTokenOutput, error) {
	ch.Target = fmt.Sprintf("group %d", in.ID)
	g, err := a.groupFor(ctx, in.ID, auth.Operator)
	ch.NamespaceID = g.NamespaceID
	if err != nil {
		return nil, err
	}
	grace, err := time.ParseDuration(in.Body.Grace)
	switch {
	case err != nil:
		return nil, badField("grace", "want a duration such as 30m or 24h, or 0")
	case grace < 0 || grace > MaxTokenGrace:
		return nil, badField("grace", fmt.Sprintf("want 0 to %s", MaxTokenGrace))
	}
	token, err := newGroupToken()
	if err != nil {
		return nil, err
	}
	ch.Detail = "token rotated, old one kept for " + grace.String()
	if err := a.store.RotateGroupToken(ctx, in.ID, token, grace); err != nil {
		return nil, err
	}
	if g, err = a.store.Group(ctx, in.ID); err != nil {
		return nil, err
	}
	return &GroupTokenOutput{Body: GroupWithToken{Group: groupOut(g), Token: token}}, nil
}

// snippetInput names a group; the server's URL in the snippet is the one the request was sent to.
type snippetInput struct {
	ID    int64  `path:"id" minimum:"1"`
	Proto string `header:"X-Forwarded-Proto" doc:"https when a proxy ends TLS in front of the server"`
}

func (a *API) groupSnippet(ctx context.Context, in *snippetInput) (*SnippetOutput, error) {
	g, err := a.groupFor(ctx, in.ID, auth.Viewer)
	if err != nil {
		return nil, err
	}
	scheme := "http"
	if info(ctx).tls || in.Proto == "https" {
		scheme = "https"
	}
	out := &SnippetOutput{}
	out.Body.Language = "go"
	out.Body.Code = fmt.Sprintf(`client, err := retryhub.Start(ctx, retryhub.Config{
	Servers:    []string{%q},
	Namespace:  %q,
	Group:      %q,
	Token:      os.Getenv("RETRYHUB_TOKEN"),
	ListenAddr: ":7070", // the server's replays arrive here
})
if err != nil {
	log.Fatal(err)
}
defer client.Shutdown(context.Background())
`, scheme+"://"+info(ctx).host, g.Namespace, g.Name)
	return out, nil
}

// newGroupToken is a fresh random group token.
func newGroupToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate a group token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

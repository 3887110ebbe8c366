package consoleapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/retryhub/retryhub/server/internal/auth"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// Grant is a role in a namespace.
type Grant struct {
	Namespace string `json:"namespace" minLength:"1" maxLength:"64" doc:"a namespace's name, or * for every namespace"`
	Role      string `json:"role" enum:"admin,operator,viewer"`
}

// User is a console account (never its password).
type User struct {
	ID        int64     `json:"id"`
	Username  string    `json:"username"`
	Disabled  bool      `json:"disabled"`
	Roles     []Grant   `json:"roles"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// UserOutput is one user.
type UserOutput struct{ Body User }

// UserList is a page of users.
type UserList struct {
	Body struct {
		Items []User `json:"items"`
		// NextAfter is the after of the next page; 0 when this page is the last.
		NextAfter int64 `json:"next_after" doc:"pass as after for the next page; 0 when there is none"`
	}
}

// ListUsersInput pages the users by id.
type ListUsersInput struct {
	Name  string `query:"name" maxLength:"64" doc:"keep the users whose name starts with this"`
	After int64  `query:"after" minimum:"0" doc:"the next_after of the page before"`
	Limit int    `query:"limit" minimum:"1" maximum:"200" default:"50"`
}

// UserIDInput names a user.
type UserIDInput struct {
	ID int64 `path:"id" minimum:"1"`
}

// CreateUserInput is a new user.
type CreateUserInput struct {
	Body struct {
		Username string  `json:"username" pattern:"^[A-Za-z0-9._@-]{1,64}$" patternDescription:"1 to 64 letters, digits, '.', '_', '@' or '-'"`
		Password string  `json:"password" minLength:"8" maxLength:"72"`
		Roles    []Grant `json:"roles,omitempty" maxItems:"100" doc:"none: the user can sign in but sees nothing"`
	}
}

// UpdateUserInput changes a user's roles or disables it; fields left out stay.
type UpdateUserInput struct {
	ID   int64 `path:"id" minimum:"1"`
	Body struct {
		Roles    *[]Grant `json:"roles,omitempty" maxItems:"100" doc:"replaces every role of the user"`
		Disabled *bool    `json:"disabled,omitempty" doc:"a disabled user cannot sign in, and its sessions end"`
	}
}

// ResetPasswordInput sets a user's password.
type ResetPasswordInput struct {
	ID   int64 `path:"id" minimum:"1"`
	Body struct {
		Password string `json:"password" minLength:"8" maxLength:"72"`
	}
}

func (a *API) registerUsers() {
	tags := []string{"users"}
	const adminOnly = " Needs admin of every namespace."
	query(a, huma.Operation{OperationID: "users-list", Method: http.MethodGet, Path: Prefix + "/users",
		Summary: "List users", Description: "By id, a page at a time." + adminOnly, Tags: tags, Security: security,
		Errors: []int{400, 401, 403}}, a.listUsers)
	query(a, huma.Operation{OperationID: "users-get", Method: http.MethodGet, Path: Prefix + "/users/{id}",
		Summary: "Read a user", Description: adminOnly, Tags: tags, Security: security, Errors: []int{401, 403, 404}}, a.getUser)
	mutation(a, huma.Operation{OperationID: "users-create", Method: http.MethodPost, Path: Prefix + "/users",
		Summary: "Create a user", Description: "409 when the name is taken." + adminOnly, Tags: tags, Security: security,
		DefaultStatus: http.StatusCreated, Errors: []int{400, 401, 403, 409}}, a.createUser)
	mutation(a, huma.Operation{OperationID: "users-update", Method: http.MethodPatch, Path: Prefix + "/users/{id}",
		Summary:     "Change a user's roles, disable or enable it",
		Description: "Disabling ends the user's sessions. 409 when callers would disable themselves or drop their own admin role over every namespace." + adminOnly,
		Tags:        tags, Security: security, Errors: []int{400, 401, 403, 404, 409}}, a.updateUser)
	mutation(a, huma.Operation{OperationID: "users-reset-password", Method: http.MethodPost, Path: Prefix + "/users/{id}/password",
		Summary: "Set a user's password", Description: "Ends the user's sessions." + adminOnly, Tags: tags, Security: security,
		DefaultStatus: http.StatusNoContent, Errors: []int{400, 401, 403, 404}}, a.resetPassword)
}

func (a *API) listUsers(ctx context.Context, in *ListUsersInput) (*UserList, error) {
	if _, err := auth.Require(ctx, auth.AllNamespaces, auth.Admin); err != nil {
		return nil, err
	}
	users, err := a.store.ListUsers(ctx, in.Name, in.After, in.Limit)
	if err != nil {
		return nil, err
	}
	names, err := a.namespaceNames(ctx)
	if err != nil {
		return nil, err
	}
	out := &UserList{}
	out.Body.Items = make([]User, len(users))
	for i, u := range users {
		out.Body.Items[i] = userOut(u, names)
	}
	if len(users) == in.Limit {
		out.Body.NextAfter = users[len(users)-1].ID
	}
	return out, nil
}

func (a *API) getUser(ctx context.Context, in *UserIDInput) (*UserOutput, error) {
	if _, err := auth.Require(ctx, auth.AllNamespaces, auth.Admin); err != nil {
		return nil, err
	}
	u, err := a.store.User(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	user, err := a.user(ctx, u)
	return &UserOutput{Body: user}, err
}

func (a *API) createUser(ctx context.Context, in *CreateUserInput, ch *Change) (*UserOutput, error) {
	ch.Target = "user " + in.Body.Username
	if _, err := auth.Require(ctx, auth.AllNamespaces, auth.Admin); err != nil {
		return nil, err
	}
	grants, err := a.grantsIn(ctx, in.Body.Roles)
	if err != nil {
		return nil, err
	}
	ch.Detail = "roles " + grantsText(in.Body.Roles)
	hash, err := a.auth.HashPassword(in.Body.Password)
	if err != nil {
		return nil, badField("password", err.Error())
	}
	u, err := a.store.CreateUser(ctx, storage.User{Username: in.Body.Username, PasswordHash: hash, Grants: grants})
	if errors.Is(err, storage.ErrConflict) {
		return nil, huma.NewError(http.StatusConflict, fmt.Sprintf("user %q exists already", in.Body.Username))
	}
	if err != nil {
		return nil, err
	}
	ch.Target = fmt.Sprintf("user %d (%s)", u.ID, u.Username)
	user, err := a.user(ctx, u)
	return &UserOutput{Body: user}, err
}

func (a *API) updateUser(ctx context.Context, in *UpdateUserInput, ch *Change) (*UserOutput, error) {
	ch.Target = fmt.Sprintf("user %d", in.ID)
	p, err := auth.Require(ctx, auth.AllNamespaces, auth.Admin)
	if err != nil {
		return nil, err
	}
	c := storage.UserChange{Disabled: in.Body.Disabled}
	var details []string
	if in.Body.Roles != nil {
		grants, err := a.grantsIn(ctx, *in.Body.Roles)
		if err != nil {
			return nil, err
		}
		c.Grants = &grants
		details = append(details, "roles "+grantsText(*in.Body.Roles))
	}
	if in.Body.Disabled != nil {
		c.EndSessions = *in.Body.Disabled
		details = append(details, fmt.Sprintf("disabled %t", *in.Body.Disabled))
	}
	ch.Detail = strings.Join(details, ", ")
	if p.Kind == auth.KindUser && p.UserID == in.ID && !stillGlobalAdmin(c) {
		return nil, huma.NewError(http.StatusConflict, "you cannot disable yourself or take away your own admin role over every namespace; another admin can")
	}
	u, err := a.store.UpdateUser(ctx, in.ID, c)
	if err != nil {
		return nil, err
	}
	user, err := a.user(ctx, u)
	return &UserOutput{Body: user}, err
}

// stillGlobalAdmin reports whether a user keeps admin over every namespace, enabled, after c.
func stillGlobalAdmin(c storage.UserChange) bool {
	if c.Disabled != nil && *c.Disabled {
		return false
	}
	if c.Grants == nil {
		return true
	}
	for _, g := range *c.Grants {
		if g.NamespaceID == storage.AllNamespaces && g.Role == auth.Admin.String() {
			return true
		}
	}
	return false
}

func (a *API) resetPassword(ctx context.Context, in *ResetPasswordInput, ch *Change) (*Empty, error) {
	ch.Target = fmt.Sprintf("user %d", in.ID)
	if _, err := auth.Require(ctx, auth.AllNamespaces, auth.Admin); err != nil {
		return nil, err
	}
	hash, err := a.auth.HashPassword(in.Body.Password)
	if err != nil {
		return nil, badField("password", err.Error())
	}
	if _, err := a.store.UpdateUser(ctx, in.ID, storage.UserChange{PasswordHash: &hash, EndSessions: true}); err != nil {
		return nil, err
	}
	return &Empty{}, nil
}

// user is u for the API, with its namespaces' names.
func (a *API) user(ctx context.Context, u storage.User) (User, error) {
	names, err := a.namespaceNames(ctx)
	if err != nil {
		return User{}, err
	}
	return userOut(u, names), nil
}

func userOut(u storage.User, names map[int64]string) User {
	return User{ID: u.ID, Username: u.Username, Disabled: u.Disabled, Roles: grantsOut(auth.Grants(u.Grants), names),
		CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt}
}

// namespaceNames maps every namespace's id to its name (there are few).
func (a *API) namespaceNames(ctx context.Context) (map[int64]string, error) {
	nss, err := a.store.ListNamespaces(ctx)
	if err != nil {
		return nil, err
	}
	m := make(map[int64]string, len(nss))
	for _, ns := range nss {
		m[ns.ID] = ns.Name
	}
	return m, nil
}

func nsLabel(id int64, names map[int64]string) string {
	if id == auth.AllNamespaces {
		return "*"
	}
	if n, ok := names[id]; ok {
		return n
	}
	return fmt.Sprintf("#%d", id)
}

func grantsOut(gs []auth.Grant, names map[int64]string) []Grant {
	out := make([]Grant, len(gs))
	for i, g := range gs {
		out[i] = Grant{Namespace: nsLabel(g.NamespaceID, names), Role: g.Role.String()}
	}
	return out
}

// grantsIn resolves the namespaces' names; an unknown one or one named twice is a 400.
func (a *API) grantsIn(ctx context.Context, in []Grant) ([]storage.Grant, error) {
	out := make([]storage.Grant, 0, len(in))
	seen := map[int64]bool{}
	for i, g := range in {
		field := fmt.Sprintf("roles[%d].namespace", i)
		id, err := a.namespaceID(ctx, g.Namespace, field)
		if err != nil {
			return nil, err
		}
		if seen[id] {
			return nil, badField(field, "this namespace has a role already; give one role per namespace")
		}
		seen[id] = true
		out = append(out, storage.Grant{NamespaceID: id, Role: g.Role})
	}
	return out, nil
}

// namespaceID resolves a namespace's name ("*": every namespace); unknown is a 400 on field.
func (a *API) namespaceID(ctx context.Context, name, field string) (int64, error) {
	if name == "*" {
		return auth.AllNamespaces, nil
	}
	ns, err := a.store.NamespaceByName(ctx, name)
	if errors.Is(err, storage.ErrNotFound) {
		return 0, badField(field, fmt.Sprintf("no namespace is named %q", name))
	}
	if err != nil {
		return 0, err
	}
	return ns.ID, nil
}

func grantsText(gs []Grant) string {
	parts := make([]string, len(gs))
	for i, g := range gs {
		parts[i] = g.Role + "@" + g.Namespace
	}
	return "[" + strings.Join(parts, " ") + "]"
}

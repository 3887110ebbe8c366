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
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// Namespace is a namespace as the console shows it.
type Namespace struct {
	ID          int64     `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Enabled     bool      `json:"enabled" doc:"a disabled namespace's clients are refused and its tasks held"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

func namespaceOut(ns retry.Namespace) Namespace {
	return Namespace{ID: ns.ID, Name: ns.Name, Description: ns.Description, Enabled: ns.Enabled,
		CreatedAt: ns.CreatedAt, UpdatedAt: ns.UpdatedAt}
}

// NamespaceOutput answers with one namespace.
type NamespaceOutput struct{ Body Namespace }

// NamespaceList is a page of namespaces.
type NamespaceList struct {
	Body struct {
		Items     []Namespace `json:"items"`
		NextAfter int64       `json:"next_after" doc:"pass as after for the next page; 0 when there is none"`
	}
}

// PageInput pages a list by id and filters it by name and state.
type PageInput struct {
	Name    string `query:"name" maxLength:"64" doc:"keep the names that contain this"`
	Enabled string `query:"enabled" enum:"true,false," doc:"keep the enabled (true) or disabled (false) ones"`
	After   int64  `query:"after" minimum:"0" doc:"the next_after of the previous page"`
	Limit   int    `query:"limit" minimum:"1" maximum:"200" default:"50"`
}

func (in *PageInput) filter(parent int64) storage.CatalogFilter {
	f := storage.CatalogFilter{Parent: parent, Name: in.Name, After: in.After, Limit: in.Limit}
	if in.Enabled != "" {
		v := in.Enabled == "true"
		f.Enabled = &v
	}
	return f
}

// IDInput names an object by id.
type IDInput struct {
	ID int64 `path:"id" minimum:"1"`
}

// ListByParentInput is a page of a namespace's groups or a group's scenes.
type ListByParentInput struct {
	ID int64 `path:"id" minimum:"1"`
	PageInput
}

// CreateNamespaceInput is a new namespace.
type CreateNamespaceInput struct {
	Body struct {
		Name        string `json:"name" minLength:"1" maxLength:"64"`
		Description string `json:"description,omitempty" maxLength:"512"`
		Enabled     *bool  `json:"enabled,omitempty" doc:"default true"`
	}
}

// UpdateNamespaceInput changes a namespace; absent fields keep their value.
type UpdateNamespaceInput struct {
	ID   int64 `path:"id" minimum:"1"`
	Body struct {
		Description *string `json:"description,omitempty" maxLength:"512"`
		Enabled     *bool   `json:"enabled,omitempty" doc:"false disables the namespace: its groups' clients are refused (403) and its tasks held"`
	}
}

// registerCatalog registers the operations on namespaces, groups and scenes.
func (a *API) registerCatalog() {
	a.registerNamespaces()
	a.registerGroups()
	a.registerScenes()
}

func (a *API) registerNamespaces() {
	tags := []string{"namespaces"}
	query(a, huma.Operation{OperationID: "namespaces-list", Method: http.MethodGet, Path: Prefix + "/namespaces",
		Summary: "List namespaces", Description: "The namespaces where the caller has a role, by id.",
		Tags: tags, Security: security, Errors: []int{400, 401}}, a.listNamespaces)
	query(a, huma.Operation{OperationID: "namespaces-get", Method: http.MethodGet, Path: Prefix + "/namespaces/{id}",
		Summary: "Get a namespace", Description: "Needs viewer of the namespace.",
		Tags: tags, Security: security, Errors: []int{401, 403, 404}}, a.getNamespace)
	mutation(a, huma.Operation{OperationID: "namespaces-create", Method: http.MethodPost, Path: Prefix + "/namespaces",
		Summary: "Create a namespace", Description: "Needs admin of every namespace.",
		Tags: tags, Security: security, DefaultStatus: http.StatusCreated, Errors: []int{400, 401, 403, 409}}, a.createNamespace)
	mutation(a, huma.Operation{OperationID: "namespaces-update", Method: http.MethodPatch, Path: Prefix + "/namespaces/{id}",
		Summary: "Edit, enable or disable a namespace", Description: "Needs admin of the namespace.",
		Tags: tags, Security: security, Errors: []int{400, 401, 403, 404}}, a.updateNamespace)
}

func (a *API) listNamespaces(ctx context.Context, in *PageInput) (*NamespaceList, error) {
	p := auth.From(ctx)
	if p == nil {
		return nil, auth.ErrUnauthenticated
	}
	f := in.filter(0)
	f.IDs, f.All = p.Namespaces(auth.Viewer)
	nss, err := a.store.NamespacePage(ctx, f)
	if err != nil {
		return nil, err
	}
	out := &NamespaceList{}
	out.Body.Items = make([]Namespace, len(nss))
	for i, ns := range nss {
		out.Body.Items[i] = namespaceOut(ns)
	}
	if len(nss) == in.Limit {
		out.Body.NextAfter = nss[len(nss)-1].ID
	}
	return out, nil
}

// namespaceFor checks the caller's role in namespace id before reading it, so that a caller
// without one learns nothing (403 whether it exists or not).
func (a *API) namespaceFor(ctx context.Context, id int64, role auth.Role) (retry.Namespace, error) {
	if _, err := auth.Require(ctx, id, role); err != nil {
		return retry.Namespace{}, err
	}
	return a.store.Namespace(ctx, id)
}

func (a *API) getNamespace(ctx context.Context, in *IDInput) (*NamespaceOutput, error) {
	ns, err := a.namespaceFor(ctx, in.ID, auth.Viewer)
	if err != nil {
		return nil, err
	}
	return &NamespaceOutput{Body: namespaceOut(ns)}, nil
}

func (a *API) createNamespace(ctx context.Context, in *CreateNamespaceInput, ch *Change) (*NamespaceOutput, error) {
	ch.Target = "namespace " + in.Body.Name
	if _, err := auth.Require(ctx, auth.AllNamespaces, auth.Admin); err != nil {
		return nil, err
	}
	if err := retry.ValidateName("namespace", in.Body.Name); err != nil {
		return nil, invalid(err, "name")
	}
	enabled := in.Body.Enabled == nil || *in.Body.Enabled
	ns, err := a.store.CreateNamespace(ctx, retry.Namespace{Name: in.Body.Name, Description: in.Body.Description, Enabled: enabled})
	if err != nil {
		return nil, err
	}
	ch.Target, ch.NamespaceID = fmt.Sprintf("namespace %d", ns.ID), ns.ID
	ch.Detail = fmt.Sprintf("name %s, enabled %t", ns.Name, ns.Enabled)
	return &NamespaceOutput{Body: namespaceOut(ns)}, nil
}

func (a *API) updateNamespace(ctx context.Context, in *UpdateNamespaceInput, ch *Change) (*NamespaceOutput, error) {
	ch.Target, ch.NamespaceID = fmt.Sprintf("namespace %d", in.ID), in.ID
	ns, err := a.namespaceFor(ctx, in.ID, auth.Admin)
	if err != nil {
		return nil, err
	}
	var changed []string
	if in.Body.Description != nil {
		ns.Description = *in.Body.Description
		changed = append(changed, "description")
	}
	if in.Body.Enabled != nil {
		ns.Enabled = *in.Body.Enabled
		changed = append(changed, fmt.Sprintf("enabled %t", ns.Enabled))
	}
	ch.Detail = strings.Join(changed, ", ")
	if err := a.store.UpdateNamespace(ctx, ns); err != nil {
		return nil, err
	}
	if ns, err = a.store.Namespace(ctx, in.ID); err != nil {
		return nil, err
	}
	return &NamespaceOutput{Body: namespaceOut(ns)}, nil
}

// invalid turns a validation error of the domain (retry.ErrInvalid) into a 400 naming field.
func invalid(err error, field string) error {
	if errors.Is(err, retry.ErrInvalid) {
		return badField(field, strings.TrimPrefix(err.Error(), retry.ErrInvalid.Error()+" "))
	}
	return err
}

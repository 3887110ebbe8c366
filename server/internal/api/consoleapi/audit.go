package consoleapi

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/retryhub/retryhub/server/internal/auth"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// AuditEntry is one change made through the console API, or an attempt at one.
type AuditEntry struct {
	ID          int64     `json:"id"`
	At          time.Time `json:"at"`
	Actor       string    `json:"actor" doc:"the user's name, token:<name> for an API token, or the name a failed login gave"`
	ActorKind   string    `json:"actor_kind" enum:"user,token,anonymous"`
	Action      string    `json:"action" doc:"the operation id, e.g. users-create"`
	Target      string    `json:"target" doc:"the objects changed"`
	NamespaceID int64     `json:"namespace_id" doc:"the namespace of the change; 0 for none or every one"`
	Detail      string    `json:"detail"`
	Outcome     string    `json:"outcome" enum:"ok,denied,refused,failed" doc:"denied: 401, 403 or 429; refused: other 4xx; failed: 5xx"`
	Status      int       `json:"status" doc:"the HTTP status answered"`
	Remote      string    `json:"remote" doc:"the caller's address"`
}

// ListAuditInput filters the audit log and pages it by id, newest first.
type ListAuditInput struct {
	Actor  string    `query:"actor" maxLength:"128"`
	Action string    `query:"action" maxLength:"64"`
	Since  time.Time `query:"since" doc:"entries at or after this time (RFC 3339)"`
	Until  time.Time `query:"until" doc:"entries before this time (RFC 3339)"`
	Before int64     `query:"before" minimum:"0" doc:"the next_before of the page before"`
	Limit  int       `query:"limit" minimum:"1" maximum:"500" default:"100"`
}

// AuditList is a page of the audit log.
type AuditList struct {
	Body struct {
		Items      []AuditEntry `json:"items"`
		NextBefore int64        `json:"next_before" doc:"pass as before for the next page; 0 when there is none"`
	}
}

func (a *API) registerAudit() {
	query(a, huma.Operation{OperationID: "audit-list", Method: http.MethodGet, Path: Prefix + "/audit",
		Summary: "List the audit log", Description: "Newest first, a page at a time; the log cannot be changed through the API. " +
			"Needs admin of every namespace.",
		Tags: []string{"audit"}, Security: security, Errors: []int{400, 401, 403}}, a.listAudit)
}

func (a *API) listAudit(ctx context.Context, in *ListAuditInput) (*AuditList, error) {
	if _, err := auth.Require(ctx, auth.AllNamespaces, auth.Admin); err != nil {
		return nil, err
	}
	entries, err := a.store.ListAudit(ctx, storage.AuditFilter{Actor: in.Actor, Action: in.Action, Since: in.Since,
		Until: in.Until, Before: in.Before}, in.Limit)
	if err != nil {
		return nil, err
	}
	out := &AuditList{}
	out.Body.Items = make([]AuditEntry, len(entries))
	for i, e := range entries {
		out.Body.Items[i] = AuditEntry{ID: e.ID, At: e.At, Actor: e.Actor, ActorKind: e.ActorKind, Action: e.Action,
			Target: e.Target, NamespaceID: e.NamespaceID, Detail: e.Detail, Outcome: e.Outcome, Status: e.Status, Remote: e.Remote}
	}
	if len(entries) == in.Limit {
		out.Body.NextBefore = entries[len(entries)-1].ID
	}
	return out, nil
}

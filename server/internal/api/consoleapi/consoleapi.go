// Package consoleapi is the console's HTTP API under /api/v1/console/: accounts, sessions, API
// tokens and the audit log (the management of scenes, groups and tasks plugs in beside them).
// Its operations are declared with huma on the server's gin engine, so the OpenAPI 3.1
// document served at /api/openapi.json, the validation of every request and the handlers'
// Go types are one source; /api/docs is a reference page made from that document.
//
// Every answer that is not 2xx has the body every retryhub API uses,
// {"error":{"code","message"}}, with "details" naming the fields at fault on a 400. Handlers
// check access with auth.Require; every change goes through the audit helper (mutation),
// which writes who did what to which object and with what outcome to rh_audit.
package consoleapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humagin"
	"github.com/gin-gonic/gin"

	"github.com/retryhub/retryhub/server/internal/alert"
	"github.com/retryhub/retryhub/server/internal/auth"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// Prefix starts every console route.
const Prefix = "/api/v1/console"

// Paths of the document and the reference page.
const (
	OpenAPIPath = "/api/openapi.json"
	DocsPath    = "/api/docs"
)

// Params are the API's dependencies.
type Params struct {
	Store   *storage.Store
	Auth    *auth.Service
	Version string
	Log     *slog.Logger

	// Dashboard, instances and nodes: the liveness windows shown (0: the defaults,
	// dispatch.instance_ttl 30s and scheduler.node_ttl 10s).
	InstanceTTL time.Duration
	NodeTTL     time.Duration

	// Tasks.
	// MaxPayloadBytes bounds the arguments an operator gives a task (client_api.max_payload_bytes;
	// 0: 256 KiB).
	MaxPayloadBytes int64

	// Jobs is woken when a bulk job is made (nil: the runners find it at their next look).
	Jobs JobWaker
	// Alerts sends channels' test messages; Channels seals their settings (nil: the alert
	// channel operations answer 503).
	Alerts   *alert.Evaluator
	Channels *alert.Channels
}

// API is the console API.
type API struct {
	store *storage.Store
	auth  *auth.Service
	log   *slog.Logger
	ver   string
	api   huma.API

	instanceTTL, nodeTTL time.Duration
	maxPayloadBytes      int64
	jobs                 JobWaker
	alerts               *alert.Evaluator
	alertChannels        *alert.Channels
}

// New builds the API; Mount serves it.
func New(p Params) *API {
	if p.Log == nil {
		p.Log = slog.Default()
	}
	return &API{store: p.Store, auth: p.Auth, log: p.Log, ver: p.Version,
		instanceTTL: cmp.Or(p.InstanceTTL, defaultInstanceTTL), nodeTTL: cmp.Or(p.NodeTTL, defaultNodeTTL),
		maxPayloadBytes: p.MaxPayloadBytes, jobs: p.Jobs, alerts: p.Alerts, alertChannels: p.Channels}
}

// Mount registers the console's operations, the OpenAPI document and the reference page on r.
func (a *API) Mount(r *gin.Engine) {
	cfg := huma.DefaultConfig("retryhub console API", a.ver)
	cfg.Info.Description = "The operators' API of retryhub. Sign in with POST " + Prefix + "/auth/login; send the token as " +
		"`Authorization: Bearer <token>` (or let the browser send the session cookie, and repeat the CSRF cookie's value in the " +
		auth.CSRFHeader + " header on every change). API tokens (rh_…) are sent as bearer tokens."
	cfg.OpenAPIPath = strings.TrimSuffix(OpenAPIPath, ".json")
	cfg.DocsPath = "" // the built-in page loads scripts from the internet; docs.go serves one made here
	cfg.SchemasPath = ""
	cfg.CreateHooks = nil // no $schema links in the answers
	cfg.Components.SecuritySchemes = map[string]*huma.SecurityScheme{
		"bearer": {Type: "http", Scheme: "bearer", Description: "a session token from login, or an API token (rh_…)"},
		"cookie": {Type: "apiKey", In: "cookie", Name: auth.SessionCookie, Description: "the browser's session; changes also need the " + auth.CSRFHeader + " header"},
	}
	a.api = humagin.New(r, cfg)
	a.api.UseMiddleware(a.authenticate)
	a.registerAuth()
	a.registerUsers()
	a.registerTokens()
	a.registerAudit()
	a.registerCatalog()
	a.registerCluster()
	a.registerDashboard()
	a.registerTasks()
	a.registerJobs()
	a.registerAlerts()
	fixValidationStatus(a.api.OpenAPI())
	r.GET(DocsPath, a.docs)
}

// OpenAPI is the API's document (after Mount).
func (a *API) OpenAPI() *huma.OpenAPI { return a.api.OpenAPI() }

// security is what an operation that needs a principal declares.
var security = []map[string][]string{{"bearer": {}}, {"cookie": {}}}

// publicOp marks operations that take no credentials (login).
const publicOp = "public"

// reqInfo is what handlers need of the request beyond their input.
type reqInfo struct {
	remote string
	tls    bool
	host   string // the Host the request was sent to
}

type reqInfoKey struct{}

func info(ctx context.Context) reqInfo {
	ri, _ := ctx.Value(reqInfoKey{}).(reqInfo)
	return ri
}

// authenticate puts the request's principal in the context: credentials that do not verify
// are answered 401 at once, a change made with the session cookie but without the CSRF header
// 403. Operations marked public (login) skip it.
func (a *API) authenticate(ctx huma.Context, next func(huma.Context)) {
	remote := ""
	if gc := humagin.Unwrap(ctx); gc != nil {
		remote = gc.RemoteIP() // the peer itself: a forwarded-for header is the caller's to forge
	}
	ctx = huma.WithValue(ctx, reqInfoKey{}, reqInfo{remote: remote, tls: ctx.TLS() != nil, host: ctx.Host()})
	if op := ctx.Operation(); op != nil && op.Metadata[publicOp] == true {
		next(ctx)
		return
	}
	creds := auth.Credentials{Authorization: ctx.Header("Authorization")}
	if c, err := huma.ReadCookie(ctx, auth.SessionCookie); err == nil {
		creds.Cookie = c.Value
	}
	p, err := a.auth.Authenticate(ctx.Context(), creds)
	if err != nil {
		huma.WriteErr(a.api, ctx, a.status(ctx.Context(), err), messageOf(err))
		return
	}
	if err := auth.CheckCSRF(p, ctx.Method(), ctx.Header(auth.CSRFHeader)); err != nil {
		a.audit(ctx.Context(), p, ctx.Operation().OperationID, &Change{Detail: "CSRF header missing or wrong"},
			http.StatusForbidden, err, remote)
		huma.WriteErr(a.api, ctx, http.StatusForbidden, err.Error())
		return
	}
	if p != nil {
		ctx = huma.WithContext(ctx, auth.WithPrincipal(ctx.Context(), p))
	}
	next(ctx)
}

// status maps an error to an HTTP status.
func (a *API) status(ctx context.Context, err error) int {
	var se huma.StatusError
	switch {
	case errors.As(err, &se):
		return se.GetStatus()
	case errors.Is(err, auth.ErrUnauthenticated):
		return http.StatusUnauthorized
	case errors.Is(err, auth.ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, storage.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, storage.ErrConflict):
		return http.StatusConflict
	}
	a.log.ErrorContext(ctx, "console api", "err", err)
	return http.StatusServiceUnavailable
}

func messageOf(err error) string {
	if errors.Is(err, auth.ErrUnauthenticated) || errors.Is(err, auth.ErrForbidden) ||
		errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrConflict) {
		return err.Error()
	}
	return "the request failed; nothing was changed, try again"
}

// fail turns a handler's error into the API's error: a StatusError as it is, the errors of
// auth and storage into 401, 403, 404 and 409, anything else into 503 (logged, not shown).
func (a *API) fail(ctx context.Context, err error) error {
	var se huma.StatusError
	if errors.As(err, &se) {
		return err
	}
	status := a.status(ctx, err)
	return huma.NewError(status, messageOf(err))
}

// Change is what a mutation records in the audit log besides who and when.
type Change struct {
	// Target names the objects changed ("user 12", "token 3").
	Target string
	// NamespaceID is the namespace the change is in (0: none or every one).
	NamespaceID int64
	// Detail says more: the fields changed, a filter.
	Detail string
	// Actor names the caller when there is no principal (the user name a login tried).
	Actor string
}

// mutation registers an operation that changes something. The handler fills in the Change;
// whatever the handler returns, an audit entry is written with its outcome, unless the caller
// is anonymous and the handler named no actor (a request without credentials changes nothing
// and is no one's doing).
func mutation[I, O any](a *API, op huma.Operation, h func(ctx context.Context, in *I, ch *Change) (*O, error)) {
	huma.Register(a.api, op, func(ctx context.Context, in *I) (*O, error) {
		ch := &Change{}
		out, err := h(ctx, in, ch)
		status := cmp.Or(op.DefaultStatus, http.StatusOK)
		if err != nil {
			err = a.fail(ctx, err)
			status = http.StatusInternalServerError
			var se huma.StatusError
			if errors.As(err, &se) {
				status = se.GetStatus()
			}
		}
		a.audit(ctx, auth.From(ctx), op.OperationID, ch, status, err, info(ctx).remote)
		return out, err
	})
}

// query registers an operation that only reads.
func query[I, O any](a *API, op huma.Operation, h func(ctx context.Context, in *I) (*O, error)) {
	huma.Register(a.api, op, func(ctx context.Context, in *I) (*O, error) {
		out, err := h(ctx, in)
		if err != nil {
			return nil, a.fail(ctx, err)
		}
		return out, nil
	})
}

// audit writes an audit entry for an answer with status (err: why it was not 2xx); a failure
// to write it is logged.
func (a *API) audit(ctx context.Context, p *auth.Principal, action string, ch *Change, status int, err error, remote string) {
	e := storage.AuditEntry{Action: action, Target: ch.Target, NamespaceID: ch.NamespaceID, Detail: ch.Detail,
		Outcome: "ok", Status: status, Remote: remote}
	switch {
	case p != nil:
		e.Actor, e.ActorKind = p.Actor(), p.Kind
	case ch.Actor != "":
		e.Actor, e.ActorKind = ch.Actor, "anonymous"
	default:
		return
	}
	if err != nil {
		switch {
		case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden || e.Status == http.StatusTooManyRequests:
			e.Outcome = "denied"
		case e.Status < 500:
			e.Outcome = "refused"
		default:
			e.Outcome = "failed"
		}
		if e.Detail == "" {
			e.Detail = err.Error()
		} else {
			e.Detail += "; " + err.Error()
		}
	}
	// The entry is written even when the request's context has ended: the change may be made.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	e.At = now()
	if werr := a.store.AddAudit(actx, e); werr != nil {
		a.log.ErrorContext(ctx, "write audit entry", "action", action, "actor", e.Actor, "err", werr)
	}
}

// badField is a 400 naming the field and the reason.
func badField(field, reason string) error {
	return huma.NewError(http.StatusBadRequest, fmt.Sprintf("%s: %s", field, reason),
		&huma.ErrorDetail{Location: "body." + field, Message: reason})
}

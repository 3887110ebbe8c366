// Package clientapi serves the API the SDK speaks, under /api/v1/client/: instances register
// and send heartbeats, fetch their group's scene policies, and report failed calls. Every
// request names its namespace and group and is signed with the group's token; a request that
// is unsigned, badly signed, outside the signature window, a replay of one accepted before,
// malformed or too large is refused with a 4xx and changes nothing. What can be checked without
// the body is checked before the body is read, and the bodies read at once are bounded in bytes.
package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/api/httpx"
	"github.com/retryhub/retryhub/server/internal/catalog"
	"github.com/retryhub/retryhub/server/internal/dispatch"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// Params bound and describe the API.
type Params struct {
	MaxBodyBytes int64
	// MaxInflightBytes bounds the bytes of request bodies read and held at once across all
	// requests; zero means 16 times MaxBodyBytes. A request that finds no room for its body
	// within BusyWait is answered 503 busy without its body being read.
	MaxInflightBytes int64
	// BusyWait is how long a request waits for room for its body; zero means a second.
	BusyWait          time.Duration
	MaxPayloadBytes   int64
	MaxBatch          int
	SignatureWindow   time.Duration
	InstanceHeartbeat time.Duration
	InstanceTTL       time.Duration
	Buckets           int
}

// API is the client API.
type API struct {
	p        Params
	store    *storage.Store
	catalog  *catalog.Catalog
	registry *dispatch.Registry
	log      *slog.Logger
	inflight *budget
	// OnIngest, when set, is called after each committed report batch with the number of
	// tasks created and merged.
	OnIngest func(created, merged int)
}

// New returns the client API.
func New(p Params, store *storage.Store, cat *catalog.Catalog, reg *dispatch.Registry, log *slog.Logger) *API {
	if p.MaxInflightBytes <= 0 {
		p.MaxInflightBytes = 16 * p.MaxBodyBytes
	}
	if p.BusyWait <= 0 {
		p.BusyWait = time.Second
	}
	return &API{p: p, store: store, catalog: cat, registry: reg, log: log, inflight: newBudget(p.MaxInflightBytes)}
}

// Inflight returns the bytes of request bodies being read or held now, and the most there ever
// were at once (never more than Params.MaxInflightBytes).
func (a *API) Inflight() (now, high int64) { return a.inflight.stats() }

// Mount adds the API's routes to r.
func (a *API) Mount(r gin.IRouter) {
	g := r.Group("/api/v1/client")
	g.POST("/register", a.authenticate(true), a.register)
	g.POST("/heartbeat", a.authenticate(true), a.heartbeat)
	g.POST("/deregister", a.authenticate(true), a.deregister)
	g.GET("/scenes", a.authenticate(true), a.scenes)
	// A report's nonce is recorded in the transaction that stores its items: one commit.
	g.POST("/reports", a.authenticate(false), a.reports)
}

const (
	ctxGroup  = "retryhub.group"
	ctxBody   = "retryhub.body"
	ctxSigned = "retryhub.signed"
	ctxNonce  = "retryhub.nonce"
)

// verifyAny checks the signature against each token a group accepts (the current one, and the
// one before a rotation during its grace period); the error is the current token's.
func verifyAny(tokens []string, stamp protocol.Stamp, body []byte) error {
	var first error
	for _, tok := range tokens {
		err := protocol.Verify(tok, stamp, body)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// authenticate admits a request, cheapest check first, so that a request that is refused costs
// the server no body read and leaves nothing behind:
//   - 401 when the request names no group, or its stamp (protocol version, signature, nonce,
//     timestamp within the window) is missing or bad: before anything is looked up or read;
//   - 401 when the group does not exist (unknown names are not cached), 413 when the declared
//     body is over the limit: before the body is read;
//   - 503 busy (with Retry-After) when the bodies being read and held across all requests leave
//     no room for this one within a short wait;
//   - 401 when the signature does not match the body and headers under the group's token (or
//     its previous token, during the grace period of a rotation), 413 when the body turns out
//     over the limit;
//   - 403 for a disabled group or namespace;
//   - 409 replayed_request when the nonce was accepted before, on any node.
//
// The body's room is given back once the handler has answered.
//
// With recordNonce false, the nonce is left for the handler to record (in the context under
// ctxNonce) in the transaction of its change, and the handler answers 409 itself.
func (a *API) authenticate(recordNonce bool) gin.HandlerFunc {
	return func(c *gin.Context) { a.authenticateRequest(c, recordNonce) }
}

func (a *API) authenticateRequest(c *gin.Context, recordNonce bool) {
	if c.Request.ContentLength != 0 {
		// Until the body is read, an answer closes the connection: otherwise the HTTP server
		// would read what is left of the body (up to 256 KiB) before it sends a refusal.
		c.Header("Connection", "close")
	}
	ns, name := c.GetHeader(protocol.HeaderNamespace), c.GetHeader(protocol.HeaderGroup)
	if ns == "" || name == "" {
		httpx.Error(c, http.StatusUnauthorized, "missing_group",
			"name the group with the "+protocol.HeaderNamespace+" and "+protocol.HeaderGroup+" headers")
		return
	}
	stamp, err := protocol.CheckStamp(c.Request, time.Now(), a.p.SignatureWindow)
	if err != nil {
		refuseSignature(c, err)
		return
	}
	ctx := c.Request.Context()
	group, err := a.catalog.GroupByName(ctx, ns, name)
	if errors.Is(err, storage.ErrNotFound) {
		httpx.Error(c, http.StatusUnauthorized, "unknown_group", fmt.Sprintf("no group %q in namespace %q", name, ns))
		return
	}
	if err != nil {
		httpx.Internal(c, a.log, "looking up the group", err)
		return
	}
	if c.Request.ContentLength > a.p.MaxBodyBytes {
		a.tooLarge(c)
		return
	}
	room := c.Request.ContentLength
	if room < 0 {
		room = a.p.MaxBodyBytes // not declared: as much as it may be
	}
	wctx, cancel := context.WithTimeout(ctx, a.p.BusyWait)
	release, err := a.inflight.acquire(wctx, room)
	cancel()
	if err != nil {
		c.Header("Retry-After", "1")
		httpx.Error(c, http.StatusServiceUnavailable, "busy",
			"the server is reading as many request bodies as it may at once; try again shortly")
		return
	}
	defer release()
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, a.p.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			a.tooLarge(c)
			return
		}
		httpx.Error(c, http.StatusBadRequest, "unreadable_body", "reading the body: "+err.Error())
		return
	}
	c.Writer.Header().Del("Connection")
	if err := verifyAny(group.Tokens(time.Now()), stamp, body); err != nil {
		refuseSignature(c, err)
		return
	}
	if !group.NamespaceEnabled {
		httpx.Error(c, http.StatusForbidden, "namespace_disabled", fmt.Sprintf("namespace %s is disabled", ns))
		return
	}
	if !group.Enabled {
		httpx.Error(c, http.StatusForbidden, "group_disabled", fmt.Sprintf("group %s/%s is disabled", ns, name))
		return
	}
	// Kept until no node would accept the signature any more, by its timestamp.
	expires := time.UnixMilli(stamp.Timestamp).Add(a.p.SignatureWindow + NonceMargin)
	if !recordNonce {
		c.Set(ctxNonce, &storage.Nonce{Value: stamp.Nonce, Expires: expires})
	} else if err := a.store.AddNonce(ctx, stamp.Nonce, expires); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			replayed(c)
			return
		}
		httpx.Internal(c, a.log, "recording the request's nonce", err)
		return
	}
	c.Set(ctxGroup, group)
	c.Set(ctxBody, body)
	c.Set(ctxSigned, stamp.Timestamp)
	c.Next()
}

// replayed answers 409 to a request whose nonce was recorded before.
func replayed(c *gin.Context) {
	httpx.Error(c, http.StatusConflict, "replayed_request",
		"this request's nonce was used before: every request needs a fresh nonce and signature")
}

func (a *API) tooLarge(c *gin.Context) {
	httpx.Error(c, http.StatusRequestEntityTooLarge, "body_too_large",
		fmt.Sprintf("the body is over the limit of %d bytes; send smaller batches", a.p.MaxBodyBytes))
}

// refuseSignature answers 401 with the code of the signature check that failed. A request
// with no signature at all is missing_signature, whatever else it lacks.
func refuseSignature(c *gin.Context, err error) {
	code := "bad_signature"
	switch {
	case errors.Is(err, protocol.ErrMissingSignature), c.GetHeader(protocol.HeaderSignature) == "":
		code = "missing_signature"
	case errors.Is(err, protocol.ErrBadNonce):
		code = "bad_nonce"
	case errors.Is(err, protocol.ErrBadVersion):
		code = "bad_protocol_version"
	case errors.Is(err, protocol.ErrStaleTimestamp), errors.Is(err, protocol.ErrBadTimestamp):
		code = "bad_timestamp"
	}
	httpx.Error(c, http.StatusUnauthorized, code, "signature check failed: "+err.Error())
}

func groupOf(c *gin.Context) retry.Group { return c.MustGet(ctxGroup).(retry.Group) }

// decode reads the signed body into v, answering 400 when it is not the expected JSON.
func decode(c *gin.Context, v any) bool {
	body := c.MustGet(ctxBody).([]byte)
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		httpx.Error(c, http.StatusBadRequest, "bad_json", "the body is not the expected JSON: "+err.Error())
		return false
	}
	if dec.More() {
		httpx.Error(c, http.StatusBadRequest, "bad_json", "the body holds more than one JSON value")
		return false
	}
	return true
}

// DefaultCapacity is an instance's capacity when it registers none.
const DefaultCapacity = 16

func (a *API) register(c *gin.Context) {
	var req protocol.RegisterRequest
	if !decode(c, &req) {
		return
	}
	switch {
	case !protocol.ValidInstanceID(req.InstanceID):
		httpx.Error(c, http.StatusBadRequest, "bad_instance", "instance_id: use "+protocol.InstanceIDRule)
		return
	case len(req.ExecutorURL) > 512:
		httpx.Error(c, http.StatusBadRequest, "bad_instance", "executor_url: at most 512 bytes")
		return
	case req.Capacity < 0 || req.Capacity > 100000:
		httpx.Error(c, http.StatusBadRequest, "bad_instance", "capacity: want 0 (the default, 16) to 100000")
		return
	case len(req.SDKVersion) > 32 || len(req.Host) > 255:
		httpx.Error(c, http.StatusBadRequest, "bad_instance", "sdk_version (32 bytes) or host (255 bytes) too long")
		return
	}
	if req.ExecutorURL != "" {
		u, err := url.Parse(req.ExecutorURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			httpx.Error(c, http.StatusBadRequest, "bad_instance", "executor_url: want an absolute http or https URL")
			return
		}
	}
	if req.Capacity == 0 {
		req.Capacity = DefaultCapacity
	}
	g := groupOf(c)
	in := retry.Instance{ID: req.InstanceID, GroupID: g.ID, ExecutorURL: req.ExecutorURL, Capacity: req.Capacity,
		SDKVersion: req.SDKVersion, Host: req.Host, StartedAt: time.Now(), HeartbeatAt: time.Now()}
	if err := a.store.UpsertInstance(c.Request.Context(), in, time.Now().Add(-a.p.InstanceTTL)); err != nil {
		if errors.Is(err, storage.ErrConflict) {
			httpx.Error(c, http.StatusConflict, "instance_taken",
				"instance_id "+req.InstanceID+" belongs to a live instance of another group; use another id")
			return
		}
		httpx.Internal(c, a.log, "registering the instance", err)
		return
	}
	a.registry.Observe(in)
	if g.AutoCreateScenes {
		a.createDeclared(c, g, req.Declarations)
	}
	a.log.Info("client instance registered", "group", g.Namespace+"/"+g.Name, "instance", in.ID,
		"executor", in.ExecutorURL, "capacity", in.Capacity, "sdk", in.SDKVersion, "host", in.Host)
	c.JSON(http.StatusOK, protocol.RegisterResponse{
		HeartbeatInterval: backoff.Duration(a.p.InstanceHeartbeat), InstanceTTL: backoff.Duration(a.p.InstanceTTL),
		MaxBodyBytes: a.p.MaxBodyBytes, MaxPayloadBytes: a.p.MaxPayloadBytes, MaxBatch: a.p.MaxBatch})
}

// createDeclared creates the declared scenes the group does not have yet, each from its
// declaration. A scene that cannot be created is logged; the report that needs it will create
// it with the defaults, or say why not.
func (a *API) createDeclared(c *gin.Context, g retry.Group, decls []protocol.SceneDeclaration) {
	for _, d := range decls {
		if !protocol.ValidName(d.Name) {
			continue
		}
		sc := retry.FromDeclaration(g.ID, d)
		if _, err := a.catalog.EnsureSceneFrom(c.Request.Context(), sc); err != nil {
			a.log.Warn("create a declared scene", "group", g.Namespace+"/"+g.Name, "scene", d.Name, "err", err)
		}
	}
}

func (a *API) heartbeat(c *gin.Context) {
	var req protocol.HeartbeatRequest
	if !decode(c, &req) {
		return
	}
	err := a.store.HeartbeatInstance(c.Request.Context(), groupOf(c).ID, req.InstanceID, req.InFlight)
	if errors.Is(err, storage.ErrNotFound) {
		httpx.Error(c, http.StatusNotFound, "unknown_instance", "the instance is not registered (it expired); register again")
		return
	}
	if err != nil {
		httpx.Internal(c, a.log, "recording the heartbeat", err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (a *API) deregister(c *gin.Context) {
	var req protocol.DeregisterRequest
	if !decode(c, &req) {
		return
	}
	g := groupOf(c)
	if err := a.store.DeleteInstance(c.Request.Context(), g.ID, req.InstanceID); err != nil {
		httpx.Internal(c, a.log, "deregistering the instance", err)
		return
	}
	a.registry.Forget(req.InstanceID)
	a.log.Info("client instance deregistered", "group", g.Namespace+"/"+g.Name, "instance", req.InstanceID)
	c.Status(http.StatusNoContent)
}

func (a *API) scenes(c *gin.Context) {
	g := groupOf(c)
	gs, err := a.catalog.GroupScenes(c.Request.Context(), g.ID)
	if err != nil {
		httpx.Internal(c, a.log, "reading the scenes", err)
		return
	}
	auto := "0"
	if g.AutoCreateScenes {
		auto = "1"
	}
	etag := gs.ETag[:len(gs.ETag)-1] + "-" + auto + `"`
	c.Header("ETag", etag)
	c.Header("Cache-Control", "no-cache")
	if c.GetHeader("If-None-Match") == etag {
		c.Status(http.StatusNotModified)
		return
	}
	resp := protocol.ScenesResponse{Namespace: g.Namespace, Group: g.Name, AutoCreateScenes: g.AutoCreateScenes,
		Scenes: make([]protocol.ScenePolicy, len(gs.Scenes))}
	for i := range gs.Scenes {
		resp.Scenes[i] = gs.Scenes[i].ClientPolicy()
	}
	c.JSON(http.StatusOK, resp)
}

// rejectedBody answers a report batch of which no item could be stored (422).
type rejectedBody struct {
	Error   protocol.ErrorDetail    `json:"error"`
	Results []protocol.ReportResult `json:"results"`
}

func (a *API) reports(c *gin.Context) {
	var req protocol.ReportRequest
	if !decode(c, &req) {
		return
	}
	signedAt := c.GetInt64(ctxSigned)
	switch {
	case len(req.Items) == 0:
		httpx.Error(c, http.StatusBadRequest, "no_items", "the report holds no items")
		return
	case len(req.Items) > a.p.MaxBatch:
		httpx.Error(c, http.StatusRequestEntityTooLarge, "too_many_items",
			fmt.Sprintf("%d items in one report; the limit is %d", len(req.Items), a.p.MaxBatch))
		return
	}
	for i, it := range req.Items {
		if int64(len(it.Args)) > a.p.MaxPayloadBytes {
			httpx.Error(c, http.StatusRequestEntityTooLarge, "payload_too_large",
				fmt.Sprintf("item %d: its arguments are %d bytes; the limit is %d", i, len(it.Args), a.p.MaxPayloadBytes))
			return
		}
	}
	ctx := c.Request.Context()
	g := groupOf(c)
	now := time.Now()
	results := make([]protocol.ReportResult, len(req.Items))
	tasks := make([]storage.NewTask, 0, len(req.Items))
	index := make([]int, 0, len(req.Items))
	for i, it := range req.Items {
		reject := func(reason string) {
			results[i] = protocol.ReportResult{Status: protocol.ReportRejected, Reason: reason}
		}
		if err := retry.ValidateName("scene", it.Scene); err != nil {
			reject(err.Error())
			continue
		}
		if err := retry.ValidateKey(it.IdempotencyKey); err != nil {
			reject(err.Error())
			continue
		}
		if it.LocalAttempts < 0 || it.LocalAttempts > math.MaxInt32 {
			reject(fmt.Sprintf("local_attempts %d: want 0 to %d", it.LocalAttempts, math.MaxInt32))
			continue
		}
		args := []byte(it.Args)
		if len(args) == 0 {
			args = []byte("null")
		}
		if !utf8.Valid(args) {
			// JSON is UTF-8; the database would refuse the bytes, and the replay could not carry them.
			reject("args: not valid UTF-8")
			continue
		}
		sc, err := a.catalog.SceneByName(ctx, g.ID, it.Scene)
		if errors.Is(err, storage.ErrNotFound) {
			if !g.AutoCreateScenes {
				reject(fmt.Sprintf("scene %q is not defined in group %s/%s, and the group does not create scenes on first report (auto_create_scenes is off); create the scene first",
					it.Scene, g.Namespace, g.Name))
				continue
			}
			sc, err = a.catalog.EnsureScene(ctx, g.ID, it.Scene)
		}
		if err != nil {
			httpx.Internal(c, a.log, "looking up scene "+it.Scene, err)
			return
		}
		// The first replay and the deadline count from the failure, when the client says when
		// that was (a report re-sent after an outage), measured by the client's own clock
		// against its signing time, and never from the future.
		failedAt := retry.FailureTime(it.FailedAt, signedAt, now)
		tasks = append(tasks, storage.NewTask{GroupID: g.ID, SceneID: sc.ID,
			Bucket: retry.BucketOf(it.IdempotencyKey, a.p.Buckets), Key: it.IdempotencyKey, Args: args,
			Error: it.Error, LocalAttempts: it.LocalAttempts, State: retry.Waiting,
			NextAt:     retry.FirstDue(sc.Policies.Replay, failedAt, now),
			DeadlineAt: retry.ReportDeadline(sc.Deadline, failedAt, now)})
		index = append(index, i)
	}
	if len(tasks) == 0 {
		c.AbortWithStatusJSON(http.StatusUnprocessableEntity, rejectedBody{
			Error:   protocol.ErrorDetail{Code: "all_rejected", Message: "no item could be stored: " + results[0].Reason},
			Results: results})
		return
	}
	stored, err := a.store.IngestOnce(ctx, c.MustGet(ctxNonce).(*storage.Nonce), tasks)
	if errors.Is(err, storage.ErrConflict) {
		replayed(c)
		return
	}
	if err != nil {
		httpx.Internal(c, a.log, "storing the report", err)
		return
	}
	created, merged := 0, 0
	for n, r := range stored {
		status := protocol.ReportCreated
		if r.Merged {
			status = protocol.ReportMerged
			merged++
		} else {
			created++
		}
		results[index[n]] = protocol.ReportResult{Status: status, TaskID: r.TaskID}
	}
	if a.OnIngest != nil {
		a.OnIngest(created, merged)
	}
	c.JSON(http.StatusOK, protocol.ReportResponse{Results: results})
}

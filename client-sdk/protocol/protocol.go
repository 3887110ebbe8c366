// Package protocol holds the wire types of the client API: what the SDK sends to the server
// under /api/v1/client/, what the server sends to a client instance's executor endpoint, and how
// both sides sign and check those requests. The server and the SDK import this one package, so
// the two cannot drift apart.
//
// Every request in either direction carries the protocol version, a timestamp, a nonce and an
// HMAC-SHA256 signature, keyed by the group's token, over the method, the path, the namespace,
// group and instance headers, the nonce, the timestamp and the body (see Sign and Verify).
package protocol

import (
	"encoding/json"

	"github.com/retryhub/retryhub/client-sdk/backoff"
)

// Paths of the client API, relative to the server's base URL.
const (
	PathRegister   = "/api/v1/client/register"
	PathHeartbeat  = "/api/v1/client/heartbeat"
	PathDeregister = "/api/v1/client/deregister"
	PathScenes     = "/api/v1/client/scenes"
	PathReports    = "/api/v1/client/reports"
)

// Request headers.
const (
	// HeaderNamespace and HeaderGroup name the group a client request speaks for.
	HeaderNamespace = "X-Retryhub-Namespace"
	HeaderGroup     = "X-Retryhub-Group"
	// HeaderTimestamp is the signing time in Unix milliseconds.
	HeaderTimestamp = "X-Retryhub-Timestamp"
	// HeaderSignature is the hex HMAC-SHA256 of the request's canonical form (see Sign).
	HeaderSignature = "X-Retryhub-Signature"
	// HeaderNonce is a fresh random value per request; a receiver refuses one it has seen.
	HeaderNonce = "X-Retryhub-Nonce"
	// HeaderProtocol is the signing scheme's version (see Version).
	HeaderProtocol = "X-Retryhub-Protocol"
	// HeaderInstance names the client instance sending the request, when it has one.
	HeaderInstance = "X-Retryhub-Instance"

	// HeaderFlow marks a call made inside a retry flow (a local retry loop or a server replay),
	// so that a downstream service using retryhub does not open a retry loop of its own.
	HeaderFlow = "X-Retryhub-Flow"
	// HeaderDeadline carries the remaining call-chain deadline as Unix milliseconds.
	HeaderDeadline = "X-Retryhub-Deadline"
	// HeaderNoRetry on a response asks the caller not to retry the call ("1").
	HeaderNoRetry = "X-Retryhub-No-Retry"
)

// Mode says where a scene's failed calls are retried.
type Mode string

// The retry modes.
const (
	// Local retries in the calling process only; what still fails is returned to the caller.
	Local Mode = "LOCAL"
	// Remote reports the failed call at once; the server replays it.
	Remote Mode = "REMOTE"
	// LocalRemote retries locally first and reports what still fails.
	LocalRemote Mode = "LOCAL_REMOTE"
)

// Valid reports whether m is one of the defined modes.
func (m Mode) Valid() bool { return m == Local || m == Remote || m == LocalRemote }

// ScenePolicy is a scene's policy as clients see it.
type ScenePolicy struct {
	Name    string `json:"name"`
	Enabled bool   `json:"enabled"`
	Mode    Mode   `json:"mode"`
	// LocalAttempts is how many times the SDK runs the call in-process, the first call included.
	LocalAttempts int `json:"local_attempts"`
	// LocalBackoff spaces the local attempts.
	LocalBackoff backoff.Policy `json:"local_backoff"`
	// MaxAttempts is how many remote replays the server makes before the task is exhausted.
	MaxAttempts int `json:"max_attempts"`
	// Backoff spaces the remote replays.
	Backoff backoff.Policy `json:"backoff"`
	// Timeout bounds one attempt, local or remote; zero means none.
	Timeout backoff.Duration `json:"timeout,omitempty"`
	// Deadline bounds a task's whole life from its report; zero means none.
	Deadline backoff.Duration `json:"deadline,omitempty"`
	// Callback is the scene's callback policy.
	Callback CallbackPolicy `json:"callback"`
	// Version grows with every change of the scene.
	Version int64 `json:"version"`
}

// CallbackPolicy says whether a scene's callback runs when a task ends, and how it is retried.
type CallbackPolicy struct {
	Enabled     bool           `json:"enabled"`
	MaxAttempts int            `json:"max_attempts"`
	Backoff     backoff.Policy `json:"backoff"`
}

// ScenesResponse answers GET PathScenes. The response's ETag header names its version; a
// request whose If-None-Match matches it is answered 304 with no body.
type ScenesResponse struct {
	Namespace string `json:"namespace"`
	Group     string `json:"group"`
	// AutoCreateScenes says whether reports for unknown scenes create them with defaults.
	AutoCreateScenes bool          `json:"auto_create_scenes"`
	Scenes           []ScenePolicy `json:"scenes"`
}

// RegisterRequest announces a live client instance. Registering again with the same
// InstanceID updates it.
type RegisterRequest struct {
	// InstanceID identifies the process; the SDK generates one per start.
	InstanceID string `json:"instance_id"`
	// ExecutorURL is where the server POSTs replays and callbacks ("" for an instance that only
	// reports).
	ExecutorURL string `json:"executor_url"`
	// Capacity is how many replays the instance runs at once.
	Capacity   int    `json:"capacity"`
	SDKVersion string `json:"sdk_version"`
	Host       string `json:"host"`
	// Scenes lists the scenes this instance has functions registered for.
	Scenes []string `json:"scenes,omitempty"`
	// MaxBatch, when above 1, says the instance takes batched calls (ExecuteBatchRequest, kind
	// KindBatch) of up to that many tasks at its ExecutorURL; zero (an older SDK) means single
	// calls only.
	MaxBatch int `json:"max_batch,omitempty"`
	// Declarations say how the code declared those scenes. When the group creates scenes
	// automatically, the server creates each declared scene it does not have yet from its
	// declaration (the rest of the policy takes the server's defaults); scenes it has keep their
	// policy, which then overrides the code's.
	Declarations []SceneDeclaration `json:"declarations,omitempty"`
}

// SceneDeclaration is a scene as the business code declared it.
type SceneDeclaration struct {
	Name          string           `json:"name"`
	Mode          Mode             `json:"mode"`
	LocalAttempts int              `json:"local_attempts"`
	LocalBackoff  backoff.Policy   `json:"local_backoff"`
	Timeout       backoff.Duration `json:"timeout,omitempty"`
	// Callback says the code registered a callback: the created scene has its callback on.
	Callback bool `json:"callback,omitempty"`
	// Remote is the server-side policy the code declares as the scene's default: used when
	// the server creates the scene, ignored after (an operator's edits win).
	Remote *RemotePolicy `json:"remote,omitempty"`
}

// RemotePolicy is a declared default of the server's side of a scene; a zero field leaves the
// server's default.
type RemotePolicy struct {
	// MaxAttempts and Backoff govern the server's replays.
	MaxAttempts int             `json:"max_attempts,omitempty"`
	Backoff     *backoff.Policy `json:"backoff,omitempty"`
	// CallbackMaxAttempts and CallbackBackoff govern the callback's runs.
	CallbackMaxAttempts int             `json:"callback_max_attempts,omitempty"`
	CallbackBackoff     *backoff.Policy `json:"callback_backoff,omitempty"`
}

// RegisterResponse tells the instance how to stay listed and what the server accepts.
type RegisterResponse struct {
	// HeartbeatInterval is how often the instance should send a heartbeat.
	HeartbeatInterval backoff.Duration `json:"heartbeat_interval"`
	// InstanceTTL is how long the instance stays listed without a heartbeat.
	InstanceTTL backoff.Duration `json:"instance_ttl"`
	// MaxBodyBytes bounds a request body; MaxPayloadBytes bounds one report's arguments.
	MaxBodyBytes    int64 `json:"max_body_bytes"`
	MaxPayloadBytes int64 `json:"max_payload_bytes"`
	// MaxBatch bounds the number of items in one report request.
	MaxBatch int `json:"max_batch"`
}

// HeartbeatRequest keeps an instance listed. The answer is 204, or 404 with code
// "unknown_instance" when the server no longer knows it; the instance then registers again.
type HeartbeatRequest struct {
	InstanceID string `json:"instance_id"`
	// InFlight is how many replays the instance is running now.
	InFlight int `json:"in_flight"`
}

// DeregisterRequest removes an instance that is shutting down.
type DeregisterRequest struct {
	InstanceID string `json:"instance_id"`
}

// ReportItem is one failed call handed to the server for remote retry.
type ReportItem struct {
	Scene string `json:"scene"`
	// IdempotencyKey identifies the call: a repeated key merges into the scene's active task.
	IdempotencyKey string `json:"idempotency_key"`
	// Args are the call's arguments, serialized as JSON.
	Args json.RawMessage `json:"args"`
	// Error is the last failure's text.
	Error string `json:"error"`
	// LocalAttempts is how many times the call ran in-process before the report.
	LocalAttempts int `json:"local_attempts"`
	// FailedAt is when the call last failed, in Unix milliseconds; zero means when the server
	// receives the report. A report re-sent after an outage keeps its task's deadline counted
	// from the failure, not from its arrival.
	FailedAt int64 `json:"failed_at,omitempty"`
}

// ReportRequest carries a batch of failed calls.
type ReportRequest struct {
	InstanceID string       `json:"instance_id,omitempty"`
	Items      []ReportItem `json:"items"`
}

// Report outcomes.
const (
	// ReportCreated: a new task was stored.
	ReportCreated = "created"
	// ReportMerged: the scene already had an active task with the same key; the item merged
	// into it.
	ReportMerged = "merged"
	// ReportRejected: the item was not stored; Reason says why. Sending it again will not help.
	ReportRejected = "rejected"
)

// ReportResult is the outcome of one ReportItem, at the same index.
type ReportResult struct {
	Status string `json:"status"`
	TaskID int64  `json:"task_id,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// ReportResponse answers a ReportRequest, only after the batch is committed: 200 with a result
// per item when at least one item was stored, or 422 when none could be, with the same results
// beside an ErrorBody's "error" (code "all_rejected"). Other answers store nothing: 400 for a
// body that is not a ReportRequest or holds no items, 401 and 403 for the group and signature,
// 413 for a body, an item's arguments or a batch over the limits of RegisterResponse, and 5xx
// when the server could not commit (send again: a repeated key merges).
type ReportResponse struct {
	Results []ReportResult `json:"results"`
}

// Kinds of executor calls.
const (
	// KindReplay asks the instance to run the scene's registered function again.
	KindReplay = "replay"
	// KindCallback asks the instance to run the scene's callback with the task's outcome.
	KindCallback = "callback"
	// KindBatch carries several replays and callbacks in one call (ExecuteBatchRequest); the
	// server sends it only to an instance that registered a MaxBatch above 1.
	KindBatch = "batch"
)

// Task outcomes a callback learns of.
const (
	OutcomeSucceeded = "succeeded"
	OutcomeExhausted = "exhausted"
)

// ExecuteRequest is what the server POSTs to an instance's executor URL, signed with the group
// token.
type ExecuteRequest struct {
	Kind           string          `json:"kind"`
	TaskID         int64           `json:"task_id"`
	Namespace      string          `json:"namespace"`
	Group          string          `json:"group"`
	Scene          string          `json:"scene"`
	IdempotencyKey string          `json:"idempotency_key"`
	Args           json.RawMessage `json:"args"`
	// Attempt numbers this call among the task's replays (or callbacks), from 1.
	Attempt int `json:"attempt"`
	// Timeout is how long the instance may take; the server stops waiting a little after it.
	Timeout backoff.Duration `json:"timeout,omitempty"`
	// Callback is set for KindCallback.
	Callback *CallbackInfo `json:"callback,omitempty"`
}

// CallbackInfo tells a callback how its task ended.
type CallbackInfo struct {
	// Outcome is OutcomeSucceeded or OutcomeExhausted.
	Outcome   string `json:"outcome"`
	LastError string `json:"last_error,omitempty"`
	// Attempts is how many replays the task had.
	Attempts int `json:"attempts"`
}

// Executor outcomes.
const (
	ExecuteSucceeded = "succeeded"
	ExecuteFailed    = "failed"
)

// ExecuteResponse is the instance's answer (HTTP 200). A busy instance, or one shutting down,
// answers 429 instead (an ErrorBody with code "busy" or "shutting_down"): back-pressure, not a
// failed attempt. Any other status is a failed attempt with the ErrorBody's message; 401 when
// the server's signature does not verify (code "missing_signature", "bad_protocol_version",
// "bad_timestamp", "bad_nonce" or "bad_signature"), 409 with code "replayed_request" for a
// request whose nonce the instance accepted before (each signed request runs at most once), 404
// with code "unknown_scene" when the instance has no function for the scene.
type ExecuteResponse struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
	// Permanent says the failure must not be retried: the task ends exhausted at once.
	Permanent bool `json:"permanent,omitempty"`
}

// ExecuteBusy is a batched task's status when the instance did not run it (it had no free
// slot for it, or is shutting down): back-pressure, not a failed attempt.
const ExecuteBusy = "busy"

// ExecuteBatchRequest is a batched executor call: several tasks, possibly of different scenes
// and kinds, in one signed request (one nonce) to the executor URL. Kind is KindBatch, which
// tells it from an ExecuteRequest. Each task counts against the instance's capacity and runs
// under its own Timeout, all at once; the instance answers 200 with an ExecuteBatchResponse
// once every task has ended or passed its timeout. A 429 (busy or shutting down) means no task
// ran; any other non-200 status fails every task of the batch as it would fail a single call.
type ExecuteBatchRequest struct {
	Kind  string           `json:"kind"`
	Tasks []ExecuteRequest `json:"tasks"`
}

// ExecuteBatchResponse answers an ExecuteBatchRequest: one result per task, at the same index.
// A task without a result, or with status ExecuteBusy, was not run.
type ExecuteBatchResponse struct {
	Results []ExecuteResult `json:"results"`
}

// ExecuteResult is the outcome of one task of a batch.
type ExecuteResult struct {
	// TaskID and Kind repeat the task's, so that a result cannot be taken for another task's.
	TaskID int64  `json:"task_id"`
	Kind   string `json:"kind"`
	// Status is ExecuteSucceeded, ExecuteFailed or ExecuteBusy.
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
	// Permanent says the failure must not be retried.
	Permanent bool `json:"permanent,omitempty"`
	// DurationMS is how long the task ran on the instance.
	DurationMS int64 `json:"duration_ms,omitempty"`
}

// ErrorBody is the body of every 4xx and 5xx answer of the server's APIs.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail says what went wrong: Code for programs, Message for people.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

package retryhub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// maxExecuteBody bounds an executor request body when the server has named no larger payload
// limit.
const maxExecuteBody = 16 << 20

// executor serves the server's replays and callbacks (protocol.ExecuteRequest), at most
// capacity at once; inFlight counts the requests it handles now.
type executor struct {
	reg       *registry
	log       *slog.Logger
	token     string
	namespace string
	group     string
	instance  string
	capacity  int32
	limits    *atomic.Pointer[protocol.RegisterResponse]
	nonces    *nonceMemory
	now       func() time.Time

	inFlight atomic.Int32
	reading  atomic.Int32
	stopping atomic.Bool
}

// ServeHTTP checks a request in the order that costs an unsigned or repeated one least: the
// stamp in its headers (version, timestamp, nonce) before reading the body, then the
// signature over the body, then the nonce against those accepted within the window; only then
// does it run anything. Bodies not yet verified are read by at most readersPerSlot times
// capacity requests at once, each within bodyReadTimeout, so forged requests can neither hold
// much memory nor take the slots of the server's calls for long; a slot (capacity in all) is
// taken only by a request whose signature holds.
func (x *executor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "the executor endpoint takes POST")
		return
	}
	now := x.now()
	stamp, err := protocol.CheckStamp(r, now, protocol.SignatureWindow)
	if err != nil {
		x.refuseSignature(w, r, err)
		return
	}
	if x.stopping.Load() {
		writeError(w, http.StatusTooManyRequests, "shutting_down", "the instance is shutting down")
		return
	}
	body, ok := x.readBody(w, r, now)
	if !ok {
		return
	}
	if err := protocol.Verify(x.token, stamp, body); err != nil {
		x.refuseSignature(w, r, err)
		return
	}
	// The server signs the group and the instance a call is meant for: a call signed for
	// another instance (captured and sent elsewhere) is refused.
	if stamp.Namespace != x.namespace || stamp.Group != x.group {
		writeError(w, http.StatusBadRequest, "wrong_group", fmt.Sprintf("this instance serves group %s/%s, not %s/%s", x.namespace, x.group, stamp.Namespace, stamp.Group))
		return
	}
	if stamp.Instance != x.instance {
		writeError(w, http.StatusBadRequest, "wrong_instance", fmt.Sprintf("this is instance %s, not %s", x.instance, stamp.Instance))
		return
	}
	if x.inFlight.Add(1) > x.capacity {
		x.inFlight.Add(-1)
		writeError(w, http.StatusTooManyRequests, "busy", fmt.Sprintf("the instance runs %d calls, its capacity", x.capacity))
		return
	}
	// The slot is released as the handler returns, unless a batch hands it to one of its tasks.
	held := true
	defer func() {
		if held {
			x.inFlight.Add(-1)
		}
	}()
	switch err := x.nonces.remember(stamp, now, protocol.SignatureWindow); {
	case errors.Is(err, errReplayed):
		x.log.Warn("retryhub: executor refused a request it had already accepted (same nonce); a captured request was sent again",
			"remote", r.RemoteAddr, "nonce", stamp.Nonce)
		writeError(w, http.StatusConflict, "replayed_request", "this request was accepted before; a request is accepted once")
		return
	case errors.Is(err, errNoncesFull):
		writeError(w, http.StatusTooManyRequests, "busy", fmt.Sprintf("the instance accepted %d requests within the signature window, as many as it remembers; send again shortly", x.nonces.max))
		return
	case err != nil:
		x.refuseSignature(w, r, err)
		return
	}
	var in struct {
		protocol.ExecuteRequest
		Tasks []protocol.ExecuteRequest `json:"tasks"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "decode execute request: "+err.Error())
		return
	}
	if in.Kind == protocol.KindBatch {
		held = false
		writeJSON(w, http.StatusOK, x.executeBatch(r.Context(), in.Tasks))
		return
	}
	req := in.ExecuteRequest
	if (req.Namespace != "" && req.Namespace != x.namespace) || (req.Group != "" && req.Group != x.group) {
		writeError(w, http.StatusBadRequest, "wrong_group", fmt.Sprintf("this instance serves group %s/%s, not %s/%s", x.namespace, x.group, req.Namespace, req.Group))
		return
	}
	if req.Kind != protocol.KindReplay && req.Kind != protocol.KindCallback {
		writeError(w, http.StatusBadRequest, "unknown_kind", fmt.Sprintf("unknown kind %q (want %q or %q)", req.Kind, protocol.KindReplay, protocol.KindCallback))
		return
	}
	s := x.reg.get(req.Scene)
	if s == nil {
		writeError(w, http.StatusNotFound, "unknown_scene", fmt.Sprintf("scene %q has no function registered on this instance", req.Scene))
		return
	}
	writeJSON(w, http.StatusOK, x.execute(r.Context(), s, &req))
}

// MaxBatch is the most tasks the SDK's executor takes in one batched call
// (protocol.ExecuteBatchRequest); it registers the smaller of it and its capacity.
const MaxBatch = 64

// batchSlack is how long after a batched task's timeout the executor waits for the task's
// function to return before it answers the task as timed out without it.
const batchSlack = 250 * time.Millisecond

// executeBatch runs the tasks of a batch at once, each in a slot of the capacity (the first in
// the slot the request took, which it releases), and answers for each at the same index: its
// outcome, or ExecuteBusy for a task it had no free slot for (it did not run). A task still
// running past its timeout (plus batchSlack) is answered as a timed-out failure; its function
// keeps its slot until it returns. Each task runs under the request's context, as a single
// call does: the server giving up on the answer cancels what still runs.
func (x *executor) executeBatch(ctx context.Context, tasks []protocol.ExecuteRequest) protocol.ExecuteBatchResponse {
	if len(tasks) == 0 {
		x.inFlight.Add(-1)
		return protocol.ExecuteBatchResponse{Results: []protocol.ExecuteResult{}}
	}
	slots := 1 + x.takeSlots(min(len(tasks), MaxBatch)-1)
	results := make([]protocol.ExecuteResult, len(tasks))
	chans := make([]chan protocol.ExecuteResult, len(tasks))
	waits := make([]time.Duration, len(tasks))
	for i := range tasks {
		req := &tasks[i]
		results[i] = protocol.ExecuteResult{TaskID: req.TaskID, Kind: req.Kind, Status: protocol.ExecuteBusy}
		if i >= slots {
			continue
		}
		s, fail := x.taskScene(req)
		if fail != nil {
			x.inFlight.Add(-1)
			results[i].Status, results[i].Error = protocol.ExecuteFailed, fail.Error()
			continue
		}
		waits[i] = time.Duration(req.Timeout)
		if waits[i] <= 0 {
			waits[i] = s.pol.Load().timeout
		}
		ch := make(chan protocol.ExecuteResult, 1)
		chans[i] = ch
		go func() {
			start := time.Now()
			resp := x.execute(ctx, s, req) // recovers a panic of the function
			// The slot is free before the result is handed over, so that an answer never
			// counts a task that has ended as running.
			x.inFlight.Add(-1)
			ch <- protocol.ExecuteResult{TaskID: req.TaskID, Kind: req.Kind, Status: resp.Status, Error: truncateError(resp.Error),
				Permanent: resp.Permanent, DurationMS: time.Since(start).Milliseconds()}
		}()
	}
	start := time.Now()
	for i, ch := range chans {
		if ch == nil {
			continue
		}
		var expire <-chan time.Time
		if waits[i] > 0 {
			t := time.NewTimer(time.Until(start.Add(waits[i] + batchSlack)))
			expire = t.C
			defer t.Stop()
		}
		select {
		case results[i] = <-ch:
		case <-expire:
			results[i].Status = protocol.ExecuteFailed
			results[i].Error = fmt.Sprintf("attempt timed out after %s", waits[i])
			results[i].DurationMS = time.Since(start).Milliseconds()
		case <-ctx.Done():
			// The server gave up on the answer; it settles the batch as timed out.
			results[i].Status = protocol.ExecuteFailed
			results[i].Error = "the request ended before the task: " + ctx.Err().Error()
		}
	}
	return protocol.ExecuteBatchResponse{Results: results}
}

// takeSlots takes up to n free slots of the capacity and returns how many it took.
func (x *executor) takeSlots(n int) int {
	for n > 0 {
		cur := x.inFlight.Load()
		take := min(int32(n), x.capacity-cur)
		if take <= 0 {
			return 0
		}
		if x.inFlight.CompareAndSwap(cur, cur+take) {
			return int(take)
		}
	}
	return 0
}

// taskScene checks one task of a batch as ServeHTTP checks a single call, and returns its
// scene, or the failure a single call would have been answered with.
func (x *executor) taskScene(req *protocol.ExecuteRequest) (*scene, error) {
	if (req.Namespace != "" && req.Namespace != x.namespace) || (req.Group != "" && req.Group != x.group) {
		return nil, fmt.Errorf("wrong_group: this instance serves group %s/%s, not %s/%s", x.namespace, x.group, req.Namespace, req.Group)
	}
	if req.Kind != protocol.KindReplay && req.Kind != protocol.KindCallback {
		return nil, fmt.Errorf("unknown_kind: unknown kind %q (want %q or %q)", req.Kind, protocol.KindReplay, protocol.KindCallback)
	}
	s := x.reg.get(req.Scene)
	if s == nil {
		return nil, fmt.Errorf("unknown_scene: scene %q has no function registered on this instance", req.Scene)
	}
	return s, nil
}

// readersPerSlot times the capacity is how many requests may have their bodies read, not yet
// verified, at once.
const readersPerSlot = 4

// bodyReadTimeout bounds how long a request's body may take to arrive.
const bodyReadTimeout = 10 * time.Second

// readBody reads r's body within the size limit and bodyReadTimeout, among at most
// readersPerSlot times capacity readers; it answers the request itself when it cannot.
func (x *executor) readBody(w http.ResponseWriter, r *http.Request, now time.Time) ([]byte, bool) {
	if x.reading.Add(1) > readersPerSlot*x.capacity {
		x.reading.Add(-1)
		writeError(w, http.StatusTooManyRequests, "busy", "the instance is reading as many requests as it takes at once")
		return nil, false
	}
	defer x.reading.Add(-1)
	// Not every ResponseWriter can set a deadline (a test's recorder cannot); the SDK's own
	// listener also has a ReadTimeout.
	_ = http.NewResponseController(w).SetReadDeadline(now.Add(bodyReadTimeout))
	limit := int64(maxExecuteBody)
	if l := x.limits.Load(); l != nil {
		limit = max(limit, 2*l.MaxPayloadBytes+64<<10)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "read body: "+err.Error())
		return nil, false
	}
	if int64(len(body)) > limit {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("the body exceeds %d bytes", limit))
		return nil, false
	}
	return body, true
}

// execute runs a replay or callback and describes its outcome.
func (x *executor) execute(ctx context.Context, s *scene, req *protocol.ExecuteRequest) (resp protocol.ExecuteResponse) {
	timeout := time.Duration(req.Timeout)
	if timeout <= 0 {
		timeout = s.pol.Load().timeout
	}
	ctx = withFlow(ctx)
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	defer func() {
		if p := recover(); p != nil {
			x.log.Error("retryhub: a replayed function panicked", "scene", s.name, "task", req.TaskID, "kind", req.Kind,
				"panic", p, "stack", string(debug.Stack()))
			resp = protocol.ExecuteResponse{Status: protocol.ExecuteFailed, Error: fmt.Sprintf("panic: %v", p)}
		}
	}()
	var decodeErr, err error
	switch req.Kind {
	case protocol.KindCallback:
		if s.callback == nil {
			return protocol.ExecuteResponse{Status: protocol.ExecuteSucceeded}
		}
		decodeErr, err = s.callback(ctx, req)
	default:
		ctx = context.WithValue(ctx, replayKey{}, ReplayInfo{Scene: req.Scene, TaskID: req.TaskID,
			IdempotencyKey: req.IdempotencyKey, Attempt: req.Attempt})
		decodeErr, err = s.replay(ctx, req.Args)
	}
	switch {
	case decodeErr != nil:
		x.log.Error("retryhub: cannot decode a task's arguments; answering a permanent failure", "scene", s.name, "task", req.TaskID, "err", decodeErr)
		return protocol.ExecuteResponse{Status: protocol.ExecuteFailed, Error: decodeErr.Error(), Permanent: true}
	case err != nil:
		if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) && timeout > 0 {
			err = fmt.Errorf("attempt timed out after %s: %w", timeout, err)
		}
		x.log.Debug("retryhub: replay failed", "scene", s.name, "task", req.TaskID, "kind", req.Kind, "attempt", req.Attempt, "err", err)
		return protocol.ExecuteResponse{Status: protocol.ExecuteFailed, Error: err.Error(), Permanent: IsPermanent(err)}
	}
	return protocol.ExecuteResponse{Status: protocol.ExecuteSucceeded}
}

// Handler returns the executor endpoint, for an application that serves it in its own HTTP
// server (Config.ListenAddr empty). Mount it at the path of Config.ExecutorURL, by convention
// ExecutorPath:
//
//	mux.Handle(retryhub.ExecutorPath, client.Handler())
//
// It verifies the server's signature (401 otherwise, before it reads the body when the headers
// already fail: no signature, another protocol version, a timestamp outside
// protocol.SignatureWindow), accepts each signed request once (a request whose nonce it accepted
// within the window is answered 409, code "replayed_request"), runs at most Config.Capacity
// calls at once (429 beyond), answers 404 for scenes not declared on this client, and runs
// replays with their arguments decoded into the scene's argument type, under the request's
// timeout and in a retry flow (see InFlow). The signature covers the request's path: mount the
// handler without rewriting it (no http.StripPrefix). It remembers at most 262144 nonces at once
// (some 16 MB), each until its request leaves the signature window; beyond that it answers 429,
// which the server takes as busy, until older nonces expire.
//
// The handler serves as soon as the client is made, before Start: an application can mount it
// in its server first and start the client after.
func (c *Client) Handler() http.Handler { return c.exec }

// deriveExecutorURL builds the executor URL of a listener on listenAddr.
func deriveExecutorURL(listenAddr string, addr net.Addr) string {
	host, _, _ := net.SplitHostPort(listenAddr)
	port := 0
	if tcp, ok := addr.(*net.TCPAddr); ok {
		port = tcp.Port
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = outboundIPv4()
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(port)) + ExecutorPath
}

// outboundIPv4 returns the machine's first non-loopback IPv4 address, or 127.0.0.1.
func outboundIPv4() string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil && !n.IP.IsLinkLocalUnicast() {
				return n.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

// refuseSignature answers 401 to a request whose stamp or signature does not check, with a code
// that says which part failed.
func (x *executor) refuseSignature(w http.ResponseWriter, r *http.Request, err error) {
	code := "bad_signature"
	switch {
	case errors.Is(err, protocol.ErrMissingSignature):
		code = "missing_signature"
	case errors.Is(err, protocol.ErrBadVersion):
		code = "bad_protocol_version"
	case errors.Is(err, protocol.ErrStaleTimestamp), errors.Is(err, protocol.ErrBadTimestamp):
		code = "bad_timestamp"
	case errors.Is(err, protocol.ErrBadNonce):
		code = "bad_nonce"
	}
	x.log.Warn("retryhub: executor refused a request whose signature does not check", "remote", r.RemoteAddr, "code", code, "err", err)
	writeError(w, http.StatusUnauthorized, code, "signature check failed: "+err.Error())
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, protocol.ErrorBody{Error: protocol.ErrorDetail{Code: code, Message: msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"encode answer"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// maxResultError bounds the error text of one task in a batch's answer, so that the answer of
// a full batch stays well under what the server reads (the server keeps less anyway).
const maxResultError = 8 << 10

// truncateError cuts an error text to maxResultError bytes, on a rune boundary.
func truncateError(s string) string {
	if len(s) <= maxResultError {
		return s
	}
	cut := maxResultError
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

package retryhub

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// flowKey is the context key of the retry-flow mark.
type flowKey struct{}

// withFlow marks ctx as running inside a retry flow.
func withFlow(ctx context.Context) context.Context {
	if InFlow(ctx) {
		return ctx
	}
	return context.WithValue(ctx, flowKey{}, true)
}

// InFlow reports whether ctx runs inside a retry flow: a later local attempt of a retryable, a
// replay by the server, or a request that Middleware received from a caller inside a flow. A
// retryable called with such a ctx runs once and leaves the retry to the flow.
func InFlow(ctx context.Context) bool {
	v, _ := ctx.Value(flowKey{}).(bool)
	return v
}

// ReplayInfo describes a server replay running the function.
type ReplayInfo struct {
	Scene string
	// TaskID is the server's task.
	TaskID int64
	// IdempotencyKey is the task's key: pass it on to make the call effectively once.
	IdempotencyKey string
	// Attempt numbers this replay among the task's replays, from 1.
	Attempt int
}

type replayKey struct{}

// ReplayOf reports whether ctx runs a server replay (as opposed to the first call or a local
// retry), and which.
func ReplayOf(ctx context.Context) (ReplayInfo, bool) {
	v, ok := ctx.Value(replayKey{}).(ReplayInfo)
	return v, ok
}

// Transport wraps base (nil means http.DefaultTransport) so that requests carry the retry flow
// to downstream services: a request whose context is in a flow gets protocol.HeaderFlow, and a
// request whose context has a deadline gets protocol.HeaderDeadline (Unix milliseconds). A
// downstream service that serves with Middleware then runs its own retryables once, inside the
// caller's flow, instead of multiplying retries.
//
// A response carrying protocol.HeaderNoRetry "1" is closed and turned into an error marked
// Permanent (wrapping a *NoRetryError), which stops every retry around the call.
func Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{base: base}
}

type transport struct{ base http.RoundTripper }

// RoundTrip implements http.RoundTripper.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	flow := InFlow(ctx)
	dl, hasDeadline := ctx.Deadline()
	if flow || hasDeadline {
		req = req.Clone(ctx)
		if flow {
			req.Header.Set(protocol.HeaderFlow, "1")
		}
		if hasDeadline {
			req.Header.Set(protocol.HeaderDeadline, strconv.FormatInt(dl.UnixMilli(), 10))
		}
	}
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.Header.Get(protocol.HeaderNoRetry) == "1" {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		_ = resp.Body.Close()
		return nil, Permanent(&NoRetryError{
			StatusCode: resp.StatusCode,
			Status:     resp.Status,
			Body:       strings.TrimSpace(string(snippet)),
		})
	}
	return resp, nil
}

// Middleware reads the retry flow a caller's Transport sent: a request with protocol.HeaderFlow
// runs with its context marked as in a flow (see InFlow), and a request with
// protocol.HeaderDeadline runs with that deadline on its context.
func Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		changed := false
		if r.Header.Get(protocol.HeaderFlow) != "" {
			ctx = withFlow(ctx)
			changed = true
		}
		if v := r.Header.Get(protocol.HeaderDeadline); v != "" {
			if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithDeadline(ctx, time.UnixMilli(ms))
				defer cancel()
				changed = true
			}
		}
		if changed {
			r = r.WithContext(ctx)
		}
		next.ServeHTTP(w, r)
	})
}

// NoRetry asks the caller of the current request not to retry it: it sets
// protocol.HeaderNoRetry on the response. Call it before writing the status.
func NoRetry(w http.ResponseWriter) { w.Header().Set(protocol.HeaderNoRetry, "1") }

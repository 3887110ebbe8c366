package retryhub

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
)

func TestNestedRetriesAddUp(t *testing.T) {
	c := localClient(t)
	var innerCalls, outerCalls atomic.Int32
	inner := RetryableOn(c, "nested-inner", failing(-1, &innerCalls),
		WithMode(Local), WithLocalAttempts(3), WithLocalBackoff(fixed(time.Millisecond)))
	outer := RetryableOn(c, "nested-outer", func(ctx context.Context, n int) error {
		outerCalls.Add(1)
		return inner(ctx, n)
	}, WithMode(Local), WithLocalAttempts(4), WithLocalBackoff(fixed(time.Millisecond)))

	err := outer(context.Background(), 1)
	if !errors.Is(err, errBoom) {
		t.Fatalf("got %v, want the inner failure", err)
	}
	// The outer's first attempt is unmarked: the inner runs its own 3 attempts there. The
	// outer's 3 later attempts run in the flow: the inner runs once in each. 3+3, not 3*4.
	if got, want := innerCalls.Load(), int32(3+3); got != want {
		t.Fatalf("inner ran %d times, want %d (additive, not %d)", got, want, 3*4)
	}
	if outerCalls.Load() != 4 {
		t.Fatalf("outer ran %d times, want 4", outerCalls.Load())
	}
}

func TestInFlowRunsOnceAndDoesNotReport(t *testing.T) {
	fs := newFakeServer(t, "secret")
	var calls atomic.Int32
	var f func(context.Context, int) error
	c := startClient(t, testConfig(fs.URL()), func(c *Client) {
		f = RetryableOn(c, "in-flow", failing(-1, &calls), WithMode(LocalRemote), WithLocalAttempts(3), WithLocalBackoff(fixed(time.Millisecond)))
	})
	err := f(withFlow(context.Background()), 7)
	if err != errBoom {
		t.Fatalf("inside a flow got %v, want the failure itself for the flow to handle", err)
	}
	if calls.Load() != 1 {
		t.Fatalf("inside a flow ran %d times, want 1", calls.Load())
	}
	// A report made after it is delivered alone: the queue is first in, first out, so the call
	// inside the flow was never queued.
	if err := c.Report(context.Background(), "marker", 1, "", errBoom); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the marker's delivery", func() bool { return c.Stats().Delivered == 1 })
	if items := fs.items(); len(items) != 1 || items[0].Scene != "marker" {
		t.Fatalf("the server got %+v, want the marker alone", items)
	}
}

func TestTransportAndMiddlewareCarryTheFlow(t *testing.T) {
	c := localClient(t)
	var downstreamCalls atomic.Int32
	downstream := RetryableOn(c, "downstream-op", failing(-1, &downstreamCalls),
		WithMode(Local), WithLocalAttempts(3), WithLocalBackoff(fixed(time.Millisecond)))

	var sawFlow atomic.Bool
	var sawDeadline atomic.Int64
	down := httptest.NewServer(Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawFlow.Store(InFlow(r.Context()))
		if dl, ok := r.Context().Deadline(); ok {
			sawDeadline.Store(dl.UnixMilli())
		}
		if err := downstream(r.Context(), 1); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
	})))
	defer down.Close()
	hc := &http.Client{Transport: Transport(nil)}

	call := func(ctx context.Context) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, down.URL, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	// Outside a flow the downstream service retries on its own.
	call(context.Background())
	if sawFlow.Load() || downstreamCalls.Load() != 3 {
		t.Fatalf("outside a flow: flow %v, %d downstream calls; want no flow and 3 calls", sawFlow.Load(), downstreamCalls.Load())
	}

	// Inside a flow, with a deadline: the downstream runs once and sees the deadline.
	downstreamCalls.Store(0)
	ctx, cancel := context.WithTimeout(withFlow(context.Background()), time.Minute)
	defer cancel()
	dl, _ := ctx.Deadline()
	call(ctx)
	if !sawFlow.Load() || downstreamCalls.Load() != 1 {
		t.Fatalf("inside a flow: flow %v, %d downstream calls; want the flow and 1 call", sawFlow.Load(), downstreamCalls.Load())
	}
	if sawDeadline.Load() != dl.UnixMilli() {
		t.Fatalf("downstream deadline %d, want %d", sawDeadline.Load(), dl.UnixMilli())
	}
}

func TestNoRetryAnswerIsPermanent(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		NoRetry(w)
		http.Error(w, "order already cancelled", http.StatusConflict)
	}))
	defer down.Close()
	hc := &http.Client{Transport: Transport(nil)}
	var calls atomic.Int32
	err := Do(context.Background(), 5, fixed(time.Millisecond).MustCompile(), func(ctx context.Context) error {
		calls.Add(1)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, down.URL, nil)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	var nr *NoRetryError
	if !IsPermanent(err) || !errors.As(err, &nr) || nr.StatusCode != http.StatusConflict || calls.Load() != 1 {
		t.Fatalf("got %v after %d calls; want a permanent NoRetryError (409) after 1 call", err, calls.Load())
	}
	if !contains(err.Error(), "order already cancelled") {
		t.Errorf("error %q does not quote the answer", err)
	}
}

func TestMiddlewareIgnoresGarbage(t *testing.T) {
	h := Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.Context().Deadline(); ok || InFlow(r.Context()) {
			t.Error("a request without valid headers got a flow or deadline")
		}
	}))
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set(protocol.HeaderDeadline, "tomorrow")
	h.ServeHTTP(httptest.NewRecorder(), r)

	r = httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set(protocol.HeaderDeadline, strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10))
	Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.Context().Deadline(); !ok {
			t.Error("a valid deadline header was not applied")
		}
	})).ServeHTTP(httptest.NewRecorder(), r)
}

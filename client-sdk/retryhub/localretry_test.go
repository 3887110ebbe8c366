package retryhub

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/retryhub/retryhub/client-sdk/backoff"
)

var errBoom = errors.New("boom")

// failing returns a function that fails its first n calls (n < 0: always) and counts calls.
func failing(n int, calls *atomic.Int32) func(context.Context, int) error {
	return func(ctx context.Context, _ int) error {
		c := calls.Add(1)
		if n < 0 || int(c) <= n {
			return errBoom
		}
		return nil
	}
}

// localClient is a client that is never started: scenes declared on it run local retries only
// (their reports fail with ErrNotStarted).
func localClient(t *testing.T) *Client {
	t.Helper()
	c, err := NewClient(testConfig("http://127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLocalRetriesCountAndBackoff(t *testing.T) {
	c := localClient(t)
	var calls atomic.Int32
	f := RetryableOn(c, "local-count", failing(-1, &calls),
		WithMode(Local), WithLocalAttempts(4), WithLocalBackoff(fixed(15*time.Millisecond)))
	start := time.Now()
	err := f(context.Background(), 1)
	elapsed := time.Since(start)
	if got := calls.Load(); got != 4 {
		t.Fatalf("ran %d times, want 4", got)
	}
	if !errors.Is(err, errBoom) || errors.Is(err, ErrReported) {
		t.Fatalf("error %v: want it to wrap the failure and not be reported", err)
	}
	if !strings.Contains(err.Error(), "failed after 4 attempts") {
		t.Errorf("error %q does not say how many attempts ran", err)
	}
	if elapsed < 45*time.Millisecond {
		t.Errorf("3 waits of 15ms took %s", elapsed)
	}
}

func TestLocalRetriesStopOnSuccess(t *testing.T) {
	c := localClient(t)
	var calls atomic.Int32
	f := RetryableOn(c, "local-success", failing(2, &calls), WithMode(Local), WithLocalAttempts(5), WithLocalBackoff(fixed(time.Millisecond)))
	if err := f(context.Background(), 1); err != nil {
		t.Fatalf("want success on the third attempt, got %v", err)
	}
	if got := calls.Load(); got != 3 {
		t.Fatalf("ran %d times, want 3", got)
	}
}

func TestPermanentIsNotRetried(t *testing.T) {
	c := localClient(t)
	var calls atomic.Int32
	f := RetryableOn(c, "permanent", func(ctx context.Context, _ int) error {
		calls.Add(1)
		return Permanent(errBoom)
	}, WithMode(LocalRemote), WithLocalAttempts(5), WithLocalBackoff(fixed(time.Millisecond)))
	err := f(context.Background(), 1)
	if calls.Load() != 1 {
		t.Fatalf("a permanent failure ran %d times", calls.Load())
	}
	if !IsPermanent(err) || !errors.Is(err, errBoom) || errors.Is(err, ErrReported) || errors.Is(err, ErrNotStarted) {
		t.Fatalf("error %v: want permanent, wrapping the failure, not reported", err)
	}

	// A permanent failure after transient ones stops the retries too.
	calls.Store(0)
	g := RetryableOn(c, "permanent-later", func(ctx context.Context, _ int) error {
		if calls.Add(1) == 2 {
			return Permanent(errBoom)
		}
		return errors.New("transient")
	}, WithMode(Local), WithLocalAttempts(5), WithLocalBackoff(fixed(time.Millisecond)))
	if err := g(context.Background(), 1); !IsPermanent(err) || calls.Load() != 2 {
		t.Fatalf("got %v after %d calls, want a permanent error after 2", err, calls.Load())
	}
}

func TestCancelStopsTheWait(t *testing.T) {
	c := localClient(t)
	var calls atomic.Int32
	f := RetryableOn(c, "cancel", failing(-1, &calls), WithMode(Local), WithLocalAttempts(3), WithLocalBackoff(fixed(10*time.Second)))
	// Cancelled during the 10s wait after the first attempt: the call returns without the
	// second attempt.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	err := f(ctx, 1)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, errBoom) || calls.Load() != 1 {
		t.Fatalf("got %v after %d calls; want it to wrap context.Canceled and the failure after 1 call", err, calls.Load())
	}
}

func TestNeverSleepsPastTheDeadline(t *testing.T) {
	c := localClient(t)
	var calls atomic.Int32
	// The next attempt is due in 2h, past the deadline in 1h: the call returns at once (had it
	// waited, the test would time out before the deadline).
	f := RetryableOn(c, "deadline", failing(-1, &calls), WithMode(Local), WithLocalAttempts(3), WithLocalBackoff(fixed(2*time.Hour)))
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	err := f(ctx, 1)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errBoom) || calls.Load() != 1 {
		t.Fatalf("got %v after %d calls; want DeadlineExceeded and the failure after 1 call", err, calls.Load())
	}
	if !strings.Contains(err.Error(), "would pass the context deadline") || ctx.Err() != nil {
		t.Fatalf("got %v with ctx %v; want the call to give up before the deadline, saying why", err, ctx.Err())
	}
}

func TestPerAttemptTimeout(t *testing.T) {
	c := localClient(t)
	var calls atomic.Int32
	f := RetryableOn(c, "timeout", func(ctx context.Context, _ int) error {
		calls.Add(1)
		<-ctx.Done()
		return ctx.Err()
	}, WithMode(Local), WithLocalAttempts(2), WithLocalBackoff(fixed(time.Millisecond)), WithTimeout(20*time.Millisecond))
	err := f(context.Background(), 1)
	if !errors.Is(err, context.DeadlineExceeded) || calls.Load() != 2 {
		t.Fatalf("got %v after %d calls; want each attempt to time out", err, calls.Load())
	}
}

func TestRemoteModesWithoutClient(t *testing.T) {
	c := localClient(t)
	var calls atomic.Int32
	f := RetryableOn(c, "remote-unstarted", failing(-1, &calls), WithMode(Remote), WithLocalAttempts(3))
	err := f(context.Background(), 1)
	if calls.Load() != 1 {
		t.Fatalf("REMOTE ran %d times locally, want 1", calls.Load())
	}
	if !errors.Is(err, ErrNotStarted) || !errors.Is(err, errBoom) || errors.Is(err, ErrReported) {
		t.Fatalf("got %v; want ErrNotStarted wrapping the failure", err)
	}
}

func TestDo(t *testing.T) {
	var calls atomic.Int32
	b := fixed(time.Millisecond).MustCompile()
	err := Do(context.Background(), 3, b, func(ctx context.Context) error {
		calls.Add(1)
		return errBoom
	})
	if !errors.Is(err, errBoom) || calls.Load() != 3 {
		t.Fatalf("got %v after %d calls, want 3 calls", err, calls.Load())
	}
	calls.Store(0)
	if err := Do(context.Background(), 3, b, func(ctx context.Context) error {
		if calls.Add(1) < 2 {
			return errBoom
		}
		return nil
	}); err != nil || calls.Load() != 2 {
		t.Fatalf("got %v after %d calls, want success after 2", err, calls.Load())
	}
	calls.Store(0)
	if err := Do(context.Background(), 3, nil, func(ctx context.Context) error {
		calls.Add(1)
		return Permanent(errBoom)
	}); !IsPermanent(err) || calls.Load() != 1 {
		t.Fatalf("got %v after %d calls, want a permanent error after 1", err, calls.Load())
	}
	calls.Store(0)
	if err := Do(context.Background(), 0, nil, func(ctx context.Context) error {
		calls.Add(1)
		return errBoom
	}); !errors.Is(err, errBoom) || calls.Load() != 1 {
		t.Fatalf("attempts 0: got %v after %d calls, want 1 call", err, calls.Load())
	}
}

func TestDeclarationMistakesPanic(t *testing.T) {
	c := localClient(t)
	noop := func(context.Context, int) error { return nil }
	RetryableOn(c, "twice", noop)
	cases := map[string]func(){
		"duplicate scene": func() { RetryableOn(c, "twice", noop) },
		"empty name":      func() { RetryableOn(c, "", noop) },
		"space in name":   func() { RetryableOn(c, "a b", noop) },
		"nil function":    func() { RetryableOn[int](c, "nil-fn", nil) },
		"bad mode":        func() { RetryableOn(c, "bad-mode", noop, WithMode("SOMETIMES")) },
		"zero attempts":   func() { RetryableOn(c, "zero", noop, WithLocalAttempts(0)) },
		"bad backoff":     func() { RetryableOn(c, "bad-backoff", noop, WithLocalBackoff(backoff.Policy{Strategy: "sometimes"})) },
		"callback type": func() {
			RetryableOn(c, "cb-type", noop, WithCallback(func(context.Context, CallbackEvent[string]) error { return nil }))
		},
		"key type":          func() { RetryableOn(c, "key-type", noop, WithKey(func(string) string { return "" })) },
		"args not JSON":     func() { RetryableOn(c, "chan-args", func(context.Context, chan int) error { return nil }) },
		"negative timeout":  func() { RetryableOn(c, "neg-timeout", noop, WithTimeout(-time.Second)) },
		"nil client on":     func() { RetryableOn[int](nil, "nil-client", noop) },
		"default duplicate": func() { Retryable("bench-success-path", benchTarget) },
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil {
					t.Fatal("no panic")
				}
				if msg, _ := r.(string); !strings.HasPrefix(msg, "retryhub: ") {
					t.Fatalf("panic %v does not name retryhub", r)
				}
			}()
			f()
		})
	}
}

func TestErrorTextIsBounded(t *testing.T) {
	long := errors.New(strings.Repeat("é", maxErrorText))
	got := errorText(long)
	if len(got) > maxErrorText+len("…") || !strings.HasSuffix(got, "…") || !utf8.ValidString(got) {
		t.Fatalf("cut text has %d bytes, valid UTF-8 %v", len(got), utf8.ValidString(got))
	}
	if errorText(errBoom) != "boom" {
		t.Fatal("a short text was changed")
	}
}

package retry

import (
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/retryhub/retryhub/client-sdk/backoff"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func fixedScene(maxAttempts int, callback bool) (*Scene, Policies) {
	sc := DefaultScene(1, "s")
	sc.MaxAttempts = maxAttempts
	sc.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(10 * time.Second)}
	sc.Callback.Enabled = callback
	sc.Callback.MaxAttempts = 2
	sc.Callback.Backoff = backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Minute)}
	p, err := sc.Compile()
	if err != nil {
		panic(err)
	}
	return &sc, p
}

func TestSettleReplay(t *testing.T) {
	fail := Result{Outcome: OutcomeFailed, Error: "boom"}
	tests := []struct {
		name      string
		attempts  int
		max       int
		callback  bool
		deadline  *time.Time
		res       Result
		state     State
		nextAt    time.Time
		cb        CallbackState
		errSuffix string
	}{
		{name: "success ends the task", attempts: 0, max: 3, res: Result{Outcome: OutcomeSucceeded},
			state: Succeeded, nextAt: t0},
		{name: "success starts the callback", attempts: 2, max: 3, callback: true,
			res: Result{Outcome: OutcomeSucceeded}, state: Succeeded, nextAt: t0, cb: CallbackWaiting},
		{name: "failure waits for the back-off", attempts: 0, max: 3, res: fail,
			state: Waiting, nextAt: t0.Add(10 * time.Second)},
		{name: "last attempt exhausts", attempts: 2, max: 3, res: fail, state: Exhausted, nextAt: t0},
		{name: "exhausted starts the callback", attempts: 2, max: 3, callback: true, res: fail,
			state: Exhausted, nextAt: t0, cb: CallbackWaiting},
		{name: "permanent exhausts at once", attempts: 0, max: 10,
			res: Result{Outcome: OutcomeFailed, Error: "bad input", Permanent: true}, state: Exhausted, nextAt: t0},
		{name: "next past the deadline exhausts", attempts: 0, max: 10, deadline: ptr(t0.Add(5 * time.Second)),
			res: fail, state: Exhausted, nextAt: t0, errSuffix: "deadline passed)"},
		{name: "next before the deadline waits", attempts: 0, max: 10, deadline: ptr(t0.Add(time.Hour)),
			res: fail, state: Waiting, nextAt: t0.Add(10 * time.Second)},
		{name: "timeout counts as a failure", attempts: 0, max: 3,
			res: Result{Outcome: OutcomeTimedOut, Error: "timed out"}, state: Waiting, nextAt: t0.Add(10 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, p := fixedScene(tt.max, tt.callback)
			c := &Claim{Kind: KindReplay, TaskID: 7, Token: 99, Attempts: tt.attempts, DeadlineAt: tt.deadline}
			s := SettleReplay(c, sc, p, tt.res, nil, t0)
			if s.State != tt.state || !s.NextAt.Equal(tt.nextAt) || s.CallbackState != tt.cb {
				t.Fatalf("got state %s next %s callback %s, want %s %s %s", s.State, s.NextAt, s.CallbackState, tt.state, tt.nextAt, tt.cb)
			}
			if s.Attempts != tt.attempts+1 || s.TaskID != 7 || s.Token != 99 {
				t.Fatalf("attempts %d task %d token %d", s.Attempts, s.TaskID, s.Token)
			}
			if s.State.Ended() != (s.EndedAt != nil) {
				t.Fatalf("ended %v but EndedAt %v", s.State.Ended(), s.EndedAt)
			}
			if tt.cb == CallbackWaiting && (s.CallbackNextAt == nil || !s.CallbackNextAt.Equal(t0)) {
				t.Fatalf("callback next at %v, want now", s.CallbackNextAt)
			}
			if tt.errSuffix != "" && !strings.HasSuffix(s.LastError, tt.errSuffix) {
				t.Fatalf("last error %q, want suffix %q", s.LastError, tt.errSuffix)
			}
		})
	}
}

func TestSettleCallback(t *testing.T) {
	sc, p := fixedScene(3, true)
	c := &Claim{Kind: KindCallback, TaskID: 1, Token: 5, State: Succeeded}
	s := SettleCallback(c, sc, p, Result{Outcome: OutcomeFailed, Error: "down"}, nil, t0)
	if s.CallbackState != CallbackWaiting || s.CallbackAttempts != 1 || !s.CallbackNextAt.Equal(t0.Add(time.Minute)) || s.CallbackError != "down" {
		t.Fatalf("first callback failure: %+v", s)
	}
	c.CallbackAttempts = 1
	s = SettleCallback(c, sc, p, Result{Outcome: OutcomeFailed, Error: "down"}, nil, t0)
	if s.CallbackState != CallbackExhausted || s.CallbackAttempts != 2 {
		t.Fatalf("callback out of attempts: %+v", s)
	}
	s = SettleCallback(c, sc, p, Result{Outcome: OutcomeSucceeded}, nil, t0)
	if s.CallbackState != CallbackSucceeded || s.CallbackError != "" {
		t.Fatalf("callback success: %+v", s)
	}
	if s.Kind != KindCallback || s.State != 0 {
		t.Fatalf("a callback settlement must not touch the task state: %+v", s)
	}
}

// A claim given back without an attempt carries only the phase's new state and due time: the
// attempt count, the error texts and the callback stay in the database as they are.
func TestReleaseAndHoldCarryOnlyStateAndDueTime(t *testing.T) {
	due := t0.Add(-time.Minute)
	replay := &Claim{Kind: KindReplay, TaskID: 1, Token: 2, Attempts: 4, LastError: "e", DueAt: due}
	callback := &Claim{Kind: KindCallback, TaskID: 1, Token: 2, State: Succeeded, CallbackAttempts: 1, CallbackError: "x"}
	next := t0.Add(time.Second)
	tests := []struct {
		name string
		got  Settlement
		want Settlement
	}{
		{"release of a replay waits until next", Release(replay, next),
			Settlement{Kind: KindReplay, TaskID: 1, Token: 2, Released: true, State: Waiting, NextAt: next}},
		{"hold keeps the due time", Hold(replay),
			Settlement{Kind: KindReplay, TaskID: 1, Token: 2, Released: true, State: Held, NextAt: due}},
		{"release of a callback waits until next", Release(callback, next),
			Settlement{Kind: KindCallback, TaskID: 1, Token: 2, Released: true, CallbackState: CallbackWaiting, CallbackNextAt: &next}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", tt.got, tt.want)
			}
		})
	}
}

func TestTruncateError(t *testing.T) {
	long := strings.Repeat("é", MaxErrorLen)
	got := TruncateError(long)
	if len(got) > MaxErrorLen || !strings.HasSuffix(got, "…") {
		t.Fatalf("cut to %d bytes", len(got))
	}
	if strings.ContainsRune(got, '\uFFFD') {
		t.Fatal("a character was split")
	}
	if TruncateError("short") != "short" {
		t.Fatal("a short error changed")
	}
	if got := TruncateError("d\xe9faillance \xff\xfe"); got != "d\uFFFDfaillance \uFFFD" {
		t.Fatalf("bytes that are not UTF-8: got %q", got)
	}
	if got := TruncateError(strings.Repeat("\xff", 2*MaxErrorLen)); len(got) > MaxErrorLen || !utf8.ValidString(got) {
		t.Fatalf("a long text that is not UTF-8: %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
}

func TestValidation(t *testing.T) {
	for _, n := range []string{"orders", "send-email", "a.b_c", "X1"} {
		if err := ValidateName("scene", n); err != nil {
			t.Errorf("%q refused: %v", n, err)
		}
	}
	for _, n := range []string{"", "-x", "has space", "ünïcode", strings.Repeat("a", 65)} {
		if err := ValidateName("scene", n); err == nil {
			t.Errorf("%q accepted", n)
		}
	}
	sc := DefaultScene(1, "ok")
	if err := sc.Validate(); err != nil {
		t.Fatalf("default scene invalid: %v", err)
	}
	bad := sc
	bad.MaxAttempts = 0
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "max_attempts") {
		t.Errorf("max_attempts 0: %v", err)
	}
	bad = sc
	bad.Backoff = backoff.Policy{Strategy: backoff.Cron, Cron: "nope"}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "backoff") {
		t.Errorf("bad cron: %v", err)
	}
	bad = sc
	bad.Routing = "nearest"
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "routing") {
		t.Errorf("bad routing: %v", err)
	}
	if err := ValidateKey(""); err == nil {
		t.Error("empty key accepted")
	}
	if err := ValidateKey(strings.Repeat("k", MaxKeyLen+1)); err == nil {
		t.Error("long key accepted")
	}
}

func TestBucketOf(t *testing.T) {
	seen := map[int]bool{}
	for i := range 10000 {
		b := BucketOf("order-"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+time.Duration(i).String(), 128)
		if b < 0 || b >= 128 {
			t.Fatalf("bucket %d out of range", b)
		}
		seen[b] = true
	}
	if len(seen) < 120 {
		t.Fatalf("keys spread over only %d of 128 buckets", len(seen))
	}
	// A task's bucket is stored: the same key must fall in the same bucket in every version.
	for key, want := range map[string]int{"same": 59, "order-1": 109} {
		if got := BucketOf(key, 128); got != want {
			t.Fatalf("key %q in bucket %d, want %d as always", key, got, want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestReplaysWalkTheLadderFromItsSecondStep(t *testing.T) {
	sc := DefaultScene(1, "s") // levels: 10s, 15s, 30s, …
	p, err := sc.Compile()
	if err != nil {
		t.Fatal(err)
	}
	// The report waits the first step before the first replay.
	if first := p.Replay.Next(1, t0).Sub(t0); first != 10*time.Second {
		t.Fatalf("first replay after %s, want 10s", first)
	}
	want := []time.Duration{15 * time.Second, 30 * time.Second, 35 * time.Second}
	c := &Claim{Kind: KindReplay}
	for i, w := range want {
		c.Attempts = i
		s := SettleReplay(c, &sc, p, Result{Outcome: OutcomeFailed, Error: "x"}, nil, t0)
		if got := s.NextAt.Sub(t0); got != w {
			t.Fatalf("after failed replay %d the next waits %s, want %s", i+1, got, w)
		}
	}
}

package retry

import (
	"testing"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
)

func TestFirstDueAndDeadlineCountFromTheFailure(t *testing.T) {
	now := t0
	step := 30 * time.Second
	fixed := backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(step)}.MustCompile()
	tests := []struct {
		name     string
		failedAt time.Time
		due      time.Time
		deadline time.Time
	}{
		{name: "no failure time counts from now", failedAt: time.Time{},
			due: now.Add(step), deadline: now.Add(time.Hour)},
		{name: "a failure just now", failedAt: now,
			due: now.Add(step), deadline: now.Add(time.Hour)},
		{name: "a failure 10 s ago is due 10 s sooner", failedAt: now.Add(-10 * time.Second),
			due: now.Add(20 * time.Second), deadline: now.Add(time.Hour - 10*time.Second)},
		{name: "a report spooled through a 10-minute outage is due at once", failedAt: now.Add(-10 * time.Minute),
			due: now.Add(-10*time.Minute + step), deadline: now.Add(50 * time.Minute)},
		{name: "a failure time ahead of the server's clock counts from now", failedAt: now.Add(time.Minute),
			due: now.Add(step), deadline: now.Add(time.Hour)},
		{name: "sub-millisecond parts are dropped", failedAt: now.Add(-time.Second - 123456*time.Nanosecond),
			due: now.Add(step - 1001*time.Millisecond), deadline: now.Add(time.Hour - 1001*time.Millisecond)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FirstDue(fixed, tt.failedAt, now); !got.Equal(tt.due) {
				t.Errorf("first due %s, want %s", got.Sub(now), tt.due.Sub(now))
			}
			got := ReportDeadline(time.Hour, tt.failedAt, now)
			if got == nil || !got.Equal(tt.deadline) {
				t.Errorf("deadline %v, want %s", got, tt.deadline.Sub(now))
			}
			if d := ReportDeadline(0, tt.failedAt, now); d != nil {
				t.Errorf("a scene without a deadline gave %v", d)
			}
		})
	}
}

// Calls that failed at different times and were reported in one batch fall due at different
// times, each one back-off step after its own failure.
func TestFirstDueSpreadsABatchByItsFailures(t *testing.T) {
	levels := backoff.Policy{Strategy: backoff.Levels}.MustCompile()
	seen := map[time.Time]bool{}
	for i := range 5 {
		failed := t0.Add(-time.Duration(i) * time.Second)
		due := FirstDue(levels, failed, t0)
		if want := failed.Add(10 * time.Second); !due.Equal(want) {
			t.Fatalf("call %d: due %s, want %s", i, due, want)
		}
		seen[due] = true
	}
	if len(seen) != 5 {
		t.Fatalf("%d distinct due times for 5 calls that failed a second apart", len(seen))
	}
}

func TestFailureTimeUsesTheClientsOwnClock(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	signed := int64(1_000_000_000) // the client's clock, far from the server's
	cases := []struct {
		name     string
		failedAt int64
		want     time.Time
	}{
		{"no time given", 0, time.Time{}},
		{"failed just now", signed, now},
		{"failed ten minutes before sending", signed - 600_000, now.Add(-10 * time.Minute)},
		{"a failure after the signing counts as now", signed + 5_000, now},
	}
	for _, c := range cases {
		if got := FailureTime(c.failedAt, signed, now); !got.Equal(c.want) {
			t.Errorf("%s: got %s, want %s", c.name, got, c.want)
		}
	}
}

// A declared remote policy is taken field by field where it passes the scene's rules, and left
// at the server's defaults where it does not.
func TestFromDeclarationTakesTheRemotePolicy(t *testing.T) {
	def := DefaultScene(1, "s")
	fixed := backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Minute)}
	broken := backoff.Policy{Strategy: "sometimes"}
	cases := []struct {
		name       string
		remote     *protocol.RemotePolicy
		attempts   int
		backoff    backoff.Strategy
		cbAttempts int
	}{
		{"none", nil, def.MaxAttempts, def.Backoff.Strategy, def.Callback.MaxAttempts},
		{"all valid", &protocol.RemotePolicy{MaxAttempts: 5, Backoff: &fixed, CallbackMaxAttempts: 2}, 5, backoff.Fixed, 2},
		{"out of range and broken", &protocol.RemotePolicy{MaxAttempts: MaxRemoteAttempts + 1, Backoff: &broken,
			CallbackMaxAttempts: -1}, def.MaxAttempts, def.Backoff.Strategy, def.Callback.MaxAttempts},
	}
	for _, c := range cases {
		sc := FromDeclaration(1, protocol.SceneDeclaration{Name: "s", Remote: c.remote})
		if sc.MaxAttempts != c.attempts || sc.Backoff.Strategy != c.backoff || sc.Callback.MaxAttempts != c.cbAttempts {
			t.Errorf("%s: max %d backoff %s callback max %d, want %d %s %d", c.name, sc.MaxAttempts, sc.Backoff.Strategy,
				sc.Callback.MaxAttempts, c.attempts, c.backoff, c.cbAttempts)
		}
		if err := sc.Validate(); err != nil {
			t.Errorf("%s: the scene made from the declaration is invalid: %v", c.name, err)
		}
	}
}

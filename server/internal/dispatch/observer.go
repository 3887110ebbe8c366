package dispatch

import (
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
)

// Observer is told what dispatch does, for the node's metrics. Its methods are called on the
// hot paths and must return quickly without blocking. Params and SettlerParams leave it nil
// when nothing observes.
type Observer interface {
	// Attempt is told of an attempt made: its kind, its outcome, how long after the task was
	// due the call went out (zero when it went out early) and how long the call took.
	Attempt(kind retry.AttemptKind, outcome retry.Outcome, lag, took time.Duration)
	// SettleBatch is told of one write of n settlements: how long it took and its error (nil
	// when the batch was written).
	SettleBatch(n int, took time.Duration, err error)
}

// noObserver observes nothing: it stands in for a nil Observer.
type noObserver struct{}

func (noObserver) Attempt(retry.AttemptKind, retry.Outcome, time.Duration, time.Duration) {}
func (noObserver) SettleBatch(int, time.Duration, error)                                  {}

// observerOr returns o, or an observer of nothing when o is nil.
func observerOr(o Observer) Observer {
	if o == nil {
		return noObserver{}
	}
	return o
}

// lagOf is how long after the claim was due its call went out at start.
func lagOf(c *retry.Claim, start time.Time) time.Duration { return max(start.Sub(c.DueAt), 0) }

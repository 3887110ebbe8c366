package retry

import (
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
)

// ReportedFrom is the time a reported task counts from: when its call failed, as the client
// says, or now when the client gave no time (zero) or a time ahead of the server's clock. A
// report that waited in the client's spool through an outage thus counts from its failure, and
// a client whose clock runs fast cannot push its task into the future.
func ReportedFrom(failedAt, now time.Time) time.Time {
	if failedAt.IsZero() || failedAt.After(now) {
		return Truncate(now)
	}
	return Truncate(failedAt)
}

// FirstDue is when a reported task's first replay is due: the replay back-off's first step
// after the failure (see ReportedFrom). The report is the first failure, so the first replay
// waits the first step; it counts from the failure, so a report that arrives late falls due
// that much sooner (at once, when the step has passed), and calls that failed at different
// times and were reported in one batch fall due at different times.
func FirstDue(replay *backoff.Backoff, failedAt, now time.Time) time.Time {
	return Truncate(replay.Next(1, ReportedFrom(failedAt, now)))
}

// ReportDeadline is a reported task's deadline: the scene's deadline after the failure (see
// ReportedFrom), or nil when the scene sets none (deadline <= 0).
func ReportDeadline(deadline time.Duration, failedAt, now time.Time) *time.Time {
	if deadline <= 0 {
		return nil
	}
	d := ReportedFrom(failedAt, now).Add(deadline)
	return &d
}

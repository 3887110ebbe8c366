package retry

import (
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
)

// FailureTime places a client's failure time on the server's clock: the client says when the call
// failed (failedAt) and when it signed the request (signedAt), both in Unix milliseconds of its
// own clock; the failure is that long before now. A client whose clock is off thus neither
// brings its tasks due early nor starts their deadlines late. Zero (the client gave no time)
// stays zero, and a failure after the signing counts as now.
func FailureTime(failedAt, signedAt int64, now time.Time) time.Time {
	if failedAt <= 0 {
		return time.Time{}
	}
	age := time.Duration(signedAt-failedAt) * time.Millisecond
	if age < 0 {
		age = 0
	}
	return now.Add(-age)
}

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

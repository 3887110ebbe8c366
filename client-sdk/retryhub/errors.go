package retryhub

import (
	"errors"
	"fmt"
)

// Errors a wrapped call or a Client method may return, for errors.Is. The returned errors wrap
// one of these and, when a business failure caused them, that failure too.
var (
	// ErrReported says the failed call was handed to the server for remote retry: it is queued
	// in memory or, with a spool directory, written to disk. The call will be replayed later;
	// the caller need not retry it.
	ErrReported = errors.New("reported for remote retry")
	// ErrQueueFull says the call could not be reported because Config.MaxQueuedReports reports
	// are already waiting for delivery. The failure was not reported.
	ErrQueueFull = errors.New("report queue is full")
	// ErrNotStarted says the call could not be reported because no started Client serves its
	// scene (call Start, or Client.Start for an explicit client).
	ErrNotStarted = errors.New("no started retryhub client serves this scene")
	// ErrClosed says the Client is shutting down or has shut down.
	ErrClosed = errors.New("retryhub client is shut down")
	// ErrArgsTooLarge says the call's serialized arguments exceed what the server accepts for
	// one report (RegisterResponse.MaxPayloadBytes). The failure was not reported.
	ErrArgsTooLarge = errors.New("arguments too large to report")
	// ErrInvalidKey says an idempotency key given with WithKey or Report is not one the server
	// accepts (1 to MaxKeyLen bytes of UTF-8). The failure was not reported.
	ErrInvalidKey = errors.New("invalid idempotency key")
)

// permanentError marks a failure that must not be retried.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as a failure that retrying cannot fix (a validation error, a rejected
// payment): it is not retried locally, not reported, and a replay that returns it answers the
// server Permanent: true, which ends the task at once. Permanent(nil) is nil. The mark survives
// wrapping with fmt.Errorf("...: %w", err).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	if IsPermanent(err) {
		return err
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err, or an error it wraps, was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// NoRetryError is the error a Transport returns for a response that carried
// protocol.HeaderNoRetry: the downstream service asked not to be called again for this request.
// Transport wraps it with Permanent.
type NoRetryError struct {
	// StatusCode and Status are the response's.
	StatusCode int
	Status     string
	// Body holds the start of the response body, for the error message.
	Body string
}

// Error says the downstream service asked not to retry, with its status and answer.
func (e *NoRetryError) Error() string {
	if e.Body == "" {
		return fmt.Sprintf("downstream answered %s and asked not to retry", e.Status)
	}
	return fmt.Sprintf("downstream answered %s and asked not to retry: %s", e.Status, e.Body)
}

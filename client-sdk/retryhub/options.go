package retryhub

import (
	"context"
	"fmt"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// The retry modes, as WithMode takes them. See protocol.Mode.
const (
	// Local retries in the calling process only; what still fails is returned to the caller.
	Local = protocol.Local
	// Remote runs the call once and reports a failure at once; the server replays it.
	Remote = protocol.Remote
	// LocalRemote retries locally first and reports what still fails. It is the default.
	LocalRemote = protocol.LocalRemote
)

// Code defaults of a scene, used for every option not given and until the server's policy for
// the scene arrives.
const (
	// DefaultMode is the mode of a scene declared without WithMode.
	DefaultMode = LocalRemote
	// DefaultLocalAttempts is the number of local attempts, the first call included.
	DefaultLocalAttempts = 3
)

// DefaultLocalBackoff returns the policy that spaces the local attempts of a scene declared
// without WithLocalBackoff, and of Do without a back-off: 100ms, 200ms, 400ms, … capped at
// 2s, with equal jitter.
func DefaultLocalBackoff() backoff.Policy {
	return backoff.Policy{
		Strategy: backoff.Exponential,
		Base:     backoff.Duration(100 * time.Millisecond),
		Cap:      backoff.Duration(2 * time.Second),
		Jitter:   backoff.EqualJitter,
	}
}

// Option sets a per-scene option of Retryable or RetryableOn. Mode, local attempts, local
// back-off and timeout are code defaults: once the server's policy for the scene arrives, the
// server's values win.
type Option func(*sceneConfig)

// sceneConfig collects the options of one declaration.
type sceneConfig struct {
	mode     protocol.Mode
	attempts int
	backoff  backoff.Policy
	timeout  time.Duration
	key      any // func(T) string
	callback any // func(context.Context, CallbackEvent[T]) error
	remote   *protocol.RemotePolicy
	errs     []string
}

// WithMode sets where failed calls are retried: Local, Remote or LocalRemote.
func WithMode(m protocol.Mode) Option {
	return func(c *sceneConfig) {
		if !m.Valid() {
			c.errs = append(c.errs, fmt.Sprintf("WithMode(%q): want LOCAL, REMOTE or LOCAL_REMOTE", m))
			return
		}
		c.mode = m
	}
}

// WithLocalAttempts sets how many times a call runs in-process, the first call included
// (at least 1).
func WithLocalAttempts(n int) Option {
	return func(c *sceneConfig) {
		if n < 1 {
			c.errs = append(c.errs, fmt.Sprintf("WithLocalAttempts(%d): want at least 1", n))
			return
		}
		c.attempts = n
	}
}

// WithLocalBackoff sets the waits between local attempts.
func WithLocalBackoff(p backoff.Policy) Option {
	return func(c *sceneConfig) {
		if _, err := p.Compile(); err != nil {
			c.errs = append(c.errs, fmt.Sprintf("WithLocalBackoff: %v", err))
			return
		}
		c.backoff = p
	}
}

// WithRemotePolicy declares the scene's server-side policy (remote attempts and back-off, the
// callback's attempts and back-off) as the default the server uses when it creates the scene on
// this instance's registration. It changes nothing on a scene the server has already: from its
// creation on, operators edit the policy in the console, and their edits win. A zero field
// leaves the server's default.
func WithRemotePolicy(p protocol.RemotePolicy) Option {
	return func(c *sceneConfig) {
		if p.MaxAttempts < 0 || p.CallbackMaxAttempts < 0 {
			c.errs = append(c.errs, fmt.Sprintf("WithRemotePolicy: attempts %d and %d: want >= 0", p.MaxAttempts, p.CallbackMaxAttempts))
			return
		}
		for what, b := range map[string]*backoff.Policy{"Backoff": p.Backoff, "CallbackBackoff": p.CallbackBackoff} {
			if b == nil {
				continue
			}
			if _, err := b.Compile(); err != nil {
				c.errs = append(c.errs, fmt.Sprintf("WithRemotePolicy: %s: %v", what, err))
				return
			}
		}
		c.remote = &p
	}
}

// WithTimeout bounds each attempt, local or replayed, through its context; zero means no
// bound. The function must honour its context for the bound to take effect. Note that a
// timeout costs the call a context (a few allocations) even when it succeeds, unless the
// caller's context already ends sooner.
func WithTimeout(d time.Duration) Option {
	return func(c *sceneConfig) {
		if d < 0 {
			c.errs = append(c.errs, fmt.Sprintf("WithTimeout(%s): want >= 0", d))
			return
		}
		c.timeout = d
	}
}

// WithKey sets how a call's idempotency key is computed from its arguments. Calls with the same
// key merge into one task on the server while that task is active. The default key is the hex
// SHA-256 of the scene name, a newline and the JSON arguments. The key is computed only when
// a call is reported.
func WithKey[T any](key func(T) string) Option {
	return func(c *sceneConfig) { c.key = key }
}

// CallbackEvent tells a scene's callback how one of its reported tasks ended.
type CallbackEvent[T any] struct {
	Scene          string
	TaskID         int64
	IdempotencyKey string
	// Outcome is protocol.OutcomeSucceeded or protocol.OutcomeExhausted.
	Outcome string
	// Args are the task's arguments, decoded.
	Args T
	// LastError is the text of the task's last failure ("" when it has none).
	LastError string
	// Attempts is how many replays the task had.
	Attempts int
	// CallbackAttempt numbers this run of the callback, from 1.
	CallbackAttempt int
}

// WithCallback registers the scene's callback, which the server asks this instance to run when
// one of the scene's reported tasks ends (succeeded or exhausted) and the scene's callback is
// enabled on the server. A callback that returns an error is retried under the scene's callback
// policy; one that returns Permanent(err) is not. Calls that never reached the server (Local
// mode, successes) have no callback.
func WithCallback[T any](cb func(ctx context.Context, ev CallbackEvent[T]) error) Option {
	return func(c *sceneConfig) { c.callback = cb }
}

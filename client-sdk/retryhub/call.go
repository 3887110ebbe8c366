package retryhub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// wrapped is a scene with its typed function.
type wrapped[T any] struct {
	s   *scene
	fn  func(context.Context, T) error
	key func(T) string
	cb  func(context.Context, CallbackEvent[T]) error
}

// call is the function Retryable returns. Its success path reads the scene's policy and calls
// fn; everything else happens in failed.
func (w *wrapped[T]) call(ctx context.Context, arg T) error {
	p := w.s.pol.Load()
	w.s.reg.calls.calls.Add(1)
	var err error
	if p.timeout > 0 {
		err = w.attempt(ctx, arg, p.timeout)
	} else {
		err = w.fn(ctx, arg)
	}
	if err == nil {
		return nil
	}
	w.s.reg.calls.failed.Add(1)
	return w.failed(ctx, arg, err, p)
}

// attempt runs fn once under the per-attempt timeout.
func (w *wrapped[T]) attempt(ctx context.Context, arg T, timeout time.Duration) error {
	if timeout <= 0 {
		return w.fn(ctx, arg)
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= timeout {
		return w.fn(ctx, arg)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return w.fn(ctx, arg)
}

// failed handles a failed first attempt: local retries, then the report.
func (w *wrapped[T]) failed(ctx context.Context, arg T, err error, p *policy) error {
	s := w.s
	if InFlow(ctx) {
		// The flow that called us owns the retry.
		return err
	}
	if IsPermanent(err) {
		return fmt.Errorf("retryhub: scene %q: permanent failure, not retried: %w", s.name, err)
	}
	attempts := 1
	var stop error
	if p.mode != Remote {
		attempts, err, stop = retryLocal(ctx, p.attempts, p.backoff, err, func(ctx context.Context) error {
			return w.attempt(ctx, arg, p.timeout)
		})
		s.reg.calls.localRetries.Add(uint64(attempts - 1))
		if err == nil {
			return nil
		}
		if IsPermanent(err) {
			return fmt.Errorf("retryhub: scene %q: permanent failure after %s, not retried: %w", s.name, attemptsText(attempts), err)
		}
	}
	if p.mode == Local {
		return localFailure(fmt.Sprintf("scene %q", s.name), attempts, stop, err)
	}
	c := s.reg.client.Load()
	if c == nil {
		return fmt.Errorf("retryhub: scene %q: failed after %s and cannot be reported: %w: %w", s.name, attemptsText(attempts), ErrNotStarted, err)
	}
	// The last attempt has just failed: the report carries that time, which the server
	// schedules the first replay from however long the report waits for delivery.
	failedAt := c.now()
	args, jerr := json.Marshal(arg)
	if jerr != nil {
		return fmt.Errorf("retryhub: scene %q: failed after %s and cannot be reported, its arguments do not encode as JSON (%v): %w", s.name, attemptsText(attempts), jerr, err)
	}
	var key string
	if w.key != nil {
		key = w.key(arg)
		if kerr := checkKey(key); kerr != nil {
			return fmt.Errorf("retryhub: scene %q: failed after %s and was not reported, WithKey gave a bad key (%w): %w", s.name, attemptsText(attempts), kerr, err)
		}
	} else {
		key = defaultKey(s.name, args)
	}
	item := protocol.ReportItem{Scene: s.name, IdempotencyKey: key, Args: args, Error: errorText(err), LocalAttempts: attempts,
		FailedAt: failedAt.UnixMilli()}
	if qerr := c.enqueue(ctx, item); qerr != nil {
		return fmt.Errorf("retryhub: scene %q: failed after %s and was not reported: %w; last failure: %w", s.name, attemptsText(attempts), qerr, err)
	}
	if stop != nil {
		return fmt.Errorf("retryhub: scene %q: local retries stopped after %s (%v), %w (key %s): %w", s.name, attemptsText(attempts), stop, ErrReported, key, err)
	}
	return fmt.Errorf("retryhub: scene %q: failed after %s, %w (key %s): %w", s.name, attemptsText(attempts), ErrReported, key, err)
}

// replay runs fn once for the executor.
func (w *wrapped[T]) replay(ctx context.Context, raw json.RawMessage) (decodeErr, err error) {
	var arg T
	if err := decodeArgs(raw, &arg); err != nil {
		return err, nil
	}
	return nil, w.fn(ctx, arg)
}

// callback runs the scene's callback for the executor.
func (w *wrapped[T]) callback(ctx context.Context, req *protocol.ExecuteRequest) (decodeErr, err error) {
	ev := CallbackEvent[T]{
		Scene:           req.Scene,
		TaskID:          req.TaskID,
		IdempotencyKey:  req.IdempotencyKey,
		CallbackAttempt: req.Attempt,
	}
	if req.Callback != nil {
		ev.Outcome = req.Callback.Outcome
		ev.LastError = req.Callback.LastError
		ev.Attempts = req.Callback.Attempts
	}
	if err := decodeArgs(req.Args, &ev.Args); err != nil {
		return err, nil
	}
	return nil, w.cb(ctx, ev)
}

func decodeArgs(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return fmt.Errorf("decode arguments into %T: no arguments", v)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("decode arguments into %T: %w", v, err)
	}
	return nil
}

// maxErrorText bounds the failure text a report carries.
const maxErrorText = 4 << 10

// errorText is err's text, cut to maxErrorText bytes on a rune boundary.
func errorText(err error) string {
	msg := err.Error()
	if len(msg) <= maxErrorText {
		return msg
	}
	cut := maxErrorText
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + "…"
}

// defaultKey is the hex SHA-256 of the scene name, a newline and the JSON arguments.
func defaultKey(scene string, args []byte) string {
	h := sha256.New()
	h.Write([]byte(scene))
	h.Write([]byte{'\n'})
	h.Write(args)
	return hex.EncodeToString(h.Sum(nil))
}

package retryhub

import (
	"context"
	"fmt"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
)

var defaultLocalBackoff = DefaultLocalBackoff().MustCompile()

// Do runs fn, retrying it in-process until it succeeds, attempts runs are used up (the first
// included; values below 1 mean 1), ctx ends, or it returns a Permanent error. b spaces the
// attempts; nil means DefaultLocalBackoff. Do never sleeps past ctx's deadline: when the next
// wait would pass it, Do stops. Nothing is reported: Do is the local-only retry for code that
// needs no scene. The error wraps the last failure and, when ctx stopped the retries, ctx's
// error.
//
// Like a Retryable, Do inside a retry flow runs fn once and returns its error unchanged, and
// its own first attempt runs with ctx unmarked while later attempts carry the flow mark.
func Do(ctx context.Context, attempts int, b *backoff.Backoff, fn func(context.Context) error) error {
	err := fn(ctx)
	if err == nil {
		return nil
	}
	if InFlow(ctx) {
		return err
	}
	if IsPermanent(err) {
		return fmt.Errorf("retryhub: permanent failure, not retried: %w", err)
	}
	if b == nil {
		b = defaultLocalBackoff
	}
	n, err, stop := retryLocal(ctx, attempts, b, err, fn)
	if err == nil {
		return nil
	}
	if IsPermanent(err) {
		return fmt.Errorf("retryhub: permanent failure after %s, not retried: %w", attemptsText(n), err)
	}
	return localFailure("call", n, stop, err)
}

// retryLocal runs the attempts after a failed first one. It returns how many attempts ran in
// all, the last error (nil on success) and, when ctx stopped the retries, why.
func retryLocal(ctx context.Context, attempts int, b *backoff.Backoff, err error, run func(context.Context) error) (int, error, error) {
	n := 1
	if n >= attempts {
		return n, err, nil
	}
	flowCtx := withFlow(ctx)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for n < attempts {
		if cerr := ctx.Err(); cerr != nil {
			return n, err, cerr
		}
		now := time.Now()
		wait := b.Next(n, now).Sub(now)
		if dl, ok := ctx.Deadline(); ok && now.Add(wait).After(dl) {
			return n, err, fmt.Errorf("the next attempt, due in %s, would pass the context deadline: %w", wait.Round(time.Millisecond), context.DeadlineExceeded)
		}
		if wait > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			select {
			case <-ctx.Done():
				return n, err, ctx.Err()
			case <-timer.C:
			}
		}
		n++
		err = run(flowCtx)
		if err == nil || IsPermanent(err) {
			return n, err, nil
		}
	}
	return n, err, nil
}

// localFailure is the error of local retries that ended without success.
func localFailure(what string, attempts int, stop, err error) error {
	if stop != nil {
		return fmt.Errorf("retryhub: %s: stopped after %s: %w; last failure: %w", what, attemptsText(attempts), stop, err)
	}
	return fmt.Errorf("retryhub: %s: failed after %s: %w", what, attemptsText(attempts), err)
}

// attemptsText says "1 attempt" or "n attempts".
func attemptsText(n int) string {
	if n == 1 {
		return "1 attempt"
	}
	return fmt.Sprintf("%d attempts", n)
}

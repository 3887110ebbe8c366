// Package recovery follows a background loop of the SDK (report delivery, heartbeat, policy
// sync) through failure and back: it spaces the loop's tries with a doubling back-off and logs
// once when the loop starts failing and once when it recovers, so an outage of any length
// costs the log two lines per loop, not one per try.
package recovery

import (
	"log/slog"
	"math/rand/v2"
	"time"
)

// Kind says how a failure is retried.
type Kind int

const (
	// Transient failures (an unreachable server, a 5xx) are retried after a back-off that
	// starts at Params.MinDelay and doubles per failure up to Params.MaxDelay.
	Transient Kind = iota
	// NeedsFix failures (credentials refused, an untrusted certificate) only a person can fix:
	// they are retried every Params.FixDelay and logged at error level.
	NeedsFix
)

// Params configure a Tracker.
type Params struct {
	// Log receives the tracker's records.
	Log *slog.Logger
	// Failing is the message logged when the loop starts failing, for example "retryhub:
	// cannot deliver reports; they are kept and re-sent".
	Failing string
	// Recovered is the message logged when the loop works again, for example "retryhub:
	// reports are delivered again".
	Recovered string
	// MinDelay and MaxDelay bound the back-off after transient failures.
	MinDelay, MaxDelay time.Duration
	// FixDelay is the wait after a failure that needs a fix.
	FixDelay time.Duration
	// Now tells the time; nil means time.Now.
	Now func() time.Time
}

// Tracker follows one loop. It is not safe for concurrent use: the loop's own goroutine calls
// it.
type Tracker struct {
	p        Params
	failures int       // failed tries since the last success
	since    time.Time // when the first of them failed
	kind     Kind      // of the last failure
}

// New returns a tracker of a loop that works so far.
func New(p Params) *Tracker {
	if p.Now == nil {
		p.Now = time.Now
	}
	p.MaxDelay = max(p.MaxDelay, p.MinDelay)
	return &Tracker{p: p}
}

// Failed records a failed try and returns how long to wait before the next one. The first
// failure after a success is logged with its error (warning level, or error level with fix
// for one that needs a fix), and so is a failure of another kind than the last; the others
// are logged at debug level. attrs are added to each record.
func (t *Tracker) Failed(err error, kind Kind, fix string, attrs ...any) time.Duration {
	t.failures++
	first := t.failures == 1
	if first {
		t.since = t.p.Now()
	}
	changed := !first && kind != t.kind
	t.kind = kind
	var d time.Duration
	if kind == NeedsFix {
		d = t.p.FixDelay
	} else {
		d = delay(t.p.MinDelay, t.p.MaxDelay, t.failures)
	}
	args := append([]any{"err", err}, attrs...)
	switch {
	case (first || changed) && kind == NeedsFix:
		t.p.Log.Error(t.p.Failing, append(args, "fix", fix, "retry_in", d)...)
	case first || changed:
		t.p.Log.Warn(t.p.Failing, append(args, "retry_in", d)...)
	default:
		t.p.Log.Debug(t.p.Failing, append(args, "failures", t.failures, "retry_in", d)...)
	}
	return d
}

// Succeeded records a try that worked. After failures it logs the recovery, with how long the
// loop failed and how many tries failed; otherwise it logs nothing.
func (t *Tracker) Succeeded(attrs ...any) {
	if t.failures == 0 {
		return
	}
	t.p.Log.Info(t.p.Recovered, append([]any{"failed_for", t.p.Now().Sub(t.since).Round(time.Millisecond),
		"failed_tries", t.failures}, attrs...)...)
	t.failures = 0
}

// Failing reports whether the last try failed.
func (t *Tracker) Failing() bool { return t.failures > 0 }

// delay is the wait after failures failed tries: minDelay doubled per failure after the
// first, up to maxDelay, with equal jitter (between half of that and all of it).
func delay(minDelay, maxDelay time.Duration, failures int) time.Duration {
	d := minDelay
	for i := 1; i < failures && d < maxDelay; i++ {
		d *= 2
	}
	d = min(d, maxDelay)
	half := d / 2
	return half + rand.N(d-half+1)
}

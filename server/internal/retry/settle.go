package retry

import (
	"fmt"
	"time"

	"github.com/retryhub/retryhub/client-sdk/backoff"
)

// Claim is a task a server node has claimed for one replay or one callback. Its token makes
// the claim unique: a settlement applies only while the task still holds the same token.
type Claim struct {
	Kind           AttemptKind
	TaskID         int64
	GroupID        int64
	SceneID        int64
	Bucket         int
	IdempotencyKey string
	// Args are the call's arguments; a claim leaves them nil (dispatch reads them just before
	// sending) and sets ArgsSize, their stored length.
	Args     []byte
	ArgsSize int
	// State is Running for a replay claim, and the ended state (Succeeded or Exhausted) for a
	// callback claim.
	State            State
	Attempts         int
	CallbackAttempts int
	LastError        string
	CallbackError    string
	DeadlineAt       *time.Time
	Token            int64
	// ClaimedBy is the node that claimed the task.
	ClaimedBy string
	// DueAt is when the replay (or callback) was due; claims look a little ahead, so it may
	// still be to come.
	DueAt time.Time
	// RunDeadline is when the claim lapses and the sweeper may take the task back.
	RunDeadline time.Time
	CreatedAt   time.Time
}

// Number is the attempt number the claim runs, from 1.
func (c *Claim) Number() int {
	if c.Kind == KindCallback {
		return c.CallbackAttempts + 1
	}
	return c.Attempts + 1
}

// Result is how one attempt ended.
type Result struct {
	Outcome Outcome
	Error   string
	// Permanent failures are not retried.
	Permanent bool
}

// Settlement is the change the end of a claim makes to its task. Storage applies it only while
// the task is still running under the claim's token, so a settlement that comes late (after the
// sweeper took the task back, or after an operator cancelled it) changes nothing.
//
// A settlement of an attempt (SettleReplay, SettleCallback) carries the phase's new values. A
// claim given back without an attempt (Release, Hold) is Released: it carries only the phase's
// new state and next trigger time, and the attempt count, the error texts and the callback stay
// in the database as they are.
type Settlement struct {
	Kind   AttemptKind
	TaskID int64
	Token  int64
	// Released marks a claim given back without an attempt.
	Released bool

	// The replay phase's new values (Kind == KindReplay; a released one sets State and NextAt).
	State     State
	Attempts  int
	NextAt    time.Time
	LastError string
	EndedAt   *time.Time

	// The callback phase's new values (both kinds: a replay that ends the task starts the
	// callback; a released callback sets CallbackState and CallbackNextAt).
	CallbackState    CallbackState
	CallbackAttempts int
	CallbackNextAt   *time.Time
	CallbackError    string

	// Attempt is the attempt to record; nil when there is none to record.
	Attempt *Attempt

	// Lapsed, when set, makes the settlement a take-back of a claim that outlived its deadline
	// (the sweeper's): it applies only while the claim's deadline is still at or before this
	// time. A dispatcher that started the claim late moves its deadline first (ExtendClaim);
	// the claim is then live again, and taking it back would replay the task a second time
	// while its call runs.
	Lapsed *time.Time
}

// Policies are a scene's compiled back-offs.
type Policies struct {
	Replay   *backoff.Backoff
	Callback *backoff.Backoff
}

// Compile compiles the scene's back-offs.
func (s *Scene) Compile() (Policies, error) {
	r, err := s.Backoff.Compile()
	if err != nil {
		return Policies{}, fmt.Errorf("scene %s backoff: %w", s.Name, err)
	}
	c, err := s.Callback.Backoff.Compile()
	if err != nil {
		return Policies{}, fmt.Errorf("scene %s callback backoff: %w", s.Name, err)
	}
	return Policies{Replay: r, Callback: c}, nil
}

// NextReplay is when a task's next replay is due after its replays-th replay failed at
// failedAt. The report itself was the first failure, which the first replay's wait followed
// (FirstDue); the n-th failed replay is failure n+1.
func NextReplay(replay *backoff.Backoff, replays int, failedAt time.Time) time.Time {
	return Truncate(replay.Next(replays+1, failedAt))
}

// SettleReplay decides what a replay's result does to its task: success ends it; a failure
// schedules the next replay by the scene's back-off (the report took its first step, so the
// n-th failed replay waits its (n+1)-th), or exhausts the task when the failure is
// permanent, the attempts are used up, or the next replay would fall past the task's deadline.
// A task that ends starts its callback when the scene has one.
func SettleReplay(c *Claim, sc *Scene, p Policies, res Result, att *Attempt, now time.Time) Settlement {
	now = Truncate(now)
	s := Settlement{Kind: KindReplay, TaskID: c.TaskID, Token: c.Token, Attempts: c.Attempts + 1,
		LastError: c.LastError, NextAt: now, Attempt: att}
	if res.Outcome == OutcomeSucceeded {
		s.State = Succeeded
	} else {
		s.LastError = TruncateError(res.Error)
		next := NextReplay(p.Replay, s.Attempts, now)
		switch {
		case res.Permanent, s.Attempts >= sc.MaxAttempts:
			s.State = Exhausted
		case c.DeadlineAt != nil && next.After(*c.DeadlineAt):
			s.State = Exhausted
			s.LastError = TruncateError(res.Error + " (the task's deadline passed)")
		default:
			s.State = Waiting
			s.NextAt = next
		}
	}
	if s.State.Ended() {
		ended := now
		s.EndedAt = &ended
		if sc.Callback.Enabled {
			s.CallbackState = CallbackWaiting
			s.CallbackNextAt = &ended
		}
	}
	return s
}

// SettleCallback decides what a callback's result does: success or running out of callback
// attempts ends the callback; a failure otherwise schedules the next callback by the scene's
// callback back-off. The task's own state never changes here.
func SettleCallback(c *Claim, sc *Scene, p Policies, res Result, att *Attempt, now time.Time) Settlement {
	now = Truncate(now)
	s := Settlement{Kind: KindCallback, TaskID: c.TaskID, Token: c.Token,
		CallbackAttempts: c.CallbackAttempts + 1, Attempt: att}
	switch {
	case res.Outcome == OutcomeSucceeded:
		s.CallbackState = CallbackSucceeded
	case res.Permanent, s.CallbackAttempts >= sc.Callback.MaxAttempts:
		s.CallbackState = CallbackExhausted
		s.CallbackError = TruncateError(res.Error)
	default:
		s.CallbackState = CallbackWaiting
		s.CallbackError = TruncateError(res.Error)
		next := Truncate(p.Callback.Next(s.CallbackAttempts, now))
		s.CallbackNextAt = &next
	}
	return s
}

// Release gives a claim back without an attempt: the task (or its callback) waits again until
// next. Dispatch releases on back-pressure, when no client instance is live, on shutdown, and
// (a callback) when the scene is paused.
func Release(c *Claim, next time.Time) Settlement {
	next = Truncate(next)
	if c.Kind == KindCallback {
		return Settlement{Kind: KindCallback, TaskID: c.TaskID, Token: c.Token, Released: true,
			CallbackState: CallbackWaiting, CallbackNextAt: &next}
	}
	return Settlement{Kind: KindReplay, TaskID: c.TaskID, Token: c.Token, Released: true, State: Waiting, NextAt: next}
}

// Hold gives a replay claim back as Held, without an attempt and keeping its due time: its
// scene is paused, its group or namespace disabled, or its group has no live instance. It is
// not claimed again until it may wait again (MayWaitAgain), when the sweeper makes it waiting.
func Hold(c *Claim) Settlement {
	return Settlement{Kind: KindReplay, TaskID: c.TaskID, Token: c.Token, Released: true, State: Held,
		NextAt: Truncate(c.DueAt)}
}

package retry

import "fmt"

// State is where a retry task is in its life.
type State int8

// The task states. Their numbers are stored in the database: never renumber them.
const (
	// Waiting tasks are replayed when their next trigger time comes.
	Waiting State = 1
	// Running tasks are claimed by a server node and being replayed.
	Running State = 2
	// Succeeded tasks ended with a successful replay.
	Succeeded State = 3
	// Exhausted tasks ran out of attempts or time: the dead letter set.
	Exhausted State = 4
	// Paused tasks wait for an operator to resume them.
	Paused State = 5
	// Cancelled tasks were stopped by an operator (or discarded from the dead letters).
	Cancelled State = 6
	// Held tasks fell due while their scene was paused, their group or namespace disabled, or
	// their group without a live instance. They are not claimed again (a paused or unserved
	// backlog costs the scheduler nothing) until the scene, group and namespace are enabled and
	// the group has a live instance, when the sweeper makes them waiting again, due as they were.
	Held State = 7
)

var stateNames = map[State]string{
	Waiting: "waiting", Running: "running", Succeeded: "succeeded",
	Exhausted: "exhausted", Paused: "paused", Cancelled: "cancelled", Held: "held",
}

// String returns the state's lower-case name.
func (s State) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("state(%d)", int8(s))
}

// ParseState reads a state name.
func ParseState(name string) (State, error) {
	for s, n := range stateNames {
		if n == name {
			return s, nil
		}
	}
	return 0, fmt.Errorf("unknown task state %q (want waiting, held, running, succeeded, exhausted, paused or cancelled)", name)
}

// Active reports whether the task still counts for its idempotency key: a repeated key merges
// into an active task, and starts a new task once the old one has ended.
func (s State) Active() bool { return s == Waiting || s == Held || s == Running || s == Paused }

// Ended reports whether the task has reached a final state.
func (s State) Ended() bool { return s == Succeeded || s == Exhausted || s == Cancelled }

// CallbackState is where a task's callback is, beside the task's own state.
type CallbackState int8

// The callback states. Stored in the database: never renumber them.
const (
	// CallbackNone: the task has no callback (yet, or at all).
	CallbackNone CallbackState = 0
	// CallbackWaiting: the callback is due at the callback's next trigger time.
	CallbackWaiting CallbackState = 1
	// CallbackRunning: a server node is running the callback.
	CallbackRunning CallbackState = 2
	// CallbackSucceeded: the callback ran.
	CallbackSucceeded CallbackState = 3
	// CallbackExhausted: the callback ran out of attempts.
	CallbackExhausted CallbackState = 4
)

var callbackStateNames = map[CallbackState]string{
	CallbackNone: "none", CallbackWaiting: "waiting", CallbackRunning: "running",
	CallbackSucceeded: "succeeded", CallbackExhausted: "exhausted",
}

// String returns the callback state's lower-case name.
func (s CallbackState) String() string {
	if n, ok := callbackStateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("callback_state(%d)", int8(s))
}

// Pending reports whether the callback still has work to do.
func (s CallbackState) Pending() bool { return s == CallbackWaiting || s == CallbackRunning }

// allStates lists every task state, in their stored order.
var allStates = [...]State{Waiting, Running, Succeeded, Exhausted, Paused, Cancelled, Held}

// States lists every task state, in their stored order.
func States() []State { return statesWhere(func(State) bool { return true }) }

// EndedStates lists the final states: a task in one of them has ended.
func EndedStates() []State { return statesWhere(State.Ended) }

func statesWhere(keep func(State) bool) []State {
	var out []State
	for _, s := range allStates {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}

// PendingCallbackStates lists the callback states that still have work to do.
func PendingCallbackStates() []CallbackState {
	return []CallbackState{CallbackWaiting, CallbackRunning}
}

// Effect is a set of changes a transition makes to a task besides its state and its next
// trigger time. Storage turns each into the columns it writes.
type Effect uint8

// The effects.
const (
	// ClearClaim ends the claim on the task, if any: no claim token, no claim deadline. A
	// settlement that comes for the old claim then changes nothing.
	ClearClaim Effect = 1 << iota
	// ReleaseKey stops the task from holding its idempotency key: a report with the same key
	// starts a new task.
	ReleaseKey
	// TakeKey makes the task hold its idempotency key again: a report with the same key merges
	// into it.
	TakeKey
	// StampEnd records the time the task ended.
	StampEnd
	// ClearEnd removes the task's end time.
	ClearEnd
	// ResetAttempts starts the task's count of replays again from zero.
	ResetAttempts
	// ResetCallback puts the task's callback back to not started: no state, attempts, next
	// trigger time or error.
	ResetCallback
)

// Ending is what entering an ended state does to a task, whatever ends it (its last replay, an
// operator): its claim ends, its key is free for a new task, and its end time is recorded.
const Ending = ClearClaim | ReleaseKey | StampEnd

// Reopening is what bringing an ended task back to life does: it holds its key again, has no
// end time, starts its attempts and its callback afresh, and holds no claim.
const Reopening = ClearClaim | TakeKey | ClearEnd | ResetAttempts | ResetCallback

// Has reports whether e includes every effect of x.
func (e Effect) Has(x Effect) bool { return e&x == x }

// Entering returns the effects of entering the state: Ending for an ended state, none for
// another.
func Entering(s State) Effect {
	if s.Ended() {
		return Ending
	}
	return 0
}

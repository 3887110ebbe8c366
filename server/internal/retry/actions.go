package retry

import (
	"fmt"
	"time"
)

// Action is an operator's action on tasks.
type Action string

// The operator actions. Which states each applies to, and what it does, is its Transition; a
// task in another state is left as it is.
const (
	// TriggerNow makes waiting, held or paused tasks waiting and due now (a task whose scene is
	// still paused is held again when it is claimed).
	TriggerNow Action = "trigger"
	// Pause stops waiting or held tasks until they are resumed.
	Pause Action = "pause"
	// Resume makes paused tasks wait again, due at their next trigger time.
	Resume Action = "resume"
	// Cancel ends waiting, held, running or paused tasks without further replays.
	Cancel Action = "cancel"
	// Replay brings dead letters (exhausted tasks) back with a fresh set of attempts, due now.
	Replay Action = "replay"
	// Discard ends dead letters as cancelled; they are kept until retention removes them.
	Discard Action = "discard"
	// SetNextAt moves the next trigger time of waiting, held or paused tasks.
	SetNextAt Action = "set_next"
)

// Actions lists every action.
func Actions() []Action {
	return []Action{TriggerNow, Pause, Resume, Cancel, Replay, Discard, SetNextAt}
}

// ParseAction reads an action name.
func ParseAction(s string) (Action, error) {
	for _, a := range Actions() {
		if string(a) == s {
			return a, nil
		}
	}
	return "", fmt.Errorf("%w action %q: want trigger, pause, resume, cancel, replay, discard or set_next", ErrInvalid, s)
}

// Due says how a transition sets a task's next trigger time.
type Due int8

// The ways a transition sets the next trigger time.
const (
	// DueKept leaves it as it was.
	DueKept Due = iota
	// DueNow makes the task due at the time of the transition.
	DueNow
	// DueGiven makes it due at the time given with the action (set_next).
	DueGiven
)

// Transition is what an action does to the tasks in one of the states From: they enter To
// (unless To is zero: the state stays), their next trigger time is set as Due says, and
// Effects happen, among them those of entering To (Entering).
type Transition struct {
	From    []State
	To      State
	Due     Due
	Effects Effect
}

func transition(from []State, to State, due Due, extra Effect) Transition {
	return Transition{From: from, To: to, Due: due, Effects: extra | Entering(to)}
}

// Applies reports whether the transition applies to a task in state s.
func (t Transition) Applies(s State) bool {
	for _, f := range t.From {
		if f == s {
			return true
		}
	}
	return false
}

// Transition returns what the action does, and to which states.
func (a Action) Transition() (Transition, error) {
	// A task that waits for its next trigger in any way: its due time is its own.
	scheduled := []State{Waiting, Held, Paused}
	switch a {
	case TriggerNow:
		return transition(scheduled, Waiting, DueNow, 0), nil
	case Pause:
		return transition([]State{Waiting, Held}, Paused, DueKept, 0), nil
	case Resume:
		return transition([]State{Paused}, Waiting, DueKept, 0), nil
	case Cancel:
		// A running task too: its claim ends, and the result of its replay, when it comes,
		// changes nothing.
		return transition([]State{Waiting, Held, Running, Paused}, Cancelled, DueKept, 0), nil
	case Replay:
		return transition([]State{Exhausted}, Waiting, DueNow, Reopening), nil
	case Discard:
		return transition([]State{Exhausted}, Cancelled, DueKept, 0), nil
	case SetNextAt:
		return transition(scheduled, 0, DueGiven, 0), nil
	}
	return Transition{}, fmt.Errorf("%w action %q", ErrInvalid, a)
}

// Check validates an action and the time given with it: set_next needs one.
func (a Action) Check(at time.Time) error {
	if _, err := a.Transition(); err != nil {
		return err
	}
	if a == SetNextAt && at.IsZero() {
		return fmt.Errorf("%w: set_next needs a time", ErrInvalid)
	}
	return nil
}

// Unhold is what the sweeper does to a held task once it may wait again (MayWaitAgain): it
// waits, due as it was.
func Unhold() Transition { return transition([]State{Held}, Waiting, DueKept, 0) }

// MayWaitAgain reports whether a held task may wait again: its scene, group and namespace are
// all enabled and its group has a live client instance that runs replays. Until then claiming
// it would only hold it again.
func MayWaitAgain(sceneEnabled bool, g Group, liveExecutors int) bool {
	return sceneEnabled && g.Active() && liveExecutors > 0
}

// ArgsEditableStates lists the states in which an operator may edit a task's arguments: those
// in which no replay of it is under way and it may still run (waiting, held, paused) or be
// replayed (a dead letter).
func ArgsEditableStates() []State { return []State{Waiting, Held, Paused, Exhausted} }

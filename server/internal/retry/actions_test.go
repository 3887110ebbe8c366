package retry

import (
	"errors"
	"slices"
	"testing"
	"time"
)

var everyState = []State{Waiting, Held, Running, Succeeded, Exhausted, Paused, Cancelled}

func TestActionTransitions(t *testing.T) {
	tests := []struct {
		action  Action
		from    []State
		to      State
		due     Due
		effects Effect
	}{
		{TriggerNow, []State{Waiting, Held, Paused}, Waiting, DueNow, 0},
		{Pause, []State{Waiting, Held}, Paused, DueKept, 0},
		{Resume, []State{Paused}, Waiting, DueKept, 0},
		{Cancel, []State{Waiting, Held, Running, Paused}, Cancelled, DueKept, ClearClaim | ReleaseKey | StampEnd},
		{Replay, []State{Exhausted}, Waiting, DueNow, ClearClaim | TakeKey | ClearEnd | ResetAttempts | ResetCallback},
		{Discard, []State{Exhausted}, Cancelled, DueKept, ClearClaim | ReleaseKey | StampEnd},
		{SetNextAt, []State{Waiting, Held, Paused}, 0, DueGiven, 0},
	}
	if len(tests) != len(Actions()) {
		t.Fatalf("%d actions tested of %d", len(tests), len(Actions()))
	}
	for _, tt := range tests {
		t.Run(string(tt.action), func(t *testing.T) {
			tr, err := tt.action.Transition()
			if err != nil {
				t.Fatal(err)
			}
			if tr.To != tt.to || tr.Due != tt.due || tr.Effects != tt.effects {
				t.Fatalf("to %s, due %d, effects %b; want %s, %d, %b", tr.To, tr.Due, tr.Effects, tt.to, tt.due, tt.effects)
			}
			for _, s := range everyState {
				if tr.Applies(s) != slices.Contains(tt.from, s) {
					t.Errorf("applies to %s: %v", s, tr.Applies(s))
				}
			}
			// No action leaves a task ended without what ending does, or touches one running
			// under a claim without ending the claim.
			if tr.To.Ended() && !tr.Effects.Has(Ending) {
				t.Errorf("ends tasks without %b", Ending)
			}
			if tr.Applies(Running) && !tr.Effects.Has(ClearClaim) {
				t.Error("changes running tasks but leaves their claim")
			}
			if tr.Effects.Has(ReleaseKey) && tr.Effects.Has(TakeKey) {
				t.Error("both frees and takes the key")
			}
		})
	}
}

func TestActionNamesAndChecks(t *testing.T) {
	for _, a := range Actions() {
		got, err := ParseAction(string(a))
		if err != nil || got != a {
			t.Errorf("%s reads back as %q, %v", a, got, err)
		}
	}
	tests := []struct {
		name   string
		action Action
		at     time.Time
		ok     bool
	}{
		{"pause needs no time", Pause, time.Time{}, true},
		{"set_next with a time", SetNextAt, t0, true},
		{"set_next without a time", SetNextAt, time.Time{}, false},
		{"an unknown action", Action("explode"), t0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.action.Check(tt.at)
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Fatalf("check: %v", err)
			}
		})
	}
	if _, err := ParseAction("explode"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("an unknown action name: %v", err)
	}
}

func TestUnhold(t *testing.T) {
	tr := Unhold()
	if !slices.Equal(tr.From, []State{Held}) || tr.To != Waiting || tr.Due != DueKept || tr.Effects != 0 {
		t.Fatalf("unhold: %+v; want held to waiting, due as it was", tr)
	}
	on := Group{Enabled: true, NamespaceEnabled: true}
	tests := []struct {
		name  string
		scene bool
		group Group
		live  int
		want  bool
	}{
		{"all enabled, an instance live", true, on, 1, true},
		{"scene paused", false, on, 1, false},
		{"group disabled", true, Group{NamespaceEnabled: true}, 1, false},
		{"namespace disabled", true, Group{Enabled: true}, 1, false},
		{"no live instance", true, on, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MayWaitAgain(tt.scene, tt.group, tt.live); got != tt.want {
				t.Fatalf("may wait again: %v, want %v", got, tt.want)
			}
		})
	}
}

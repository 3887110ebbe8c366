package retry

import (
	"slices"
	"strings"
	"testing"
)

func TestStates(t *testing.T) {
	tests := []struct {
		state  State
		active bool
		ended  bool
		enter  Effect
	}{
		{Waiting, true, false, 0},
		{Held, true, false, 0},
		{Running, true, false, 0},
		{Paused, true, false, 0},
		{Succeeded, false, true, Ending},
		{Exhausted, false, true, Ending},
		{Cancelled, false, true, Ending},
	}
	var ended []State
	for _, tt := range tests {
		t.Run(tt.state.String(), func(t *testing.T) {
			if tt.state.Active() != tt.active || tt.state.Ended() != tt.ended || Entering(tt.state) != tt.enter {
				t.Fatalf("active %v ended %v entering %b; want %v %v %b",
					tt.state.Active(), tt.state.Ended(), Entering(tt.state), tt.active, tt.ended, tt.enter)
			}
			got, err := ParseState(tt.state.String())
			if err != nil || got != tt.state {
				t.Fatalf("reads back as %v, %v", got, err)
			}
		})
		if tt.ended {
			ended = append(ended, tt.state)
		}
	}
	slices.Sort(ended)
	if got := EndedStates(); !slices.Equal(got, ended) {
		t.Fatalf("ended states %v, want %v", got, ended)
	}
	if _, err := ParseState("sleeping"); err == nil || !strings.Contains(err.Error(), "held") {
		t.Errorf("an unknown state name: %v", err)
	}
}

// Ending a task frees its key and ends its claim; reopening one takes the key back and starts
// it afresh, with nothing left of the end.
func TestEndingAndReopening(t *testing.T) {
	for _, e := range []Effect{ClearClaim, ReleaseKey, StampEnd} {
		if !Ending.Has(e) {
			t.Errorf("ending lacks %b", e)
		}
	}
	for _, e := range []Effect{ClearClaim, TakeKey, ClearEnd, ResetAttempts, ResetCallback} {
		if !Reopening.Has(e) {
			t.Errorf("reopening lacks %b", e)
		}
	}
	if Reopening&(ReleaseKey|StampEnd) != 0 {
		t.Error("reopening frees the key or stamps an end")
	}
	if !slices.Equal(PendingCallbackStates(), []CallbackState{CallbackWaiting, CallbackRunning}) {
		t.Errorf("pending callback states %v", PendingCallbackStates())
	}
	for _, s := range PendingCallbackStates() {
		if !s.Pending() {
			t.Errorf("%s listed pending", s)
		}
	}
}

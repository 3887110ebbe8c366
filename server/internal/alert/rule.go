// Package alert evaluates the alert rules and sends their messages through the channels of
// package notify. The Evaluator runs on the leader on a cron schedule: each pass reads the
// per-minute summaries and the cluster tables (never a scan of the task table), decides for
// each rule whether it starts firing, is still firing (a reminder at its repeat interval) or
// cleared, records every message in the history and sends it, and tries the failed sends again
// with back-off on later passes. The rules' state is kept in the database, so a node taking
// over the evaluation continues where the last one left off.
package alert

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/retryhub/retryhub/server/internal/storage"
)

// Rule kinds: what a rule measures.
const (
	// TasksExhausted: tasks that became dead letters in the window, per scene, ≥ Threshold.
	TasksExhausted = "tasks_exhausted"
	// FailedAttempts: replay attempts that failed in the window, per scene, ≥ Threshold.
	FailedAttempts = "failed_attempts"
	// FailureRatio: failed / (succeeded + failed) replay attempts in the window, per scene, in
	// percent, ≥ Threshold, once there were at least MinVolume attempts.
	FailureRatio = "failure_ratio"
	// Backlog: waiting tasks of a scene ≥ Threshold.
	Backlog = "backlog"
	// OldestWaiting: a scene's longest overdue waiting task has been due for longer than For.
	OldestWaiting = "oldest_waiting"
	// NoLiveInstance: a group has waiting (or held) tasks and no live instance for For.
	NoLiveInstance = "no_live_instance"
	// CallbacksExhausted: callbacks that ran out of attempts in the window, per scene, ≥ Threshold.
	CallbacksExhausted = "callbacks_exhausted"
	// NodeLost: a server node's heartbeat stopped For ago (a node that leaves cleanly is not lost).
	NodeLost = "node_lost"
	// BucketsUnowned: at least Threshold (default 1) buckets without a live lease for For.
	BucketsUnowned = "buckets_unowned"
)

// Severities.
const (
	Critical = "critical"
	Warning  = "warning"
	Info     = "info"
)

// kindSpec says which fields a kind reads.
type kindSpec struct {
	window    bool // reads the summaries over Window
	threshold bool // compares a figure with Threshold
	minVolume bool
	forTime   bool // a condition that must last For
	scoped    bool // about the namespace's scenes or groups (not the cluster)
	unit      string
}

var kinds = map[string]kindSpec{
	TasksExhausted:     {window: true, threshold: true, scoped: true, unit: "tasks"},
	FailedAttempts:     {window: true, threshold: true, scoped: true, unit: "attempts"},
	FailureRatio:       {window: true, threshold: true, minVolume: true, scoped: true, unit: "%"},
	Backlog:            {threshold: true, scoped: true, unit: "tasks"},
	OldestWaiting:      {forTime: true, scoped: true, unit: "s"},
	NoLiveInstance:     {forTime: true, scoped: true, unit: "s"},
	CallbacksExhausted: {window: true, threshold: true, scoped: true, unit: "callbacks"},
	NodeLost:           {forTime: true, unit: "s"},
	BucketsUnowned:     {forTime: true, threshold: true, unit: "buckets"},
}

// Kinds lists the rule kinds this server evaluates.
func Kinds() []string {
	out := make([]string, 0, len(kinds))
	for k := range kinds {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Bounds of a rule's durations.
const (
	MaxWindow = 24 * time.Hour
	MinRepeat = time.Minute
	MaxFor    = 7 * 24 * time.Hour
)

// FieldError is a rule field that breaks the rules; the console API answers it with 400.
type FieldError struct {
	Field, Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func bad(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Normalize fills in the defaults of a rule's kind (a threshold of 1 where a count is
// compared, a window of 5 minutes, a minimum volume of 10, a "for" of 5 minutes) and clears the
// fields the kind does not read, then checks the rule; the error is a *FieldError.
func Normalize(r *storage.AlertRule) error {
	spec, ok := kinds[r.Kind]
	if !ok {
		return bad("kind", "unknown kind %q: want one of %v", r.Kind, Kinds())
	}
	switch r.Severity {
	case "":
		r.Severity = Warning
	case Critical, Warning, Info:
	default:
		return bad("severity", "want critical, warning or info, got %q", r.Severity)
	}
	if !spec.window {
		r.Window = 0
	} else if r.Window == 0 {
		r.Window = 5 * time.Minute
	}
	if !spec.threshold {
		r.Threshold = 0
	} else if r.Threshold == 0 {
		r.Threshold = 1
	}
	if !spec.minVolume {
		r.MinVolume = 0
	} else if r.MinVolume == 0 {
		r.MinVolume = 10
	}
	if !spec.forTime {
		r.For = 0
	} else if r.For == 0 {
		r.For = 5 * time.Minute
	}
	if !spec.scoped {
		r.GroupIDs, r.SceneIDs = nil, nil
	}
	switch {
	case spec.window && (r.Window < time.Minute || r.Window > MaxWindow):
		return bad("window", "want 1m to %s, got %s", MaxWindow, r.Window)
	case spec.threshold && (r.Threshold < 0 || math.IsNaN(r.Threshold) || math.IsInf(r.Threshold, 0)):
		return bad("threshold", "must be a positive number")
	case r.Kind == FailureRatio && r.Threshold > 100:
		return bad("threshold", "a percentage: want 0 to 100, got %g", r.Threshold)
	case spec.minVolume && r.MinVolume < 1:
		return bad("min_volume", "must be at least 1")
	case spec.forTime && (r.For < 0 || r.For > MaxFor):
		return bad("for", "want 0s to %s, got %s", MaxFor, r.For)
	case r.Repeat != 0 && (r.Repeat < MinRepeat || r.Repeat > MaxFor):
		return bad("repeat", "want 0 (no reminders) or %s to %s, got %s", MinRepeat, MaxFor, r.Repeat)
	case len(r.GroupIDs) > 1000 || len(r.SceneIDs) > 1000 || len(r.ChannelIDs) > 50:
		return bad("group_ids", "too many ids")
	}
	return nil
}

// IsFieldError reports whether err is a rule field at fault, and which.
func IsFieldError(err error) (*FieldError, bool) {
	var fe *FieldError
	ok := errors.As(err, &fe)
	return fe, ok
}

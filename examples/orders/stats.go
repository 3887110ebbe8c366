package orders

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/client-sdk/retryhub"
)

// SceneCounts are the counters of one scene, as this instance saw its calls. A business
// function need not keep any of them; the example does, to show what retryhub did.
type SceneCounts struct {
	Scene string `json:"scene"`
	// Calls counts the calls the service made (one per order).
	Calls int64 `json:"calls"`
	// LocalRetries counts the in-process attempts after a call's first one.
	LocalRetries int64 `json:"local_retries"`
	// Reported counts the calls that still failed after their local attempts and were handed
	// to the retryhub server (errors.Is(err, retryhub.ErrReported)): one task each.
	Reported int64 `json:"reported"`
	// Failed counts the calls that failed without being reported: a permanent failure, or a
	// report the client could not take (queue full, client not started).
	Failed int64 `json:"failed"`
	// Replays counts the attempts the server sent through the executor endpoint.
	Replays int64 `json:"replays"`
	// ReplaysFailed counts the replays that failed with an error that may pass: the server
	// schedules the task again by the scene's back-off.
	ReplaysFailed int64 `json:"replays_failed"`
	// Succeeded counts the replays that succeeded: each ends its task as succeeded.
	Succeeded int64 `json:"succeeded"`
	// Exhausted counts the replays that failed with a permanent error: each ends its task as
	// exhausted (a dead letter) at once.
	Exhausted int64 `json:"exhausted"`
	// CallbacksSucceeded and CallbacksExhausted count the task outcomes the scene's callback
	// was told of (only a scene with a callback, once the callback is on in the console).
	CallbacksSucceeded int64 `json:"callbacks_succeeded"`
	CallbacksExhausted int64 `json:"callbacks_exhausted"`
}

// Open is the number of reported tasks that no replay has ended yet.
func (c SceneCounts) Open() int64 { return c.Reported - c.Succeeded - c.Exhausted }

// sceneStats are the live counters behind SceneCounts.
type sceneStats struct {
	name                                  string
	calls, localRetries, reported, failed atomic.Int64
	replays, replaysFailed                atomic.Int64
	succeeded, exhausted                  atomic.Int64
	callbacksSucceeded, callbacksExhaust  atomic.Int64
}

// attempt counts one run of the scene's function and its outcome. A server replay is told by
// retryhub.ReplayOf; any other run belongs to a call the service made: its first attempt, or a
// local retry when it runs in the call's retry flow (retryhub.InFlow: the SDK marks every
// local attempt after the first; the service's own calls never start inside a flow).
func (s *sceneStats) attempt(ctx context.Context, err error) {
	if _, replay := retryhub.ReplayOf(ctx); !replay {
		if retryhub.InFlow(ctx) {
			s.localRetries.Add(1)
		}
		return
	}
	s.replays.Add(1)
	switch {
	case err == nil:
		s.succeeded.Add(1)
	case retryhub.IsPermanent(err):
		s.exhausted.Add(1)
	default:
		s.replaysFailed.Add(1)
	}
}

// call counts a call the service made, by what the retryable returned.
func (s *sceneStats) call(err error) {
	s.calls.Add(1)
	switch {
	case err == nil:
	case errors.Is(err, retryhub.ErrReported):
		s.reported.Add(1)
	default:
		s.failed.Add(1)
	}
}

// callback counts an outcome the scene's callback was told of.
func (s *sceneStats) callback(outcome string) {
	switch outcome {
	case protocol.OutcomeSucceeded:
		s.callbacksSucceeded.Add(1)
	case protocol.OutcomeExhausted:
		s.callbacksExhaust.Add(1)
	}
}

func (s *sceneStats) counts() SceneCounts {
	return SceneCounts{
		Scene:              s.name,
		Calls:              s.calls.Load(),
		LocalRetries:       s.localRetries.Load(),
		Reported:           s.reported.Load(),
		Failed:             s.failed.Load(),
		Replays:            s.replays.Load(),
		ReplaysFailed:      s.replaysFailed.Load(),
		Succeeded:          s.succeeded.Load(),
		Exhausted:          s.exhausted.Load(),
		CallbacksSucceeded: s.callbacksSucceeded.Load(),
		CallbacksExhausted: s.callbacksExhaust.Load(),
	}
}

// Package scheduler splits the work among server nodes and finds what is due: the heartbeat
// keeps this node listed, the leaser takes this node's share of the buckets, the elector makes
// one node the leader for the singleton work, the claimer claims due tasks of the held buckets
// on every cron tick and hands them to dispatch, the sweeper takes back tasks whose claim
// outlived its deadline (and, on the leader, brings held tasks back), and the janitor applies
// retention on the leader. Each is one type in one file, a service.Service built from a params
// struct, with one exec that does one pass of its work.
package scheduler

import (
	"context"
	"log/slog"
	"time"

	"github.com/retryhub/retryhub/server/internal/service"
)

// passTimeout bounds a heartbeat, lease or leadership pass, and so how long a stop waits for one.
const passTimeout = 5 * time.Second

// Leader says whether this node leads the singleton work now: the Elector.
type Leader interface {
	IsLeader() bool
}

// loop runs exec every interval until stop, the first time at once.
type loop struct {
	interval time.Duration
	exec     func(ctx context.Context)
	log      *slog.Logger
	// finish, when set, runs each pass under its own timeout of that length, and stop waits for
	// a pass under way to end instead of cancelling it. A stop that cleans up after the loop
	// (deleting the node's row, releasing its leases) needs it: MySQL runs a statement it has
	// received even when the client gives up on it, so a cancelled heartbeat or lease renewal
	// could land after the clean-up and undo it.
	finish time.Duration

	cancel context.CancelFunc
	done   chan struct{}
}

// start runs the loop; a second start is refused.
func (l *loop) start() error {
	if l.done != nil {
		return service.ErrStarted
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel, l.done = cancel, make(chan struct{})
	go func() {
		defer close(l.done)
		t := time.NewTicker(l.interval)
		defer t.Stop()
		for ctx.Err() == nil {
			l.pass(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return nil
}

func (l *loop) pass(ctx context.Context) {
	if l.finish <= 0 {
		l.exec(ctx)
		return
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.finish)
	defer cancel()
	l.exec(pctx)
}

// stop ends the loop and waits, within ctx, for a pass under way. It reports whether the loop
// was running (a loop stops once) and whether its last pass ended before ctx did: a stop that
// cleans up after the loop must skip the clean-up when it did not, since that pass may still
// land after it. The pass itself ends within its own timeout.
func (l *loop) stop(ctx context.Context) (running, ended bool) {
	if l.cancel == nil {
		return false, true
	}
	l.cancel()
	l.cancel = nil
	select {
	case <-l.done:
		return true, true
	case <-ctx.Done():
		return true, false
	}
}

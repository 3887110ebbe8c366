// Package scheduler splits the work among server nodes and finds what is due: the heartbeat
// keeps this node listed, the leaser takes this node's share of the buckets, the claimer claims
// due tasks of those buckets on every cron tick and hands them to dispatch, the sweeper takes
// back tasks whose claim outlived its deadline, and the janitor applies retention. Each is one
// type in one file with Start and Stop, and one exec that does one pass of its work.
package scheduler

import (
	"context"
	"log/slog"
	"time"
)

// loop runs exec every interval until stop, the first time at once.
type loop struct {
	name     string
	interval time.Duration
	exec     func(ctx context.Context)
	log      *slog.Logger

	cancel context.CancelFunc
	done   chan struct{}
}

func (l *loop) start() {
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel, l.done = cancel, make(chan struct{})
	go func() {
		defer close(l.done)
		t := time.NewTicker(l.interval)
		defer t.Stop()
		for {
			l.exec(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// stop ends the loop and waits for a pass under way.
func (l *loop) stop() {
	if l.cancel == nil {
		return
	}
	l.cancel()
	<-l.done
}

package clientapi

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/retryhub/retryhub/server/internal/service"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// NonceMargin is how long a request's nonce is kept past the end of its signature window: the
// nodes' clocks may differ a little, and a node whose clock is behind accepts the request that
// much longer.
const NonceMargin = time.Minute

// NoncePrunerParams configure a NoncePruner.
type NoncePrunerParams struct {
	Store *storage.Store
	// Interval is the time between passes; zero means a minute.
	Interval time.Duration
	// Batch bounds the nonces deleted per statement; zero means 1000.
	Batch int
	Log   *slog.Logger
}

// NoncePruner deletes the nonces of client requests whose signature window has passed. Every
// node runs one: a pass deletes only expired rows, so passes on several nodes at once delete
// each row once and repeat nothing harmful.
type NoncePruner struct {
	p NoncePrunerParams

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

var _ service.Service = (*NoncePruner)(nil)

// NewNoncePruner returns a pruner; Start runs it.
func NewNoncePruner(p NoncePrunerParams) *NoncePruner {
	if p.Interval <= 0 {
		p.Interval = time.Minute
	}
	if p.Batch <= 0 {
		p.Batch = 1000
	}
	if p.Log == nil {
		p.Log = slog.Default()
	}
	return &NoncePruner{p: p}
}

// Start runs a pass every interval until Stop.
func (n *NoncePruner) Start(context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.done != nil {
		return service.ErrStarted
	}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.done = cancel, make(chan struct{})
	go n.loop(ctx, n.done)
	return nil
}

// Stop ends the loop, cancelling a pass in progress, and waits for it within ctx.
func (n *NoncePruner) Stop(ctx context.Context) {
	n.mu.Lock()
	cancel, done := n.cancel, n.done
	n.cancel, n.done = nil, nil
	n.mu.Unlock()
	if done == nil {
		return
	}
	cancel()
	select {
	case <-done:
	case <-ctx.Done():
		n.p.Log.Warn("nonce pruner: stop timed out waiting for a pass to end")
	}
}

func (n *NoncePruner) loop(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(n.p.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := n.Exec(ctx); err != nil && ctx.Err() == nil {
			n.p.Log.Warn("nonce pruner: delete expired nonces; the next pass tries again", "err", err)
		}
	}
}

// Exec does one pass: it deletes expired nonces in batches until none is left, and returns how
// many it deleted.
func (n *NoncePruner) Exec(ctx context.Context) (int64, error) {
	var total int64
	for {
		d, err := n.p.Store.DeleteExpiredNonces(ctx, time.Now(), n.p.Batch)
		total += d
		if err != nil || d < int64(n.p.Batch) {
			return total, err
		}
	}
}

package scheduler

import (
	"context"
	"log/slog"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/service"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// HeartbeatParams configure a Heartbeat.
type HeartbeatParams struct {
	Store *storage.Store
	Node  retry.Node
	// Interval is how often the node's row is refreshed.
	Interval time.Duration
	Log      *slog.Logger
}

// Heartbeat keeps this node's row in the node table fresh, so the other nodes count it live.
type Heartbeat struct {
	store *storage.Store
	node  retry.Node
	loop  loop
}

var _ service.Killer = (*Heartbeat)(nil)

// NewHeartbeat returns the heartbeat of a node; Start runs it.
func NewHeartbeat(p HeartbeatParams) *Heartbeat {
	h := &Heartbeat{store: p.Store, node: p.Node}
	h.loop = loop{interval: p.Interval, exec: h.exec, log: p.Log, finish: passTimeout}
	return h
}

// Beat records the heartbeat once.
func (h *Heartbeat) Beat(ctx context.Context) error { return h.store.HeartbeatNode(ctx, h.node) }

func (h *Heartbeat) exec(ctx context.Context) {
	if err := h.Beat(ctx); err != nil { // stop never cancels a beat: an error is real
		h.loop.log.Warn("node heartbeat", "node", h.node.ID, "err", err)
	}
}

// Start records the first beat under ctx, so the node is listed before it takes buckets, then
// beats every interval until Stop.
func (h *Heartbeat) Start(ctx context.Context) error {
	if err := h.Beat(ctx); err != nil {
		return err
	}
	return h.loop.start()
}

// Stop ends the heartbeat (letting a beat under way land first) and removes the node's row, so
// the others take its share at once.
func (h *Heartbeat) Stop(ctx context.Context) {
	running, ended := h.loop.stop(ctx)
	if !running {
		return
	}
	if !ended {
		h.loop.log.Warn("shutdown: a heartbeat still under way at the deadline; the node row is left to age out", "node", h.node.ID)
		return
	}
	if err := h.store.DeleteNode(ctx, h.node.ID); err != nil {
		h.loop.log.Warn("remove node row", "node", h.node.ID, "err", err)
	}
}

// Kill ends the heartbeat and leaves the row to age, as a crash would.
func (h *Heartbeat) Kill() { h.loop.stop(context.Background()) }

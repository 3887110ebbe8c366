package scheduler

import (
	"context"
	"log/slog"
	"time"

	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// Heartbeat keeps this node's row in the node table fresh, so the other nodes count it live.
type Heartbeat struct {
	store *storage.Store
	node  retry.Node
	loop  loop
}

// NewHeartbeat returns the heartbeat of node, beating every interval.
func NewHeartbeat(store *storage.Store, node retry.Node, interval time.Duration, log *slog.Logger) *Heartbeat {
	h := &Heartbeat{store: store, node: node}
	h.loop = loop{name: "heartbeat", interval: interval, exec: h.exec, log: log, finish: passTimeout}
	return h
}

// Beat records the heartbeat once.
func (h *Heartbeat) Beat(ctx context.Context) error { return h.store.HeartbeatNode(ctx, h.node) }

func (h *Heartbeat) exec(ctx context.Context) {
	if err := h.Beat(ctx); err != nil { // stop never cancels a beat: an error is real
		h.loop.log.Warn("node heartbeat", "node", h.node.ID, "err", err)
	}
}

// Start beats until Stop.
func (h *Heartbeat) Start() { h.loop.start() }

// Stop ends the heartbeat (letting a beat under way land first) and removes the node's row, so
// the others take its share at once.
func (h *Heartbeat) Stop(ctx context.Context) {
	h.loop.stop()
	if err := h.store.DeleteNode(ctx, h.node.ID); err != nil {
		h.loop.log.Warn("remove node row", "node", h.node.ID, "err", err)
	}
}

// Abandon ends the heartbeat and leaves the row to age, as a crash would.
func (h *Heartbeat) Abandon() { h.loop.stop() }

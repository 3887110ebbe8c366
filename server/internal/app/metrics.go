package app

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/retryhub/retryhub/server/internal/api/httpx"
	"github.com/retryhub/retryhub/server/internal/metrics"
	"github.com/retryhub/retryhub/server/internal/storage"
)

// watch registers the gauges read from the node's parts when /metrics is scraped, and has the
// client API count the reports it stores. build calls it once the parts exist.
func (a *App) watch() error {
	a.ClientAPI.OnIngest = a.Metrics.Ingested
	if err := a.Metrics.WatchNode(metrics.Node{Buckets: a.cfg.Scheduler.Buckets,
		BucketsHeld: func() int { return len(a.Leaser.Held()) }, Nodes: a.Leaser.Nodes, Leader: a.Elector.IsLeader,
		Claims: a.Dispatcher.Pending, ClaimBytes: a.Dispatcher.QueuedBytes}); err != nil {
		return err
	}
	return a.Metrics.WatchScenes(a.sceneTasks, 0)
}

// sceneTasks reads every scene's tasks per state from the totals the store keeps (one small
// table, never the tasks), naming each scene's namespace from the catalog.
func (a *App) sceneTasks(ctx context.Context) ([]metrics.SceneTasks, error) {
	totals, err := a.Store.StateTotals(ctx, storage.StateFilter{})
	if err != nil {
		return nil, err
	}
	out := make([]metrics.SceneTasks, 0, len(totals))
	for _, t := range totals {
		g, err := a.Catalog.Group(ctx, t.GroupID)
		if errors.Is(err, storage.ErrNotFound) {
			continue // deleted since the totals were read
		}
		if err != nil {
			return nil, fmt.Errorf("metrics: group %d of scene %s: %w", t.GroupID, t.Scene, err)
		}
		out = append(out, metrics.SceneTasks{Namespace: g.Namespace, Group: t.Group, Scene: t.Scene, States: t.States})
	}
	return out, nil
}

// mountMetrics serves GET /metrics when metrics.enabled is on (with metrics.token, only to
// scrapes that carry it); off, /metrics is not found.
func (a *App) mountMetrics(r gin.IRouter) {
	if !a.cfg.Metrics.Enabled {
		r.GET("/metrics", func(c *gin.Context) {
			httpx.Error(c, http.StatusNotFound, "not_found", "metrics are turned off (metrics.enabled)")
		})
		return
	}
	r.GET("/metrics", gin.WrapH(a.Metrics.Handler(a.cfg.Metrics.Token)))
}

package metrics

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/retryhub/retryhub/server/internal/retry"
)

// SceneTasks is a scene's number of tasks per state.
type SceneTasks struct {
	Namespace, Group, Scene string
	States                  map[retry.State]int64
}

// SceneSource reads every scene's tasks per state from the totals the store keeps (a small
// table, not the tasks).
type SceneSource func(ctx context.Context) ([]SceneTasks, error)

// activeStates are reported for every scene, at zero when it has none: a scene whose last
// waiting task ran still shows 0 waiting instead of the last number it had.
var activeStates = []retry.State{retry.Waiting, retry.Held, retry.Running, retry.Paused}

// sceneCollector serves retryhub_tasks from a SceneSource read at most once per interval.
type sceneCollector struct {
	desc    *prometheus.Desc
	source  SceneSource
	every   time.Duration
	timeout time.Duration
	m       *Metrics

	mu     sync.Mutex
	readAt time.Time
	last   []SceneTasks
}

// WatchScenes registers retryhub_tasks{namespace,group,scene,state}: the tasks of each scene
// by state, from source, read when scraped at most once per every (5 s when zero) and served
// from the last read in between. A read that fails counts as a database error and serves the
// last read's figures.
func (m *Metrics) WatchScenes(source SceneSource, every time.Duration) error {
	if every <= 0 {
		every = 5 * time.Second
	}
	c := &sceneCollector{source: source, every: every, timeout: 5 * time.Second, m: m,
		desc: prometheus.NewDesc(Namespace+"_tasks",
			"Tasks per scene and state, cluster-wide (every node reports the same figures: aggregate with max, not sum).",
			[]string{"namespace", "group", "scene", "state"}, nil)}
	if err := m.reg.Register(c); err != nil {
		return fmt.Errorf("register scene metrics: %w", err)
	}
	return nil
}

// Describe implements prometheus.Collector.
func (c *sceneCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *sceneCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.read() {
		for _, st := range activeStates {
			if _, ok := s.States[st]; !ok {
				ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 0, s.Namespace, s.Group, s.Scene, st.String())
			}
		}
		for st, n := range s.States {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), s.Namespace, s.Group, s.Scene, st.String())
		}
	}
}

// read returns the figures, read again when the last read is older than the interval.
// Scrapes at once wait for one read.
func (c *sceneCollector) read() []SceneTasks {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.readAt.IsZero() && time.Since(c.readAt) < c.every {
		return c.last
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	got, err := c.source(ctx)
	c.readAt = time.Now()
	if err != nil {
		c.m.DatabaseError(err)
		c.m.log.Warn("metrics: read the scenes' task totals; serving the last read", "err", err)
		return c.last
	}
	c.last = got
	return got
}

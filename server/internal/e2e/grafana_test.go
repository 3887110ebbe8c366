package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/client-sdk/retryhub"
	"github.com/retryhub/retryhub/client-sdk/retryhub/prom"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// dashboardFile is the Grafana dashboard kept in the repository.
const dashboardFile = "../../../deploy/grafana/retryhub.json"

// metricName finds the metric names in a PromQL expression: the words of the prefixes the
// server and the SDK expose.
var metricName = regexp.MustCompile(`\b(?:retryhub|go|process)_[a-zA-Z0-9_:]*`)

// queries collects the PromQL of a dashboard: the panels' expressions and the variables'
// queries.
func queries(v any, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if s, ok := e.(string); ok && (k == "expr" || k == "definition") {
				*out = append(*out, s)
				continue
			}
			queries(e, out)
		}
	case []any:
		for _, e := range v {
			queries(e, out)
		}
	}
}

// exposes reports whether the families have the series name names: a family, or a histogram's
// _bucket, _sum or _count.
func exposes(fams map[string]*dto.MetricFamily, name string) bool {
	if fams[name] != nil {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if f := fams[base]; f != nil && (f.GetType() == dto.MetricType_HISTOGRAM || f.GetType() == dto.MetricType_SUMMARY) {
				return true
			}
		}
	}
	return false
}

// Every metric the Grafana dashboard queries is in a node's or an SDK client's exposition, and
// every retryhub metric of either has a panel.
func TestGrafanaDashboardQueriesExposedMetrics(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var exprs []string
	queries(dash, &exprs)
	used := map[string]bool{}
	for _, e := range exprs {
		for _, n := range metricName.FindAllString(e, -1) {
			used[n] = true
		}
	}
	if len(used) < 10 {
		t.Fatalf("the dashboard queries %d metrics: %v", len(used), exprs)
	}

	// A node with a task, so that it reports the tasks per scene.
	node := startNode(t, testConfig(storagetest.SQLite(t)), "n1")
	w := newWorld(t, node, 5, nil)
	if res := w.report(item(w.scene.Name, "order-1")); res[0].Status != protocol.ReportCreated {
		t.Fatalf("report: %+v", res[0])
	}
	fams := map[string]*dto.MetricFamily{}
	testkit.WaitUntil(t, 20*time.Second, "the node's metrics to show the scene's tasks", func() bool {
		status, body := scrape(t, node.URL(), "")
		if status != http.StatusOK {
			return false
		}
		fams = families(t, body)
		return fams["retryhub_tasks"] != nil
	})
	// An SDK client's collector, as an application registers it.
	c, err := retryhub.NewClient(retryhub.Config{Servers: []string{node.URL()}, Namespace: w.group.Namespace,
		Group: w.group.Name, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prom.NewCollector(c, nil))
	sdk, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range sdk {
		fams[f.GetName()] = f
	}

	var missing, unused []string
	for n := range used {
		if !exposes(fams, n) {
			missing = append(missing, n)
		}
	}
	for n, f := range fams {
		if !strings.HasPrefix(n, "retryhub_") {
			continue
		}
		shown := used[n]
		if f.GetType() == dto.MetricType_HISTOGRAM {
			shown = used[n+"_bucket"] || used[n+"_count"]
		}
		if !shown {
			unused = append(unused, n)
		}
	}
	slices.Sort(missing)
	slices.Sort(unused)
	if len(missing) > 0 {
		t.Errorf("the dashboard queries metrics nothing exposes: %v", missing)
	}
	if len(unused) > 0 {
		t.Errorf("metrics without a panel on the dashboard: %v", unused)
	}
}

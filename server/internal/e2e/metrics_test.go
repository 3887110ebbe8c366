package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/retryhub/retryhub/client-sdk/protocol"
	"github.com/retryhub/retryhub/server/internal/retry"
	"github.com/retryhub/retryhub/server/internal/storage/storagetest"
	"github.com/retryhub/retryhub/server/internal/testkit"
)

// scrape GETs url/metrics with the bearer token (none when empty) and returns the status and
// the body.
func scrape(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	return send(t, http.MethodGet, url+"/metrics", token, nil)
}

// families parses Prometheus' text format.
func families(t *testing.T, body []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse the metrics: %v\n%s", err, body)
	}
	return fams
}

// sample is the value of the series of the family with the labels (a histogram's count);
// ok is false when there is no such series.
func sample(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// promtoolCheck runs `promtool check metrics` on body when promtool is installed.
func promtoolCheck(t *testing.T, body []byte) {
	t.Helper()
	const path = "/usr/bin/promtool"
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("RETRYHUB_TEST_REQUIRE_PROMTOOL") != "" {
			t.Fatalf("RETRYHUB_TEST_REQUIRE_PROMTOOL is set and %s is missing (install Debian's prometheus package)", path)
		}
		t.Log("promtool is not installed (Debian's prometheus package has it); skipping promtool check metrics")
		return
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// A node's /metrics counts the report it stored and the replay it made, with the replay's lag
// and duration, the settlement batch, the tasks of the scene by state and the buckets it
// holds; promtool finds nothing wrong with it.
func TestMetricsCountAReportAndItsReplay(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, target storagetest.Target) {
		node := startNode(t, testConfig(target), "n1")
		w := newWorld(t, node, 5, nil)
		status, body := scrape(t, node.URL(), "")
		if status != http.StatusOK {
			t.Fatalf("/metrics: %d %s", status, body)
		}
		before := families(t, body)
		for _, name := range []string{"retryhub_reports_total", "retryhub_attempts_total", "retryhub_dispatch_lag_seconds",
			"retryhub_attempt_duration_seconds", "retryhub_settle_batch_duration_seconds", "retryhub_database_errors_total",
			"retryhub_buckets", "retryhub_buckets_held", "retryhub_dispatch_claims", "retryhub_dispatch_claim_bytes",
			"retryhub_leader", "retryhub_nodes", "retryhub_build_info", "go_goroutines"} {
			if before[name] == nil {
				t.Errorf("/metrics has no %s", name)
			}
		}
		if v, _ := sample(before, "retryhub_attempts_total", "kind", "replay", "outcome", "succeeded"); v != 0 {
			t.Fatalf("%v replays before any report", v)
		}

		in := testkit.NewInstance(t, testToken, testkit.Succeed)
		w.register("i1", in.URL(), 4)
		res := w.report(item(w.scene.Name, "order-1"))
		if res[0].Status != protocol.ReportCreated {
			t.Fatalf("report: %+v", res[0])
		}
		w.waitTask(res[0].TaskID, 10*time.Second, "succeeded", func(tk retry.Task) bool { return tk.State == retry.Succeeded })

		// The counters move as things happen; the tasks per scene are read again within 5 s.
		var fams map[string]*dto.MetricFamily
		testkit.WaitDescribed(t, 100*time.Millisecond, 20*time.Second, func() string {
			return fmt.Sprintf("the metrics to show the report and the replay:\n%s", body)
		}, func() bool {
			status, body = scrape(t, node.URL(), "")
			if status != http.StatusOK {
				return false
			}
			fams = families(t, body)
			done, _ := sample(fams, "retryhub_tasks", "namespace", w.group.Namespace, "group", w.group.Name,
				"scene", w.scene.Name, "state", "succeeded")
			held, _ := sample(fams, "retryhub_buckets_held")
			return done == 1 && held == 128
		})
		for _, c := range []struct {
			name   string
			labels []string
			want   float64
		}{
			{"retryhub_reports_total", []string{"result", "created"}, 1},
			{"retryhub_attempts_total", []string{"kind", "replay", "outcome", "succeeded"}, 1},
			{"retryhub_dispatch_lag_seconds", []string{"kind", "replay"}, 1},
			{"retryhub_attempt_duration_seconds", []string{"kind", "replay"}, 1},
			{"retryhub_tasks", []string{"scene", w.scene.Name, "state", "waiting"}, 0},
			{"retryhub_buckets", nil, 128},
			// A healthy run: a row not found, a key taken and the like are no errors.
			{"retryhub_database_errors_total", nil, 0},
		} {
			if v, ok := sample(fams, c.name, c.labels...); !ok || v != c.want {
				t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, v, ok, c.want)
			}
		}
		if v, _ := sample(fams, "retryhub_settle_batch_duration_seconds", "result", "ok"); v < 1 {
			t.Errorf("%v settlement batches written, want at least 1", v)
		}
		promtoolCheck(t, body)
	})
}

// metrics.token makes /metrics answer only scrapes that carry it; metrics.enabled off turns
// it off.
func TestMetricsTokenAndSwitch(t *testing.T) {
	target := storagetest.SQLite(t)
	cfg := testConfig(target)
	cfg.Metrics.Token = "scrape-secret"
	node := startNode(t, cfg, "n1")
	if status, _ := scrape(t, node.URL(), ""); status != http.StatusUnauthorized {
		t.Fatalf("/metrics without the token: %d, want 401", status)
	}
	if status, _ := scrape(t, node.URL(), "wrong"); status != http.StatusUnauthorized {
		t.Fatalf("/metrics with a wrong token: %d, want 401", status)
	}
	if status, body := scrape(t, node.URL(), "scrape-secret"); status != http.StatusOK || !strings.Contains(string(body), "retryhub_build_info") {
		t.Fatalf("/metrics with the token: %d %.200s", status, body)
	}

	cfg = testConfig(storagetest.SQLite(t))
	cfg.Metrics.Enabled = false
	off := startNode(t, cfg, "n2")
	if status, body := scrape(t, off.URL(), ""); status != http.StatusNotFound {
		t.Fatalf("/metrics turned off: %d %.200s, want 404", status, body)
	}
}

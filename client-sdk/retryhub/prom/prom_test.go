package prom_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/retryhub/retryhub/client-sdk/backoff"
	"github.com/retryhub/retryhub/client-sdk/retryhub"
	"github.com/retryhub/retryhub/client-sdk/retryhub/prom"
)

// The collector serves a client's counters as they are when scraped, and passes Prometheus'
// lint (and promtool's, when it is installed).
func TestCollectorServesTheClientsCounters(t *testing.T) {
	c, err := retryhub.NewClient(retryhub.Config{Servers: []string{"http://127.0.0.1:1"}, Namespace: "ns", Group: "g", Token: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	failed := false
	ship := retryhub.RetryableOn(c, "ship", func(context.Context, string) error {
		if !failed {
			failed = true
			return errors.New("carrier busy")
		}
		return nil
	}, retryhub.WithMode(retryhub.Local), retryhub.WithLocalAttempts(3),
		retryhub.WithLocalBackoff(backoff.Policy{Strategy: backoff.Fixed, Interval: backoff.Duration(time.Millisecond)}))
	reg := prometheus.NewRegistry()
	reg.MustRegister(prom.NewCollector(c, prometheus.Labels{"group": "ns/g"}))
	for range 2 {
		if err := ship(context.Background(), "order-1"); err != nil {
			t.Fatal(err)
		}
	}
	want := `
# HELP retryhub_client_calls_total Calls of the retryable functions.
# TYPE retryhub_client_calls_total counter
retryhub_client_calls_total{group="ns/g"} 2
# HELP retryhub_client_call_failures_total Calls of the retryable functions whose first attempt failed.
# TYPE retryhub_client_call_failures_total counter
retryhub_client_call_failures_total{group="ns/g"} 1
# HELP retryhub_client_local_retries_total Attempts after the first that ran in the process (local retries).
# TYPE retryhub_client_local_retries_total counter
retryhub_client_local_retries_total{group="ns/g"} 1
# HELP retryhub_client_report_queue Reports waiting for delivery to the server (the spool's depth, when there is one).
# TYPE retryhub_client_report_queue gauge
retryhub_client_report_queue{group="ns/g"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "retryhub_client_calls_total",
		"retryhub_client_call_failures_total", "retryhub_client_local_retries_total", "retryhub_client_report_queue"); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "retryhub_client_reports_total"); err != nil || n != 3 {
		t.Fatalf("reports_total: %d series (%v), want created, merged and rejected", n, err)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
	PromtoolCheck(t, reg)
}

// PromtoolCheck runs `promtool check metrics` on what reg gathers, when promtool is installed.
func PromtoolCheck(t *testing.T, reg prometheus.Gatherer) {
	t.Helper()
	path := "/usr/bin/promtool"
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("RETRYHUB_TEST_REQUIRE_PROMTOOL") != "" {
			t.Fatalf("RETRYHUB_TEST_REQUIRE_PROMTOOL is set and %s is missing (install Debian's prometheus package)", path)
		}
		t.Log("promtool is not installed (Debian's prometheus package has it); skipping promtool check metrics")
		return
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	enc := expfmt.NewEncoder(&text, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range fams {
		if err := enc.Encode(f); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = &text
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

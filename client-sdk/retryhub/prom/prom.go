// Package prom exposes a retryhub client's counters as Prometheus metrics. It is a package of
// its own so that the SDK itself does not depend on the Prometheus client; an application
// that serves metrics registers the collector in its own registry:
//
//	reg.MustRegister(prom.NewCollector(client))
//
// The metrics are read from the client's Stats when scraped:
//
//	retryhub_client_calls_total           calls of the retryable functions
//	retryhub_client_call_failures_total   calls whose first attempt failed
//	retryhub_client_local_retries_total   attempts after the first, run in the process
//	retryhub_client_reports_total{result} reports the server took (created, merged) or refused (rejected)
//	retryhub_client_report_queue          reports waiting for delivery (the spool's depth, when there is one)
//	retryhub_client_in_flight             replays and callbacks the executor runs now
//	retryhub_client_registered            1 while the server lists the instance
package prom

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/retryhub/retryhub/client-sdk/retryhub"
)

// Source is what the collector reads: a *retryhub.Client.
type Source interface {
	Stats() retryhub.Stats
}

// Collector is a prometheus.Collector of a client's counters.
type Collector struct {
	src                             Source
	calls, failed, retries, reports *prometheus.Desc
	queue, inFlight, registered     *prometheus.Desc
}

// NewCollector returns a collector of the client's counters. constLabels, when given, are
// added to every metric (to tell several clients of one process apart, say by group).
func NewCollector(src Source, constLabels prometheus.Labels) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("retryhub_client_"+name, help, labels, constLabels)
	}
	return &Collector{src: src,
		calls:      d("calls_total", "Calls of the retryable functions."),
		failed:     d("call_failures_total", "Calls of the retryable functions whose first attempt failed."),
		retries:    d("local_retries_total", "Attempts after the first that ran in the process (local retries)."),
		reports:    d("reports_total", "Reports of failed calls the server took (created a task or merged into one) or refused for good.", "result"),
		queue:      d("report_queue", "Reports waiting for delivery to the server (the spool's depth, when there is one)."),
		inFlight:   d("in_flight", "Replays and callbacks the client's executor runs now."),
		registered: d("registered", "1 while the server lists this client instance, else 0."),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.calls, c.failed, c.retries, c.reports, c.queue, c.inFlight, c.registered} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter(c.calls, st.Calls)
	counter(c.failed, st.Failed)
	counter(c.retries, st.LocalRetries)
	counter(c.reports, st.Delivered-st.Merged, "created")
	counter(c.reports, st.Merged, "merged")
	counter(c.reports, st.Rejected, "rejected")
	gauge(c.queue, st.Queued)
	gauge(c.inFlight, st.InFlight)
	registered := 0
	if st.Registered {
		registered = 1
	}
	gauge(c.registered, registered)
}

package spool

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics is one spool's collector; every series carries the output's name:
//
//	turnout_spool_bytes{output}                      bytes of the spool's segment files
//	turnout_spool_max_bytes{output}                  the configured max_bytes
//	turnout_spool_events{output}                     events spooled and not yet confirmed by the output
//	turnout_spool_oldest_event_age_seconds{output}   how long the oldest of them has waited (0: none)
//	turnout_spool_written_total{output}              events spooled (confirmed to the engine)
//	turnout_spool_forwarded_total{output}            events the output confirmed
//	turnout_spool_forward_errors_total{output}       failed forwarding attempts (each is retried)
//	turnout_spool_full_total{output,action}          events refused by a full spool: action
//	                                                 "blocked" (when_full: block; each event
//	                                                 counted once) or "dead_lettered"
//	turnout_spool_rejected_total{output}             events the output refused for good, kept in
//	                                                 rejected.jsonl
//	turnout_spool_write_errors_total{output}         failed writes and fsyncs of the log
//	turnout_spool_discarded_bytes_total{output}      bytes found damaged or torn and cut off
//	turnout_spool_fsync_seconds{output}              fsync durations
type metrics struct {
	s *Spool

	bytes, maxBytes, events, oldest *prometheus.Desc

	written, forwarded, forwardErrors, rejected, writeErrors, discarded prometheus.Counter
	fullBlocked, fullDeadLettered                                       prometheus.Counter
	fsync                                                               prometheus.Histogram
}

var _ prometheus.Collector = (*metrics)(nil)

func newMetrics(s *Spool) *metrics {
	labels := prometheus.Labels{"output": s.name}
	gauge := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, nil, labels)
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels})
	}
	full := func(action string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "turnout_spool_full_total",
			Help:        "Events refused by a full spool: blocked (when_full: block, each counted once) or dead_lettered.",
			ConstLabels: prometheus.Labels{"output": s.name, "action": action},
		})
	}
	return &metrics{
		s:        s,
		bytes:    gauge("turnout_spool_bytes", "Bytes of the spool's segment files on disk."),
		maxBytes: gauge("turnout_spool_max_bytes", "The spool's configured max_bytes."),
		events:   gauge("turnout_spool_events", "Events spooled and not yet confirmed by the output."),
		oldest:   gauge("turnout_spool_oldest_event_age_seconds", "How long the oldest event waiting in the spool has waited (0 when none is)."),
		written:  counter("turnout_spool_written_total", "Events written to the spool (confirmed to the engine)."),
		forwarded: counter("turnout_spool_forwarded_total",
			"Events the spool forwarded and the output confirmed."),
		forwardErrors: counter("turnout_spool_forward_errors_total",
			"Failed attempts to forward a spooled event (each is retried)."),
		rejected: counter("turnout_spool_rejected_total",
			"Spooled events the output refused for good, kept in the spool's rejected.jsonl."),
		writeErrors: counter("turnout_spool_write_errors_total", "Failed writes and fsyncs of the spool's log."),
		discarded: counter("turnout_spool_discarded_bytes_total",
			"Bytes of the spool's log found torn or damaged and cut off."),
		fullBlocked:      full("blocked"),
		fullDeadLettered: full("dead_lettered"),
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "turnout_spool_fsync_seconds", Help: "Duration of the spool's fsyncs.",
			ConstLabels: labels, Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9),
		}),
	}
}

func (m *metrics) counters() []prometheus.Collector {
	return []prometheus.Collector{m.written, m.forwarded, m.forwardErrors, m.rejected, m.writeErrors,
		m.discarded, m.fullBlocked, m.fullDeadLettered, m.fsync}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.bytes
	ch <- m.maxBytes
	ch <- m.events
	ch <- m.oldest
	for _, c := range m.counters() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector; it is called on the scraping goroutine.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	s := m.s
	ch <- prometheus.MustNewConstMetric(m.bytes, prometheus.GaugeValue, float64(s.usedBytes()))
	ch <- prometheus.MustNewConstMetric(m.maxBytes, prometheus.GaugeValue, float64(s.cfg.maxBytes))
	ch <- prometheus.MustNewConstMetric(m.events, prometheus.GaugeValue, float64(s.events.Load()))
	ch <- prometheus.MustNewConstMetric(m.oldest, prometheus.GaugeValue, s.oldestAge().Seconds())
	for _, c := range m.counters() {
		c.Collect(ch)
	}
}

package engine

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// nackReason classifies a settlement; reasonAck (0) is an acknowledgement. The values index the
// pre-resolved nacked counters of an input, so the hot path does no label lookups.
type nackReason uint8

const (
	reasonAck nackReason = iota
	// reasonMalformed: the message was not a valid CloudEvent and there is no dead-letter output.
	reasonMalformed
	// reasonRule: the rule failed (or decided ActionFail / an invalid decision) and the policy
	// is nack, or it is dead-letter without a dead-letter output.
	reasonRule
	// reasonOutput: an output exhausted its attempts and there is no dead-letter output.
	reasonOutput
	// reasonDeadLetter: the dead-letter output failed too.
	reasonDeadLetter
	// reasonShutdown: the drain deadline passed and the delivery was cancelled.
	reasonShutdown
	nReasons
)

var reasonLabels = [nReasons]string{"", "malformed", "rule", "output", "dead-letter", "shutdown"}

// Dead-letter reasons (turnout_events_dead_lettered_total{reason}).
const (
	dlMalformed = iota
	dlRule
	dlOutput
	nDL
)

var dlLabels = [nDL]string{"malformed", "rule", "output"}

// Send failure reasons (turnout_delivery_failures_total{reason}).
const (
	failTimeout = iota
	failPermanent
	failError
	nFail
)

var failLabels = [nFail]string{"timeout", "permanent", "error"}

// Rule decision labels (turnout_rule_decisions_total{action}); "error" is a failed Decide.
const (
	decDrop = iota
	decRoute
	decFail
	decError
	nDec
)

var decLabels = [nDec]string{"drop", "route", "fail", "error"}

// metrics holds the engine's collectors:
//
//	turnout_events_received_total{route,input}         messages Dispatch accepted
//	turnout_events_acked_total{route,input}            settled with nil
//	turnout_events_nacked_total{route,input,reason}    settled with an error; reason is malformed,
//	                                                   rule, output, dead-letter or shutdown
//	turnout_events_dropped_total{route}                acked without delivery (rule drop, or
//	                                                   on_rule_error: drop)
//	turnout_events_routed_total{route,output}          sends an output confirmed
//	turnout_events_dead_lettered_total{route,reason}   dead letters confirmed; reason is malformed,
//	                                                   rule or output
//	turnout_delivery_retries_total{route,output}       attempts after the first
//	turnout_delivery_failures_total{route,output,reason} failed attempts; timeout, permanent, error
//	turnout_events_in_flight{route,input}              messages holding an in-flight slot
//	turnout_ack_latency_seconds{route}                 Dispatch to settlement
//	turnout_rule_decisions_total{route,action}         drop, route, fail, error
//
// Dead-letter sends count under the dead-letter output's name in the per-output metrics. Label values are route, input and output names and
// fixed reason sets, so cardinality is bounded by the configuration.
type metrics struct {
	received     *prometheus.CounterVec
	acked        *prometheus.CounterVec
	nacked       *prometheus.CounterVec
	dropped      *prometheus.CounterVec
	routed       *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	retries      *prometheus.CounterVec
	failures     *prometheus.CounterVec
	inFlight     *prometheus.GaugeVec
	ackLatency   *prometheus.HistogramVec
	decisions    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turnout_events_received_total",
			Help: "Input messages dispatched to the engine."}, []string{"route", "input"}),
		acked: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turnout_events_acked_total",
			Help: "Input messages settled with an acknowledgement."}, []string{"route", "input"}),
		nacked: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turnout_events_nacked_total",
			Help: "Input messages rejected for redelivery, by reason (malformed, rule, output, dead-letter, shutdown)."},
			[]string{"route", "input", "reason"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turnout_events_dropped_total",
			Help: "Events acknowledged without delivery: the rule decided drop, or it failed under on_rule_error: drop."},
			[]string{"route"}),
		routed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turnout_events_routed_total",
			Help: "Events an output confirmed."}, []string{"route", "output"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turnout_events_dead_lettered_total",
			Help: "Events the dead-letter output confirmed, by reason (malformed, rule, output)."},
			[]string{"route", "reason"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turnout_delivery_retries_total",
			Help: "Send attempts after the first, per output."}, []string{"route", "output"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turnout_delivery_failures_total",
			Help: "Failed Send attempts, by reason (timeout, permanent, error)."},
			[]string{"route", "output", "reason"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "turnout_events_in_flight",
			Help: "Input messages holding an in-flight slot (dispatched, not yet released)."},
			[]string{"route", "input"}),
		ackLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "turnout_ack_latency_seconds",
			Help:    "Time from Dispatch to settlement.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"route"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turnout_rule_decisions_total",
			Help: "Rule decisions, by action (drop, route, fail, error)."}, []string{"route", "action"}),
	}
	var err error
	m.received = register(reg, m.received, &err)
	m.acked = register(reg, m.acked, &err)
	m.nacked = register(reg, m.nacked, &err)
	m.dropped = register(reg, m.dropped, &err)
	m.routed = register(reg, m.routed, &err)
	m.deadLettered = register(reg, m.deadLettered, &err)
	m.retries = register(reg, m.retries, &err)
	m.failures = register(reg, m.failures, &err)
	m.inFlight = register(reg, m.inFlight, &err)
	m.ackLatency = register(reg, m.ackLatency, &err)
	m.decisions = register(reg, m.decisions, &err)
	return m, err
}

// register registers c on reg, or returns the collector already registered under the same
// description (two engines sharing a registry share their collectors).
func register[C prometheus.Collector](reg prometheus.Registerer, c C, errp *error) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		if *errp == nil {
			*errp = err
		}
	}
	return c
}

// inputMetrics are an input's pre-resolved children.
type inputMetrics struct {
	received prometheus.Counter
	acked    prometheus.Counter
	nacked   [nReasons]prometheus.Counter
	inFlight prometheus.Gauge
}

func (m *metrics) forInput(route, input string) inputMetrics {
	im := inputMetrics{
		received: m.received.WithLabelValues(route, input),
		acked:    m.acked.WithLabelValues(route, input),
		inFlight: m.inFlight.WithLabelValues(route, input),
	}
	for i := reasonMalformed; i < nReasons; i++ {
		im.nacked[i] = m.nacked.WithLabelValues(route, input, reasonLabels[i])
	}
	return im
}

// routeMetrics are a route's pre-resolved children.
type routeMetrics struct {
	dropped      prometheus.Counter
	deadLettered [nDL]prometheus.Counter
	ackLatency   prometheus.Observer
	decisions    [nDec]prometheus.Counter
}

func (m *metrics) forRoute(route string) routeMetrics {
	rm := routeMetrics{
		dropped:    m.dropped.WithLabelValues(route),
		ackLatency: m.ackLatency.WithLabelValues(route),
	}
	for i := range rm.deadLettered {
		rm.deadLettered[i] = m.deadLettered.WithLabelValues(route, dlLabels[i])
	}
	for i := range rm.decisions {
		rm.decisions[i] = m.decisions.WithLabelValues(route, decLabels[i])
	}
	return rm
}

// outputMetrics are the pre-resolved children of one output of one route.
type outputMetrics struct {
	routed   prometheus.Counter
	retries  prometheus.Counter
	failures [nFail]prometheus.Counter
}

func (m *metrics) forOutput(route, output string) outputMetrics {
	om := outputMetrics{
		routed:  m.routed.WithLabelValues(route, output),
		retries: m.retries.WithLabelValues(route, output),
	}
	for i := range om.failures {
		om.failures[i] = m.failures.WithLabelValues(route, output, failLabels[i])
	}
	return om
}

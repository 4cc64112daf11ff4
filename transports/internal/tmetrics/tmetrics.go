// Package tmetrics holds the metric plumbing the transports share: registering a collector on
// the process's registry or reusing the one another input or output already registered, and the
// turnout_transport_connected gauge every transport reports.
//
// Invariant: two transports asking for the same metric family get the same collector, so a
// family is registered once per registry whatever the number of inputs and outputs.
package tmetrics

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// RegisterOrReuse registers c on reg, or returns the collector of the same description that is
// already registered there (several inputs and outputs share one vector). reg may be nil: c is
// then returned unregistered.
func RegisterOrReuse[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return c, fmt.Errorf("register metrics: %w", err)
		}
		existing, ok := are.ExistingCollector.(C)
		if !ok {
			return c, fmt.Errorf("register metrics: existing collector is a %T", are.ExistingCollector)
		}
		return existing, nil
	}
	return c, nil
}

// ConnectedGauge returns the turnout_transport_connected{transport, name} gauge, set to 0.
func ConnectedGauge(reg prometheus.Registerer, transport, name string) (prometheus.Gauge, error) {
	vec, err := RegisterOrReuse(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "turnout_transport_connected",
		Help: "1 while the transport is connected or listening, 0 otherwise.",
	}, []string{"transport", "name"}))
	if err != nil {
		return nil, err
	}
	g := vec.WithLabelValues(transport, name)
	g.Set(0)
	return g, nil
}

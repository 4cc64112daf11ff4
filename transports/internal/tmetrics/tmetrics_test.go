package tmetrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/internal/testutil"
)

func TestConnectedGaugeIsShared(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := ConnectedGauge(reg, "amqp", "in")
	if err != nil {
		t.Fatal(err)
	}
	b, err := ConnectedGauge(reg, "mqtt", "out")
	if err != nil {
		t.Fatalf("second transport on the same registry: %v", err)
	}
	a.Set(1)
	b.Set(1)
	if v := testutil.Metric(t, reg, "turnout_transport_connected", nil); v != 2 {
		t.Errorf("sum over both series = %v, want 2", v)
	}
	if _, err := ConnectedGauge(nil, "amqp", "x"); err != nil {
		t.Errorf("nil registerer: %v", err)
	}
}

func TestRegisterOrReuseConflict(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := RegisterOrReuse(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "x_total", Help: "h"})); err != nil {
		t.Fatal(err)
	}
	if _, err := RegisterOrReuse(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "h"}, []string{"l"})); err == nil {
		t.Error("a different collector under the same name was accepted")
	}
}

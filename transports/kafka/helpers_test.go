package kafka

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/internal/reconnect"
	"github.com/turnout-router/turnout/transports/kafka/kafkatest"
)

func testDeps() engine.Deps {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return engine.Deps{Logger: log, Registerer: prometheus.NewRegistry()}
}

func fastConn(c *kafkatest.Cluster) ConnectionConfig {
	return ConnectionConfig{Brokers: c.Seeds(), Settings: reconnect.Fast}
}

// startOutput builds and starts an output; the test's cleanup closes it.
func startOutput(t testing.TB, cfg OutputConfig) *Output {
	t.Helper()
	o, err := newOutput("out", cfg, testDeps())
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Close(context.Background()) })
	waitFor(t, "output connected", o.Ready)
	return o
}

// startInput builds and starts an input with a fresh Dispatcher; the test's cleanup closes it.
// The returned func closes it earlier, with a short deadline, as a consumer going away with
// records unsettled would.
func startInput(t testing.TB, cfg InputConfig) (*Input, *testutil.Dispatcher, func()) {
	t.Helper()
	in, err := newInput("in", cfg, testDeps())
	if err != nil {
		t.Fatal(err)
	}
	d := testutil.NewDispatcher()
	if err := in.Start(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = in.Close(ctx)
	}
	t.Cleanup(stop)
	waitFor(t, "input connected", in.Ready)
	return in, d, stop
}

// waitFor polls cond until it holds, failing the test after 30s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, what, 30*time.Second, cond)
}

package engine_test

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/engine/enginetest"
)

// fastRetry retries quickly so tests of exhaustion take milliseconds.
var fastRetry = engine.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, Timeout: 2 * time.Second}

// env is one running engine with one route "r" fed by input "in".
type env struct {
	e    *engine.Engine
	reg  *prometheus.Registry
	src  *enginetest.Source
	outs map[string]*enginetest.Sink
	dl   *enginetest.Sink
}

// setup builds and starts an engine with one route named "r", input "in" and the given outputs
// (each an enginetest.Sink). dl adds a dead-letter output named "dlq". It shuts the engine down
// at cleanup.
func setup(t testing.TB, cfg engine.RouteConfig, rule engine.Rule, outs map[string]*enginetest.Sink, dl *enginetest.Sink, src *enginetest.Source) *env {
	t.Helper()
	return setupOpts(t, engine.Options{}, cfg, rule, outs, dl, src)
}

// setupOpts is setup with engine options; its Registerer is replaced by the env's registry.
func setupOpts(t testing.TB, o engine.Options, cfg engine.RouteConfig, rule engine.Rule, outs map[string]*enginetest.Sink, dl *enginetest.Sink, src *enginetest.Source) *env {
	t.Helper()
	if src == nil {
		src = &enginetest.Source{}
	}
	cfg.Name = "r"
	if cfg.Retry == (engine.RetryPolicy{}) {
		cfg.Retry = fastRetry
	}
	reg := prometheus.NewRegistry()
	o.Registerer = reg
	e := engine.New(o)
	r := engine.Route{Config: cfg, Inputs: map[string]engine.Source{"in": src}, Outputs: map[string]engine.Sink{}, Rule: rule}
	for name, s := range outs {
		r.Outputs[name] = s
	}
	if dl != nil {
		r.DeadLetter, r.DeadLetterName = dl, "dlq"
	}
	if err := e.AddRoute(r); err != nil {
		t.Fatalf("AddRoute: %v", err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
	})
	return &env{e: e, reg: reg, src: src, outs: outs, dl: dl}
}

// wait waits for st to settle and returns its error.
func wait(t testing.TB, st *enginetest.Settlement) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err, ok := st.Wait(ctx)
	if !ok {
		t.Fatalf("message %d not settled within 10s", st.Seq)
	}
	return err
}

// metricNames lists label sets of name, for failure messages.
func metricDump(t testing.TB, reg *prometheus.Registry, name string) string {
	mfs, _ := reg.Gather()
	var out []string
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, lp := range m.GetLabel() {
				ls = append(ls, lp.GetName()+"="+lp.GetValue())
			}
			out = append(out, strings.Join(ls, ","))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

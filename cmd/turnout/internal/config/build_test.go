package config

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/testutil"
)

// stampRule routes to "out" and stamps its version on the event; it records its Close.
type stampRule struct {
	version string
	closes  int
}

func (r *stampRule) Version() string { return r.version }

func (r *stampRule) Decide(_ context.Context, e *event.Event) (engine.Decision, error) {
	out := e.Clone()
	out.SetExtension("ruleversion", r.version)
	return engine.Decision{Action: engine.ActionRoute, Outputs: []string{"out"}, Event: &out}, nil
}

func (r *stampRule) Close(context.Context) error { r.closes++; return nil }

// TestBuildRuleSwitch checks that a route's loaded rule runs behind the route's switch, which
// Built exposes by route name, so that a new version can be swapped in while the route runs;
// CloseRules closes the active version and the replaced one closes once released.
func TestBuildRuleSwitch(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rule.wasm"), []byte("\x00asm"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(filepath.Join(dir, "t.yaml"), doc(validDoc+"    rule: { file: rule.wasm }\n"), Options{LookupEnv: noEnv})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	loaded := &stampRule{version: "v1"}
	reg := prometheus.NewRegistry()
	b, err := Build(context.Background(), cfg, BuildOptions{
		Deps:     engine.Deps{Registerer: reg},
		LoadRule: func(context.Context, *Route, []byte) (engine.Rule, error) { return loaded, nil },
	})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	sw := b.Switches["r"]
	if sw == nil || len(b.Routes) != 1 || b.Routes[0].Rule != engine.Rule(sw) {
		t.Fatalf("route r does not run behind its switch: switches %v, routes %+v", b.Switches, b.Routes)
	}
	if got := testutil.Metric(t, reg, "turnout_rule_active_version", map[string]string{"route": "r", "version": "v1"}); got != 1 {
		t.Errorf("active version gauge = %v, want 1", got)
	}
	next := &stampRule{version: "v2"}
	prev, err := sw.Swap(engine.NewRuleVersion(next, engine.RuleVersionOptions{}))
	if err != nil || prev.ID() != "v1" {
		t.Fatalf("Swap = %v, %v", prev, err)
	}
	e := event.New()
	d, err := b.Routes[0].Rule.Decide(context.Background(), &e)
	if err != nil || d.Event.Extensions()["ruleversion"] != "v2" {
		t.Errorf("after the swap the route decides with %v (%v), want v2", d.Event, err)
	}
	if err := prev.Release(context.Background()); err != nil || loaded.closes != 1 {
		t.Errorf("release of the replaced version = %v, closes %d", err, loaded.closes)
	}
	if err := b.CloseAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if next.closes != 1 {
		t.Errorf("CloseRules closed the active version %d times, want 1", next.closes)
	}
}

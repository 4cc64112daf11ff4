package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/cmd/turnout/internal/config"
	"github.com/turnout-router/turnout/cmd/turnout/internal/rulestore"
	"github.com/turnout-router/turnout/hostabi"
	"github.com/turnout-router/turnout/internal/rulebuild"
)

// TestStoredRuleLoaderRefusal: a stored active version that no longer loads with the route's
// options stops the start with an error saying which version was loaded, and how to start from
// the configured file instead.
func TestStoredRuleLoaderRefusal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Wasm rule with the Go toolchain; run without -short")
	}
	ctx := context.Background()
	pass, err := rulebuild.Build("filters/rules/passthrough")
	if err != nil {
		t.Fatal(err)
	}
	host, err := hostabi.NewHost(ctx, hostabi.Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close(ctx)
	store, err := rulestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rep := rulestore.Validate(ctx, host, pass, hostabi.RuleOptions{Name: "care", Config: []byte(`{"outputs":["a"]}`)}, nil)
	v, _, err := store.Put(pass, rep, rulestore.Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Activate("care", v.SHA256, "ana"); err != nil {
		t.Fatal(err)
	}
	load := storedRuleLoader(host, store, slog.New(slog.DiscardHandler))
	route := &config.Route{Name: "care", Rule: &config.Rule{Path: "rule.wasm", ConfigJSON: []byte(`{"filters":[]}`)}}
	_, err = load(ctx, route, []byte("the configured file is not read"))
	var le *hostabi.LoadError
	if !errors.As(err, &le) || le.Code != hostabi.CodeInitFailed ||
		!strings.Contains(err.Error(), "stored active version "+v.SHA256+` (activated by "ana"`) ||
		!strings.Contains(err.Error(), "remove the route's file under "+store.Dir()) {
		t.Errorf("load = %v, want init_failed naming the stored version and the way out", err)
	}

	route.Rule.ConfigJSON = []byte(`{"outputs":["b"]}`)
	rule, err := load(ctx, route, []byte("the configured file is not read"))
	if err != nil {
		t.Fatalf("load with a configuration the stored version accepts: %v", err)
	}
	if r := rule.(*hostabi.Rule); !strings.HasPrefix(v.SHA256, r.Version()) {
		t.Errorf("loaded version %s, want the stored %s", r.Version(), v.SHA256)
	}
	_ = rule.(*hostabi.Rule).Close(ctx)
}

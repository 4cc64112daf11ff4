package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/engine/enginetest"
)

// failingStarter is a Sink whose Start fails.
type failingStarter struct{ enginetest.Sink }

func (f *failingStarter) Start(context.Context) error { return errors.New("connection refused") }

func TestOptions(t *testing.T) {
	t.Run("nil registerer never touches the global registry", func(t *testing.T) {
		for range 2 { // a second engine must not collide with the first
			e := engine.New(engine.Options{})
			if err := e.AddRoute(engine.Route{Config: engine.RouteConfig{Name: "r", DefaultOutputs: []string{"a"}},
				Inputs: map[string]engine.Source{"in": &enginetest.Source{}}, Outputs: map[string]engine.Sink{"a": &enginetest.Sink{}}}); err != nil {
				t.Fatal(err)
			}
		}
		mfs, err := prometheus.DefaultGatherer.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if strings.HasPrefix(mf.GetName(), "turnout_") {
				t.Errorf("%s registered on the global registry", mf.GetName())
			}
		}
	})
	t.Run("engines sharing a registerer", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		for _, name := range []string{"r1", "r2"} {
			e := engine.New(engine.Options{Registerer: reg})
			if err := e.AddRoute(engine.Route{Config: engine.RouteConfig{Name: name, DefaultOutputs: []string{"a"}},
				Inputs: map[string]engine.Source{"in": &enginetest.Source{}}, Outputs: map[string]engine.Sink{"a": &enginetest.Sink{}}}); err != nil {
				t.Fatalf("route %s: %v", name, err)
			}
		}
	})
	t.Run("start failure names the output and shutdown still closes everything", func(t *testing.T) {
		bad := &failingStarter{}
		src := &enginetest.Source{}
		e := engine.New(engine.Options{})
		if err := e.AddRoute(engine.Route{Config: engine.RouteConfig{Name: "r", DefaultOutputs: []string{"broken"}},
			Inputs: map[string]engine.Source{"in": src}, Outputs: map[string]engine.Sink{"broken": bad}}); err != nil {
			t.Fatal(err)
		}
		err := e.Start(context.Background())
		if err == nil || !strings.Contains(err.Error(), "broken") || !strings.Contains(err.Error(), "connection refused") {
			t.Fatalf("Start returned %v, want an error naming output broken", err)
		}
		if src.Starts() != 0 {
			t.Error("source started although an output failed to start")
		}
		if err := e.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if bad.Closes() != 1 || src.Closes() != 1 {
			t.Errorf("closes: output %d, source %d; want 1 each", bad.Closes(), src.Closes())
		}
	})
}

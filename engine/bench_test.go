package engine_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/engine/enginetest"
)

// benchSource only hands its Dispatcher to the benchmark.
type benchSource struct{ d engine.Dispatcher }

func (s *benchSource) Start(_ context.Context, d engine.Dispatcher) error { s.d = d; return nil }
func (s *benchSource) Close(context.Context) error                        { return nil }

// countSink confirms every event at once and counts it.
type countSink struct{ n atomic.Int64 }

func (s *countSink) Send(context.Context, *event.Event) error { s.n.Add(1); return nil }
func (s *countSink) Close(context.Context) error              { return nil }

// BenchmarkEngine measures at-least-once throughput from an in-memory source through a
// pass-through rule to in-memory sinks, with 256 messages in flight.
func BenchmarkEngine(b *testing.B) {
	for _, bc := range []struct {
		name    string
		outputs []string
	}{
		{"single", []string{"a"}},
		{"fanout3", []string{"a", "b", "c"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			src := &benchSource{}
			sinks := map[string]engine.Sink{}
			for _, o := range bc.outputs {
				sinks[o] = &countSink{}
			}
			e := engine.New(engine.Options{Registerer: prometheus.NewRegistry()})
			err := e.AddRoute(engine.Route{Config: engine.RouteConfig{Name: "bench", MaxInFlight: 256},
				Inputs: map[string]engine.Source{"in": src}, Outputs: sinks, Rule: enginetest.RouteTo(bc.outputs...)})
			if err != nil {
				b.Fatal(err)
			}
			if err := e.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer e.Shutdown(context.Background())
			ev := enginetest.NewEvent("bench", map[string]string{"resident": "r-17", "alarm": "fall"})
			m := &engine.Message{Event: ev}
			var wg sync.WaitGroup
			var nacks atomic.Int64
			settle := func(err error) {
				if err != nil {
					nacks.Add(1)
				}
				wg.Done()
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			wg.Add(b.N)
			for range b.N {
				if err := src.d.Dispatch(ctx, m, settle); err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			if n := nacks.Load(); n != 0 {
				b.Fatalf("%d nacks", n)
			}
			for name, s := range sinks {
				if got := s.(*countSink).n.Load(); got != int64(b.N) {
					b.Fatalf("output %s got %d events, want %d", name, got, b.N)
				}
			}
		})
	}
}

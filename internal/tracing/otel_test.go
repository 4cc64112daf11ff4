//go:build otel

package tracing

import (
	"context"
	"errors"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/engine/enginetest"
)

// TestSampling: a new trace follows sample_ratio, an event's traceparent decides for itself.
func TestSampling(t *testing.T) {
	for _, tc := range []struct {
		name        string
		ratio       float64
		traceparent string
		want        bool
	}{
		{"no parent, ratio 1", 1, "", true},
		{"no parent, ratio 0", 0, "", false},
		{"sampled parent, ratio 0", 0, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
		{"unsampled parent, ratio 1", 1, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", false},
		{"invalid parent, ratio 1", 1, "00-zz-00f067aa0ba902b7-01", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec),
				sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(tc.ratio))))
			ev := enginetest.NewEvent("e1", nil)
			if tc.traceparent != "" {
				ev.SetExtension("traceparent", tc.traceparent)
			}
			_, end := newTracer(tp).Start(context.Background(), engine.StageReceive, engine.SpanInfo{Route: "r", Input: "in", Event: ev})
			end(errors.New("refused"))
			got := rec.Ended()
			if (len(got) == 1) != tc.want {
				t.Fatalf("%d spans recorded, want sampled=%v", len(got), tc.want)
			}
			if tc.want && got[0].Status().Description != "refused" {
				t.Errorf("span status %+v, want the error", got[0].Status())
			}
		})
	}
}

// BenchmarkTracedEvent is what tracing adds to one event that a rule routes to one output: the
// receive, rule and deliver spans, handed to a batch processor whose exporter discards them.
// sampled: the event's traceparent says sampled; unsampled: a new trace at sample_ratio 0.
func BenchmarkTracedEvent(b *testing.B) {
	for _, bc := range []struct {
		name        string
		traceparent string
	}{
		{"sampled", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{"unsampled", ""},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0))),
				sdktrace.WithBatcher(tracetest.NewNoopExporter(), sdktrace.WithMaxQueueSize(maxQueue)))
			defer tp.Shutdown(context.Background())
			tr := newTracer(tp)
			ev := enginetest.NewEvent("e1", nil)
			if bc.traceparent != "" {
				ev.SetExtension("traceparent", bc.traceparent)
			}
			b.ReportAllocs()
			for b.Loop() {
				ctx, endReceive := tr.Start(context.Background(), engine.StageReceive, engine.SpanInfo{Route: "r", Input: "in", Event: ev})
				_, endRule := tr.Start(ctx, engine.StageRule, engine.SpanInfo{Route: "r", Event: ev})
				endRule(nil)
				_, endDeliver := tr.Start(ctx, engine.StageDeliver, engine.SpanInfo{Route: "r", Output: "out", Event: ev})
				endDeliver(nil)
				endReceive(nil)
			}
		})
	}
}

//go:build otel

package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/ce"
)

// Available reports whether this build carries the OpenTelemetry exporter (build tag otel).
const Available = true

// maxQueue bounds the spans waiting for export; beyond it spans are dropped, never events.
const maxQueue = 8192

// Tracer is the engine.Tracer that records spans with the OpenTelemetry SDK.
type Tracer struct {
	tr   trace.Tracer
	prop propagation.TraceContext
}

var _ engine.Tracer = (*Tracer)(nil)

// New starts an OTLP/HTTP exporter for c and returns the Tracer, and the function that flushes
// and stops the exporter at shutdown. For a disabled c it returns a nil Tracer. version is
// service.version. Export errors go to logger, at most one a minute.
func New(ctx context.Context, c Config, version string, logger *slog.Logger) (engine.Tracer, func(context.Context) error, error) {
	if !c.Enabled() {
		return nil, func(context.Context) error { return nil }, nil
	}
	c = c.withDefaults()
	exp, err := otlptracehttp.New(ctx,
		otlptracehttp.WithEndpointURL(c.Endpoint+"/v1/traces"),
		otlptracehttp.WithHeaders(c.Headers),
		otlptracehttp.WithTimeout(c.Timeout))
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: OTLP exporter for %s: %w", c.Endpoint, err)
	}
	res := resource.NewSchemaless(
		attribute.String("service.name", c.ServiceName),
		attribute.String("service.version", version))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(*c.SampleRatio))),
		sdktrace.WithBatcher(exp, sdktrace.WithMaxQueueSize(maxQueue), sdktrace.WithBatchTimeout(2*time.Second)))
	var last atomic.Int64
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		now := time.Now().UnixNano()
		if prev := last.Load(); now-prev > int64(time.Minute) && last.CompareAndSwap(prev, now) {
			logger.Warn("tracing: span export failed (spans are dropped, events are not)", "endpoint", c.Endpoint, "err", err)
		}
	}))
	logger.Info("tracing on", "endpoint", c.Endpoint, "sample_ratio", *c.SampleRatio, "service_name", c.ServiceName)
	return newTracer(tp), tp.Shutdown, nil
}

func newTracer(tp trace.TracerProvider) *Tracer {
	return &Tracer{tr: tp.Tracer("github.com/turnout-router/turnout/engine")}
}

// spanKinds and spanNames are indexed by engine.Stage.
var (
	spanKinds = [...]trace.SpanKind{trace.SpanKindConsumer, trace.SpanKindInternal, trace.SpanKindProducer, trace.SpanKindProducer}
	spanNames = [...]string{"turnout receive", "turnout rule", "turnout deliver", "turnout dead-letter"}
)

// Start implements engine.Tracer. A receive span takes its parent from the event's traceparent
// and tracestate extensions (the CloudEvents distributed tracing extension), so turnout's spans
// join the trace the event's producer started; the other stages are children of the receive
// span in ctx.
func (t *Tracer) Start(ctx context.Context, stage engine.Stage, info engine.SpanInfo) (context.Context, func(error)) {
	if stage == engine.StageReceive && info.Event != nil {
		ctx = t.prop.Extract(ctx, extensionCarrier{info.Event})
	}
	name, kind := "turnout", trace.SpanKindInternal
	if int(stage) < len(spanNames) {
		name, kind = spanNames[stage], spanKinds[stage]
	}
	ctx, span := t.tr.Start(ctx, name, trace.WithSpanKind(kind))
	if !span.IsRecording() {
		// Not sampled: the span only carries the context to the stages below; skip the attributes.
		return ctx, func(error) { span.End() }
	}
	attrs := make([]attribute.KeyValue, 0, 6)
	attrs = append(attrs, attribute.String("turnout.route", info.Route))
	if info.Input != "" {
		attrs = append(attrs, attribute.String("turnout.input", info.Input))
	}
	if info.Output != "" {
		attrs = append(attrs, attribute.String("turnout.output", info.Output))
	}
	if e := info.Event; e != nil {
		attrs = append(attrs,
			attribute.String("cloudevents.event_id", e.ID()),
			attribute.String("cloudevents.event_source", e.Source()),
			attribute.String("cloudevents.event_type", e.Type()))
	}
	span.SetAttributes(attrs...)
	return ctx, func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}

// extensionCarrier reads the trace context from an event's extensions; it never writes them.
type extensionCarrier struct{ e *event.Event }

func (c extensionCarrier) Get(key string) string { return ce.AttrString(c.e, key) }
func (c extensionCarrier) Set(string, string)    {}
func (c extensionCarrier) Keys() []string        { return []string{"traceparent", "tracestate"} }

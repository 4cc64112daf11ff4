// Package tracing exports OpenTelemetry spans of turnout's deliveries over OTLP/HTTP: it
// implements engine.Tracer. It is compiled in only with the build tag otel (make build
// TAGS=otel); a build without it has New refuse a tracing configuration with a message that
// says so, and carries no OpenTelemetry code (docs/RATIONALE.md, "Tracing behind a build tag").
//
// Invariant: tracing never changes an event and never holds one up. The CloudEvents distributed
// tracing extension (traceparent, tracestate) is read to parent a delivery's spans and passed to
// the outputs unchanged; spans are queued to a bounded exporter that drops spans, not events,
// when the collector is slow or away.
package tracing

import (
	"fmt"
	"net/url"
	"time"
)

// Config is the tracing block of turnout.yaml.
type Config struct {
	// Endpoint is the OTLP/HTTP collector's base URL (http://collector:4318); spans are posted to
	// Endpoint/v1/traces. Empty turns tracing off (the default).
	Endpoint string `yaml:"otlp_endpoint"`
	// Headers are sent with every export (an API key); their values are never logged.
	Headers map[string]string `yaml:"headers"`
	// SampleRatio is the share of new traces recorded, 0 to 1 (default 1). An event whose
	// traceparent says sampled or not sampled is followed as it says.
	SampleRatio *float64 `yaml:"sample_ratio"`
	// ServiceName is the service.name resource attribute (default turnout).
	ServiceName string `yaml:"service_name"`
	// Timeout bounds one export (default 10s).
	Timeout time.Duration `yaml:"timeout"`
}

// Enabled reports whether the configuration asks for tracing.
func (c Config) Enabled() bool { return c.Endpoint != "" }

// Problem is one invalid field of a Config: its key below tracing and what is wrong.
type Problem struct{ Key, Msg string }

// Check returns the configuration's problems, nil when it is valid.
func (c Config) Check() []Problem {
	var ps []Problem
	if c.Endpoint != "" {
		u, err := url.Parse(c.Endpoint)
		switch {
		case err != nil:
			ps = append(ps, Problem{"otlp_endpoint", fmt.Sprintf("not a URL: %v", err)})
		case u.Scheme != "http" && u.Scheme != "https":
			ps = append(ps, Problem{"otlp_endpoint", fmt.Sprintf("scheme %q: want http or https (OTLP over HTTP)", u.Scheme)})
		case u.Host == "":
			ps = append(ps, Problem{"otlp_endpoint", "has no host"})
		case u.User != nil:
			ps = append(ps, Problem{"otlp_endpoint", "must not carry credentials: put them in tracing.headers"})
		case !Available:
			ps = append(ps, Problem{"otlp_endpoint", "this turnout was built without OpenTelemetry support: build it with -tags otel (make build TAGS=otel)"})
		}
	}
	if r := c.SampleRatio; r != nil && (*r < 0 || *r > 1) {
		ps = append(ps, Problem{"sample_ratio", fmt.Sprintf("%v is not between 0 and 1", *r)})
	}
	if c.Timeout < 0 {
		ps = append(ps, Problem{"timeout", "must not be negative"})
	}
	if !c.Enabled() && (len(c.Headers) > 0 || c.SampleRatio != nil || c.ServiceName != "" || c.Timeout != 0) {
		ps = append(ps, Problem{"otlp_endpoint", "is required when any other tracing key is set"})
	}
	return ps
}

func (c Config) withDefaults() Config {
	if c.SampleRatio == nil {
		one := 1.0
		c.SampleRatio = &one
	}
	if c.ServiceName == "" {
		c.ServiceName = "turnout"
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	return c
}

//go:build !otel

package tracing

import (
	"context"
	"errors"
	"log/slog"

	"github.com/turnout-router/turnout/engine"
)

// Available reports whether this build carries the OpenTelemetry exporter (build tag otel).
const Available = false

// New is the tracer of a build without the otel tag: it returns a nil Tracer for a disabled
// configuration and refuses an enabled one (Check says so at validation already).
func New(_ context.Context, c Config, _ string, _ *slog.Logger) (engine.Tracer, func(context.Context) error, error) {
	if c.Enabled() {
		return nil, nil, errors.New("tracing: this turnout was built without OpenTelemetry support: build it with -tags otel (make build TAGS=otel)")
	}
	return nil, func(context.Context) error { return nil }, nil
}

package engine

import (
	"context"

	"github.com/cloudevents/sdk-go/v2/event"
)

// Stage names one step of a delivery for a Tracer.
type Stage uint8

const (
	// StageReceive spans one input message from Dispatch to its settlement; it is the parent of
	// the other stages. Its error is the settlement error (nil: acknowledged).
	StageReceive Stage = iota
	// StageRule spans the rule's Decide call.
	StageRule
	// StageDeliver spans the delivery of the event to one output, every attempt included.
	StageDeliver
	// StageDeadLetter spans the delivery of a dead-letter event to the dead-letter output.
	StageDeadLetter
)

var stageNames = [...]string{"receive", "rule", "deliver", "dead-letter"}

// String returns the stage's name: receive, rule, deliver or dead-letter.
func (s Stage) String() string {
	if int(s) < len(stageNames) {
		return stageNames[s]
	}
	return "unknown"
}

// SpanInfo describes the step a Tracer is asked to start.
type SpanInfo struct {
	Route string
	// Input is set for StageReceive.
	Input string
	// Output is set for StageDeliver and StageDeadLetter.
	Output string
	// Event is the event the step handles: for StageReceive the event as received, nil when the
	// message was malformed. The Tracer must not modify it; the engine carries the event's
	// traceparent and tracestate extensions to the outputs unchanged.
	Event *event.Event
}

// Tracer observes the stages of each delivery, for distributed tracing. The engine calls Start
// on the goroutine that runs the stage (a delivery's own goroutine, or a fan-out goroutine for
// StageDeliver), so an implementation must be safe for concurrent use, and cheap: it is on every
// event's path. ctx carries the enclosing stage's span as the Tracer put it there; for
// StageReceive it carries none, and the Tracer takes the parent from the event's traceparent
// extension (the CloudEvents distributed tracing extension) where there is one.
//
// Start returns the context the stage runs under (passed on to Rule.Decide and Sink.Send) and
// the function that ends the span; the engine calls end exactly once, with the stage's error
// (nil: the stage succeeded). A nil Tracer in Options traces nothing and costs nothing.
type Tracer interface {
	Start(ctx context.Context, stage Stage, info SpanInfo) (context.Context, func(err error))
}

// startSpan starts a span when the engine has a Tracer; end is never nil.
func (e *Engine) startSpan(ctx context.Context, stage Stage, info SpanInfo) (context.Context, func(error)) {
	if e.tracer == nil {
		return ctx, noEnd
	}
	return e.tracer.Start(ctx, stage, info)
}

func noEnd(error) {}

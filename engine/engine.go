// Package engine routes CloudEvents from Sources through a Rule to Sinks and owns the
// acknowledgement of every input message.
//
// Invariant (at-least-once): a message handed to the engine by a Source is settled with a nil
// error (ack) only when the route's rule dropped it on purpose, or every output the rule chose
// confirmed it, or the route's dead-letter output confirmed it. In every other case it is settled
// with a non-nil error (nack) so the source can have it redelivered. Every message is settled
// exactly once, including on shutdown. In best-effort mode a message is acked on receipt and the
// invariant does not hold; that mode must be chosen explicitly in the route's configuration.
//
// The engine imports no transport and no Wasm runtime: transports implement Source and Sink,
// hostabi implements Rule.
package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/cloudevents/sdk-go/v2/event"
)

// Message is one input message as a Source hands it to the engine.
type Message struct {
	// Event is the decoded CloudEvent. It is nil when the input bytes were not a valid event; then
	// DecodeErr says why and Raw holds the bytes, and the engine dead-letters or nacks the message.
	Event *event.Event
	// DecodeErr is the reason the message could not be decoded as a CloudEvent. When the route
	// has no dead-letter output, the settlement error wraps it (errors.Is finds it), so a source
	// can tell "malformed, and nowhere to put it" from a failed delivery.
	DecodeErr error
	// Raw is the message as received (body, or a representation of it). The engine uses it only to
	// dead-letter a malformed message; a Source may leave it nil for valid events.
	Raw []byte
	// Origin names where the message came from (topic, queue, path) for logs and dead letters.
	Origin string
}

// SettleFunc settles one input message. The engine calls it exactly once per message: with nil
// to acknowledge it to its source, with a non-nil error to reject it so the source redelivers
// it. It is called from an engine goroutine and must not block for long; a Source that needs
// I/O to settle (an MQTT PUBACK) queues the work.
type SettleFunc func(err error)

// Dispatcher is the engine's side of a Source: the Source calls Dispatch for every message it
// receives, from any goroutine it likes.
type Dispatcher interface {
	// Dispatch hands one message to the engine. It blocks while the input already has its
	// maximum number of unsettled messages (backpressure) and returns ctx.Err() if ctx ends first,
	// in which case the message was not taken and settle will not be called. Once Dispatch
	// returns nil, settle is called exactly once, on another goroutine, when the message's fate is
	// known. ErrClosed means the engine is shutting down and takes no more input.
	Dispatch(ctx context.Context, m *Message, settle SettleFunc) error
}

// Source is an input: a connection to a broker or a listener that receives messages.
//
// Lifecycle: the engine calls Start once with a Dispatcher, then Close once at shutdown. A
// Source calls Dispatch for each message it receives; it never acknowledges a message to its
// broker before the engine settled it with nil, and it treats a non-nil settlement as "have this
// message redelivered" (release, nak, reconnect, or an error status to the HTTP client).
type Source interface {
	// Start connects and begins dispatching. It returns once the Source is running (or failed to
	// start); dispatching continues on the Source's own goroutines until Close.
	Start(ctx context.Context, d Dispatcher) error
	// Close stops receiving new messages and releases the connection. Messages already
	// dispatched may still be settled after Close is called; a Source must tolerate that (a
	// settlement on a closed connection is simply lost, and the broker redelivers).
	Close(ctx context.Context) error
}

// Sink is an output: the engine calls Send for every event a rule routed to it.
//
// Send is called concurrently from many goroutines, up to the route's in-flight limit, so a Sink
// should keep many deliveries outstanding rather than serialise them.
type Sink interface {
	// Send delivers e and returns nil only once the destination confirmed it (PUBACK, Accepted,
	// fsync, 2xx). Any error means "not confirmed": the engine retries it unless it is wrapped by
	// Permanent, in which case the engine goes straight to the dead-letter output. Send must
	// return when ctx ends.
	Send(ctx context.Context, e *event.Event) error
	// Close releases the connection after the engine has stopped sending.
	Close(ctx context.Context) error
}

// Starter is implemented by a Sink that has to connect before the first Send.
type Starter interface {
	Start(ctx context.Context) error
}

// OrderedSource is implemented by a Source whose broker needs acknowledgements in the order the
// messages arrived ([MQTT-4.6.0-2]). The engine then releases its settlements in Dispatch order:
// a message's SettleFunc is called only after those of every message dispatched before it.
type OrderedSource interface {
	OrderedSettlement() bool
}

// Readier is implemented by Sources and Sinks that can tell whether they are connected; it backs
// the /readyz endpoint.
type Readier interface {
	Ready() bool
}

// Rule decides the fate of one event. Implementations are safe for concurrent use.
type Rule interface {
	// Decide returns the rule's decision for e. It may modify e in place only when it also
	// returns it as Decision.Event. A non-nil error is a rule failure (trap, timeout, memory cap,
	// undecodable decision) and applies the route's failure policy; it is wrapped in *RuleError
	// when the kind is known.
	Decide(ctx context.Context, e *event.Event) (Decision, error)
}

// Action is what a rule decided to do with an event.
type Action uint8

const (
	// ActionDrop acknowledges the event without sending it anywhere.
	ActionDrop Action = iota + 1
	// ActionRoute sends the event to every output in Decision.Outputs.
	ActionRoute
	// ActionFail sends the event to the dead-letter output with Decision.Reason.
	ActionFail
)

func (a Action) String() string {
	switch a {
	case ActionDrop:
		return "drop"
	case ActionRoute:
		return "route"
	case ActionFail:
		return "fail"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// Decision is a rule's verdict on one event.
type Decision struct {
	Action Action
	// Outputs names the route outputs for ActionRoute. Names not configured on the route make the
	// decision invalid and the event is dead-lettered.
	Outputs []string
	// Event, when non-nil, replaces the input event (the rule changed it).
	Event *event.Event
	// Reason explains ActionFail.
	Reason string
}

// RuleError is a rule failure of a known kind.
type RuleError struct {
	Kind string // "trap", "timeout", "memory", "decode", "init"
	Err  error
}

func (e *RuleError) Error() string { return fmt.Sprintf("rule %s: %v", e.Kind, e.Err) }
func (e *RuleError) Unwrap() error { return e.Err }

// ErrClosed is returned by Dispatch once the engine stopped taking input.
var ErrClosed = errors.New("engine: closed")

type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent marks err as not worth retrying: the engine dead-letters the event at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err, or an error it wraps, was marked by Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

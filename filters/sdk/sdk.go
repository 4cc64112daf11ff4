// Package sdk is the guest side of turnout's rule ABI v1 (hostabi/ABI.md) for rules written in
// Go. A rule is an ordinary Go main package:
//
//	func main() {}
//	func init() {
//		sdk.OnInit(func(config []byte) error { ... })          // optional
//		sdk.Handle(func(e *sdk.Event) sdk.Decision { ... })
//	}
//
// built with GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared. The same package builds
// natively, where Init and Run (native.go) let the author unit-test the rule with go test, through
// the same binary encoding the host uses.
//
// Invariant: the host calls the handler on one goroutine, one event at a time, per instance. The
// strings and byte slices an *Event returns are views into the ABI buffer, valid only until the
// handler returns: copy them (strings.Clone) to keep them. Reading an event does not allocate.
package sdk

import (
	"unsafe"

	"github.com/turnout-router/turnout/hostabi/wire"
)

// Handler decides the fate of one event. It is called by the host, one event at a time.
type Handler func(e *Event) Decision

var (
	handler Handler
	onInit  func(config []byte) error
)

// Handle registers the rule's handler. Call it from init; a later call replaces the handler.
func Handle(h Handler) { handler = h }

// OnInit registers a function the host calls once per rule instance, before the first event,
// with the route's rule configuration (JSON bytes, possibly empty). A non-nil error refuses the
// configuration: the host reports its message and does not load the rule.
func OnInit(f func(config []byte) error) { onInit = f }

// Log levels, as in log/slog.
const (
	LevelDebug = -4
	LevelInfo  = 0
	LevelWarn  = 4
	LevelError = 8
)

// Log writes msg to the host's log, tagged with the rule's name and version. The host rate-limits
// rule logs and counts the lines it suppressed.
func Log(level int, msg string) { hostLog(level, msg) }

// Event is the event being decided. Its accessors are views into the ABI buffer (see the package
// invariant). Mutations (Set*, Remove*) are recorded and applied by the host to a copy of the
// event once the handler returns; the accessors keep returning the original values.
type Event struct {
	v     wire.EventView
	muts  []byte
	nmuts uint32
}

func str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

func (e *Event) attr(i int) string {
	b, _ := e.v.Attr(i)
	return str(b)
}

// ID returns the id attribute.
func (e *Event) ID() string { return e.attr(wire.AttrID) }

// Source returns the source attribute.
func (e *Event) Source() string { return e.attr(wire.AttrSource) }

// SpecVersion returns the specversion attribute.
func (e *Event) SpecVersion() string { return e.attr(wire.AttrSpecVersion) }

// Type returns the type attribute.
func (e *Event) Type() string { return e.attr(wire.AttrType) }

// Subject returns the subject attribute, "" when absent.
func (e *Event) Subject() string { return e.attr(wire.AttrSubject) }

// Time returns the time attribute in RFC 3339 form, "" when absent.
func (e *Event) Time() string { return e.attr(wire.AttrTime) }

// DataContentType returns the datacontenttype attribute, "" when absent.
func (e *Event) DataContentType() string { return e.attr(wire.AttrDataContentType) }

// DataSchema returns the dataschema attribute, "" when absent.
func (e *Event) DataSchema() string { return e.attr(wire.AttrDataSchema) }

// Attribute returns the context attribute or, when name is not one, the extension called name.
func (e *Event) Attribute(name string) (string, bool) {
	if i := wire.AttrIndex(name); i >= 0 {
		b, ok := e.v.Attr(i)
		return str(b), ok
	}
	return e.Extension(name)
}

// Extension returns the value of extension name in its CloudEvents string form.
func (e *Event) Extension(name string) (string, bool) {
	b, ok := e.v.LookupExtension(name)
	return str(b), ok
}

// NumExtensions returns the number of extensions; Ext(i) returns each.
func (e *Event) NumExtensions() int { return e.v.NumExtensions() }

// Ext returns extension i's name and value, 0 <= i < NumExtensions().
func (e *Event) Ext(i int) (name, value string) {
	n, v := e.v.Extension(i)
	return str(n), str(v)
}

// Data returns the event's data (nil when it has none).
func (e *Event) Data() []byte {
	b, _ := e.v.Data()
	return b
}

// HasData reports whether the event carries data.
func (e *Event) HasData() bool {
	_, ok := e.v.Data()
	return ok
}

func (e *Event) mutate(op byte, name string, value []byte) {
	e.muts = wire.AppendMutation(e.muts, op, name, value)
	e.nmuts++
}

func (e *Event) mutateStr(op byte, name, value string) {
	e.muts = wire.AppendMutation(e.muts, op, name, value)
	e.nmuts++
}

// SetAttribute sets a context attribute (id, source, type, subject, time, datacontenttype,
// dataschema) in the routed event. The host validates the value (time must be RFC 3339).
func (e *Event) SetAttribute(name, value string) { e.mutateStr(wire.OpSetAttribute, name, value) }

// RemoveAttribute removes an optional context attribute (subject, time, datacontenttype,
// dataschema) from the routed event.
func (e *Event) RemoveAttribute(name string) { e.mutateStr(wire.OpRemoveAttribute, name, "") }

// SetExtension sets extension name (lower-case a-z0-9) to a string value in the routed event.
func (e *Event) SetExtension(name, value string) { e.mutateStr(wire.OpSetExtension, name, value) }

// RemoveExtension removes extension name from the routed event.
func (e *Event) RemoveExtension(name string) { e.mutateStr(wire.OpRemoveExtension, name, "") }

// SetData replaces the routed event's data; datacontenttype is kept unless also set.
func (e *Event) SetData(data []byte) { e.mutate(wire.OpSetData, "", data) }

// Decision is a handler's verdict: build it with Drop, Route or Fail.
type Decision struct {
	action  byte
	outputs []string
	reason  string
}

// Drop acknowledges the event without sending it anywhere.
func Drop() Decision { return Decision{action: wire.ActionDrop} }

// Route sends the event (with its mutations) to every named output of the route. The slice is
// kept by the Decision: build decisions you return often once, at init.
func Route(outputs ...string) Decision { return Decision{action: wire.ActionRoute, outputs: outputs} }

// Fail sends the event to the route's dead-letter output with reason.
func Fail(reason string) Decision { return Decision{action: wire.ActionFail, reason: reason} }

// ev and out are the per-instance state: one event at a time (package invariant).
var (
	ev  Event
	out []byte
)

// decide runs the handler on the encoded event in and returns the encoded decision. The
// returned slice is reused by the next call.
func decide(in []byte) []byte {
	ev.muts, ev.nmuts = ev.muts[:0], 0
	var d Decision
	switch err := ev.v.Parse(in); {
	case err != nil:
		d = Fail("sdk: " + err.Error())
	case handler == nil:
		d = Fail("sdk: no handler registered (call sdk.Handle from init)")
	default:
		d = handler(&ev)
	}
	if d.action == 0 {
		d = Fail("sdk: handler returned the zero Decision")
		ev.nmuts = 0
	}
	out = wire.AppendDecision(out[:0], d.action, d.outputs, d.reason, ev.nmuts)
	if ev.nmuts > 0 {
		out = append(out, ev.muts...)
	}
	return out
}

// initRule runs the OnInit function with a private copy of config.
func initRule(config []byte) error {
	if onInit == nil {
		return nil
	}
	return onInit(append([]byte(nil), config...))
}

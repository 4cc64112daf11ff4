// Package transporttest is the conformance suite every turnout transport runs against its real
// server: one Run call checks that a transport's input (engine.Source) and output (engine.Sink)
// keep the engine's at-least-once contract and the CloudEvents binding of their protocol.
//
// Invariant: the suite judges a transport only through its server. It publishes with the
// Server's own client and reads back with it (never through the transport's code), so a
// transport that agrees with itself but not with the wire format fails.
//
// # Adopting it
//
// A transport adds one test file in its own package (so it can build inputs and outputs from
// its config types) that implements Server and calls Run:
//
//	func TestConformance(t *testing.T) {
//		transporttest.Run(t, transporttest.Harness{
//			Modes:  []transporttest.Mode{transporttest.Binary, transporttest.Structured},
//			Server: func(t *testing.T, restartable bool) transporttest.Server { ... },
//		})
//	}
//
// Server is called once per subtest. With restartable false it should return the shared
// system server (mqtttest.Shared, amqptest.Shared); with restartable true a private one whose
// Restart stops and starts it (mqtttest.Start, amqptest.Start). A missing server must go
// through testutil.Unavailable (fail under $CI, skip otherwise). A nil Harness.Server, or
// CanRestart false, skips the subtests that need it with a reason; so does a mode missing
// from Modes.
//
// A protocol without a broker that stores messages (HTTP) implements Server as the two ends a
// deployment has around turnout: a sender that keeps each published message until the input
// acknowledged it and resends it until then (so "redelivered after the input restarts" is the
// sender's retry), and a receiver that records what the output delivered, for Fetch; see
// transports/http/conformance_test.go.
//
// # What it checks
//
//   - delivery: Send returns nil only once the server has the event (it is read back at once);
//     the input dispatches every published event and acknowledges only what was settled with
//     nil (the unsettled ones come back after the input restarts, the acked ones do not).
//   - nack: events settled with an error come back after the input restarts (or before, if the
//     protocol redelivers at once); acked ones never do. The suite nacks the last events of a
//     batch, because a protocol with ordered acknowledgements (MQTT) cannot ack past a nack.
//   - reconnect: after the server restarts, the input and the output work again, and events
//     that were unsettled (redelivered, or still held where KeepsUnsettledAcrossRestart says
//     the protocol keeps them) or sent before the restart are not lost.
//   - round trips in every mode of Modes, in both directions: every attribute and extension
//     (compared with ce.Diff; typed extensions where TypedExtensions says the binary mode
//     keeps types), binary data (data_base64 in JSON), events of 64 KiB, events without data.
//   - malformed: a message that is not a CloudEvent reaches the engine with DecodeErr and Raw
//     set, and is acknowledged once the engine settles it (it dead-letters it), not redelivered.
package transporttest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/ce"
	"github.com/turnout-router/turnout/internal/testutil"
)

// Mode is a CloudEvents content mode.
type Mode string

// The content modes of the CloudEvents protocol bindings.
const (
	Binary     Mode = "binary"
	Structured Mode = "structured"
)

// Harness describes one transport to Run.
type Harness struct {
	// Modes lists the content modes the transport's output can write and its input can read.
	// At least one is required.
	Modes []Mode
	// CanRestart says that Server(t, true) returns a server whose Restart works.
	CanRestart bool
	// KeepsUnsettledAcrossRestart says that the input goes on holding the messages it
	// dispatched when its server restarts, instead of having them delivered again: a Kafka
	// consumer keeps its partitions and its read position, and a record is read again only
	// after its partition changes hands. The reconnect check then settles those messages after
	// the restart instead of waiting for them again.
	KeepsUnsettledAcrossRestart bool
	// TypedExtensions says that binary mode carries the CloudEvents type of an extension
	// (AMQP application properties do; string headers of HTTP, Kafka and NATS do not): the
	// binary round trips then also carry Integer, Boolean, Binary and Timestamp extensions and
	// expect them back with their types.
	TypedExtensions bool
	// Server returns the server for one subtest (see the package documentation).
	Server func(t *testing.T, restartable bool) Server
}

// Server is one transport's real server, as the suite needs it. Its methods are called from the
// test goroutine and fail the test (t.Fatal) on errors; none returns an error.
type Server interface {
	// Dest returns a fresh destination (topic, queue address) no other test uses. Events
	// published to it before the first Input on it was started may be lost on protocols
	// without storage (MQTT); events sent to it with Output are kept for Fetch.
	Dest(t *testing.T) string
	// Input returns a new, not yet started input reading from dest. Inputs made for the same
	// dest share their broker-side state (MQTT session, AMQP queue), so a second one resumes
	// where the first stopped. The suite starts and closes it.
	Input(t *testing.T, dest string) engine.Source
	// Output returns a new, not yet started output writing to dest in mode. The suite starts
	// it (if it is an engine.Starter) and closes it.
	Output(t *testing.T, dest string, mode Mode) engine.Sink
	// Publish sends e to dest in mode with the server's own client and returns once the
	// server confirmed it.
	Publish(t *testing.T, dest string, mode Mode, e *event.Event)
	// PublishRaw sends body to dest as it is, with contentType where the protocol carries one,
	// and returns once the server confirmed it.
	PublishRaw(t *testing.T, dest, contentType string, body []byte)
	// Fetch reads the next message the server holds for dest with the server's own client,
	// acknowledges it and decodes it without the transport's code. It fails the test when
	// nothing arrives within the given time.
	Fetch(t *testing.T, dest string, within time.Duration) (*event.Event, Mode)
	// Restart stops the server and starts it again, keeping its durable state, and returns
	// once it accepts connections.
	Restart(t *testing.T)
}

// WireFetcher is implemented by a Server that can also show the message as it was on the wire;
// the suite then checks the JSON of structured events too (data_base64 for binary data). The
// suite calls FetchWire instead of Fetch when it is there.
type WireFetcher interface {
	FetchWire(t *testing.T, dest string, within time.Duration) Fetched
}

// Fetched is one message WireFetcher.FetchWire read from the server.
type Fetched struct {
	// Event is the message decoded as a CloudEvent.
	Event *event.Event
	// Mode is the content mode the message was written in.
	Mode Mode
	// Body is the message's payload as it was on the wire (in structured mode the JSON event).
	Body []byte
}

const (
	wait  = 20 * time.Second // for anything the suite expects to happen
	quiet = time.Second      // silence that ends "everything that comes back"
	// closeWait bounds Close of an input that holds unsettled messages.
	closeWait = 2 * time.Second
)

// Run runs the conformance suite as subtests of t.
func Run(t *testing.T, h Harness) {
	if len(h.Modes) == 0 || h.Server == nil {
		t.Fatal("transporttest: Harness needs Modes and Server")
	}
	t.Run("delivery", func(t *testing.T) { delivery(t, h) })
	t.Run("nack", func(t *testing.T) { nack(t, h) })
	t.Run("reconnect", func(t *testing.T) {
		if !h.CanRestart {
			t.Skip("the harness cannot restart its server")
		}
		reconnect(t, h)
	})
	for _, m := range []Mode{Binary, Structured} {
		t.Run("roundtrip/"+string(m), func(t *testing.T) {
			if !h.has(m) {
				t.Skipf("the transport has no %s mode", m)
			}
			roundTrip(t, h, m)
		})
	}
	t.Run("malformed", func(t *testing.T) { malformed(t, h) })
}

func (h Harness) has(m Mode) bool {
	for _, x := range h.Modes {
		if x == m {
			return true
		}
	}
	return false
}

// StartInput starts in with a fresh testutil.Dispatcher and waits until it is ready; the test's
// cleanup closes it. The returned func closes it earlier, as a crash of the consuming side would
// (unsettled messages stay unsettled).
func StartInput(t *testing.T, in engine.Source) (*testutil.Dispatcher, func()) {
	t.Helper()
	d := testutil.NewDispatcher()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := in.Start(ctx, d); err != nil {
		t.Fatalf("input start: %v", err)
	}
	closed := false
	stop := func() {
		if closed {
			return
		}
		closed = true
		// A source may wait in Close for the settlements of messages it dispatched; the suite
		// leaves some unsettled on purpose, so it gives Close a short deadline and only logs
		// its error: what matters is what the server redelivers afterwards.
		ctx, cancel := context.WithTimeout(context.Background(), closeWait)
		defer cancel()
		if err := in.Close(ctx); err != nil {
			t.Logf("input close with unsettled messages: %v", err)
		}
	}
	t.Cleanup(stop)
	awaitReady(t, "input", in)
	return d, stop
}

// StartOutput starts o if it is an engine.Starter and waits until it is ready; the test's
// cleanup closes it.
func StartOutput(t *testing.T, o engine.Sink) {
	t.Helper()
	if s, ok := o.(engine.Starter); ok {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := s.Start(ctx); err != nil {
			t.Fatalf("output start: %v", err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_ = o.Close(ctx)
	})
	awaitReady(t, "output", o)
}

func awaitReady(t *testing.T, what string, x any) {
	t.Helper()
	r, ok := x.(engine.Readier)
	if !ok {
		return
	}
	deadline := time.Now().Add(wait)
	for !r.Ready() {
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within %v", what, wait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// send delivers e as the engine would: retrying until Send returns nil or the time is up.
func send(t *testing.T, o engine.Sink, e *event.Event, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := o.Send(ctx, e)
		cancel()
		if err == nil {
			return
		}
		if engine.IsPermanent(err) || time.Now().After(deadline) {
			t.Fatalf("send %s: %v", e.ID(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Event returns a test event with every context attribute, string extensions and JSON data.
func Event(id string) *event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource("/conformance/source")
	e.SetType("org.turnout.conformance")
	e.SetSubject("subject ü/1")
	e.SetDataSchema("https://example.com/schema/1")
	e.SetTime(time.Date(2026, 11, 30, 4, 5, 6, 789000000, time.UTC))
	e.SetExtension("tenant", "acme")
	e.SetExtension("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	e.SetExtension("partitionkey", "p 1;x=é")
	_ = e.SetData(event.ApplicationJSON, []byte(`{"id":"`+id+`","ok":true}`))
	return &e
}

func binaryEvent(id string) *event.Event {
	e := Event(id)
	_ = e.SetData("application/octet-stream", []byte{0, 1, 2, 0xff, 0xfe, '"', '\\', 0x80})
	return e
}

func typedEvent(id string) *event.Event {
	e := Event(id)
	e.SetExtension("count", int32(-42))
	e.SetExtension("flag", true)
	e.SetExtension("blob", []byte{0, 0xff, 7})
	e.SetExtension("seen", time.Date(2026, 1, 2, 3, 4, 5, 6000000, time.UTC))
	return e
}

func bigEvent(id string) *event.Event {
	e := Event(id)
	_ = e.SetData("text/plain", bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16))
	return e
}

func diff(t *testing.T, what string, want, got *event.Event) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s: no event", what)
	}
	if d := ce.Diff(want, got); d != nil {
		t.Errorf("%s %s: %s", what, want.ID(), strings.Join(d, "; "))
	}
}

// ids returns the event ids of xs, sorted, failing on messages that did not decode.
func ids(t *testing.T, xs []testutil.Dispatched) []string {
	t.Helper()
	var out []string
	for _, x := range xs {
		if x.M.Event == nil {
			t.Fatalf("unexpected undecodable message: %v", x.M.DecodeErr)
		}
		out = append(out, x.M.Event.ID())
	}
	sort.Strings(out)
	return out
}

// publishN publishes n events in the harness's first mode and returns their ids.
func (h Harness) publishN(t *testing.T, srv Server, dest, prefix string, n int) []string {
	t.Helper()
	var out []string
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		srv.Publish(t, dest, h.Modes[0], Event(id))
		out = append(out, id)
	}
	return out
}

func delivery(t *testing.T, h Harness) {
	srv := h.Server(t, false)
	t.Run("output", func(t *testing.T) {
		dest := srv.Dest(t)
		o := srv.Output(t, dest, h.Modes[0])
		StartOutput(t, o)
		for i := range 5 {
			e := Event(fmt.Sprintf("out-%d", i))
			send(t, o, e, wait)
			// Send returned nil: the server has the event now.
			diff(t, "read back", e, fetch(t, srv, dest, 5*time.Second).Event)
		}
	})
	t.Run("input", func(t *testing.T) {
		dest := srv.Dest(t)
		d, stop := StartInput(t, srv.Input(t, dest))
		want := h.publishN(t, srv, dest, "in", 5)
		got := nextN(t, d, len(want))
		if g := ids(t, got); !equal(g, want) {
			t.Fatalf("dispatched %v, want %v", g, want)
		}
		// Acknowledge the first three published: a protocol without a broker (HTTP) may
		// dispatch concurrent requests in any order.
		sort.Slice(got, func(i, j int) bool { return got[i].M.Event.ID() < got[j].M.Event.ID() })
		for _, x := range got[:3] {
			x.Settle(nil)
		}
		d.None(t, quiet) // acks reach the server; nothing is redelivered meanwhile
		stop()
		d2, _ := StartInput(t, srv.Input(t, dest))
		back := d2.Collect(quiet, wait)
		settleAll(back, nil)
		if g := ids(t, back); !containsAll(g, want[3:]) || overlaps(g, want[:3]) {
			t.Fatalf("after restart of the input: got %v, want the unsettled %v and none of the acked %v", g, want[3:], want[:3])
		}
	})
}

func nack(t *testing.T, h Harness) {
	srv := h.Server(t, false)
	dest := srv.Dest(t)
	d, stop := StartInput(t, srv.Input(t, dest))
	want := h.publishN(t, srv, dest, "nack", 6)
	got := nextN(t, d, len(want))
	sort.Slice(got, func(i, j int) bool { return got[i].M.Event.ID() < got[j].M.Event.ID() })
	acked, nacked := ids(t, got[:3]), ids(t, got[3:])
	settleAll(got[:3], nil)
	settleAll(got[3:], errors.New("transporttest: transient failure"))
	// Some protocols redeliver at once, to this input; the rest come after its restart.
	early := d.Collect(quiet, wait)
	stop()
	d2, _ := StartInput(t, srv.Input(t, dest))
	late := d2.Collect(quiet, wait)
	settleAll(late, nil)
	back := ids(t, append(early, late...))
	if !containsAll(back, nacked) || overlaps(back, acked) {
		t.Fatalf("redelivered %v; want the nacked %v and none of the acked %v", back, nacked, acked)
	}
}

func reconnect(t *testing.T, h Harness) {
	srv := h.Server(t, true)
	inDest, outDest := srv.Dest(t), srv.Dest(t)
	d, _ := StartInput(t, srv.Input(t, inDest))
	o := srv.Output(t, outDest, h.Modes[0])
	StartOutput(t, o)

	before := h.publishN(t, srv, inDest, "before", 3)
	held := nextN(t, d, len(before)) // dispatched, left unsettled: the restart must not lose them
	e1 := Event("sent-before")
	send(t, o, e1, wait)

	srv.Restart(t)

	want := append(append([]string{}, before...), h.publishN(t, srv, inDest, "after", 3)...)
	seen := map[string]bool{}
	if h.KeepsUnsettledAcrossRestart {
		settleAll(held, nil)
		want = want[len(before):]
	}
	deadline := time.Now().Add(2 * wait)
	for !containsAll(keys(seen), want) {
		if time.Now().After(deadline) {
			t.Fatalf("after the restart the input dispatched %v; want %v", keys(seen), want)
		}
		for _, x := range d.Collect(200*time.Millisecond, time.Second) {
			x.Settle(nil)
			if x.M.Event != nil {
				seen[x.M.Event.ID()] = true
			}
		}
	}

	e2 := Event("sent-after")
	send(t, o, e2, 2*wait) // retried, as the engine does, until the output reconnected
	got := map[string]*event.Event{}
	for range 2 {
		e := fetch(t, srv, outDest, wait).Event
		got[e.ID()] = e
	}
	diff(t, "sent before the restart", e1, got[e1.ID()])
	diff(t, "sent after the restart", e2, got[e2.ID()])
}

func roundTrip(t *testing.T, h Harness, m Mode) {
	srv := h.Server(t, false)
	inDest, outDest := srv.Dest(t), srv.Dest(t)
	d, _ := StartInput(t, srv.Input(t, inDest))
	o := srv.Output(t, outDest, m)
	StartOutput(t, o)
	cases := []struct {
		name string
		e    *event.Event
	}{
		{"json", Event("rt-json")},
		{"binary data", binaryEvent("rt-bin")},
		{"64KiB", bigEvent("rt-big")},
		{"no data", func() *event.Event { e := Event("rt-nodata"); e.DataEncoded = nil; e.SetDataContentType(""); return e }()},
	}
	if m == Binary && h.TypedExtensions {
		cases = append(cases, struct {
			name string
			e    *event.Event
		}{"typed extensions", typedEvent("rt-typed")})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			send(t, o, c.e, wait)
			f := fetch(t, srv, outDest, wait)
			if f.Mode != m {
				t.Errorf("output wrote %s mode, want %s", f.Mode, m)
			}
			diff(t, "output -> server", c.e, f.Event)
			if m == Structured && f.Body != nil && c.e.DataContentType() == "application/octet-stream" {
				// [CE-JSON §3.1]: binary data travels as data_base64, never as data.
				var fields map[string]json.RawMessage
				if err := json.Unmarshal(f.Body, &fields); err != nil {
					t.Fatalf("structured body is not a JSON object: %v", err)
				}
				if _, ok := fields["data_base64"]; !ok || fields["data"] != nil {
					t.Errorf("binary data in a structured event: want data_base64 and no data, got %s", f.Body)
				}
			}

			srv.Publish(t, inDest, m, c.e)
			x := d.Next(t, wait)
			x.Settle(nil)
			if x.M.Event == nil {
				t.Fatalf("server -> input: decode error %v", x.M.DecodeErr)
			}
			diff(t, "server -> input", c.e, x.M.Event)
		})
	}
}

func malformed(t *testing.T, h Harness) {
	srv := h.Server(t, false)
	dest := srv.Dest(t)
	d, _ := StartInput(t, srv.Input(t, dest))
	for _, c := range []struct{ name, contentType, body string }{
		{"not json", "", "not a CloudEvent {"},
		{"truncated structured", "application/cloudevents+json", `{"specversion":"1.0","id":`},
		{"missing id", "application/cloudevents+json", `{"specversion":"1.0","source":"/s","type":"t"}`},
		{"unknown specversion", "application/cloudevents+json", `{"specversion":"9.9","id":"x","source":"/s","type":"t"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv.PublishRaw(t, dest, c.contentType, []byte(c.body))
			x := d.Next(t, wait)
			if x.M.Event != nil || x.M.DecodeErr == nil {
				t.Fatalf("got event %v, decode error %v; want a decode error", x.M.Event, x.M.DecodeErr)
			}
			if !bytes.Contains(x.M.Raw, []byte(c.body)) {
				t.Errorf("Raw %q does not hold the message body %q", x.M.Raw, c.body)
			}
			x.Settle(nil) // the engine dead-lettered it
			// The next message is the next one: the malformed one is not redelivered.
			e := Event("after-" + strings.ReplaceAll(c.name, " ", "-"))
			srv.Publish(t, dest, h.Modes[0], e)
			y := d.Next(t, wait)
			y.Settle(nil)
			if y.M.Event == nil {
				t.Fatalf("after a malformed message: decode error %v (redelivered?)", y.M.DecodeErr)
			}
			diff(t, "after a malformed message", e, y.M.Event)
		})
	}
}

// fetch reads the next message for dest through FetchWire if srv has it, else through Fetch
// (Body nil).
func fetch(t *testing.T, srv Server, dest string, within time.Duration) Fetched {
	t.Helper()
	if w, ok := srv.(WireFetcher); ok {
		return w.FetchWire(t, dest, within)
	}
	e, m := srv.Fetch(t, dest, within)
	return Fetched{Event: e, Mode: m}
}

// nextN waits for the next n dispatched messages, leaving them unsettled.
func nextN(t *testing.T, d *testutil.Dispatcher, n int) []testutil.Dispatched {
	t.Helper()
	out := make([]testutil.Dispatched, 0, n)
	for range n {
		out = append(out, d.Next(t, wait))
	}
	return out
}

func settleAll(xs []testutil.Dispatched, err error) {
	for _, x := range xs {
		x.Settle(err)
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func equal(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00")
}

func containsAll(have, want []string) bool {
	set := map[string]bool{}
	for _, x := range have {
		set[x] = true
	}
	for _, w := range want {
		if !set[w] {
			return false
		}
	}
	return true
}

func overlaps(a, b []string) bool {
	set := map[string]bool{}
	for _, x := range a {
		set[x] = true
	}
	for _, x := range b {
		if set[x] {
			return true
		}
	}
	return false
}

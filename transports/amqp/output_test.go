package amqp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/ce"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/amqp/amqptest"
)

func outputConfig(url, queue, mode string) OutputConfig {
	return OutputConfig{ConnectionConfig: fastConn(url), Address: "/queue/" + queue, Mode: mode}
}

func TestOutputSendsBothModes(t *testing.T) {
	n := amqptest.Shared(t)
	url := n.URL()
	for _, mode := range []string{modeBinary, modeStructured} {
		t.Run(mode, func(t *testing.T) {
			q := amqptest.QueueName(t, "out-")
			deleteQueue(t, n, q)
			o, reg := startOutput(t, outputConfig(url, q, mode))
			if v := testutil.Metric(t, reg, "turnout_transport_connected", map[string]string{"transport": "amqp", "name": "out"}); v != 1 {
				t.Errorf("turnout_transport_connected = %v while attached, want 1", v)
			}
			e := withExt(withExt(fullEvent(), "seq", int32(9)), "urgent", true)
			if err := o.Send(t.Context(), e); err != nil {
				t.Fatal(err)
			}
			m := receiveOne(t, rawReceiver(t, rawSession(t, url), "/queue/"+q))
			if m.Header == nil || !m.Header.Durable {
				t.Error("message not durable")
			}
			ct := ""
			if m.Properties != nil && m.Properties.ContentType != nil {
				ct = *m.Properties.ContentType
			}
			_, hasSpec := m.ApplicationProperties["cloudEvents_specversion"]
			switch mode {
			case modeBinary:
				if ct != e.DataContentType() || !hasSpec {
					t.Errorf("binary mode: content-type %q, specversion property %v", ct, hasSpec)
				}
			case modeStructured:
				if ct != "application/cloudevents+json" || hasSpec {
					t.Errorf("structured mode: content-type %q, specversion property %v", ct, hasSpec)
				}
			}
			got := decode("q", m)
			if got.DecodeErr != nil {
				t.Fatal(got.DecodeErr)
			}
			if d := ce.Diff(e, got.Event); d != nil {
				t.Errorf("received event differs:\n%s", strings.Join(d, "\n"))
			}
		})
	}
}

// TestOutputConcurrentSends sends from many goroutines at once, as the engine does.
func TestOutputConcurrentSends(t *testing.T) {
	n := amqptest.Shared(t)
	url := n.URL()
	q := amqptest.QueueName(t, "out-")
	deleteQueue(t, n, q)
	o, _ := startOutput(t, outputConfig(url, q, ""))
	const total = 300
	var wg sync.WaitGroup
	errs := make(chan error, total)
	for i := range total {
		wg.Go(func() {
			if err := o.Send(t.Context(), testEvent(fmt.Sprint(i))); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	r := rawReceiver(t, rawSession(t, url), "/queue/"+q)
	seen := map[string]bool{}
	for range total {
		e := decode("q", receiveOne(t, r))
		if e.Event == nil || seen[e.Event.ID()] {
			t.Fatalf("bad or duplicate message: %v", e.DecodeErr)
		}
		seen[e.Event.ID()] = true
	}
}

// TestOutputRefusedThenRecovers sends to a queue that refuses publications beyond one message
// (overflow reject-publish): Send fails, as a retryable error, and succeeds again once the queue
// was drained. (RabbitMQ 3.10 does not answer with a rejected disposition here: its AMQP 1.0
// session ends, so the error is the lost connection, and the output reattaches.)
func TestOutputRefusedThenRecovers(t *testing.T) {
	n := amqptest.Shared(t)
	url := n.URL()
	q := amqptest.QueueName(t, "out-")
	deleteQueue(t, n, q)
	n.SetPolicy(q, "^"+q+"$", `{"max-length":1,"overflow":"reject-publish"}`)
	o, _ := startOutput(t, outputConfig(url, q, ""))
	if err := o.Send(t.Context(), testEvent("1")); err != nil {
		t.Fatal(err)
	}
	err := o.Send(t.Context(), testEvent("2"))
	if err == nil {
		t.Fatal("Send to a full reject-publish queue succeeded")
	}
	if engine.IsPermanent(err) {
		t.Errorf("Send error %q is permanent, want retryable", err)
	}
	t.Logf("refused: %v", err)
	r := rawReceiver(t, rawSession(t, url), "/queue/"+q)
	if id := decode("q", receiveOne(t, r)).Event.ID(); id != "1" {
		t.Fatalf("queue held %q, want 1", id)
	}
	waitFor(t, "output reattached", o.Ready)
	if err := o.Send(t.Context(), testEvent("2")); err != nil {
		t.Fatalf("Send after draining: %v", err)
	}
	if id := decode("q", receiveOne(t, r)).Event.ID(); id != "2" {
		t.Fatalf("queue held %q, want 2", id)
	}
}

// TestOutcome maps every terminal delivery state to Send's result.
func TestOutcome(t *testing.T) {
	o := &Output{cfg: OutputConfig{Address: "/queue/q"}}
	e := testEvent("e1")
	cases := []struct {
		name  string
		state amqp.DeliveryState
		want  string // "" for success
	}{
		{"accepted", &amqp.StateAccepted{}, ""},
		{"rejected with a condition", &amqp.StateRejected{Error: &amqp.Error{Condition: amqp.ErrCondResourceLimitExceeded, Description: "queue full"}},
			"amqp send /queue/q: event e1 rejected by the broker: amqp:resource-limit-exceeded: queue full"},
		{"rejected without a reason", &amqp.StateRejected{}, "event e1 rejected by the broker"},
		{"released", &amqp.StateReleased{}, "event e1 released by the broker"},
		{"modified", &amqp.StateModified{DeliveryFailed: true}, "event e1 modified by the broker (not processed; delivery-failed=true"},
		{"received is not terminal", &amqp.StateReceived{}, "unexpected delivery state"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := o.outcome(e, tc.state)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("outcome = %v, want success", err)
			case tc.want == "":
			case err == nil || !strings.Contains(err.Error(), tc.want):
				t.Fatalf("outcome = %v, want an error containing %q", err, tc.want)
			case engine.IsPermanent(err):
				t.Errorf("outcome = %v is permanent, want retryable", err)
			}
		})
	}
}

// TestOutputMaxInFlight checks that a Send beyond max_in_flight waits for a slot, and gives up
// with a retryable error naming the wait when its context ends first.
func TestOutputMaxInFlight(t *testing.T) {
	deps, _ := testDeps()
	cfg := outputConfig("amqp://127.0.0.1:1", "x", "")
	cfg.MaxInFlight = 2
	o, err := newOutput("out", cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if cap(o.slots) != 2 {
		t.Fatalf("%d delivery slots, want max_in_flight 2", cap(o.slots))
	}
	o.slots <- struct{}{} // two deliveries in flight
	o.slots <- struct{}{}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err = o.Send(ctx, testEvent("a"))
	if err == nil || !strings.Contains(err.Error(), "delivery slots") || engine.IsPermanent(err) {
		t.Fatalf("Send with every slot taken = %v, want a retryable wait error", err)
	}
	<-o.slots // one settles
	if err := o.Send(t.Context(), testEvent("b")); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Send with a free slot = %v, want it to reach the link (ErrNotConnected here)", err)
	}
	if len(o.slots) != 1 {
		t.Fatalf("%d slots taken after Send returned, want 1 (its own released)", len(o.slots))
	}
}

func TestOutputNotConnectedFailsFast(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close() // nothing listens there now
	deps, _ := testDeps()
	o, err := newOutput("out", outputConfig("amqp://"+addr, "x", ""), deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer o.Close(context.Background())
	if o.Ready() {
		t.Error("Ready() with no broker")
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := o.Send(ctx, testEvent("a")); !errors.Is(err, ErrNotConnected) || engine.IsPermanent(err) {
		t.Errorf("Send = %v, want a retryable ErrNotConnected", err)
	}
}

func TestOutputPermanentErrors(t *testing.T) {
	n := amqptest.Shared(t)
	url := n.URL()
	q := amqptest.QueueName(t, "out-")
	deleteQueue(t, n, q)
	o, _ := startOutput(t, outputConfig(url, q, ""))
	bad := testEvent("bad")
	bad.SetExtension("x", string([]byte{0xff}))
	if err := o.Send(t.Context(), bad); !engine.IsPermanent(err) {
		t.Errorf("Send of an event with invalid UTF-8 = %v, want a permanent error", err)
	}
	// A message larger than the broker takes: an error (RabbitMQ 3.10 does not announce its
	// limit on attach and ends the connection), then the output recovers.
	big := testEvent("big")
	_ = big.SetData("application/octet-stream", make([]byte, 200<<20))
	if err := o.Send(t.Context(), big); err == nil {
		t.Error("Send of a message beyond the broker's limit succeeded")
	}
	waitFor(t, "output reattached", o.Ready)
	if err := o.Send(t.Context(), testEvent("ok")); err != nil {
		t.Errorf("Send after the refusals: %v", err)
	}
}

// TestOutputToInput sends through the output and receives through the input, both modes.
func TestOutputToInput(t *testing.T) {
	n := amqptest.Shared(t)
	url := n.URL()
	for _, mode := range []string{modeBinary, modeStructured} {
		t.Run(mode, func(t *testing.T) {
			q := amqptest.QueueName(t, "rt-")
			deleteQueue(t, n, q)
			o, _ := startOutput(t, outputConfig(url, q, mode))
			_, d, _ := startInput(t, inputConfig(url, q))
			e := withExt(fullEvent(), "seq", int32(1))
			if err := o.Send(t.Context(), e); err != nil {
				t.Fatal(err)
			}
			x := d.Next(t, 10*time.Second)
			if x.M.DecodeErr != nil {
				t.Fatal(x.M.DecodeErr)
			}
			if d := ce.Diff(e, x.M.Event); d != nil {
				t.Errorf("received event differs:\n%s", strings.Join(d, "\n"))
			}
			x.Settle(nil)
		})
	}
}

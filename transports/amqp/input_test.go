package amqp

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/Azure/go-amqp"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/amqp/amqptest"
)

func inputConfig(url, queue string) InputConfig {
	return InputConfig{ConnectionConfig: fastConn(url), Address: "/queue/" + queue}
}

func eventID(t testing.TB, x testutil.Dispatched) string {
	t.Helper()
	if x.M.DecodeErr != nil || x.M.Event == nil {
		t.Fatalf("dispatched a message that did not decode: %v", x.M.DecodeErr)
	}
	return x.M.Event.ID()
}

// expectOnly expects exactly the events ids, in order, accepts them, and then nothing more.
func expectOnly(t testing.TB, d *testutil.Dispatcher, ids ...string) {
	t.Helper()
	for _, id := range ids {
		x := d.Next(t, 10*time.Second)
		if got := eventID(t, x); got != id {
			t.Fatalf("got event %q, want %q", got, id)
		}
		x.Settle(nil)
	}
	d.None(t, 300*time.Millisecond)
}

func TestInputAcceptsAfterSettlement(t *testing.T) {
	n := amqptest.Shared(t)
	url := n.URL()
	q := amqptest.QueueName(t, "in-")
	deleteQueue(t, n, q)
	in, d, reg := startInput(t, inputConfig(url, q))
	s := rawSession(t, url)
	rawSend(t, s, "/queue/"+q, binaryMessage(t, "a"))

	x := d.Next(t, 10*time.Second)
	if eventID(t, x) != "a" || x.M.Origin != "/queue/"+q {
		t.Fatalf("testutil.Dispatched %v from %q", x.M.Event, x.M.Origin)
	}
	if v := testutil.Metric(t, reg, "turnout_transport_connected", map[string]string{"transport": "amqp", "name": "in"}); v != 1 {
		t.Errorf("turnout_transport_connected = %v while attached, want 1", v)
	}
	x.Settle(nil)
	if err := in.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if in.Ready() {
		t.Error("Ready() after Close")
	}
	if v := testutil.Metric(t, reg, "turnout_transport_connected", map[string]string{"transport": "amqp", "name": "in"}); v != 0 {
		t.Errorf("turnout_transport_connected = %v after Close, want 0", v)
	}

	// The accepted message must not come back; one sent meanwhile must.
	rawSend(t, s, "/queue/"+q, binaryMessage(t, "marker"))
	_, d2, _ := startInput(t, inputConfig(url, q))
	expectOnly(t, d2, "marker")
}

func TestInputReleaseRedelivers(t *testing.T) {
	n := amqptest.Shared(t)
	url := n.URL()
	q := amqptest.QueueName(t, "in-")
	deleteQueue(t, n, q)
	_, d, reg := startInput(t, inputConfig(url, q))
	rawSend(t, rawSession(t, url), "/queue/"+q, binaryMessage(t, "a"))

	d.Next(t, 10*time.Second).Settle(errors.New("output down"))
	again := d.Next(t, 10*time.Second)
	if eventID(t, again) != "a" {
		t.Fatalf("redelivered %q, want a", eventID(t, again))
	}
	if v := testutil.Metric(t, reg, "turnout_amqp_redelivered_total", map[string]string{"name": "in"}); v != 1 {
		t.Errorf("turnout_amqp_redelivered_total = %v, want 1", v)
	}
	again.Settle(nil)
	d.None(t, 500*time.Millisecond)
}

func TestInputPermanentErrorRejects(t *testing.T) {
	n := amqptest.Shared(t)
	url := n.URL()
	q, dlq := amqptest.QueueName(t, "in-"), amqptest.QueueName(t, "dlq-")
	deleteQueue(t, n, q)
	deleteQueue(t, n, dlq)
	n.SetPolicy(q, "^"+q+"$", fmt.Sprintf(`{"dead-letter-exchange":"","dead-letter-routing-key":%q}`, dlq))
	s := rawSession(t, url)
	dead := rawReceiver(t, s, "/queue/"+dlq) // declares the dead-letter queue
	_, d, _ := startInput(t, inputConfig(url, q))
	rawSend(t, s, "/queue/"+q, binaryMessage(t, "poison"), &amqp.Message{Data: [][]byte{[]byte("not an event")}})

	x := d.Next(t, 10*time.Second)
	x.Settle(engine.Permanent(errors.New("no output takes it")))
	bad := d.Next(t, 10*time.Second)
	if bad.M.DecodeErr == nil || string(bad.M.Raw) != "not an event" {
		t.Fatalf("malformed message dispatched as %v / %v / %q", bad.M.Event, bad.M.DecodeErr, bad.M.Raw)
	}
	bad.Settle(engine.Permanent(bad.M.DecodeErr))

	for _, want := range []string{"poison", "not an event"} {
		m := receiveOne(t, dead)
		got := string(m.GetData())
		if want == "poison" {
			if e := decode("dlq", m); e.Event == nil || e.Event.ID() != "poison" {
				t.Errorf("dead letter %v, want event poison", e.DecodeErr)
			}
			continue
		}
		if got != want {
			t.Errorf("dead letter body %q, want %q", got, want)
		}
	}
	d.None(t, 500*time.Millisecond) // rejected, not redelivered
}

// TestInputCreditBoundsUnsettled holds every delivery unsettled and checks that no more than
// credit are ever held, and that delivery resumes as they are settled.
func TestInputCreditBoundsUnsettled(t *testing.T) {
	n := amqptest.Shared(t)
	url := n.URL()
	q := amqptest.QueueName(t, "in-")
	deleteQueue(t, n, q)
	const credit, total = 10, 55
	var msgs []*amqp.Message
	for i := range total {
		msgs = append(msgs, binaryMessage(t, fmt.Sprint(i)))
	}
	rawSend(t, rawSession(t, url), "/queue/"+q, msgs...)
	cfg := inputConfig(url, q)
	cfg.Credit = credit
	_, d, _ := startInput(t, cfg)

	seen := map[string]bool{}
	for len(seen) < total {
		var held []testutil.Dispatched
		for len(held) < credit && len(seen)+len(held) < total {
			x := d.Next(t, 10*time.Second)
			held = append(held, x)
		}
		if len(seen)+len(held) < total {
			d.None(t, 300*time.Millisecond) // the window is full: nothing more may arrive
		}
		for _, x := range held {
			id := eventID(t, x)
			if seen[id] {
				t.Fatalf("event %s delivered twice", id)
			}
			seen[id] = true
			x.Settle(nil)
		}
	}
	d.None(t, 300*time.Millisecond)
}

// TestInputCloseWaitsForSettlement closes the input while the engine still holds a delivery:
// Close waits for the settlement and sends its disposition, so the message is not redelivered.
func TestInputCloseWaitsForSettlement(t *testing.T) {
	n := amqptest.Shared(t)
	url := n.URL()
	q := amqptest.QueueName(t, "in-")
	deleteQueue(t, n, q)
	s := rawSession(t, url)
	rawSend(t, s, "/queue/"+q, binaryMessage(t, "a"))
	in, d, _ := startInput(t, inputConfig(url, q))
	x := d.Next(t, 10*time.Second)

	closed := make(chan error, 1)
	go func() { closed <- in.Close(context.Background()) }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a delivery was unsettled", err)
	case <-time.After(200 * time.Millisecond):
	}
	x.Settle(nil)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	x.Settle(nil) // a second settlement after Close is dropped, not a panic

	rawSend(t, s, "/queue/"+q, binaryMessage(t, "marker"))
	_, d2, _ := startInput(t, inputConfig(url, q))
	expectOnly(t, d2, "marker")
}

// TestInputCloseDeadline closes with a context that ends before the engine settles: Close
// returns the context's error, and the unsettled message is redelivered.
func TestInputCloseDeadline(t *testing.T) {
	n := amqptest.Shared(t)
	url := n.URL()
	q := amqptest.QueueName(t, "in-")
	deleteQueue(t, n, q)
	rawSend(t, rawSession(t, url), "/queue/"+q, binaryMessage(t, "a"))
	in, d, _ := startInput(t, inputConfig(url, q))
	x := d.Next(t, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := in.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want the deadline", err)
	}
	x.Settle(nil) // too late: dropped
	_, d2, _ := startInput(t, inputConfig(url, q))
	expectOnly(t, d2, "a")
}

// closedDispatcher is an engine that has stopped taking input.
type closedDispatcher struct{ calls chan struct{} }

func (c closedDispatcher) Dispatch(context.Context, *engine.Message, engine.SettleFunc) error {
	select {
	case c.calls <- struct{}{}:
	default:
	}
	return engine.ErrClosed
}

// TestInputEngineClosed hands a delivery to an engine that is shutting down: the input gives it
// back to the broker and waits for Close, attached, instead of reconnecting in a loop.
func TestInputEngineClosed(t *testing.T) {
	n := amqptest.Shared(t)
	url := n.URL()
	q := amqptest.QueueName(t, "in-")
	deleteQueue(t, n, q)
	deps, _ := testDeps()
	in, err := newInput("in", inputConfig(url, q), deps)
	if err != nil {
		t.Fatal(err)
	}
	c := closedDispatcher{calls: make(chan struct{}, 1)}
	if err := in.Start(t.Context(), c); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "input attached", in.Ready)
	rawSend(t, rawSession(t, url), "/queue/"+q, binaryMessage(t, "a"))
	select {
	case <-c.calls:
	case <-time.After(10 * time.Second):
		t.Fatal("no Dispatch")
	}
	time.Sleep(300 * time.Millisecond)
	if !in.Ready() {
		t.Error("input detached after the engine closed; it should wait for Close")
	}
	if err := in.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, d, _ := startInput(t, inputConfig(url, q))
	expectOnly(t, d, "a")
}

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
)

func inputConfig(url, queue string) InputConfig {
	return InputConfig{ConnectionConfig: fastConn(url), Address: "/queue/" + queue}
}

func eventID(t testing.TB, x dispatched) string {
	t.Helper()
	if x.m.DecodeErr != nil || x.m.Event == nil {
		t.Fatalf("dispatched a message that did not decode: %v", x.m.DecodeErr)
	}
	return x.m.Event.ID()
}

// expectOnly expects exactly the events ids, in order, accepts them, and then nothing more.
func expectOnly(t testing.TB, d *testDispatcher, ids ...string) {
	t.Helper()
	for _, id := range ids {
		x := d.next(t, 10*time.Second)
		if got := eventID(t, x); got != id {
			t.Fatalf("got event %q, want %q", got, id)
		}
		x.settle(nil)
	}
	d.none(t, 300*time.Millisecond)
}

func TestInputAcceptsAfterSettlement(t *testing.T) {
	url := sharedBroker(t)
	q := queueName(t, "in")
	deleteQueue(t, q)
	in, d, reg := startInput(t, inputConfig(url, q))
	s := rawSession(t, url)
	rawSend(t, s, "/queue/"+q, binaryMessage(t, "a"))

	x := d.next(t, 10*time.Second)
	if eventID(t, x) != "a" || x.m.Origin != "/queue/"+q {
		t.Fatalf("dispatched %v from %q", x.m.Event, x.m.Origin)
	}
	if v := testutil.Metric(t, reg, "turnout_transport_connected", map[string]string{"transport": "amqp", "name": "in"}); v != 1 {
		t.Errorf("turnout_transport_connected = %v while attached, want 1", v)
	}
	x.settle(nil)
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
	url := sharedBroker(t)
	q := queueName(t, "in")
	deleteQueue(t, q)
	_, d, reg := startInput(t, inputConfig(url, q))
	rawSend(t, rawSession(t, url), "/queue/"+q, binaryMessage(t, "a"))

	d.next(t, 10*time.Second).settle(errors.New("output down"))
	again := d.next(t, 10*time.Second)
	if eventID(t, again) != "a" {
		t.Fatalf("redelivered %q, want a", eventID(t, again))
	}
	if v := testutil.Metric(t, reg, "turnout_amqp_redelivered_total", map[string]string{"name": "in"}); v != 1 {
		t.Errorf("turnout_amqp_redelivered_total = %v, want 1", v)
	}
	again.settle(nil)
	d.none(t, 500*time.Millisecond)
}

func TestInputPermanentErrorRejects(t *testing.T) {
	url := sharedBroker(t)
	q, dlq := queueName(t, "in"), queueName(t, "dlq")
	deleteQueue(t, q)
	deleteQueue(t, dlq)
	setPolicy(t, q, "^"+q+"$", fmt.Sprintf(`{"dead-letter-exchange":"","dead-letter-routing-key":%q}`, dlq))
	s := rawSession(t, url)
	dead := rawReceiver(t, s, "/queue/"+dlq) // declares the dead-letter queue
	_, d, _ := startInput(t, inputConfig(url, q))
	rawSend(t, s, "/queue/"+q, binaryMessage(t, "poison"), &amqp.Message{Data: [][]byte{[]byte("not an event")}})

	x := d.next(t, 10*time.Second)
	x.settle(engine.Permanent(errors.New("no output takes it")))
	bad := d.next(t, 10*time.Second)
	if bad.m.DecodeErr == nil || string(bad.m.Raw) != "not an event" {
		t.Fatalf("malformed message dispatched as %v / %v / %q", bad.m.Event, bad.m.DecodeErr, bad.m.Raw)
	}
	bad.settle(engine.Permanent(bad.m.DecodeErr))

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
	d.none(t, 500*time.Millisecond) // rejected, not redelivered
}

// TestInputCreditBoundsUnsettled holds every delivery unsettled and checks that no more than
// credit are ever held, and that delivery resumes as they are settled.
func TestInputCreditBoundsUnsettled(t *testing.T) {
	url := sharedBroker(t)
	q := queueName(t, "in")
	deleteQueue(t, q)
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
		var held []dispatched
		for len(held) < credit && len(seen)+len(held) < total {
			x := d.next(t, 10*time.Second)
			held = append(held, x)
		}
		if len(seen)+len(held) < total {
			d.none(t, 300*time.Millisecond) // the window is full: nothing more may arrive
		}
		for _, x := range held {
			id := eventID(t, x)
			if seen[id] {
				t.Fatalf("event %s delivered twice", id)
			}
			seen[id] = true
			x.settle(nil)
		}
	}
	d.none(t, 300*time.Millisecond)
}

// TestInputCloseWaitsForSettlement closes the input while the engine still holds a delivery:
// Close waits for the settlement and sends its disposition, so the message is not redelivered.
func TestInputCloseWaitsForSettlement(t *testing.T) {
	url := sharedBroker(t)
	q := queueName(t, "in")
	deleteQueue(t, q)
	s := rawSession(t, url)
	rawSend(t, s, "/queue/"+q, binaryMessage(t, "a"))
	in, d, _ := startInput(t, inputConfig(url, q))
	x := d.next(t, 10*time.Second)

	closed := make(chan error, 1)
	go func() { closed <- in.Close(context.Background()) }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a delivery was unsettled", err)
	case <-time.After(200 * time.Millisecond):
	}
	x.settle(nil)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	x.settle(nil) // a second settlement after Close is dropped, not a panic

	rawSend(t, s, "/queue/"+q, binaryMessage(t, "marker"))
	_, d2, _ := startInput(t, inputConfig(url, q))
	expectOnly(t, d2, "marker")
}

// TestInputCloseDeadline closes with a context that ends before the engine settles: Close
// returns the context's error, and the unsettled message is redelivered.
func TestInputCloseDeadline(t *testing.T) {
	url := sharedBroker(t)
	q := queueName(t, "in")
	deleteQueue(t, q)
	rawSend(t, rawSession(t, url), "/queue/"+q, binaryMessage(t, "a"))
	in, d, _ := startInput(t, inputConfig(url, q))
	x := d.next(t, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := in.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want the deadline", err)
	}
	x.settle(nil) // too late: dropped
	_, d2, _ := startInput(t, inputConfig(url, q))
	expectOnly(t, d2, "a")
}

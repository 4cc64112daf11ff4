package amqp

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/Azure/go-amqp"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/amqp/amqptest"
	"github.com/turnout-router/turnout/transports/internal/reconnect"
)

func testDeps() (engine.Deps, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return engine.Deps{Logger: log, Registerer: reg}, reg
}

func fastConn(url string) ConnectionConfig {
	return ConnectionConfig{
		URL:      url,
		Settings: reconnect.Fast,
	}
}

// startInput builds and starts an input on address and waits until it is attached; the test's
// cleanup closes it.
func startInput(t testing.TB, cfg InputConfig) (*Input, *testutil.Dispatcher, *prometheus.Registry) {
	t.Helper()
	deps, reg := testDeps()
	in, err := newInput("in", cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	d := testutil.NewDispatcher()
	if err := in.Start(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = in.Close(ctx)
	})
	waitFor(t, "input attached", in.Ready)
	return in, d, reg
}

// startOutput builds and starts an output and waits until it is attached; the test's cleanup
// closes it.
func startOutput(t testing.TB, cfg OutputConfig) (*Output, *prometheus.Registry) {
	t.Helper()
	deps, reg := testDeps()
	o, err := newOutput("out", cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = o.Close(ctx)
	})
	waitFor(t, "output attached", o.Ready)
	return o, reg
}

// waitFor polls cond until it holds, failing the test after 30s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, what, 30*time.Second, cond)
}

// rawSession opens a connection and session for a test's own sender or receiver; closed by the
// test's cleanup.
func rawSession(t testing.TB, url string) *amqp.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := amqp.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	s, err := c.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rawSend sends msg to address and requires Accepted.
func rawSend(t testing.TB, s *amqp.Session, address string, msgs ...*amqp.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	snd, err := s.NewSender(ctx, address, &amqp.SenderOptions{TargetDurability: amqp.DurabilityConfiguration})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		r, err := snd.SendWithReceipt(ctx, m, nil)
		if err != nil {
			t.Fatal(err)
		}
		st, err := r.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := st.(*amqp.StateAccepted); !ok {
			t.Fatalf("raw send: state %T", st)
		}
	}
}

// rawReceiver attaches a receiver to address with a durable source and a one-time credit of
// 1000 (manual: go-amqp's automatic top-up stalls on RabbitMQ 3.10); the test accepts each
// message with receiveOne.
func rawReceiver(t testing.TB, s *amqp.Session, address string) *amqp.Receiver {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := s.NewReceiver(ctx, address, &amqp.ReceiverOptions{Credit: -1, SourceDurability: amqp.DurabilityConfiguration})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.IssueCredit(1000); err != nil {
		t.Fatal(err)
	}
	return r
}

// receiveOne receives and accepts one message.
func receiveOne(t testing.TB, r *amqp.Receiver) *amqp.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := r.Receive(ctx, nil)
	if err != nil {
		t.Fatalf("receive: %v", err)
	}
	if err := r.AcceptMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
	return m
}

// testEvent returns a valid event with id id and JSON data.
func testEvent(id string) *event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource("/home/42")
	e.SetType("care.alarm.fall")
	_ = e.SetData(event.ApplicationJSON, []byte(`{"level":"high"}`))
	return &e
}

// binaryMessage returns the binary-mode message of testEvent(id).
func binaryMessage(t testing.TB, id string) *amqp.Message {
	t.Helper()
	m, err := encodeBinary(testEvent(id))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// deleteQueue removes a test's queue from node n when the test ends.
func deleteQueue(t testing.TB, n *amqptest.Node, name string) {
	t.Cleanup(func() { _, _ = n.Ctl("delete_queue", name) })
}

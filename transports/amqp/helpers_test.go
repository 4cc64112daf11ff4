package amqp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/Azure/go-amqp"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
)

// sharedURL is the shared RabbitMQ with its AMQP 1.0 plugin.
const sharedURL = "amqp://guest:guest@127.0.0.1:5672"

// sharedBroker returns sharedURL after checking the broker answers; unreachable: t.Fatal
// under CI, t.Skip otherwise.
func sharedBroker(t testing.TB) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", "127.0.0.1:5672", 2*time.Second)
	if err != nil {
		msg := "RabbitMQ not reachable on 127.0.0.1:5672 (run scripts/brokers.sh, then rerun the tests): " + err.Error()
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	_ = c.Close()
	return sharedURL
}

// queueName returns a queue name unique to this test run.
func queueName(t testing.TB, prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	n := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	return prefix + "-" + n + "-" + hex.EncodeToString(b[:])
}

// dispatched is one message the input handed to the test dispatcher.
type dispatched struct {
	m      *engine.Message
	settle engine.SettleFunc
}

// testDispatcher takes every message (no backpressure) and lets the test settle them.
type testDispatcher struct{ ch chan dispatched }

func newTestDispatcher() *testDispatcher { return &testDispatcher{ch: make(chan dispatched, 100000)} }

func (d *testDispatcher) Dispatch(ctx context.Context, m *engine.Message, settle engine.SettleFunc) error {
	select {
	case d.ch <- dispatched{m, settle}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// next waits for the next dispatched message.
func (d *testDispatcher) next(t testing.TB, within time.Duration) dispatched {
	t.Helper()
	select {
	case x := <-d.ch:
		return x
	case <-time.After(within):
		t.Fatalf("no message dispatched within %v", within)
		return dispatched{}
	}
}

// none checks that nothing is dispatched for a while.
func (d *testDispatcher) none(t testing.TB, during time.Duration) {
	t.Helper()
	select {
	case x := <-d.ch:
		t.Fatalf("unexpected message dispatched: %v", x.m.Event)
	case <-time.After(during):
	}
}

func testDeps() (engine.Deps, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return engine.Deps{Logger: log, Registerer: reg}, reg
}

func fastConn(url string) ConnectionConfig {
	return ConnectionConfig{
		URL:                 url,
		ConnectTimeout:      5 * time.Second,
		ReconnectMinBackoff: 50 * time.Millisecond,
		ReconnectMaxBackoff: 500 * time.Millisecond,
	}
}

// startInput builds and starts an input on address and waits until it is attached; the test's
// cleanup closes it.
func startInput(t testing.TB, cfg InputConfig) (*Input, *testDispatcher, *prometheus.Registry) {
	t.Helper()
	deps, reg := testDeps()
	in, err := newInput("in", cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	d := newTestDispatcher()
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
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
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

// setPolicy applies a queue policy on the shared node for the test's duration.
func setPolicy(t testing.TB, name, pattern, definition string) {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", "set_policy", "--apply-to", "queues", name, pattern, definition).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl set_policy: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("rabbitmqctl", "clear_policy", name).Run() })
}

// deleteQueue removes a test's queue from the shared node when the test ends.
func deleteQueue(t testing.TB, name string) {
	t.Cleanup(func() { _ = exec.Command("rabbitmqctl", "delete_queue", name).Run() })
}

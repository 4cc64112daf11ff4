package nats

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/internal/reconnect"
	"github.com/turnout-router/turnout/transports/nats/natstest"
)

func testDeps() engine.Deps {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return engine.Deps{Logger: log, Registerer: prometheus.NewRegistry()}
}

func fastConn(url string) ConnectionConfig {
	return ConnectionConfig{
		URL:      url,
		Settings: reconnect.Fast,
	}
}

// fixture is one stream on a server with the subject its events go to.
type fixture struct {
	url, stream, subject string
}

// sharedFixture creates a stream of its own on the shared server.
func sharedFixture(t testing.TB) fixture {
	t.Helper()
	url := natstest.Shared(t)
	return newFixture(t, url)
}

func newFixture(t testing.TB, url string) fixture {
	t.Helper()
	stream := natstest.Name("T")
	subject := "turnout.test." + stream
	natstest.Stream(t, url, stream, subject)
	return fixture{url: url, stream: stream, subject: subject}
}

func (f fixture) inputConfig() InputConfig {
	return InputConfig{
		ConnectionConfig: fastConn(f.url),
		Stream:           f.stream,
		Consumer:         "turnout",
		NakMinDelay:      50 * time.Millisecond,
		NakMaxDelay:      200 * time.Millisecond,
	}
}

func (f fixture) outputConfig(mode string) OutputConfig {
	return OutputConfig{ConnectionConfig: fastConn(f.url), Subject: f.subject, Stream: f.stream, Mode: mode}
}

// startInput builds and starts an input; the test's cleanup closes it.
func startInput(t testing.TB, cfg InputConfig) (*Input, *testutil.Dispatcher) {
	t.Helper()
	in, err := newInput("in", cfg, testDeps())
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
	waitFor(t, "input connected", in.Ready)
	return in, d
}

// startOutput builds and starts an output; the test's cleanup closes it.
func startOutput(t testing.TB, cfg OutputConfig) *Output {
	t.Helper()
	o, err := newOutput("out", cfg, testDeps())
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Close(context.Background()) })
	waitFor(t, "output connected", o.Ready)
	return o
}

// waitFor polls cond until it holds, failing the test after 30s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, what, 30*time.Second, cond)
}

// fullEvent has every context attribute and extensions of each type the JSON format keeps.
// stringExts makes every extension a string, as binary mode carries them.
func fullEvent(id string, data []byte, contentType string, stringExts bool) *event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource("urn:turnout:test/nats")
	e.SetType("com.example.test")
	e.SetSubject("sub ject/%é \"q\"")
	e.SetDataSchema("https://example.com/schema")
	e.SetTime(time.Date(2026, 11, 30, 4, 5, 6, 789000000, time.UTC))
	e.SetExtension("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	e.SetExtension("region", "eu west 1 ü")
	if stringExts {
		e.SetExtension("count", "42")
		e.SetExtension("flag", "true")
	} else {
		e.SetExtension("count", int32(42))
		e.SetExtension("flag", true)
	}
	e.DataEncoded = data
	e.SetDataContentType(contentType)
	return &e
}

func eventID(i int) string { return fmt.Sprintf("ev-%04d", i) }

// sendConcurrently sends events eventID(0..n-1) through o, each from a goroutine of its own,
// and fails t unless every Send returns nil.
func sendConcurrently(t *testing.T, o *Output, n int) {
	t.Helper()
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- o.Send(t.Context(), fullEvent(eventID(i), []byte("x"), "text/plain", true)) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

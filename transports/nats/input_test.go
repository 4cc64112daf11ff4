package nats

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/ce"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/internal/reconnect"
	"github.com/turnout-router/turnout/transports/nats/natstest"
)

func send(t *testing.T, o *Output, e *event.Event) {
	t.Helper()
	if err := o.Send(t.Context(), e); err != nil {
		t.Fatalf("send %s: %v", e.ID(), err)
	}
}

func TestOutputToInputBothModes(t *testing.T) {
	binary := []byte{0, 1, 2, 0xff, 0xfe}
	big := []byte(strings.Repeat("y", 64<<10))
	for _, mode := range []string{modeBinary, modeStructured} {
		t.Run(mode, func(t *testing.T) {
			f := sharedFixture(t)
			o := startOutput(t, f.outputConfig(mode))
			_, d := startInput(t, f.inputConfig())
			want := []*event.Event{
				fullEvent("json", []byte(`{"a":[1,2],"b":"ü"}`), "application/json", mode == modeBinary),
				fullEvent("bytes", binary, "application/octet-stream", mode == modeBinary),
				fullEvent("big", big, "text/plain", mode == modeBinary),
			}
			for _, e := range want {
				send(t, o, e)
			}
			for _, w := range want {
				got := d.Next(t, 10*time.Second)
				if got.M.DecodeErr != nil {
					t.Fatalf("decode: %v", got.M.DecodeErr)
				}
				if diff := ce.Diff(w, got.M.Event); diff != nil {
					t.Errorf("event %s:\n%s", w.ID(), strings.Join(diff, "\n"))
				}
				if got.M.Origin != f.subject {
					t.Errorf("origin %q, want %q", got.M.Origin, f.subject)
				}
				got.Settle(nil)
			}
			d.None(t, 300*time.Millisecond)
		})
	}
}

func TestOutputConcurrentSends(t *testing.T) {
	f := sharedFixture(t)
	o := startOutput(t, f.outputConfig(modeBinary))
	_, d := startInput(t, f.inputConfig())
	const n = 500
	sendConcurrently(t, o, n)
	seen := map[string]bool{}
	for range n {
		x := d.Next(t, 10*time.Second)
		seen[x.M.Event.ID()] = true
		x.Settle(nil)
	}
	if len(seen) != n {
		t.Fatalf("received %d distinct events, want %d", len(seen), n)
	}
}

func TestOutputWithoutStreamFails(t *testing.T) {
	url := natstest.Shared(t)
	cfg := OutputConfig{ConnectionConfig: fastConn(url), Subject: "turnout.nostream." + natstest.Name("x")}
	cfg.AckTimeout = time.Second
	o := startOutput(t, cfg)
	err := o.Send(t.Context(), fullEvent("1", nil, "", true))
	if err == nil || engine.IsPermanent(err) {
		t.Fatalf("Send to a subject no stream captures: %v, want a retryable error", err)
	}
}

func TestInputMalformedIsDispatched(t *testing.T) {
	f := sharedFixture(t)
	_, d := startInput(t, f.inputConfig())
	nc, js, err := connect(&ConnectionConfig{URL: f.url, Settings: reconnect.Fast}, "pub", testDeps().Logger, func(bool) {})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := js.Publish(t.Context(), f.subject, []byte("not an event")); err != nil {
		t.Fatal(err)
	}
	x := d.Next(t, 10*time.Second)
	if x.M.DecodeErr == nil || string(x.M.Raw) != "not an event" {
		t.Fatalf("malformed message: DecodeErr %v, Raw %q", x.M.DecodeErr, x.M.Raw)
	}
	x.Settle(nil) // the engine dead-lettered it
	d.None(t, 300*time.Millisecond)
}

func TestInputNakRedelivers(t *testing.T) {
	f := sharedFixture(t)
	o := startOutput(t, f.outputConfig(modeBinary))
	_, d := startInput(t, f.inputConfig())
	send(t, o, fullEvent("a", []byte("1"), "text/plain", true))
	send(t, o, fullEvent("b", []byte("2"), "text/plain", true))
	first := map[string]testutil.Dispatched{}
	for range 2 {
		x := d.Next(t, 10*time.Second)
		first[x.M.Event.ID()] = x
	}
	first["a"].Settle(errors.New("output down"))
	first["b"].Settle(nil)
	again := d.Next(t, 10*time.Second)
	if again.M.Event.ID() != "a" {
		t.Fatalf("redelivered %s, want exactly the nacked a", again.M.Event.ID())
	}
	again.Settle(nil)
	d.None(t, 500*time.Millisecond)
}

func TestInputTermIsNotRedelivered(t *testing.T) {
	f := sharedFixture(t)
	o := startOutput(t, f.outputConfig(modeBinary))
	cfg := f.inputConfig()
	cfg.AckWait = time.Second
	_, d := startInput(t, cfg)
	send(t, o, fullEvent("a", []byte("1"), "text/plain", true))
	d.Next(t, 10*time.Second).Settle(engine.Permanent(errors.New("rejected by rule")))
	d.None(t, 2500*time.Millisecond) // beyond ack_wait: a term is final
}

func TestInputAckWaitHonoured(t *testing.T) {
	f := sharedFixture(t)
	o := startOutput(t, f.outputConfig(modeBinary))
	cfg := f.inputConfig()
	cfg.AckWait = time.Second
	_, d := startInput(t, cfg)
	send(t, o, fullEvent("slow", []byte("1"), "text/plain", true))
	x := d.Next(t, 10*time.Second)
	// Held three times ack_wait: marked in progress, so not redelivered meanwhile.
	d.None(t, 3*time.Second)
	x.Settle(nil)
	d.None(t, 2*time.Second)
}

func TestInputMaxAckPendingBounds(t *testing.T) {
	f := sharedFixture(t)
	o := startOutput(t, f.outputConfig(modeBinary))
	cfg := f.inputConfig()
	cfg.MaxAckPending = 5
	_, d := startInput(t, cfg)
	for i := range 20 {
		send(t, o, fullEvent(eventID(i), []byte("x"), "text/plain", true))
	}
	var held []testutil.Dispatched
	for range 5 {
		held = append(held, d.Next(t, 10*time.Second))
	}
	d.None(t, 500*time.Millisecond)
	held[0].Settle(nil)
	held = append(held[1:], d.Next(t, 10*time.Second))
	d.None(t, 300*time.Millisecond)
	for _, x := range held {
		x.Settle(nil)
	}
	for range 14 {
		d.Next(t, 10*time.Second).Settle(nil)
	}
	d.None(t, 300*time.Millisecond)
}

func TestReconnectAfterServerRestart(t *testing.T) {
	srv := natstest.Start(t)
	f := newFixture(t, srv.URL())
	o := startOutput(t, f.outputConfig(modeStructured))
	in, d := startInput(t, f.inputConfig())
	const n = 100
	sendRetrying := func(i int) {
		e := fullEvent(eventID(i), []byte("x"), "text/plain", false)
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := o.Send(t.Context(), e)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("send %s after restart: %v", e.ID(), err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	seen := map[string]bool{}
	for i := range n / 2 {
		sendRetrying(i)
	}
	// Settle half of what arrived, hold the rest unsettled across the restart.
	for range n / 4 {
		x := d.Next(t, 10*time.Second)
		seen[x.M.Event.ID()] = true
		x.Settle(nil)
	}
	srv.Restart()
	waitFor(t, "input reconnected", in.Ready)
	for i := n / 2; i < n; i++ {
		sendRetrying(i)
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(seen) < n && time.Now().Before(deadline) {
		x := d.Next(t, 60*time.Second)
		seen[x.M.Event.ID()] = true
		x.Settle(nil)
	}
	for i := range n {
		if !seen[eventID(i)] {
			t.Errorf("event %s lost", eventID(i))
		}
	}
}

func TestCloseWaitsForSettlement(t *testing.T) {
	f := sharedFixture(t)
	o := startOutput(t, f.outputConfig(modeBinary))
	in, d := startInput(t, f.inputConfig())
	send(t, o, fullEvent("a", []byte("1"), "text/plain", true))
	x := d.Next(t, 10*time.Second)
	go func() { time.Sleep(200 * time.Millisecond); x.Settle(nil) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := in.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// The ack reached the server: a new input on the same consumer gets nothing.
	_, d2 := startInput(t, f.inputConfig())
	d2.None(t, time.Second)
}

// TestCloseWithoutServer closes an input whose server was never there: Close returns at once,
// rather than after a flush of a connection that is down waits its whole timeout (which made
// turnout's shutdown take the full drain timeout), and a publish says it is not connected
// instead of blaming server features it never learnt.
func TestCloseWithoutServer(t *testing.T) {
	cfg := fastConn("nats://" + testutil.FreeAddr(t))
	cfg.ConnectTimeout = time.Minute
	in, err := newInput("in", InputConfig{ConnectionConfig: cfg, Stream: "S", Consumer: "c"}, testDeps())
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Start(t.Context(), testutil.NewDispatcher()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the consume loop is waiting for the connection
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- in.Close(ctx) }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close = %v, want nil: nothing was held", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close of an input without a server still runs after 10s (the flush waits for a connection that is down)")
	}

	o, err := newOutput("out", OutputConfig{ConnectionConfig: cfg, Subject: "s"}, testDeps())
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close(context.Background())
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := o.Send(sctx, fullEvent("a", []byte("1"), "text/plain", true)); err == nil || !strings.Contains(err.Error(), "not connected") {
		t.Errorf("Send without a server = %v, want a not-connected error", err)
	}
}

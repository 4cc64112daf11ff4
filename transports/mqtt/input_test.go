package mqtt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/mqtt/mqtttest"
)

// expectIDs reads len(want) dispatched messages and checks their event ids, in order. settle,
// when not nil, settles each one.
func expectIDs(t *testing.T, d *testutil.Dispatcher, want []string, settle func(i int, x testutil.Dispatched)) {
	t.Helper()
	for i, id := range want {
		x := d.Next(t, 10*time.Second)
		if got := eventID(t, x); got != id {
			t.Fatalf("message %d: got event %q, want %q", i, got, id)
		}
		if settle != nil {
			settle(i, x)
		}
	}
}

func ids(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

func TestInputDispatchAndAck(t *testing.T) {
	url := mqtttest.Shared(t)
	topic, id := "turnout-test/"+uniq(t), uniq(t)
	t.Cleanup(func() { dropSession(t, url, id) })
	in, d, reg := startInput(t, url, id, topic)
	pub := rawClient(t, url)

	publish(t, pub, topic, eventPayload(t, "a"))
	x := d.Next(t, 10*time.Second)
	if eventID(t, x) != "a" || x.M.Origin != topic {
		t.Fatalf("testutil.Dispatched %v from %q", x.M.Event, x.M.Origin)
	}
	if v := testutil.Metric(t, reg, "turnout_transport_connected", map[string]string{"transport": "mqtt", "name": "in"}); v != 1 {
		t.Errorf("turnout_transport_connected = %v while connected, want 1", v)
	}
	x.Settle(nil)
	if err := in.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if in.Ready() {
		t.Error("Ready() after Close")
	}

	// The acknowledged message must not come back; a message published meanwhile must.
	publish(t, pub, topic, eventPayload(t, "marker"))
	_, d2, _ := startInput(t, url, id, topic)
	expectIDs(t, d2, []string{"marker"}, func(_ int, x testutil.Dispatched) { x.Settle(nil) })
}

func TestInputRejectRedelivers(t *testing.T) {
	url := mqtttest.Shared(t)
	topic, id := "turnout-test/"+uniq(t), uniq(t)
	t.Cleanup(func() { dropSession(t, url, id) })
	_, d, reg := startInput(t, url, id, topic)
	pub := rawClient(t, url)

	payload := eventPayload(t, "a")
	publish(t, pub, topic, payload)
	x := d.Next(t, 10*time.Second)
	x.Settle(errors.New("output down"))

	again := d.Next(t, 10*time.Second)
	if eventID(t, again) != "a" {
		t.Fatalf("redelivered %v", again.M.Event)
	}
	b, _ := again.M.Event.MarshalJSON()
	x0, _ := x.M.Event.MarshalJSON()
	if !bytes.Equal(b, x0) {
		t.Errorf("redelivered event differs:\n%s\n%s", b, x0)
	}
	if v := testutil.Metric(t, reg, "turnout_mqtt_redelivered_total", map[string]string{"name": "in"}); v != 1 {
		t.Errorf("turnout_mqtt_redelivered_total = %v, want 1 (DUP=1 on the redelivery)", v)
	}
	again.Settle(nil)

	publish(t, pub, topic, eventPayload(t, "marker"))
	expectIDs(t, d, []string{"marker"}, func(_ int, x testutil.Dispatched) { x.Settle(nil) })
}

// TestInputOrderedAcksAndRejectBurst settles twenty messages in order and rejects three of
// them: one reconnect serves the whole burst, the acknowledged messages before the first
// rejection never come back, and everything from the first rejection on comes back once, in
// order (PUBACKs are never sent out of order, so those behind a rejection are not acked).
func TestInputOrderedAcksAndRejectBurst(t *testing.T) {
	url := mqtttest.Shared(t)
	topic, id := "turnout-test/"+uniq(t), uniq(t)
	t.Cleanup(func() { dropSession(t, url, id) })
	_, d, reg := startInput(t, url, id, topic)
	pub := rawClient(t, url)

	all := ids("m", 0, 20)
	for _, e := range all {
		publish(t, pub, topic, eventPayload(t, e))
	}
	var first []testutil.Dispatched // all twenty are testutil.Dispatched before any is settled
	expectIDs(t, d, all, func(_ int, x testutil.Dispatched) { first = append(first, x) })
	for i, x := range first {
		if i == 5 || i == 7 || i == 9 {
			x.Settle(fmt.Errorf("reject %d", i))
			continue
		}
		x.Settle(nil)
	}
	expectIDs(t, d, all[5:], func(_ int, x testutil.Dispatched) { x.Settle(nil) })
	if v := testutil.Metric(t, reg, "turnout_mqtt_redelivered_total", map[string]string{"name": "in"}); v != 15 {
		t.Errorf("turnout_mqtt_redelivered_total = %v, want 15", v)
	}
	publish(t, pub, topic, eventPayload(t, "marker"))
	expectIDs(t, d, []string{"marker"}, func(_ int, x testutil.Dispatched) { x.Settle(nil) })
}

func TestInputMalformedPayloadIsDispatched(t *testing.T) {
	url := mqtttest.Shared(t)
	topic, id := "turnout-test/"+uniq(t), uniq(t)
	t.Cleanup(func() { dropSession(t, url, id) })
	_, d, _ := startInput(t, url, id, topic)
	pub := rawClient(t, url)

	publish(t, pub, topic, []byte("{not an event"))
	x := d.Next(t, 10*time.Second)
	if x.M.DecodeErr == nil || x.M.Event != nil {
		t.Fatalf("want DecodeErr, got event %v", x.M.Event)
	}
	if string(x.M.Raw) != "{not an event" || x.M.Origin != topic {
		t.Errorf("Raw = %q, Origin = %q", x.M.Raw, x.M.Origin)
	}
	x.Settle(nil) // the engine dead-lettered it
	publish(t, pub, topic, eventPayload(t, "marker"))
	expectIDs(t, d, []string{"marker"}, func(_ int, x testutil.Dispatched) { x.Settle(nil) })
}

// TestInputReceivesQueuedMessagesAtStart checks that messages queued in the session while
// turnout was away are testutil.Dispatched, including those arriving right after CONNACK.
func TestInputReceivesQueuedMessagesAtStart(t *testing.T) {
	url := mqtttest.Shared(t)
	topic, id := "turnout-test/"+uniq(t), uniq(t)
	t.Cleanup(func() { dropSession(t, url, id) })
	in, _, _ := startInput(t, url, id, topic) // creates the session and subscription
	if err := in.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	pub := rawClient(t, url)
	want := ids("q", 0, 30)
	for _, e := range want {
		publish(t, pub, topic, eventPayload(t, e))
	}
	_, d, _ := startInput(t, url, id, topic)
	expectIDs(t, d, want, func(_ int, x testutil.Dispatched) { x.Settle(nil) })
}

func TestInputConfigErrorsNameTheKey(t *testing.T) {
	deps, _ := testDeps(t)
	base := func() InputConfig {
		return InputConfig{ConnectionConfig: ConnectionConfig{Brokers: []string{"tcp://127.0.0.1:1883"}, ClientID: "x"}, Topics: []string{"a/#"}}
	}
	cases := []struct {
		name, key string
		mod       func(*InputConfig)
	}{
		{"no brokers", "brokers", func(c *InputConfig) { c.Brokers = nil }},
		{"bad scheme", "brokers[0]", func(c *InputConfig) { c.Brokers = []string{"http://x:1"} }},
		{"no port", "brokers[0]", func(c *InputConfig) { c.Brokers = []string{"tcp://x"} }},
		{"no client id", "client_id", func(c *InputConfig) { c.ClientID = "" }},
		{"no topics", "topics", func(c *InputConfig) { c.Topics = nil }},
		{"bad filter", "topics[1]", func(c *InputConfig) { c.Topics = []string{"a", "a/#/b"} }},
		{"bad plus", "topics[0]", func(c *InputConfig) { c.Topics = []string{"a+"} }},
		{"password alone", "password", func(c *InputConfig) { c.Password = "p" }},
		{"cert without key", "tls.cert_file", func(c *InputConfig) { c.TLS.CertFile = "c.pem" }},
		{"missing CA", "tls.ca_file", func(c *InputConfig) { c.TLS.CAFile = "/nonexistent.pem" }},
		{"backoff order", "reconnect_max_backoff", func(c *InputConfig) {
			c.ReconnectMinBackoff = time.Second
			c.ReconnectMaxBackoff = time.Millisecond
		}},
		{"keepalive", "keepalive", func(c *InputConfig) { c.KeepAlive = time.Millisecond }},
		{"receive buffer", "receive_buffer", func(c *InputConfig) { c.ReceiveBuffer = -1 }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base()
			c.mod(&cfg)
			_, err := newInput("in", cfg, deps)
			if err == nil {
				t.Fatal("accepted")
			}
			if !bytes.Contains([]byte(err.Error()), []byte(c.key)) {
				t.Errorf("error %q does not name %q", err, c.key)
			}
		})
	}
	if _, err := newInput("ok", base(), deps); err != nil {
		t.Errorf("valid configuration refused: %v", err)
	}
}

// gatedDispatcher blocks every Dispatch until the gate opens, like an engine at its in-flight
// limit.
type gatedDispatcher struct {
	gate chan struct{}
	*testutil.Dispatcher
}

func (g *gatedDispatcher) Dispatch(ctx context.Context, m *engine.Message, settle engine.SettleFunc) error {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.Dispatcher.Dispatch(ctx, m, settle)
}

// TestInputBackpressure holds the engine closed while more messages arrive than the receive
// buffer holds: nothing is lost or reordered once the engine takes messages again.
func TestInputBackpressure(t *testing.T) {
	url := mqtttest.Shared(t)
	topic, id := "turnout-test/"+uniq(t), uniq(t)
	t.Cleanup(func() { dropSession(t, url, id) })
	deps, _ := testDeps(t)
	cfg := InputConfig{ConnectionConfig: fastConn(url, id), Topics: []string{topic}, ReceiveBuffer: 2}
	in, err := newInput("in", cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	g := &gatedDispatcher{gate: make(chan struct{}), Dispatcher: testutil.NewDispatcher()}
	if err := in.Start(t.Context(), g); err != nil {
		t.Fatal(err)
	}
	defer in.Close(context.Background())
	testutil.WaitFor(t, "input ready", 10*time.Second, in.Ready)
	pub := rawClient(t, url)
	want := ids("p", 0, 60)
	for _, e := range want {
		publish(t, pub, topic, eventPayload(t, e))
	}
	time.Sleep(200 * time.Millisecond) // let the buffer fill and paho stall
	close(g.gate)
	expectIDs(t, g.Dispatcher, want, func(_ int, x testutil.Dispatched) { x.Settle(nil) })
}

// TestInputStartsWhileBrokerDown: Start succeeds with the broker down, Ready tells, and the
// input connects and receives once the broker is up.
func TestInputStartsWhileBrokerDown(t *testing.T) {
	m := mqtttest.Start(t)
	id := uniq(t)
	in, _, _ := startInput(t, m.URL(), id, "t/#") // create the session
	if err := in.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	m.Stop()

	deps, _ := testDeps(t)
	in2, err := newInput("in", InputConfig{ConnectionConfig: fastConn(m.URL(), id), Topics: []string{"t/#"}}, deps)
	if err != nil {
		t.Fatal(err)
	}
	d := testutil.NewDispatcher()
	if err := in2.Start(t.Context(), d); err != nil {
		t.Fatalf("Start with the broker down: %v", err)
	}
	defer in2.Close(context.Background())
	if in2.Ready() {
		t.Fatal("Ready() with the broker down")
	}
	m.Restart()
	testutil.WaitFor(t, "input ready after the broker came up", 10*time.Second, in2.Ready)
	publish(t, rawClient(t, m.URL()), "t/x", eventPayload(t, "late"))
	expectIDs(t, d, []string{"late"}, func(_ int, x testutil.Dispatched) { x.Settle(nil) })
}

// TestInputSettleAfterClose: the engine may settle messages after Close; that must neither
// block nor panic, and the message comes back to the next session.
func TestInputSettleAfterClose(t *testing.T) {
	url := mqtttest.Shared(t)
	topic, id := "turnout-test/"+uniq(t), uniq(t)
	t.Cleanup(func() { dropSession(t, url, id) })
	in, d, _ := startInput(t, url, id, topic)
	publish(t, rawClient(t, url), topic, eventPayload(t, "x"))
	x := d.Next(t, 10*time.Second)
	if err := in.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	x.Settle(nil)
	_, d2, _ := startInput(t, url, id, topic)
	expectIDs(t, d2, []string{"x"}, func(_ int, x testutil.Dispatched) { x.Settle(nil) })
}

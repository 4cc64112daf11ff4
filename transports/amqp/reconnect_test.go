package amqp

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/amqp/amqptest"
)

// TestReconnectAfterBrokerRestart restarts a private broker under an input and an output: both
// reattach by themselves, nothing sent before, during or after the restart is missing, and the
// deliveries the engine held unsettled across the restart are delivered again.
func TestReconnectAfterBrokerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a private RabbitMQ node; run without -short")
	}
	node := amqptest.Start(t)
	url := node.URL()
	q := amqptest.QueueName(t, "restart-")
	o, oreg := startOutput(t, outputConfig(url, q, modeBinary))
	cfg := inputConfig(url, q)
	cfg.Credit = 10
	in, d, ireg := startInput(t, cfg)

	send := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if err := o.Send(t.Context(), testEvent(fmt.Sprint(i))); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
	}
	seen := map[string]int{}
	send(0, 20)
	var held []testutil.Dispatched
	for i := range 20 {
		x := d.Next(t, 10*time.Second)
		seen[eventID(t, x)]++
		if i < 15 {
			x.Settle(nil)
		} else {
			held = append(held, x)
		}
	}

	node.StopApp()
	waitFor(t, "input and output notice the broker is gone", func() bool { return !in.Ready() && !o.Ready() })
	if v := testutil.Metric(t, ireg, "turnout_transport_connected", nil) + testutil.Metric(t, oreg, "turnout_transport_connected", nil); v != 0 {
		t.Errorf("turnout_transport_connected = %v while the broker is down, want 0", v)
	}
	for _, x := range held {
		x.Settle(nil) // the connection it came on is gone: dropped, the broker redelivers
	}
	if err := o.Send(t.Context(), testEvent("during")); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Send while the broker is down = %v, want ErrNotConnected", err)
	}

	node.StartApp()
	waitFor(t, "input and output reattach", func() bool { return in.Ready() && o.Ready() })
	send(20, 40)
	for len(seen) < 40 {
		x := d.Next(t, 30*time.Second)
		seen[eventID(t, x)]++
		x.Settle(nil)
	}
	for i := range 40 {
		if seen[fmt.Sprint(i)] == 0 {
			t.Errorf("event %d missing", i)
		}
	}
	for _, x := range held {
		if id := eventID(t, x); seen[id] < 2 {
			t.Errorf("event %s was unsettled across the restart and not delivered again", id)
		}
	}
}

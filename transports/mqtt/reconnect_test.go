package mqtt

import (
	"context"
	"testing"
	"time"

	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/mqtt/mqtttest"
)

// TestBrokerOutage stops a private mosquitto while the input and the output are running, then
// starts it again: both resume on their own, Send fails (and does not hang) while the broker is
// down, and every event the output had confirmed arrives at the input.
//
// "restart" stops mosquitto gracefully while the input holds unsettled messages: they are
// settled during the outage (their PUBACKs are lost with the connection) and must come back
// after the restart. "crash" kills mosquitto with SIGKILL; messages in flight to a connected
// subscriber do not survive that in mosquitto 2.0.11 whatever its autosave settings (measured:
// messages queued for an offline session do), so the input settles them before the crash.
func TestBrokerOutage(t *testing.T) {
	for _, c := range []struct {
		name      string
		holdAcked bool // settle the first batch only during the outage
		stop      func(*mqtttest.Mosquitto)
	}{
		{"restart", true, (*mqtttest.Mosquitto).Stop},
		{"crash", false, (*mqtttest.Mosquitto).Kill},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := mqtttest.Start(t)
			in, d, reg := startInput(t, m.URL(), uniq(t), "alarms/#")
			out := startOutput(t, m.URL(), OutputConfig{TopicTemplate: "alarms/{type}"})
			testutil.WaitFor(t, "output ready", 10*time.Second, out.Ready)

			before := ids("a", 0, 5)
			for _, e := range before {
				if err := out.Send(t.Context(), newEvent(e, nil)); err != nil {
					t.Fatalf("Send %s: %v", e, err)
				}
			}
			var held []testutil.Dispatched
			expectIDs(t, d, before, func(_ int, x testutil.Dispatched) {
				if c.holdAcked {
					held = append(held, x)
				} else {
					x.Settle(nil)
				}
			})
			if !c.holdAcked {
				time.Sleep(100 * time.Millisecond) // let the PUBACKs reach mosquitto
			}

			c.stop(m)
			testutil.WaitFor(t, "input and output to notice the outage", 10*time.Second, func() bool {
				return !in.Ready() && !out.Ready()
			})
			labels := map[string]string{"transport": "mqtt", "name": "in"}
			if v := testutil.Metric(t, reg, "turnout_transport_connected", labels); v != 0 {
				t.Errorf("turnout_transport_connected = %v while the broker is down, want 0", v)
			}
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			if err := out.Send(ctx, newEvent("down", nil)); err == nil {
				t.Fatal("Send confirmed an event while the broker was down")
			}
			cancel()
			for _, x := range held {
				x.Settle(nil) // too late: the connection these arrived on is gone
			}

			m.Restart()
			testutil.WaitFor(t, "input and output to reconnect", 20*time.Second, func() bool { return in.Ready() && out.Ready() })
			if v := testutil.Metric(t, reg, "turnout_transport_connected", labels); v != 1 {
				t.Errorf("turnout_transport_connected = %v after reconnecting, want 1", v)
			}
			after := ids("b", 0, 5)
			for _, e := range after {
				if err := out.Send(t.Context(), newEvent(e, nil)); err != nil {
					t.Fatalf("Send %s after restart: %v", e, err)
				}
			}
			want := map[string]bool{}
			for _, e := range after {
				want[e] = true
			}
			if c.holdAcked {
				for _, e := range before {
					want[e] = true
				}
			}
			for len(want) > 0 {
				x := d.Next(t, 15*time.Second)
				delete(want, eventID(t, x))
				x.Settle(nil)
			}
			redelivered := testutil.Metric(t, reg, "turnout_mqtt_redelivered_total", map[string]string{"name": "in"})
			if c.holdAcked && redelivered < float64(len(before)) {
				t.Errorf("turnout_mqtt_redelivered_total = %v, want >= %d", redelivered, len(before))
			}
		})
	}
}

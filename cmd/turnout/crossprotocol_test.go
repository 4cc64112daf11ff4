package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/turnout-router/turnout/internal/ce"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/amqp/amqptest"
	"github.com/turnout-router/turnout/transports/mqtt/mqtttest"
)

// crossEvents are structured JSON events as an MQTT device would publish them, covering every
// context attribute, extensions of each JSON type and of the string forms of the other types,
// and data of each kind.
var crossEvents = []string{
	// Every context attribute, time finer than a millisecond, JSON data, extensions.
	`{"specversion":"1.0","id":"all-1","source":"/home/42","type":"care.alarm.fall","subject":"room 3",
	  "dataschema":"https://schemas.example.org/alarm","time":"2026-11-30T03:04:05.678901234Z",
	  "datacontenttype":"application/json","data":{"level":"high","n":[1,2.5,null]},
	  "site":"north","seq":42,"urgent":true,"link":"https://example.org/a?b=c",
	  "seen":"2026-11-30T03:04:05.123Z","sig":"AAEC/w=="}`,
	// Time on a millisecond (an AMQP timestamp on the way), text data.
	`{"specversion":"1.0","id":"text-1","source":"urn:dev:7","type":"care.note","time":"2026-11-30T03:04:05.678Z",
	  "datacontenttype":"text/plain; charset=utf-8","data":"grüße, \"quoted\"\nline"}`,
	// Binary data.
	`{"specversion":"1.0","id":"bin-1","source":"/cam/1","type":"care.snapshot",
	  "datacontenttype":"application/octet-stream","data_base64":"/9j/4AAQSkZJRgABAQ=="}`,
	// An explicit non-JSON media type with text data, and a negative integer extension.
	`{"specversion":"1.0","id":"xml-1","source":"/x","type":"care.xml","datacontenttype":"application/xml",
	  "data":"<alarm level=\"high\"/>","offset":-7}`,
	// JSON data without datacontenttype.
	`{"specversion":"1.0","id":"nodct-1","source":"/x","type":"care.json","data":[true,"x"]}`,
	// No data at all.
	`{"specversion":"1.0","id":"nodata-1","source":"/x","type":"care.ping","flag":false}`,
}

// TestCrossProtocolRoundTrip runs turnout with two routes, MQTT -> AMQP (binary mode) and
// AMQP -> MQTT (structured), on the shared mosquitto and RabbitMQ, publishes structured JSON
// events on MQTT and compares what comes back on MQTT with the originals, field by field: the
// context attributes, the extensions with their JSON types, and the data's bytes.
func TestCrossProtocolRoundTrip(t *testing.T) {
	mqttURL := mqtttest.Shared(t)
	rabbit := amqptest.Shared(t)
	queue := amqptest.QueueName(t, "cross-")
	t.Cleanup(func() { _, _ = rabbit.Ctl("delete_queue", queue) })
	run := strings.TrimPrefix(amqptest.QueueName(t, ""), "TestCrossProtocolRoundTrip-")
	inTopic, outTopic := "turnout-test/cross/in/"+run, "turnout-test/cross/out/"+run
	clientID := "turnout-test-cross-" + run
	t.Cleanup(func() { dropMQTTSession(mqttURL, clientID) })

	dir := t.TempDir()
	adminAddr := testutil.FreeAddr(t)
	path := writeConfig(t, dir, fmt.Sprintf(`
admin: { listen: "%[1]s" }
shutdown: { drain_timeout: 5s }
inputs:
  devices: { type: mqtt, brokers: ["%[2]s"], client_id: "%[3]s", topics: ["%[4]s"] }
  centre:  { type: amqp, url: "%[5]s", address: "/queue/%[6]s", credit: 64 }
outputs:
  to-centre:  { type: amqp, url: "%[5]s", address: "/queue/%[6]s", mode: binary }
  to-devices: { type: mqtt, brokers: ["%[2]s"], topic: "%[7]s" }
routes:
  up:   { inputs: [devices], outputs: [to-centre] }
  down: { inputs: [centre], outputs: [to-devices] }
`, adminAddr, mqttURL, clientID, inTopic, rabbit.URL(), queue, outTopic))

	received := make(chan []byte, 100)
	sub := mqttClient(t, mqttURL, clientID+"-sub")
	if tok := sub.Subscribe(outTopic, 1, func(_ paho.Client, m paho.Message) { received <- m.Payload() }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", outTopic, tok.Error())
	}
	r := startRun(t, path, adminAddr)
	pub := mqttClient(t, mqttURL, clientID+"-pub")
	want := map[string][]byte{}
	for _, raw := range crossEvents {
		var compact bytes.Buffer
		if err := json.Compact(&compact, []byte(raw)); err != nil {
			t.Fatalf("test event %s: %v", raw, err)
		}
		e, err := ce.DecodeStructured(compact.Bytes())
		if err != nil {
			t.Fatalf("test event %s: %v", raw, err)
		}
		want[e.ID()] = compact.Bytes()
		if tok := pub.Publish(inTopic, 1, false, compact.Bytes()); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}

	got := map[string][]byte{}
	deadline := time.After(30 * time.Second)
	for len(got) < len(want) {
		select {
		case b := <-received:
			e, err := ce.DecodeStructured(b)
			if err != nil {
				t.Fatalf("turnout published an invalid event %s: %v", b, err)
			}
			got[e.ID()] = b
		case <-deadline:
			t.Fatalf("received %d of %d events within 30s; stderr:\n%s", len(got), len(want), r.stderr.String())
		}
	}
	for id, in := range want {
		t.Run(id, func(t *testing.T) {
			out, ok := got[id]
			if !ok {
				t.Fatalf("event %s did not come back", id)
			}
			a, _ := ce.DecodeStructured(in)
			b, _ := ce.DecodeStructured(out)
			if d := ce.Diff(a, b); d != nil {
				t.Errorf("event changed on the way MQTT -> AMQP -> MQTT:\n%s\nsent     %s\nreceived %s", strings.Join(d, "\n"), in, out)
			}
			// The JSON form of the data is kept too: JSON stays JSON, binary stays data_base64,
			// text stays a string.
			var sent, came map[string]json.RawMessage
			_ = json.Unmarshal(in, &sent)
			_ = json.Unmarshal(out, &came)
			for _, member := range []string{"data", "data_base64"} {
				if _, inSent := sent[member]; inSent != (came[member] != nil) {
					t.Errorf("member %q: sent %v, received %v\nreceived %s", member, inSent, came[member] != nil, out)
				}
			}
			if _, ok := sent["data"]; ok && !jsonEqual(sent["data"], came["data"]) {
				t.Errorf("data: sent %s, received %s", sent["data"], came["data"])
			}
		})
	}
	if code := r.stop(t); code != 0 {
		t.Errorf("exit code %d; stderr:\n%s", code, r.stderr.String())
	}
}

// jsonEqual reports whether two JSON texts hold the same value.
func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xs, _ := json.Marshal(x)
	ys, _ := json.Marshal(y)
	return bytes.Equal(xs, ys)
}

// mqttClient connects a clean-session MQTT 3.1.1 client for the test; the test's cleanup
// disconnects it.
func mqttClient(t *testing.T, url, id string) paho.Client {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true).
		SetProtocolVersion(4).SetConnectTimeout(5 * time.Second))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt connect %s: %v", url, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// dropMQTTSession removes the persistent session of clientID from the broker.
func dropMQTTSession(url, clientID string) {
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(clientID).SetCleanSession(true).SetProtocolVersion(4))
	if tok := c.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
		c.Disconnect(100)
	}
}

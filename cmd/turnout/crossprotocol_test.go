package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/turnout-router/turnout/internal/ce"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/amqp/amqptest"
	"github.com/turnout-router/turnout/transports/kafka/kafkatest"
	"github.com/turnout-router/turnout/transports/mqtt/mqtttest"
	"github.com/turnout-router/turnout/transports/nats/natstest"
)

// crossEvents are structured JSON events as an MQTT device would publish them, covering every
// context attribute, extensions of each JSON type and of the string forms of the other types,
// and data of each kind.
var crossEvents = []string{
	// Every context attribute, time finer than a millisecond, JSON data, extensions, and the
	// distributed tracing extension (traceparent, tracestate), which every leg carries unchanged.
	`{"specversion":"1.0","id":"all-1","source":"/home/42","type":"care.alarm.fall","subject":"room 3",
	  "dataschema":"https://schemas.example.org/alarm","time":"2026-11-30T03:04:05.678901234Z",
	  "datacontenttype":"application/json","data":{"level":"high","n":[1,2.5,null]},
	  "site":"north","seq":42,"partitionkey":"pendant-42","urgent":true,"link":"https://example.org/a?b=c",
	  "seen":"2026-11-30T03:04:05.123Z","sig":"AAEC/w==",
	  "traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"}`,
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

// hop is one leg of the cross-protocol chain: turnout's output writes the event to a server in
// a content mode, and turnout's input reads it back from there for the next leg.
type hop struct {
	name string
	// yaml returns the output and input blocks of the leg (flow style, on one line each).
	output, input string
	// typed says the leg keeps the types of extensions: a binary mode of string headers (HTTP,
	// NATS, Kafka) turns them into their canonical strings [CE-1.0 §3.1.1 type system].
	typed bool
}

// TestCrossProtocolRoundTrip runs one turnout whose routes pass every event along a chain that
// crosses every broker protocol in both content modes: MQTT (structured, from the device) ->
// AMQP binary -> NATS binary -> Kafka binary -> HTTP binary -> AMQP structured -> NATS
// structured -> Kafka structured -> HTTP structured -> MQTT. Kafka is the in-process kfake
// cluster of kafkatest (no Kafka broker can run here); its outputs key records by partitionkey. It publishes structured JSON events on MQTT and compares what comes out on
// MQTT with the originals, field by field: the context attributes, the extensions (with their
// JSON types up to the first leg of string headers, as their canonical strings after it), and
// the data's bytes and JSON form.
func TestCrossProtocolRoundTrip(t *testing.T) {
	mqttURL := mqtttest.Shared(t)
	rabbit := amqptest.Shared(t)
	natsURL := natstest.Shared(t)
	run := strings.TrimPrefix(amqptest.QueueName(t, ""), "TestCrossProtocolRoundTrip-")
	inTopic, outTopic := "turnout-test/cross/in/"+run, "turnout-test/cross/out/"+run
	clientID := "turnout-test-cross-" + run
	t.Cleanup(func() { dropMQTTSession(mqttURL, clientID) })

	queue := func(mode string) string {
		q := amqptest.QueueName(t, "cross-"+mode+"-")
		t.Cleanup(func() { _, _ = rabbit.Ctl("delete_queue", q) })
		return q
	}
	stream := func(mode string) (name, subject string) {
		name, subject = natstest.Name("CROSS_"+strings.ToUpper(mode)), "cross."+mode+"."+run
		natstest.Stream(t, natsURL, name, subject)
		return name, subject
	}
	amqpHop := func(mode string) hop {
		q := queue(mode)
		return hop{name: "amqp-" + mode, typed: true,
			output: fmt.Sprintf("{ type: amqp, url: %q, address: /queue/%s, mode: %s }", rabbit.URL(), q, mode),
			input:  fmt.Sprintf("{ type: amqp, url: %q, address: /queue/%s, credit: 64 }", rabbit.URL(), q)}
	}
	natsHop := func(mode string) hop {
		name, subject := stream(mode)
		return hop{name: "nats-" + mode, typed: mode == "structured",
			output: fmt.Sprintf("{ type: nats, url: %q, subject: %s, mode: %s }", natsURL, subject, mode),
			input:  fmt.Sprintf("{ type: nats, url: %q, stream: %s, consumer: turnout }", natsURL, name)}
	}
	kafka := kafkatest.Start(t)
	kafkaHop := func(mode string) hop {
		topic := kafka.Topic(t, "cross-"+mode, 2)
		return hop{name: "kafka-" + mode, typed: mode == "structured",
			output: fmt.Sprintf("{ type: kafka, brokers: [%q], topic: %s, mode: %s, key: partitionkey }", kafka.Addr(), topic, mode),
			input:  fmt.Sprintf("{ type: kafka, brokers: [%q], topics: [%s], group: turnout-%s }", kafka.Addr(), topic, run)}
	}
	httpHop := func(mode string) hop {
		addr := testutil.FreeAddr(t)
		return hop{name: "http-" + mode, typed: mode == "structured",
			output: fmt.Sprintf("{ type: http, url: \"http://%s/%s\", mode: %s }", addr, mode, mode),
			input:  fmt.Sprintf("{ type: http, listen: %q, path: /%s }", addr, mode)}
	}
	chain := []hop{amqpHop("binary"), natsHop("binary"), kafkaHop("binary"), httpHop("binary"),
		amqpHop("structured"), natsHop("structured"), kafkaHop("structured"), httpHop("structured")}

	// Route i takes the event from the input of leg i-1 (the devices' MQTT topic for i = 0) to
	// the output of leg i; the last route takes it from the last leg to the devices' MQTT topic.
	var inputs, outputs, routes strings.Builder
	fmt.Fprintf(&inputs, "  devices: { type: mqtt, brokers: [%q], client_id: %q, topics: [%q] }\n", mqttURL, clientID, inTopic)
	fmt.Fprintf(&outputs, "  to-devices: { type: mqtt, brokers: [%q], topic: %q }\n", mqttURL, outTopic)
	from := "devices"
	for _, h := range chain {
		fmt.Fprintf(&inputs, "  from-%s: %s\n", h.name, h.input)
		fmt.Fprintf(&outputs, "  to-%s: %s\n", h.name, h.output)
		fmt.Fprintf(&routes, "  %s: { inputs: [%s], outputs: [to-%s], dead_letter: dead }\n", h.name, from, h.name)
		from = "from-" + h.name
	}
	fmt.Fprintf(&routes, "  back: { inputs: [%s], outputs: [to-devices], dead_letter: dead }\n", from)
	dir := t.TempDir()
	deadLetters := dir + "/dead.jsonl"
	fmt.Fprintf(&outputs, "  dead: { type: file, path: %q }\n", deadLetters)
	adminAddr := testutil.FreeAddr(t)
	t.Chdir(t.TempDir()) // the configuration keeps the default data_dir, ./data: not in the checkout
	path := writeConfig(t, dir, fmt.Sprintf(`
admin: { listen: "%s" }
shutdown: { drain_timeout: 5s }
inputs:
%soutputs:
%sroutes:
%s`, adminAddr, inputs.String(), outputs.String(), routes.String()))

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
	deadline := time.After(60 * time.Second)
	for len(got) < len(want) {
		select {
		case b := <-received:
			e, err := ce.DecodeStructured(b)
			if err != nil {
				t.Fatalf("turnout published an invalid event %s: %v", b, err)
			}
			got[e.ID()] = b
		case <-deadline:
			t.Fatalf("received %d of %d events within 60s; stderr:\n%s", len(got), len(want), r.stderr.String())
		}
	}
	typed := true
	var legs []string
	for _, h := range chain {
		typed = typed && h.typed
		legs = append(legs, h.name)
	}
	for id, in := range want {
		t.Run(id, func(t *testing.T) {
			out, ok := got[id]
			if !ok {
				t.Fatalf("event %s did not come back", id)
			}
			a, _ := ce.DecodeStructured(in)
			b, _ := ce.DecodeStructured(out)
			if !typed {
				stringExtensions(t, a)
			}
			if d := ce.Diff(a, b); d != nil {
				t.Errorf("event changed on the way mqtt -> %s -> mqtt:\n%s\nsent     %s\nreceived %s", strings.Join(legs, " -> "), strings.Join(d, "\n"), in, out)
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
	if b, err := os.ReadFile(deadLetters); err == nil && len(b) > 0 {
		t.Errorf("turnout dead-lettered events on the way:\n%s\nstderr:\n%s", b, r.stderr.String())
	}
}

// stringExtensions replaces every extension of e by its canonical string, as a binary mode of
// string headers carries it.
func stringExtensions(t *testing.T, e *event.Event) {
	t.Helper()
	for name, v := range e.Extensions() {
		s, err := types.Format(v)
		if err != nil {
			t.Fatalf("extension %s: %v", name, err)
		}
		e.SetExtension(name, s)
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

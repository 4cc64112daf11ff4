package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/go-amqp"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/turnout-router/turnout/internal/rulebuild"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/amqp/amqptest"
	"github.com/turnout-router/turnout/transports/kafka/kafkatest"
	"github.com/turnout-router/turnout/transports/mqtt/mqtttest"
	"github.com/turnout-router/turnout/transports/nats/natstest"
)

// exampleTree copies examples/NAME and the stock rules it refers to into a temporary tree
// shaped like the repository (examples/NAME/..., build/rules/*.wasm, as `make rules` builds
// them), so each example runs exactly as its README describes without touching the checkout.
// It returns the path of the copied turnout.yaml.
func exampleTree(t *testing.T, name string) string {
	t.Helper()
	root, err := rulebuild.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	tree := t.TempDir()
	src := filepath.Join(root, "examples", name)
	dst := filepath.Join(tree, "examples", name)
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatalf("copy example %s: %v", name, err)
	}
	rules, err := filepath.Glob(filepath.Join(root, "filters", "rules", "*", "main.go"))
	if err != nil || len(rules) == 0 {
		t.Fatalf("no stock rules under filters/rules: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(tree, "build", "rules"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, main := range rules {
		rule := filepath.Base(filepath.Dir(main))
		wasm, err := rulebuild.Build("filters/rules/" + rule)
		if err != nil {
			t.Fatalf("build stock rule %s: %v", rule, err)
		}
		if err := os.WriteFile(filepath.Join(tree, "build", "rules", rule+".wasm"), wasm, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dst, "turnout.yaml")
}

// runExample runs examples/NAME as its header describes, with the environment variables env
// and a data directory and admin listener of its own (TURNOUT_DATA_DIR, TURNOUT_ADMIN). The
// test's cleanup stops it and fails the test unless it exits 0.
func runExample(t *testing.T, name string, env map[string]string) *running {
	t.Helper()
	adminAddr := testutil.FreeAddr(t)
	t.Setenv("TURNOUT_DATA_DIR", t.TempDir())
	t.Setenv("TURNOUT_ADMIN", adminAddr)
	for k, v := range env {
		t.Setenv(k, v)
	}
	r := startRun(t, exampleTree(t, name), adminAddr)
	t.Cleanup(func() {
		if code := r.stop(t); code != 0 {
			t.Errorf("exit code %d, want 0; stderr:\n%s", code, r.stderr.String())
		}
	})
	return r
}

// TestExamplesValidate checks that every example configuration is accepted by `turnout
// validate`, with the stock rules built where the Makefile puts them.
func TestExamplesValidate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the stock Wasm rules with the Go toolchain; run without -short")
	}
	root, err := rulebuild.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	configs, err := filepath.Glob(filepath.Join(root, "examples", "*", "turnout.yaml"))
	if err != nil || len(configs) == 0 {
		t.Fatalf("no examples/*/turnout.yaml: %v", err)
	}
	for _, c := range configs {
		name := filepath.Base(filepath.Dir(c))
		t.Run(name, func(t *testing.T) {
			for k, v := range exampleEnv(t, name) {
				t.Setenv(k, v)
			}
			t.Setenv("TURNOUT_DATA_DIR", t.TempDir())
			path := exampleTree(t, name)
			if code, stdout, stderr := runCLI(context.Background(), "validate", "-c", path); code != 0 {
				t.Fatalf("validate %s = %d\n%s%s", name, code, stdout, stderr)
			}
		})
	}
}

// TestQuickstart runs examples/quickstart as the README tells a new user to, and checks what
// the README promises: an alarm posted over HTTP is answered 204 and arrives on the embedded
// broker's alarms/<type> topic; one published over MQTT arrives too; a heartbeat does not go to
// alarms; a malformed event lands in the dead-letter file with its reason.
func TestQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the stock Wasm rules with the Go toolchain; run without -short")
	}
	dataDir := t.TempDir()
	t.Setenv("TURNOUT_DATA_DIR", dataDir)
	path := exampleTree(t, "quickstart")
	r := startRun(t, path, "127.0.0.1:9090")
	defer func() {
		if code := r.stop(t); code != 0 {
			t.Errorf("exit code %d, want 0; stderr:\n%s", code, r.stderr.String())
		}
	}()

	got := make(chan paho.Message, 16)
	o := paho.NewClientOptions().AddBroker("tcp://127.0.0.1:11883").SetClientID("quickstart-watch").
		SetCleanSession(true).SetConnectTimeout(5 * time.Second)
	sub := paho.NewClient(o)
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect to the embedded broker: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	if tok := sub.Subscribe("alarms/#", 1, func(_ paho.Client, m paho.Message) { got <- m }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe alarms/#: %v", tok.Error())
	}
	expect := func(id, topic string) {
		t.Helper()
		select {
		case m := <-got:
			var ev map[string]any
			if err := json.Unmarshal(m.Payload(), &ev); err != nil {
				t.Fatalf("alarm on %s is not a JSON event: %q", m.Topic(), m.Payload())
			}
			if ev["id"] != id || m.Topic() != topic {
				t.Fatalf("got event %v on %s, want id %s on %s", ev["id"], m.Topic(), id, topic)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("event %s did not arrive on %s", id, topic)
		}
	}

	// The README's curl command.
	if code := post(t, "http://127.0.0.1:8080/", `{"resident":"room 12"}`, map[string]string{"ce-specversion": "1.0",
		"ce-id": "1", "ce-source": "/devices/pendant-17", "ce-type": "care.alarm.fall",
		"content-type": "application/json"}); code != http.StatusNoContent {
		t.Fatalf("POST alarm = %d, want 204", code)
	}
	expect("1", "alarms/care.alarm.fall")

	// The README's mosquitto_pub heartbeat, then an alarm, then a payload that is no event.
	pub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://127.0.0.1:11883").
		SetClientID("quickstart-device").SetConnectTimeout(5 * time.Second))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect to the embedded broker: %v", tok.Error())
	}
	defer pub.Disconnect(100)
	for _, payload := range []string{
		`{"specversion":"1.0","id":"2","source":"/devices/pendant-17","type":"care.heartbeat","data":{"battery":87}}`,
		`{"specversion":"1.0","id":"3","source":"/devices/pendant-17","type":"care.alarm.button","data":{}}`,
		`{"specversion":"1.0","id":"4"`,
	} {
		if tok := pub.Publish("devices/pendant-17", 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	// Events on one MQTT input are routed in order: the heartbeat, had it gone to alarms,
	// would arrive before event 3.
	expect("3", "alarms/care.alarm.button")

	dlq := filepath.Join(dataDir, "dead-letter.jsonl")
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, _ := os.ReadFile(dlq)
		if strings.Contains(string(b), "turnouterror") {
			var ev map[string]any
			if err := json.Unmarshal([]byte(strings.SplitN(string(b), "\n", 2)[0]), &ev); err != nil {
				t.Fatalf("dead-letter line is not JSON: %q", b)
			}
			if reason, _ := ev["turnouterror"].(string); !strings.Contains(reason, "devices/pendant-17") {
				t.Errorf("dead-letter reason %q does not say where the event came from", reason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("malformed event not dead-lettered to %s (content %q)", dlq, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case m := <-got:
		t.Fatalf("unexpected message on %s: %s", m.Topic(), fmt.Sprint(string(m.Payload())))
	default:
	}
}

// TestCareBridge runs examples/care-bridge against the shared mosquitto and RabbitMQ: a device's
// alarm reaches the alarm centre's queue in AMQP binary mode, its heartbeat the telemetry queue
// in structured mode, and a command sent to the commands queue reaches the device's MQTT topic.
func TestCareBridge(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the stock Wasm rules with the Go toolchain; run without -short")
	}
	mqttURL := mqtttest.Shared(t)
	rabbit := amqptest.Shared(t)
	runExample(t, "care-bridge", map[string]string{"MQTT_URL": mqttURL, "AMQP_URL": rabbit.URL()})

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := amqp.Dial(ctx, rabbit.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close() // not the links: RabbitMQ 3.x never answers their detach
	receiver := func(addr string) *amqp.Receiver {
		s, err := conn.NewSession(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		// The same terminus durability as turnout's, or RabbitMQ refuses the second declaration.
		rcv, err := s.NewReceiver(ctx, addr, &amqp.ReceiverOptions{Credit: 100, SourceDurability: amqp.DurabilityConfiguration})
		if err != nil {
			t.Fatalf("attach %s: %v", addr, err)
		}
		return rcv
	}
	alarms, telemetry := receiver("/queue/care-alarms"), receiver("/queue/care-telemetry")
	// next returns the first message on rcv whose event id is id, accepting (and so removing)
	// any message an earlier run left behind.
	next := func(rcv *amqp.Receiver, id string) *amqp.Message {
		t.Helper()
		for {
			m, err := rcv.Receive(ctx, nil)
			if err != nil {
				t.Fatalf("waiting on %s for event %s: %v", rcv.Address(), id, err)
			}
			if err := rcv.AcceptMessage(ctx, m); err != nil {
				t.Fatal(err)
			}
			got, _ := m.ApplicationProperties["cloudEvents_id"].(string)
			if got == "" {
				var ev struct{ ID string }
				_ = json.Unmarshal(m.GetData(), &ev)
				got = ev.ID
			}
			if got == id {
				return m
			}
		}
	}

	run := fmt.Sprint(time.Now().UnixNano())
	device := mqttClient(t, mqttURL, "care-bridge-device-"+run)
	for _, ev := range []struct{ id, typ string }{{"alarm-" + run, "care.alarm.fall"}, {"beat-" + run, "care.heartbeat"}} {
		payload := fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"/devices/pendant-17","type":%q,"datacontenttype":"application/json","data":{"battery":87}}`, ev.id, ev.typ)
		if tok := device.Publish("devices/pendant-17/events", 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", ev.id, tok.Error())
		}
	}
	alarm := next(alarms, "alarm-"+run)
	if typ := alarm.ApplicationProperties["cloudEvents_type"]; typ != "care.alarm.fall" {
		t.Errorf("alarm in binary mode: cloudEvents_type = %v, want care.alarm.fall", typ)
	}
	if ct := alarm.Properties.ContentType; ct == nil || *ct != "application/json" {
		t.Errorf("alarm content-type = %v, want the event's datacontenttype application/json", ct)
	}
	beat := next(telemetry, "beat-"+run)
	if ct := beat.Properties.ContentType; ct == nil || !strings.HasPrefix(*ct, "application/cloudevents+json") {
		t.Errorf("heartbeat content-type = %v, want structured mode", ct)
	}

	// A command from the centre, in binary mode, to the device named by its subject.
	got := make(chan paho.Message, 1)
	if tok := device.Subscribe("devices/pendant-17/commands", 1, func(_ paho.Client, m paho.Message) { got <- m }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	s, err := conn.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	snd, err := s.NewSender(ctx, "/queue/care-commands", &amqp.SenderOptions{TargetDurability: amqp.DurabilityConfiguration})
	if err != nil {
		t.Fatal(err)
	}
	cmdID := "cmd-" + run
	ct := "application/json"
	err = snd.Send(ctx, &amqp.Message{
		Header:     &amqp.MessageHeader{Durable: true},
		Properties: &amqp.MessageProperties{ContentType: &ct},
		ApplicationProperties: map[string]any{"cloudEvents_specversion": "1.0", "cloudEvents_id": cmdID,
			"cloudEvents_source": "/centre", "cloudEvents_type": "care.command.call-back", "cloudEvents_subject": "pendant-17"},
		Data: [][]byte{[]byte(`{"call":"+4930123"}`)},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		var ev map[string]any
		if err := json.Unmarshal(m.Payload(), &ev); err != nil || ev["id"] != cmdID || ev["subject"] != "pendant-17" {
			t.Fatalf("command on %s = %s (%v), want event %s", m.Topic(), m.Payload(), err, cmdID)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("command %s did not reach devices/pendant-17/commands", cmdID)
	}
}

// TestCloudIngest runs examples/cloud-ingest against the shared nats-server and an in-process
// Kafka cluster (kfake): an alarm posted to the webhook reaches care-alarms in Kafka binary mode,
// keyed by its partitionkey, only before the webhook is answered 204; a hub's heartbeat published
// to the JetStream stream reaches care-telemetry in structured mode.
func TestCloudIngest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the stock Wasm rules with the Go toolchain; run without -short")
	}
	natsURL := natstest.Shared(t)
	stream, subject := natstest.Name("CARE_HUBS"), "hubs."+fmt.Sprint(time.Now().UnixNano())+".events"
	natstest.Stream(t, natsURL, stream, subject)
	kafka := kafkatest.Start(t)
	kafka.CreateTopic(t, "care-alarms", 3)
	kafka.CreateTopic(t, "care-telemetry", 3)
	webhook := testutil.FreeAddr(t)
	r := runExample(t, "cloud-ingest", map[string]string{"WEBHOOK_LISTEN": webhook, "NATS_URL": natsURL,
		"NATS_STREAM": stream, "KAFKA_BROKERS": kafka.Addr()})

	req, err := http.NewRequest(http.MethodPost, "http://"+webhook+"/events", strings.NewReader(`{"resident":"room 12"}`))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"ce-specversion": "1.0", "ce-id": "alarm-1", "ce-source": "/vendor/pendant-17",
		"ce-type": "care.alarm.fall", "ce-partitionkey": "resident-12", "content-type": "application/json"} {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST alarm = %d, want 204; stderr:\n%s", resp.StatusCode, r.stderr.String())
	}

	js := natstest.JetStream(t, natsURL)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	beat := &nats.Msg{Subject: subject, Header: nats.Header{"Content-Type": []string{"application/cloudevents+json"}},
		Data: []byte(`{"specversion":"1.0","id":"beat-1","source":"/hubs/7","type":"care.heartbeat","data":{"battery":87}}`)}
	if _, err := js.PublishMsg(ctx, beat); err != nil {
		t.Fatalf("publish heartbeat: %v", err)
	}

	cl := kafka.Client(t, kgo.ConsumeTopics("care-alarms", "care-telemetry"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := map[string]*kgo.Record{}
	for len(got) < 2 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("records on Kafka: %v of 2 within 60s; stderr:\n%s", len(got), r.stderr.String())
		}
		fs.EachRecord(func(rec *kgo.Record) { got[rec.Topic] = rec })
	}
	header := func(rec *kgo.Record, key string) string {
		for _, h := range rec.Headers {
			if h.Key == key {
				return string(h.Value)
			}
		}
		return ""
	}
	alarm := got["care-alarms"]
	if id, typ := header(alarm, "ce_id"), header(alarm, "ce_type"); id != "alarm-1" || typ != "care.alarm.fall" {
		t.Errorf("care-alarms: ce_id %q ce_type %q, want the alarm in binary mode", id, typ)
	}
	if string(alarm.Key) != "resident-12" {
		t.Errorf("care-alarms key %q, want the partitionkey resident-12", alarm.Key)
	}
	if string(alarm.Value) != `{"resident":"room 12"}` {
		t.Errorf("care-alarms value %q, want the alarm's data", alarm.Value)
	}
	tele := got["care-telemetry"]
	if ct := header(tele, "content-type"); !strings.HasPrefix(ct, "application/cloudevents+json") {
		t.Errorf("care-telemetry content-type %q, want structured mode", ct)
	}
	var ev struct{ ID string }
	if err := json.Unmarshal(tele.Value, &ev); err != nil || ev.ID != "beat-1" {
		t.Errorf("care-telemetry value %s, want the heartbeat beat-1 (%v)", tele.Value, err)
	}
}

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

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/turnout-router/turnout/internal/rulebuild"
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
	req, err := http.NewRequest(http.MethodPost, "http://127.0.0.1:8080/", strings.NewReader(`{"resident":"room 12"}`))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/devices/pendant-17",
		"ce-type": "care.alarm.fall", "content-type": "application/json"} {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("POST alarm = %d, want 204", resp.StatusCode)
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

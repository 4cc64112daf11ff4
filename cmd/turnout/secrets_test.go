package main

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/turnout-router/turnout/internal/testutil"
)

// secret is one credential the configuration holds and where it comes from.
type secret struct{ where, value string }

// secrets are the credentials TestLogsKeepSecrets hands turnout, each a distinct string that
// must never appear in its output.
var secrets = []secret{
	{"admin token (token_env)", "adm-S3cret-a1-0123456789"},
	{"embedded broker user password", "brk-S3cret-b2"},
	{"mqtt input password (refused by the broker)", "mq-S3cret-c3"},
	{"amqp output URL password", "amqpurl-S3cret-d4"},
	{"amqp input password", "amqp-S3cret-e5"},
	{"nats output URL password", "natsurl-S3cret-f6"},
	{"nats input token", "nats-S3cret-g7"},
	{"kafka SASL password", "kafka-S3cret-h8"},
	{"http output URL password", "hookurl-S3cret-i9"},
	{"http output token", "hook-S3cret-j10"},
	{"http input token", "in-S3cret-k11"},
}

func secretValue(where string) string {
	for _, s := range secrets {
		if s.where == where {
			return s.value
		}
	}
	panic("no secret " + where)
}

// TestLogsKeepSecrets runs turnout at log level debug, in both log formats, with a credential in
// every place the configuration takes one, and makes each of them be used and fail: outputs
// whose brokers are not there or refuse it (so connection errors, retries and dead letters are
// logged), inputs with wrong passwords, a device refused by the embedded broker, a webhook with a
// wrong token, and a rules API write with a wrong token. No line turnout writes may contain any
// of the credentials, in clear: URLs with credentials are logged redacted.
func TestLogsKeepSecrets(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			out := runWithSecrets(t, format)
			for _, s := range secrets {
				if i := strings.Index(out, s.value); i >= 0 {
					start := max(strings.LastIndexByte(out[:i], '\n')+1, 0)
					end := strings.IndexByte(out[i:], '\n')
					if end < 0 {
						end = len(out) - i
					}
					t.Errorf("the %s appears in turnout's log:\n%s", s.where, out[start:i+end])
				}
			}
			// The test is only as good as the failures it provoked: each must have been logged.
			for _, want := range []string{"amqp", "nats", "kafka", "hook", "dead-lettered"} {
				if !strings.Contains(out, want) {
					t.Errorf("no log line mentions %q: the failure the test provokes was not logged, so its secret was not tested", want)
				}
			}
		})
	}
}

func runWithSecrets(t *testing.T, format string) string {
	dir := t.TempDir()
	t.Setenv("TEST_ADMIN_TOKEN", secretValue("admin token (token_env)"))
	httpAddr, adminAddr, brokerAddr, closed := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	dead := filepath.Join(dir, "dead.jsonl")
	path := writeConfig(t, dir, fmt.Sprintf(`
data_dir: "%[1]s"
log: { level: debug, format: %[2]s }
admin: { listen: "%[3]s", token_env: TEST_ADMIN_TOKEN }
broker:
  listen: "%[4]s"
  users:
    - { username: device, password: "%[5]s", publish: ["#"], subscribe: ["#"] }
inputs:
  webhook: { type: http, listen: "%[6]s", token: "%[7]s" }
  devices: { type: mqtt, brokers: ["tcp://%[4]s"], client_id: t-in, username: device, password: "%[8]s", topics: [a/#] }
  centre: { type: amqp, url: "amqp://127.0.0.1:5672", username: guest, password: "%[9]s", address: /queues/t-secrets }
  orders: { type: nats, url: "nats://%[10]s", token: "%[11]s", stream: S, consumer: c, subject: s.> }
outputs:
  amqp-out: { type: amqp, url: "amqp://guest:%[12]s@%[10]s", address: /queues/x }
  nats-out: { type: nats, url: "nats://u:%[13]s@%[10]s", subject: x }
  kafka-out: { type: kafka, brokers: ["%[10]s"], topic: x, sasl: { mechanism: PLAIN, username: u, password: "%[14]s" } }
  hook: { type: http, url: "http://hook:%[15]s@%[10]s/hook", token: "%[16]s", handshake: false }
  dead: { type: file, path: "%[17]s" }
routes:
  out:
    inputs: [webhook]
    outputs: [amqp-out, nats-out, kafka-out, hook]
    dead_letter: dead
    retry: { max_attempts: 2, initial_backoff: 10ms, timeout: 300ms }
  in:
    inputs: [devices, centre, orders]
    outputs: [dead]
`, filepath.Join(dir, "state"), format, adminAddr, brokerAddr, secretValue("embedded broker user password"),
		httpAddr, secretValue("http input token"), secretValue("mqtt input password (refused by the broker)"),
		secretValue("amqp input password"), closed, secretValue("nats input token"), secretValue("amqp output URL password"),
		secretValue("nats output URL password"), secretValue("kafka SASL password"), secretValue("http output URL password"),
		secretValue("http output token"), dead))

	// validate prints the configuration's problems; it must not print the credentials either.
	if code, stdout, stderr := runCLI(context.Background(), "validate", "-c", path); code != 0 {
		t.Fatalf("validate = %d\n%s%s", code, stdout, stderr)
	}

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stderr := &testutil.SyncBuffer{}
	done := make(chan int, 1)
	go func() { done <- cli(ctx, []string{"run", "-c", path}, stderr, stderr) }()
	// Not ready (its brokers are away): wait for the admin server, then for the webhook input.
	testutil.WaitFor(t, "turnout's admin server and webhook input", 30*time.Second, func() bool {
		code, _, err := httpGet("http://" + adminAddr + "/healthz")
		if err != nil || code != http.StatusOK {
			return false
		}
		_, _, err = httpGet("http://" + httpAddr + "/")
		return err == nil
	})

	// A device with the right user and the wrong password, refused by the embedded broker.
	dev := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + brokerAddr).SetClientID("t-dev").
		SetUsername("device").SetPassword("wrong-" + secretValue("embedded broker user password")).
		SetConnectTimeout(5 * time.Second).SetAutoReconnect(false))
	if tok := dev.Connect(); tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
		dev.Disconnect(0)
		t.Error("the embedded broker accepted a wrong password")
	}

	// A webhook with a wrong token, then events with the right one: every output fails, so each
	// event is dead-lettered after its retries. The events are posted together: each waits for
	// its settlement.
	hdr := map[string]string{"ce-specversion": "1.0", "ce-source": "/t", "ce-type": "t.secret",
		"Content-Type": "application/json", "Authorization": "Bearer wrong-" + secretValue("http input token")}
	hdr["ce-id"] = "refused"
	if code := post(t, "http://"+httpAddr+"/", `{}`, hdr); code != http.StatusUnauthorized {
		t.Errorf("webhook with a wrong token = %d, want 401", code)
	}
	hdr["Authorization"] = "Bearer " + secretValue("http input token")
	var wg sync.WaitGroup
	for i := range 3 {
		h := maps.Clone(hdr)
		h["ce-id"] = fmt.Sprintf("e%d", i)
		wg.Go(func() {
			if code := post(t, "http://"+httpAddr+"/", `{}`, h); code != http.StatusNoContent {
				t.Errorf("webhook event %d = %d, want 204 (dead-lettered)", i, code)
			}
		})
	}
	wg.Wait()

	// A rules API write with a wrong token, and a read with the right one.
	req, _ := http.NewRequest(http.MethodPost, "http://"+adminAddr+"/rules/versions", strings.NewReader("x"))
	req.Header.Set("Authorization", "Bearer wrong-"+secretValue("admin token (token_env)"))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
			t.Errorf("rules API write with a wrong token = %d, want 401 or 403", resp.StatusCode)
		}
	}
	req, _ = http.NewRequest(http.MethodGet, "http://"+adminAddr+"/rules", nil)
	req.Header.Set("Authorization", "Bearer "+secretValue("admin token (token_env)"))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
	}

	// Let the inputs' reconnect loops log a few failures.
	time.Sleep(2 * time.Second)
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("turnout did not stop within 30s")
	}
	// Each event is dead-lettered once for each of the four outputs, with the output's error in
	// its turnouterror extension: the dead letters leave turnout too, so they are searched as well.
	b, _ := os.ReadFile(dead)
	if n := strings.Count(string(b), "\n"); n != 12 {
		t.Errorf("dead-letter file holds %d events, want 12 (3 events, 4 failing outputs):\n%s", n, b)
	}
	return stderr.String() + string(b)
}

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/reliability"
	"github.com/turnout-router/turnout/transports/mqtt/mqtttest"
)

// TestDeadLetterFile runs turnout on the shared mosquitto with routes that have no dead_letter
// output. A malformed message and an event the rule fails land in the route's dead-letter file
// once each, with their reason, and the input is acknowledged (the broker does not redeliver
// them); an event an output refuses after the retry policy lands there too. turnout dlq list and
// show read the entries; replay through the admin API puts an entry back through its route: the
// event the rule fails again is dead-lettered again (a new entry, the old one gone), the event
// whose output is back is delivered and leaves the file.
func TestDeadLetterFile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Wasm rule with the Go toolchain; run without -short")
	}
	mqttURL := mqtttest.Shared(t)
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	topic, clientID := "turnout-test/dlq/"+run, "turnout-test-dlq-"+run
	t.Cleanup(func() { dropMQTTSession(mqttURL, clientID) })

	// The uplink refuses until it is told to accept.
	var accept atomic.Bool
	var mu sync.Mutex
	var received []string
	uplink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !accept.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		received = append(received, r.Header.Get("ce-id"))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer uplink.Close()

	dir := t.TempDir()
	rule := ruleFile(t, "hostabi/testdata/misbehave")
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("dlq-token-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(dir, "data")
	adminAddr, httpAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	path := writeConfig(t, dir, fmt.Sprintf(`
data_dir: %q
admin: { listen: %q, token_file: %q }
shutdown: { drain_timeout: 5s }
inputs:
  devices: { type: mqtt, brokers: [%q], client_id: %q, topics: [%q] }
  webhook: { type: http, listen: %q }
outputs:
  archive: { type: file, path: %q }
  uplink: { type: http, url: %q, handshake: false, timeout: 2s }
routes:
  care:
    inputs: [devices]
    outputs: [archive]
    rule: { file: %q, pool_size: 1, config: { outputs: [archive] } }
  forward:
    inputs: [webhook]
    outputs: [uplink]
    retry: { max_attempts: 2, initial_backoff: 10ms, max_backoff: 20ms, timeout: 2s }
`, dataDir, adminAddr, tokenFile, mqttURL, clientID, topic, httpAddr, filepath.Join(dir, "archive.jsonl"), uplink.URL, rule))

	if code, stdout, stderr := runCLI(context.Background(), "validate", "-c", path); code != 0 {
		t.Fatalf("validate = %d %s %s", code, stdout, stderr)
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Fatalf("validate created %s (stat: %v); it must create nothing", dataDir, err)
	}

	// The binary, not an in-process run: its rule compiles without the race detector's slowdown.
	r := startBinary(t, reliability.TurnoutBinary(t), path, adminAddr)
	careFile, forwardFile := filepath.Join(dataDir, "dead-letter", "care.jsonl"), filepath.Join(dataDir, "dead-letter", "forward.jsonl")
	for _, f := range []string{careFile, forwardFile} {
		if !strings.Contains(r.stderr.String(), "route has no dead_letter output") || !strings.Contains(r.stderr.String(), f) {
			t.Errorf("no start-up warning naming %s; stderr:\n%s", f, r.stderr.String())
		}
	}

	pub := mqttClient(t, mqttURL, "turnout-test-dlq-pub-"+run)
	publish := func(payload string) {
		t.Helper()
		if tok := pub.Publish(topic, 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	metric := func(series string) string { return metricLine(t, adminAddr, series) }
	// The route takes messages concurrently: the malformed one is written first, and waited
	// for, so that the file's order (and the indexes below) is known.
	publish(`this is not a cloudevent`)
	testutil.WaitFor(t, "the malformed message in the file", 20*time.Second, func() bool {
		return metric(`turnout_dead_letter_file_events_total{route="care"}`) == "1"
	})
	publish(`{"specversion":"1.0","id":"dlq-fail","source":"/devices/7","type":"fail","data":{"n":1}}`)
	publish(`{"specversion":"1.0","id":"dlq-ok","source":"/devices/7","type":"care.alarm.fall","data":{"n":2}}`)
	if code := postEvent(t, "http://"+httpAddr+"/", "dlq-refused", "care.alarm.fall"); code != http.StatusNoContent {
		t.Fatalf("POST to the route whose output refuses = %d, want 204 (dead-lettered to the file)", code)
	}

	for series, want := range map[string]string{
		`turnout_dead_letter_file_events_total{route="care"}`:                 "2",
		`turnout_dead_letter_file_events_total{route="forward"}`:              "1",
		`turnout_events_acked_total{input="devices",route="care"}`:            "3",
		`turnout_events_dead_lettered_total{reason="malformed",route="care"}`: "1",
		`turnout_events_dead_lettered_total{reason="rule",route="care"}`:      "1",
		`turnout_events_dead_lettered_total{reason="output",route="forward"}`: "1",
	} {
		testutil.WaitFor(t, series+" = "+want, 20*time.Second, func() bool { return metric(series) == want })
	}
	// Acknowledged, so not redelivered: after a while the broker has sent nothing again and
	// nothing was rejected (before the last-resort file, the malformed message and the failed
	// event were rejected and redelivered for ever).
	time.Sleep(2 * time.Second)
	for series, want := range map[string]string{
		`turnout_events_received_total{input="devices",route="care"}`:                  "3",
		`turnout_dead_letter_file_events_total{route="care"}`:                          "2",
		`turnout_events_nacked_total{input="devices",reason="malformed",route="care"}`: "0",
		`turnout_events_nacked_total{input="devices",reason="rule",route="care"}`:      "0",
	} {
		if got := metric(series); got != want {
			t.Errorf("%s = %q, want %q", series, got, want)
		}
	}
	lines := readLines(t, careFile)
	if len(lines) != 2 || !strings.Contains(lines[0], `"kind":"malformed"`) || !strings.Contains(lines[0], "mqtt decode structured event") ||
		!strings.Contains(lines[1], `"kind":"rule"`) || !strings.Contains(lines[1], `"reason":"asked to fail"`) || !strings.Contains(lines[1], `"id":"dlq-fail"`) {
		t.Errorf("%s = \n%s\nwant the malformed message, then dlq-fail with its reason", careFile, strings.Join(lines, "\n"))
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "archive.jsonl")); !strings.Contains(string(b), `"dlq-ok"`) {
		t.Errorf("the good event did not reach the archive: %q", b)
	}

	// Reading the files: list and show.
	code, stdout, stderr := runCLI(context.Background(), "dlq", "list", "-c", path)
	if code != 0 {
		t.Fatalf("dlq list = %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{"care", "malformed", "dlq-fail", "asked to fail", "care.jsonl:2", "forward", "dlq-refused", "forward.jsonl:1", "503"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("dlq list lacks %q:\n%s", want, stdout)
		}
	}
	code, stdout, stderr = runCLI(context.Background(), "dlq", "show", "--data-dir", dataDir, "dlq-fail")
	if code != 0 || !strings.Contains(stdout, `"turnouterrorkind": "fail"`) || !strings.Contains(stdout, `"n": 1`) || !strings.Contains(stdout, "reason:  asked to fail") {
		t.Errorf("dlq show dlq-fail = %d\n%s%s", code, stdout, stderr)
	}
	// The malformed message's bytes, as received, are the data of its entry's event.
	if code, stdout, _ = runCLI(context.Background(), "dlq", "show", "--data-dir", dataDir, "1"); code != 0 ||
		!strings.Contains(stdout, "kind:    malformed") || !strings.Contains(stdout, "received (24 bytes):\nthis is not a cloudevent\n") {
		t.Errorf("dlq show 1 = %d\n%s", code, stdout)
	}
	if code, _, stderr = runCLI(context.Background(), "dlq", "show", "--data-dir", dataDir, "no-such-id"); code != 1 || !strings.Contains(stderr, "no entry") {
		t.Errorf("dlq show no-such-id = %d %s, want 1 and no entry", code, stderr)
	}

	// Replay needs the token.
	t.Setenv(envAdmin, adminAddr)
	t.Setenv(envAdminToken, "")
	t.Setenv(envAdminCA, "")
	if code, _, stderr = runCLI(context.Background(), "dlq", "replay", "--route", "care"); code != 1 || !strings.Contains(stderr, "unauthorized") {
		t.Errorf("replay without the token = %d %s, want 1 and unauthorized", code, stderr)
	}
	replay := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := runCLI(context.Background(), append([]string{"dlq", "replay", "--token-file", tokenFile}, args...)...)
		if code != 0 {
			t.Fatalf("dlq replay %v = %d\n%s%s", args, code, stdout, stderr)
		}
		return stdout
	}
	// The rule still fails dlq-fail: replayed, acknowledged (dead-lettered again), so the old
	// entry leaves and a new one takes its place.
	if out := replay("--route", "care", "--id", "dlq-fail"); !strings.Contains(out, "1 selected, 1 replayed and removed, 0 failed") {
		t.Errorf("replay dlq-fail: %s", out)
	}
	after := readLines(t, careFile)
	if len(after) != 2 || after[0] != lines[0] || after[1] == lines[1] || !strings.Contains(after[1], `"id":"dlq-fail"`) {
		t.Errorf("after replaying dlq-fail, %s =\n%s\nwant the malformed entry unchanged and a new entry for dlq-fail", careFile, strings.Join(after, "\n"))
	}
	// The uplink is back: the refused event is delivered and leaves the file.
	accept.Store(true)
	if out := replay("--route", "forward"); !strings.Contains(out, "1 selected, 1 replayed and removed, 0 failed") {
		t.Errorf("replay forward: %s", out)
	}
	mu.Lock()
	got := strings.Join(received, ",")
	mu.Unlock()
	if got != "dlq-refused" {
		t.Errorf("the uplink received %q after the replay, want dlq-refused", got)
	}
	if lines := readLines(t, forwardFile); len(lines) != 0 {
		t.Errorf("%s still holds %d entries after a successful replay", forwardFile, len(lines))
	}
	for series, want := range map[string]string{
		`turnout_dead_letter_file_replayed_total{route="care"}`:        "1",
		`turnout_dead_letter_file_replayed_total{route="forward"}`:     "1",
		`turnout_dead_letter_file_events_total{route="care"}`:          "3",
		`turnout_events_routed_total{output="uplink",route="forward"}`: "1",
	} {
		if got := metric(series); got != want {
			t.Errorf("%s = %q, want %q", series, got, want)
		}
	}
	if code, _, stderr = runCLI(context.Background(), "dlq", "replay", "--token-file", tokenFile, "--route", "care", "--id", "dlq-refused"); code != 1 || !strings.Contains(stderr, "entry_not_found") {
		t.Errorf("replay of an id the route has no entry of = %d %s, want 1 and entry_not_found", code, stderr)
	}
	if code := r.stop(t); code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, r.stderr.String())
	}
}

// binary is a turnout process started by startBinary.
type binary struct {
	cmd    *exec.Cmd
	stderr *testutil.SyncBuffer
	done   chan struct{}
}

// startBinary runs `bin run -c path` and waits until /readyz on adminAddr answers 200; the
// test's cleanup kills it if it still runs.
func startBinary(t *testing.T, bin, path, adminAddr string) *binary {
	t.Helper()
	b := &binary{cmd: exec.Command(bin, "run", "-c", path), stderr: &testutil.SyncBuffer{}, done: make(chan struct{})}
	b.cmd.Stdout, b.cmd.Stderr = b.stderr, b.stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.cmd.Wait(); close(b.done) }()
	t.Cleanup(func() {
		_ = b.cmd.Process.Kill()
		<-b.done
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, _, err := httpGet("http://" + adminAddr + "/readyz")
		if err == nil && code == http.StatusOK {
			return b
		}
		select {
		case <-b.done:
			t.Fatalf("turnout exited (%v) before it was ready; output:\n%s", b.cmd.ProcessState, b.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("turnout not ready after 60s; output:\n%s", b.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and returns the exit code.
func (b *binary) stop(t *testing.T) int {
	t.Helper()
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
		return b.cmd.ProcessState.ExitCode()
	case <-time.After(30 * time.Second):
		t.Fatalf("turnout did not stop within 30s of SIGTERM; output:\n%s", b.stderr.String())
		return -1
	}
}

// readLines returns the lines of path (none when it does not exist).
func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

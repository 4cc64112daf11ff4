package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/rulebuild"
	"github.com/turnout-router/turnout/internal/testutil"
)

// nopModule is a test-only input and output type ("test-in", "test-out") whose factory
// checks its configuration like a real transport: strictly, and with its own rule.
type nopModule struct{}

func (nopModule) Start(context.Context, engine.Dispatcher) error { return nil }
func (nopModule) Send(context.Context, *event.Event) error       { return nil }
func (nopModule) Close(context.Context) error                    { return nil }

func nopFactory(_ string, decode engine.Decoder) (nopModule, error) {
	var c struct {
		Topic string `yaml:"topic"`
	}
	if err := decode(&c); err != nil {
		return nopModule{}, err
	}
	if strings.Contains(c.Topic, "#") {
		return nopModule{}, fmt.Errorf("topic %q: wildcards are not allowed", c.Topic)
	}
	return nopModule{}, nil
}

func init() {
	engine.RegisterInput("test-in", func(name string, d engine.Decoder, _ engine.Deps) (engine.Source, error) {
		return nopFactory(name, d)
	})
	engine.RegisterOutput("test-out", func(name string, d engine.Decoder, _ engine.Deps) (engine.Sink, error) {
		return nopFactory(name, d)
	})
}

// runCLI runs the command line in-process and returns its exit code, stdout and stderr.
func runCLI(ctx context.Context, args ...string) (int, string, string) {
	var stdout, stderr testutil.SyncBuffer
	code := cli(ctx, args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func writeConfig(t *testing.T, dir, text string) string {
	t.Helper()
	path := filepath.Join(dir, "turnout.yaml")
	if err := os.WriteFile(path, []byte(strings.TrimPrefix(text, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bad.wasm"), []byte("\x00asm\x01\x00\x00\x00garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		config string
		env    map[string]string
		code   int
		stdout string
		// stderr lists the expected error lines, without the "FILE:" prefix and the count line.
		stderr []string
	}{
		{"valid", `
inputs:
  a: { type: test-in, topic: x }
  b: { type: http, listen: "127.0.0.1:0" }
outputs:
  out: { type: test-out }
routes:
  r: { inputs: [a, b], outputs: [out] }
`, nil, 0, "ok: 2 inputs, 1 outputs, 1 routes\n", nil},
		{"environment variables", `
inputs:
  a: { type: test-in, topic: "${TURNOUT_TEST_TOPIC}" }
  b: { type: test-in, topic: "${TURNOUT_TEST_UNSET:-x}" }
outputs:
  out: { type: test-out, topic: "${TURNOUT_TEST_UNSET}" }
routes:
  r: { inputs: [a, b], outputs: ["${TURNOUT_TEST_OUT}"] }
`, map[string]string{"TURNOUT_TEST_TOPIC": "alarms/#", "TURNOUT_TEST_OUT": "out"}, 1, "", []string{
			`2: inputs.a: topic "alarms/#": wildcards are not allowed`,
			`5: environment variable TURNOUT_TEST_UNSET is not set (use ${TURNOUT_TEST_UNSET:-default} to give a default)`,
		}},
		{"every error is listed with line and key", `
log: { level: verbose }
inputs:
  a: { type: test-in, topic: "x/#" }
  b: { type: test-in, topci: x }
  c: { type: smtp }
outputs:
  out: { type: test-out }
routes:
  r:
    inputs: [a, b, c, d]
    outputs: [out]
    retry: { timeout: 5 }
`, nil, 1, "", []string{
			`1: log.level: unknown level "verbose" (known: debug, info, warn, error)`,
			`3: inputs.a: topic "x/#": wildcards are not allowed`,
			`4: inputs.b.topci: unknown key (known keys: topic)`,
			`5: inputs.c.type: unknown input type "smtp" (known: [amqp http `, // more types follow as transports land
			`10: routes.r.inputs[3]: unknown input "d" (defined: a, b, c)`,
			`12: routes.r.retry.timeout: duration "5" needs a unit, e.g. 5s or 5ms`,
		}},
		{"rule is loaded through the rule host", `
inputs:
  a: { type: test-in }
outputs:
  out: { type: test-out }
routes:
  r:
    inputs: [a]
    outputs: [out]
    rule:
      file: bad.wasm
`, nil, 1, "", []string{"10: routes.r.rule: load " + filepath.Join(dir, "bad.wasm") + ": "}},
		{"broker block is checked", `
broker:
  enabled: true
  max_queued: -1
  colour: blue
inputs:
  a: { type: test-in }
outputs:
  out: { type: test-out }
routes:
  r: { inputs: [a], outputs: [out] }
`, nil, 1, "", []string{"3: broker.max_queued: -1 is outside 1..60000", "4: broker.colour: unknown key"}},
		{"broker errors point at nested keys", `
broker:
  enabled: true
  tls:
    listen: "127.0.0.1:0"
    key_file: /nonexistent/broker.key
inputs:
  a: { type: test-in }
outputs:
  out: { type: test-out }
routes:
  r: { inputs: [a], outputs: [out] }
`, nil, 1, "", []string{"3: broker.tls.cert_file: required"}},
		{"broker errors point at list items", `
broker:
  enabled: true
  users:
    - { username: device, password: secret, publish: ["homes/+/alarms"] }
    - username: turnout
      password: secret
      subscribe: ["homes/#", "a/#/b"]
inputs:
  a: { type: test-in }
outputs:
  out: { type: test-out }
routes:
  r: { inputs: [a], outputs: [out] }
`, nil, 1, "", []string{`7: broker.users[1].subscribe[1]: "a/#/b" is not a valid topic filter`}},
		{"spool errors point at their keys", `
inputs:
  a: { type: test-in }
outputs:
  out:
    type: test-out
    spool:
      dir: /proc/sys/turnout-spool
      max_bytes: 0
routes:
  r: { inputs: [a], outputs: [out] }
`, nil, 1, "", []string{
			"7: outputs.out.spool.dir: cannot create /proc/sys/turnout-spool: /proc/sys is not writable",
			"8: outputs.out.spool.max_bytes: 0B is below the minimum of 1MiB",
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			path := writeConfig(t, dir, tc.config)
			code, stdout, stderr := runCLI(context.Background(), "validate", "-c", path)
			if code != tc.code || stdout != tc.stdout {
				t.Fatalf("exit %d, stdout %q, want %d, %q; stderr:\n%s", code, stdout, tc.code, tc.stdout, stderr)
			}
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if tc.stderr == nil {
				if stderr != "" {
					t.Errorf("stderr = %q, want nothing", stderr)
				}
				return
			}
			if len(lines) != len(tc.stderr)+1 || lines[len(lines)-1] != fmt.Sprintf("%d error(s)", len(tc.stderr)) {
				t.Fatalf("stderr has %d lines, want %d errors and a count:\n%s", len(lines), len(tc.stderr), stderr)
			}
			for i, want := range tc.stderr {
				if !strings.HasPrefix(lines[i], path+":"+want) {
					t.Errorf("line %d = %q\nwant prefix %q", i, lines[i], path+":"+want)
				}
			}
		})
	}
}

func TestCommandLine(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		code   int
		stdout string // substring
		stderr string // substring
	}{
		{"no command", nil, 2, "", "usage: turnout"},
		{"unknown command", []string{"serve"}, 2, "", `unknown command "serve"`},
		{"unknown flag", []string{"validate", "-x"}, 2, "", "flag provided but not defined: -x"},
		{"extra argument", []string{"validate", "-c", "a.yaml", "b.yaml"}, 2, "", `unexpected argument "b.yaml"`},
		{"missing file", []string{"validate", "-c", "/nonexistent/turnout.yaml"}, 1, "", "/nonexistent/turnout.yaml: read configuration: open /nonexistent/turnout.yaml: no such file or directory"},
		{"run with invalid config starts nothing", []string{"run", "-c", "/nonexistent/turnout.yaml"}, 1, "", "nothing was started"},
		{"version", []string{"version"}, 0, "turnout dev\ngo: " + runtime.Version() + "\nrule abi: v1\n", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(context.Background(), tc.args...)
			if code != tc.code || !strings.Contains(stdout, tc.stdout) || !strings.Contains(stderr, tc.stderr) {
				t.Errorf("exit %d\nstdout %q\nstderr %q\nwant exit %d, stdout containing %q, stderr containing %q", code, stdout, stderr, tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}

func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// running is a `turnout run` started in-process by startRun.
type running struct {
	stderr *testutil.SyncBuffer
	cancel context.CancelFunc
	done   chan int
}

// startRun runs `turnout run -c path` in-process and waits until /readyz on adminAddr says
// ready.
func startRun(t *testing.T, path, adminAddr string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{stderr: &testutil.SyncBuffer{}, cancel: cancel, done: make(chan int, 1)}
	t.Cleanup(cancel)
	go func() { r.done <- cli(ctx, []string{"run", "-c", path}, io.Discard, r.stderr) }()
	// Generous: compiling a Go-built rule under -race on a busy machine takes tens of seconds.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		code, body, err := httpGet("http://" + adminAddr + "/readyz")
		if err == nil && code == http.StatusOK {
			return r
		}
		select {
		case c := <-r.done:
			t.Fatalf("turnout exited with %d before it was ready; stderr:\n%s", c, r.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 2 minutes (last: %d %q %v); stderr:\n%s", code, body, err, r.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop cancels the run as a signal would and returns the exit code.
func (r *running) stop(t *testing.T) int {
	t.Helper()
	r.cancel()
	select {
	case code := <-r.done:
		return code
	case <-time.After(30 * time.Second):
		t.Fatalf("turnout did not stop within 30s of the signal; stderr:\n%s", r.stderr.String())
		return -1
	}
}

// postEvent posts a binary-mode CloudEvent and returns the status code.
func postEvent(t *testing.T, url, id, typ string) int {
	t.Helper()
	return post(t, url, `{"level":"high"}`, map[string]string{"ce-specversion": "1.0", "ce-id": id,
		"ce-source": "/home/42", "ce-type": typ, "Content-Type": "application/json"})
}

// post posts body with headers to url and returns the status code; it logs the body of an
// answer other than 204.
func post(t *testing.T, url, body string, headers map[string]string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Logf("POST %s: %d %s", url, resp.StatusCode, answer)
	}
	return resp.StatusCode
}

// writeRule builds the stock rule filters/rules/NAME and writes it to dir/NAME.wasm.
func writeRule(t *testing.T, dir, name string) []byte {
	t.Helper()
	wasm, err := rulebuild.Build("filters/rules/" + name)
	if err != nil {
		t.Fatalf("build rule %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".wasm"), wasm, 0o600); err != nil {
		t.Fatal(err)
	}
	return wasm
}

// TestRun runs `turnout run` in-process with an HTTP input and a file output, posts an event,
// finds it in the output file, then stops turnout as a signal would and expects exit code 0.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	httpAddr, adminAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	outFile := filepath.Join(dir, "events.jsonl")
	path := writeConfig(t, dir, fmt.Sprintf(`
data_dir: "%s"
log: { level: debug, format: json }
admin: { listen: "%s" }
shutdown: { drain_timeout: 5s }
inputs:
  webhook: { type: http, listen: "%s", path: /events }
outputs:
  log: { type: file, path: "%s" }
routes:
  care:
    inputs: [webhook]
    outputs: [log]
`, filepath.Join(dir, "state"), adminAddr, httpAddr, outFile))

	r := startRun(t, path, adminAddr)
	if code, body, err := httpGet("http://" + adminAddr + "/healthz"); err != nil || code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q %v", code, body, err)
	}
	if st, err := os.Stat(filepath.Join(dir, "state", "cache", "wasm")); err != nil || !st.IsDir() {
		t.Errorf("data_dir/cache/wasm not created: %v", err)
	}
	if code := postEvent(t, "http://"+httpAddr+"/events", "alarm-4711", "care.alarm.fall"); code != http.StatusNoContent {
		t.Fatalf("POST event = %d, want 204", code)
	}
	out, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatalf("output file: %v", err)
	}
	if !strings.Contains(string(out), `"alarm-4711"`) || !strings.Contains(string(out), `"care.alarm.fall"`) {
		t.Errorf("output file lacks the event:\n%s", out)
	}
	if code, metrics, err := httpGet("http://" + adminAddr + "/metrics"); err != nil || code != 200 ||
		!strings.Contains(metrics, `turnout_build_info{goversion="`+runtime.Version()+`",version="dev"} 1`) {
		t.Errorf("/metrics = %d %v, build info missing", code, err)
	}

	if code := r.stop(t); code != 0 {
		t.Errorf("exit code %d after shutdown, want 0; stderr:\n%s", code, r.stderr.String())
	}
	if !strings.Contains(r.stderr.String(), `"msg":"turnout stopped"`) {
		t.Errorf("no JSON log line for the stop; stderr:\n%s", r.stderr.String())
	}
	if _, _, err := httpGet("http://" + adminAddr + "/healthz"); err == nil {
		t.Error("admin server still answers after exit")
	}
}

// TestRunWithRule runs turnout with the stock attrroute rule, configured from YAML, and checks
// that each event lands in the output the rule chose for it.
func TestRunWithRule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Wasm rule with the Go toolchain; run without -short")
	}
	dir := t.TempDir()
	wasm := writeRule(t, dir, "attrroute")
	t.Chdir(t.TempDir()) // the configuration keeps the default data_dir, ./data: not in the checkout
	httpAddr, adminAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	urgent, other := filepath.Join(dir, "urgent.jsonl"), filepath.Join(dir, "other.jsonl")
	path := writeConfig(t, dir, fmt.Sprintf(`
admin: { listen: "%s" }
inputs:
  webhook: { type: http, listen: "%s" }
outputs:
  urgent: { type: file, path: "%s" }
  other: { type: file, path: "%s" }
routes:
  care:
    inputs: [webhook]
    outputs: [urgent, other]
    rule:
      file: attrroute.wasm
      config:
        filters:
          - { attribute: type, prefix: care.alarm., outputs: [urgent] }
        default: [other]
`, adminAddr, httpAddr, urgent, other))

	code, stdout, stderr := runCLI(context.Background(), "validate", "-c", path)
	if code != 0 || stdout != "ok: 1 inputs, 2 outputs, 1 routes\n" {
		t.Fatalf("validate = %d %q %s", code, stdout, stderr)
	}
	r := startRun(t, path, adminAddr)
	for _, ev := range []struct{ id, typ string }{{"a1", "care.alarm.fall"}, {"p1", "care.ping"}} {
		if code := postEvent(t, "http://"+httpAddr+"/", ev.id, ev.typ); code != http.StatusNoContent {
			t.Fatalf("POST %s = %d, want 204", ev.id, code)
		}
	}
	// The rule runs behind the route's switch, ready to be swapped: its version is the active one.
	sum := sha256.Sum256(wasm)
	active := fmt.Sprintf(`turnout_rule_active_version{route="care",version="%x"} 1`, sum[:6])
	if code, metrics, err := httpGet("http://" + adminAddr + "/metrics"); err != nil || code != 200 || !strings.Contains(metrics, active) {
		t.Errorf("/metrics = %d %v, lacks %s", code, err, active)
	}
	if code := r.stop(t); code != 0 {
		t.Errorf("exit code %d, want 0; stderr:\n%s", code, r.stderr.String())
	}
	for file, want := range map[string]string{urgent: `"id":"a1"`, other: `"id":"p1"`} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if lines := strings.Count(string(b), "\n"); lines != 1 || !strings.Contains(string(b), want) {
			t.Errorf("%s = %q, want exactly the event with %s", filepath.Base(file), b, want)
		}
	}
}

// TestRunInterruptedWhileStarting stops turnout with a signal (a cancelled context) while it
// loads a rule: it says it was interrupted, not that the configuration was rejected.
func TestRunInterruptedWhileStarting(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Wasm rule with the Go toolchain; run without -short")
	}
	pass, err := rulebuild.Build("filters/rules/passthrough")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pass.wasm"), pass, 0o600); err != nil {
		t.Fatal(err)
	}
	path := writeConfig(t, dir, fmt.Sprintf(`
admin: { listen: "" }
data_dir: %s
inputs: { a: { type: test-in } }
outputs: { out: { type: test-out } }
routes: { r: { inputs: [a], outputs: [out], rule: { file: pass.wasm, config: { outputs: [out] } } } }
`, dir))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	code, _, stderr := runCLI(ctx, "run", "-c", path)
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !strings.Contains(stderr, "interrupted by a signal") || strings.Contains(stderr, "configuration was rejected") {
		t.Errorf("stderr does not say turnout was interrupted while starting:\n%s", stderr)
	}
}

func TestRunStartupFailure(t *testing.T) {
	t.Chdir(t.TempDir()) // the configuration keeps the default data_dir, ./data: not in the checkout
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cases := []struct {
		name   string
		config string
		stderr []string
	}{
		{"admin address in use", fmt.Sprintf(`
admin: { listen: "%s" }
inputs: { a: { type: test-in } }
outputs: { out: { type: test-out } }
routes: { r: { inputs: [a], outputs: [out] } }
`, busy.Addr()), []string{"turnout failed to start", "admin listen " + busy.Addr().String()}},
		{"transport rejects its block", `
admin: { listen: "" }
inputs:
  a: { type: test-in, topic: "#" }
outputs: { out: { type: test-out } }
routes: { r: { inputs: [a], outputs: [out] } }
`, []string{`turnout.yaml:3: inputs.a: topic "#": wildcards are not allowed`, "the configuration was rejected"}},
		{"invalid configuration", `
inputs: { a: { type: test-in } }
routes: { r: { inputs: [a], outputs: [out] } }
`, []string{`turnout.yaml:2: routes.r.outputs[0]: unknown output "out" (none are defined)`, "nothing was started"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := writeConfig(t, dir, tc.config)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			code, _, stderr := runCLI(ctx, "run", "-c", path)
			if code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			for _, want := range tc.stderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
		})
	}
}

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnout-router/turnout/cmd/turnout/internal/rulestore"
	"github.com/turnout-router/turnout/internal/rulebuild"
	"github.com/turnout-router/turnout/internal/testutil"
)

// withCustomSection returns wasm with a custom section appended [Wasm core §5.5.3]: another
// module (another sha256) that behaves exactly the same. name must be shorter than 120 bytes.
func withCustomSection(wasm []byte, name string) []byte {
	payload := append(append([]byte{byte(len(name))}, name...), "test"...)
	out := append([]byte{}, wasm...)
	return append(append(out, 0, byte(len(payload))), payload...)
}

// metricLine returns the value of one series on /metrics ("" when absent).
func metricLine(t *testing.T, adminAddr, series string) string {
	t.Helper()
	code, body, err := httpGet("http://" + adminAddr + "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("/metrics = %d %v", code, err)
	}
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			return v
		}
	}
	return ""
}

// TestRulesLifecycleEndToEnd runs turnout with a rule, pushes and activates a new version with
// the CLI, sees events decided by it (counted per version), refuses a version whose init
// rejects the route's configuration, rolls back, finds the activated version still active
// after a restart with the same data_dir, and finds a changed configured rule file active after
// the next restart.
func TestRulesLifecycleEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Wasm rules with the Go toolchain; run without -short")
	}
	dir := t.TempDir()
	v1, err := rulebuild.Build("filters/rules/attrroute")
	if err != nil {
		t.Fatalf("build rule: %v", err)
	}
	pass, err := rulebuild.Build("filters/rules/passthrough")
	if err != nil {
		t.Fatalf("build rule: %v", err)
	}
	v2, v3 := withCustomSection(v1, "turnout-test-v2"), withCustomSection(v1, "turnout-test-v3")
	sample := `[{"specversion": "1.0", "id": "s1", "source": "/t", "type": "care.alarm.fall", "expect": {"action": "route", "outputs": [%q]}}]`
	files := map[string][]byte{"v1.wasm": v1, "v2.wasm": v2, "v3.wasm": v3, "pass.wasm": pass, "token": []byte("e2e-token-0123456789abcdef\n"),
		"good.json": fmt.Appendf(nil, sample, "urgent"), "bad.json": fmt.Appendf(nil, sample, "other")}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	id1, id2 := rulestore.Sum(v1), rulestore.Sum(v2)
	httpAddr, adminAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	path := writeConfig(t, dir, fmt.Sprintf(`
data_dir: "%s"
admin: { listen: "%s", token_file: "%s" }
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
      file: v1.wasm
      config:
        filters:
          - { attribute: type, prefix: care.alarm., outputs: [urgent] }
        default: [other]
`, filepath.Join(dir, "data"), adminAddr, filepath.Join(dir, "token"), httpAddr, filepath.Join(dir, "urgent.jsonl"), filepath.Join(dir, "other.jsonl")))
	t.Setenv(envAdmin, adminAddr)
	t.Setenv(envAdminToken, "")
	t.Setenv(envAdminCA, "")
	auth := []string{"--token-file", filepath.Join(dir, "token")}
	rules := func(t *testing.T, wantCode int, args ...string) string {
		t.Helper()
		code, stdout, stderr := runCLI(context.Background(), append(append([]string{"rules"}, args...), auth...)...)
		if code != wantCode {
			t.Fatalf("turnout rules %s = exit %d, want %d\nstdout %s\nstderr %s", strings.Join(args, " "), code, wantCode, stdout, stderr)
		}
		return stdout + stderr
	}
	post := func(t *testing.T, n int) {
		t.Helper()
		for i := range n {
			if code := postEvent(t, "http://"+httpAddr+"/", fmt.Sprintf("e%d", i), "care.alarm.fall"); code != http.StatusNoContent {
				t.Fatalf("POST event = %d, want 204", code)
			}
		}
	}
	calls := func(t *testing.T, id string) string {
		t.Helper()
		return metricLine(t, adminAddr, fmt.Sprintf(`turnout_rule_calls_total{rule="care",version="%s"}`, id[:12]))
	}
	active := func(t *testing.T, id string) string {
		t.Helper()
		return metricLine(t, adminAddr, fmt.Sprintf(`turnout_rule_active_version{route="care",version="%s"}`, id[:12]))
	}

	r := startRun(t, path, adminAddr)
	post(t, 1)
	if got := calls(t, id1); got != "1" {
		t.Fatalf("calls of the configured version = %q, want 1", got)
	}

	out := rules(t, 1, "push", filepath.Join(dir, "v3.wasm"), "--route", "care", "--activate", "--selftest", filepath.Join(dir, "bad.json"))
	if !strings.Contains(out, "self_test_failed: 1 of 1 sample(s)") || !strings.Contains(out, "selftest[0]: outputs: got [urgent], want [other]") {
		t.Errorf("push with a failing self-test printed:\n%s", out)
	}
	out = rules(t, 0, "push", filepath.Join(dir, "v2.wasm"), "--route", "care", "--activate", "--description", "same rule, new bytes",
		"--selftest", filepath.Join(dir, "good.json"))
	if !strings.Contains(out, "stored "+id2) || !strings.Contains(out, "route care: active version "+id2+" (was "+id1+")") {
		t.Errorf("push --activate printed:\n%s", out)
	}
	post(t, 2)
	if c1, c2, a := calls(t, id1), calls(t, id2), active(t, id2); c1 != "1" || c2 != "2" || a != "1" {
		t.Errorf("after activating v2: calls v1 %q v2 %q, v2 active %q; want 1, 2, 1", c1, c2, a)
	}

	out = rules(t, 1, "push", filepath.Join(dir, "pass.wasm"), "--route", "care", "--activate")
	if !strings.Contains(out, "init_failed") {
		t.Errorf("a version whose init refuses the route's configuration: %s", out)
	}
	out = rules(t, 1, "rm", id2)
	if !strings.Contains(out, "version_in_use") {
		t.Errorf("rm of the active version: %s", out)
	}
	out = rules(t, 0, "list")
	if !strings.Contains(out, id1[:12]) || !strings.Contains(out, id2[:12]) || !strings.Contains(out, "same rule, new bytes") {
		t.Errorf("list:\n%s", out)
	}

	out = rules(t, 0, "rollback", "--route", "care")
	if !strings.Contains(out, "route care: active version "+id1+" (was "+id2+")") {
		t.Errorf("rollback printed:\n%s", out)
	}
	post(t, 1)
	if c1, c2, a := calls(t, id1), calls(t, id2), active(t, id1); c1 != "2" || c2 != "2" || a != "1" {
		t.Errorf("after rollback: calls v1 %q v2 %q, v1 active %q; want 2, 2, 1", c1, c2, a)
	}

	rules(t, 0, "activate", id2[:10], "--route", "care")
	if code := r.stop(t); code != 0 {
		t.Fatalf("exit code %d, want 0; stderr:\n%s", code, r.stderr.String())
	}
	log := r.stderr.String()
	for _, want := range []string{
		`msg="rule version activated" component=admin who=token-holder remote=127.0.0.1:`,
		"route=care old=" + id1 + " new=" + id2,
		`msg="rule version rolled back" component=admin who=token-holder`,
		"route=care old=" + id2 + " new=" + id1,
		`msg="admin write refused" component=admin remote=127.0.0.1:`,
		`method=POST path=/rules/versions status=422 code=init_failed`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks %q:\n%s", want, log)
		}
	}

	r = startRun(t, path, adminAddr)
	post(t, 1)
	if c2, a := calls(t, id2), active(t, id2); c2 != "1" || a != "1" {
		t.Errorf("after restart: calls v2 %q, v2 active %q; want 1 and 1 (the activation survives the restart)", c2, a)
	}
	out = rules(t, 0, "show", id2)
	if !strings.Contains(out, "active on:   care") {
		t.Errorf("show after restart:\n%s", out)
	}
	if code := r.stop(t); code != 0 {
		t.Errorf("exit code %d, want 0; stderr:\n%s", code, r.stderr.String())
	}

	// The operator changes the rule file the configuration names: the latest change wins, so
	// after a restart the file's new bytes are active, and a rollback returns to the version
	// the admin API had activated.
	if err := os.WriteFile(filepath.Join(dir, "v1.wasm"), v3, 0o600); err != nil {
		t.Fatal(err)
	}
	id3 := rulestore.Sum(v3)
	r = startRun(t, path, adminAddr)
	post(t, 1)
	if c3, a := calls(t, id3), active(t, id3); c3 != "1" || a != "1" {
		t.Errorf("after changing the configured file: calls of its version %q, active %q; want 1 and 1", c3, a)
	}
	out = rules(t, 0, "rollback", "--route", "care")
	if !strings.Contains(out, "route care: active version "+id2+" (was "+id3+")") {
		t.Errorf("rollback after the configured file changed printed:\n%s", out)
	}
	if code := r.stop(t); code != 0 {
		t.Errorf("exit code %d, want 0; stderr:\n%s", code, r.stderr.String())
	}
	if !strings.Contains(r.stderr.String(), "the configured rule file changed since it was last recorded") {
		t.Errorf("no log line for the changed rule file; stderr:\n%s", r.stderr.String())
	}
}

// TestRunAdminTLS runs turnout with admin.tls and admin.token_env: the admin listener speaks
// HTTPS only, `turnout rules` reaches it with the CA, reads are open (rules_read_open) and
// writes need the token.
func TestRunAdminTLS(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := testutil.WriteCerts(t, dir, "127.0.0.1")
	adminAddr := testutil.FreeAddr(t)
	t.Setenv("TEST_ADMIN_TOKEN", "tls-token-0123456789abcdef")
	path := writeConfig(t, dir, fmt.Sprintf(`
data_dir: "%s"
admin:
  listen: "%s"
  token_env: TEST_ADMIN_TOKEN
  rules_read_open: true
  tls: { cert_file: "%s", key_file: "%s" }
inputs: { a: { type: test-in } }
outputs: { out: { type: test-out } }
routes: { r: { inputs: [a], outputs: [out] } }
`, filepath.Join(dir, "data"), adminAddr, certFile, keyFile))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr testutil.SyncBuffer
	done := make(chan int, 1)
	go func() { done <- cli(ctx, []string{"run", "-c", path}, io.Discard, &stderr) }()
	t.Setenv(envAdmin, "https://"+adminAddr)
	t.Setenv(envAdminCA, caFile)
	t.Setenv(envAdminToken, "")
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, stdout, errOut := runCLI(context.Background(), "rules", "list")
		if code == 0 {
			if !strings.Contains(stdout, "VERSION") {
				t.Errorf("list over TLS printed %q", stdout)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rules list over TLS never succeeded: %s\nturnout: %s", errOut, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, _, errOut := runCLI(context.Background(), "rules", "rm", "abcd"); code != 1 || !strings.Contains(errOut, "unauthorized") {
		t.Errorf("rm without the token = %d %q, want 1 unauthorized", code, errOut)
	}
	t.Setenv(envAdminToken, "tls-token-0123456789abcdef")
	if code, _, errOut := runCLI(context.Background(), "rules", "rm", "abcd"); code != 1 || !strings.Contains(errOut, "version_not_found") {
		t.Errorf("rm of an unknown version with the token = %d %q, want 1 version_not_found", code, errOut)
	}
	if code, _, err := httpGet("http://" + adminAddr + "/healthz"); err == nil && code == 200 {
		t.Errorf("plain HTTP answered on the TLS admin listener")
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, stderr.String())
	}
}

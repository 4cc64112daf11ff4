package main

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/cmd/turnout/internal/admin"
	"github.com/turnout-router/turnout/cmd/turnout/internal/admin/admintest"
	"github.com/turnout-router/turnout/internal/testutil"
)

const remoteToken = "0123456789abcdef-token"

// remoteAPI serves the rules API over a fake with routes care and audit and returns its URL
// and a token file.
func remoteAPI(t *testing.T, opts admin.Options) (url, tokenFile string) {
	t.Helper()
	opts.Rules = admintest.New("care", "audit")
	opts.Gatherer = prometheus.NewRegistry()
	opts.Logger = slog.New(slog.DiscardHandler)
	srv := httptest.NewServer(admin.New(opts).Handler())
	t.Cleanup(srv.Close)
	tokenFile = filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(remoteToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv.URL, tokenFile
}

func wasmFile(t *testing.T, tag string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), tag+".wasm")
	if err := os.WriteFile(path, admintest.Wasm(tag), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRulesRemote(t *testing.T) {
	url, tokenFile := remoteAPI(t, admin.Options{Token: []byte(remoteToken)})
	t.Setenv(envAdmin, "")
	t.Setenv(envAdminToken, "")
	t.Setenv(envAdminCA, "")
	v1, v2 := wasmFile(t, "v1"), wasmFile(t, "v2")
	id1, id2 := sha(t, v1), sha(t, v2)
	auth := []string{"--admin", url, "--token-file", tokenFile}
	steps := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr string
	}{
		{"push and activate", []string{"rules", "push", v1, "--route", "care", "--activate", "--description", "first"},
			0, []string{"stored " + id1 + " (10 bytes)", "route care: active version " + id1 + " (was none)"}, ""},
		{"push again is idempotent", []string{"rules", "push", v1}, 0, []string{"already stored (same bytes) " + id1}, ""},
		{"push a second version", []string{"rules", "push", v2, "--route", "care", "--uploaded-by", "bo"}, 0, []string{"stored " + id2}, ""},
		{"activate by prefix", []string{"rules", "activate", id2[:12], "--route", "care"}, 0, []string{"route care: active version " + id2 + " (was " + id1 + ")"}, ""},
		{"list", []string{"rules", "list"}, 0, []string{"VERSION", id1[:12], id2[:12] + "  10    ", "bo", "first", "care   " + id2[:12] + "            " + id1[:12], "audit  (configured rule file)  -"}, ""},
		{"show", []string{"rules", "show", id2}, 0, []string{"sha256:      " + id2, "size:        10 bytes", "abi version: 1", "uploaded by: bo", "active on:   care"}, ""},
		{"show json", []string{"rules", "show", id2, "--json"}, 0, []string{`"sha256": "` + id2 + `"`, `"routes": [`}, ""},
		{"rm in use", []string{"rules", "rm", id2}, 1, nil, "turnout rules rm: version_in_use: version " + id2 + " is active on care"},
		{"rollback", []string{"rules", "rollback", "--route", "care"}, 0, []string{"route care: active version " + id1 + " (was " + id2 + ")"}, ""},
		{"rm unused", []string{"rules", "rm", id2}, 0, []string{"deleted " + id2}, ""},
		{"show unknown", []string{"rules", "show", id2}, 1, nil, "turnout rules show: version_not_found: "},
		{"unknown route", []string{"rules", "rollback", "--route", "nope"}, 1, nil, "route_not_found"},
		{"validation failure", []string{"rules", "push", writeTemp(t, "fail:export_missing")}, 1, nil, "turnout rules push: export_missing: load rule : the module failed with export_missing"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(context.Background(), append(s.args, auth...)...)
			if code != s.code || !strings.Contains(stderr, s.stderr) {
				t.Errorf("exit %d stderr %q, want %d and %q", code, stderr, s.code, s.stderr)
			}
			for _, w := range s.stdout {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout)
				}
			}
		})
	}
}

func TestRulesRemoteAuthAndUsage(t *testing.T) {
	url, tokenFile := remoteAPI(t, admin.Options{Token: []byte(remoteToken)})
	roURL, _ := remoteAPI(t, admin.Options{})
	v1 := wasmFile(t, "v1")
	for _, tc := range []struct {
		name   string
		env    map[string]string
		args   []string
		code   int
		stderr string
	}{
		{"token from the environment", map[string]string{envAdmin: url, envAdminToken: remoteToken}, []string{"rules", "push", v1}, 0, ""},
		{"no token", map[string]string{envAdmin: url}, []string{"rules", "list"}, 1, "turnout rules list: unauthorized: missing or wrong bearer token"},
		{"wrong token", map[string]string{envAdmin: url, envAdminToken: "nope"}, []string{"rules", "rm", "abc"}, 1, "unauthorized"},
		{"read-only server", nil, []string{"rules", "push", v1, "--admin", roURL, "--token-file", tokenFile}, 1, "read_only: the admin API is read-only (rule uploads, swaps and dead-letter replays are writes) because no admin token is configured: set admin.token_file"},
		{"read-only server lists", nil, []string{"rules", "list", "--admin", roURL}, 0, ""},
		{"unreachable", nil, []string{"rules", "list", "--admin", "127.0.0.1:1"}, 1, "turnout rules list: rules api GET"},
		{"missing argument", nil, []string{"rules", "show"}, 2, "want 1 argument(s), got 0"},
		{"activate needs a route", nil, []string{"rules", "activate", "abc"}, 2, "--route is required"},
		{"push --activate needs a route", nil, []string{"rules", "push", v1, "--activate"}, 2, "--route is required"},
		{"unknown flag", nil, []string{"rules", "list", "--nope"}, 2, "flag provided but not defined: -nope"},
		{"missing token file", nil, []string{"rules", "list", "--token-file", "/nonexistent/t"}, 2, "--token-file: open /nonexistent/t"},
		{"missing file", map[string]string{envAdmin: url, envAdminToken: remoteToken}, []string{"rules", "push", "/nonexistent/r.wasm"}, 1, "open /nonexistent/r.wasm"},
		{"help lists the remote commands", nil, []string{"rules", "nope"}, 2, "rollback --route NAME"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{envAdmin, envAdminToken, envAdminCA} {
				t.Setenv(k, tc.env[k])
			}
			code, stdout, stderr := runCLI(context.Background(), tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.stderr) {
				t.Errorf("exit %d stdout %q stderr %q, want %d and %q", code, stdout, stderr, tc.code, tc.stderr)
			}
		})
	}
}

func TestRulesRemoteTLS(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := testutil.WriteCerts(t, dir, "127.0.0.1")
	s := admin.New(admin.Options{Listen: "127.0.0.1:0", Gatherer: prometheus.NewRegistry(), Rules: admintest.New("care"),
		TLSCertFile: certFile, TLSKeyFile: keyFile})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	t.Setenv(envAdminToken, "")
	t.Setenv(envAdminCA, "")
	t.Setenv(envAdmin, "https://"+s.Addr())
	if code, _, stderr := runCLI(context.Background(), "rules", "list", "--ca-file", caFile); code != 0 {
		t.Errorf("list over TLS with the CA: exit %d %s", code, stderr)
	}
	if code, _, stderr := runCLI(context.Background(), "rules", "list"); code != 1 || !strings.Contains(stderr, "certificate") {
		t.Errorf("list over TLS without the CA: exit %d %q, want 1 and a certificate error", code, stderr)
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f.wasm")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func sha(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u, err := admintest.New().Upload(context.Background(), admin.Upload{Wasm: b})
	if err != nil {
		t.Fatal(err)
	}
	return u.Version.SHA256
}

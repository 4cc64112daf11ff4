package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const adminRoutes = `
inputs: { in: { type: test-in } }
outputs: { out: { type: test-out } }
routes: { r: { inputs: [in], outputs: [out] } }
`

func TestAdminSecurity(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TURNOUT_TOKEN": "fedcba9876543210fedc", "SHORT": "x"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	parse := func(t *testing.T, admin string) (*Config, error) {
		t.Helper()
		return Parse(filepath.Join(dir, "t.yaml"), doc(admin+adminRoutes), Options{LookupEnv: lookup})
	}

	t.Run("token from a file, trimmed", func(t *testing.T) {
		cfg, err := parse(t, "\nadmin:\n  token_file: "+tokenFile+"\n  rules_read_open: true\n  max_upload_bytes: 1048576")
		if err != nil {
			t.Fatal(err)
		}
		if string(cfg.Admin.Token) != "0123456789abcdef0123" || !cfg.Admin.RulesReadOpen || cfg.Admin.UploadLimit() != 1<<20 {
			t.Errorf("admin = %+v", cfg.Admin)
		}
	})
	t.Run("token from the environment", func(t *testing.T) {
		cfg, err := parse(t, "\nadmin: { token_env: TURNOUT_TOKEN }")
		if err != nil || string(cfg.Admin.Token) != env["TURNOUT_TOKEN"] {
			t.Errorf("token = %q, %v", cfg.Admin.Token, err)
		}
	})
	t.Run("slow-client and token-guessing limits", func(t *testing.T) {
		cfg, err := parse(t, "\nadmin:\n  read_header_timeout: 3s\n  read_timeout: 30s\n  idle_timeout: 1m\n  max_header_bytes: 8192\n  auth_failure_burst: 5\n  auth_failure_window: 10m")
		if err != nil {
			t.Fatal(err)
		}
		a := cfg.Admin
		if a.ReadHeaderTimeout != 3*time.Second || a.ReadTimeout != 30*time.Second || a.IdleTimeout != time.Minute ||
			a.MaxHeaderBytes != 8192 || a.AuthFailureBurst != 5 || a.AuthFailureWindow != 10*time.Minute {
			t.Errorf("admin limits = %+v", a)
		}
	})
	t.Run("defaults: no token, 16 MiB, no TLS", func(t *testing.T) {
		cfg, err := parse(t, "")
		if err != nil || cfg.Admin.Token != nil || cfg.Admin.UploadLimit() != 16<<20 || cfg.Admin.TLS != (AdminTLS{}) {
			t.Errorf("admin = %+v, %v", cfg.Admin, err)
		}
	})

	for _, tc := range []struct {
		name, admin string
		want        []string
	}{
		{"both sources", "\nadmin:\n  token_file: " + tokenFile + "\n  token_env: TURNOUT_TOKEN",
			[]string{"3: admin.token_env: set either admin.token_file or admin.token_env, not both"}},
		{"missing file", "\nadmin:\n  listen: 127.0.0.1:0\n  token_file: " + filepath.Join(dir, "nope"),
			[]string{"3: admin.token_file: cannot read the token: open " + filepath.Join(dir, "nope")}},
		{"short token file", "\nadmin:\n  token_file: " + short,
			[]string{"2: admin.token_file: the token in the file " + short + " is 3 bytes long: use at least 16"}},
		{"unset variable", "\nadmin:\n  token_env: NOPE",
			[]string{"2: admin.token_env: the environment variable NOPE is not set or empty"}},
		{"short variable", "\nadmin:\n  token_env: SHORT",
			[]string{"2: admin.token_env: the token in the environment variable SHORT is 1 bytes long"}},
		{"read open without token", "\nadmin:\n  rules_read_open: true",
			[]string{"2: admin.rules_read_open: has no effect without a token"}},
		{"upload limit", "\nadmin:\n  max_upload_bytes: 0",
			[]string{"2: admin.max_upload_bytes: must be positive"}},
		{"upload limit not a number", "\nadmin:\n  max_upload_bytes: big",
			[]string{"2: admin.max_upload_bytes: invalid value \"big\""}},
		{"negative limits", "\nadmin:\n  read_timeout: -1s\n  auth_failure_burst: -3",
			[]string{"2: admin.read_timeout: must not be negative", "3: admin.auth_failure_burst: must not be negative"}},
		{"tls half", "\nadmin:\n  tls:\n    cert_file: " + tokenFile,
			[]string{"3: admin.tls: set both cert_file and key_file, or neither"}},
		{"tls missing files", "\nadmin:\n  tls:\n    cert_file: " + filepath.Join(dir, "c.pem") + "\n    key_file: " + filepath.Join(dir, "k.pem"),
			[]string{"3: admin.tls.cert_file: stat ", "4: admin.tls.key_file: stat "}},
		{"unknown key", "\nadmin:\n  token: abc",
			[]string{"2: admin.token: unknown key (known keys: auth_failure_burst, auth_failure_window, idle_timeout, listen, max_header_bytes, max_upload_bytes, pprof, read_header_timeout, read_timeout, rules_read_open, tls, token_env, token_file)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "t.yaml")
			_, err := parse(t, tc.admin)
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("Parse error = %v, want Errors", err)
			}
			if len(es) != len(tc.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(es), len(tc.want), err)
			}
			for i, w := range tc.want {
				if got := es[i].Error(); !strings.HasPrefix(got, path+":"+w) {
					t.Errorf("error %d = %q\nwant prefix %q", i, got, path+":"+w)
				}
			}
		})
	}
}

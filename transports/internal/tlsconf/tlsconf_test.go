package tlsconf

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/turnout-router/turnout/internal/testutil"
)

func TestClient(t *testing.T) {
	dir := t.TempDir()
	_, cert, key := testutil.WriteCerts(t, dir, "client")
	notPEM := filepath.Join(dir, "x.txt")
	_ = os.WriteFile(notPEM, []byte("hello"), 0o600)
	cases := []struct {
		name  string
		c     Config
		err   string
		check func(t *testing.T, tc *tls.Config)
	}{
		{"nothing set", Config{}, "", func(t *testing.T, tc *tls.Config) {
			if tc != nil {
				t.Error("want nil for an empty block")
			}
		}},
		{"CA, client certificate, server name", Config{CAFile: cert, CertFile: cert, KeyFile: key, ServerName: "broker"}, "", func(t *testing.T, tc *tls.Config) {
			if tc.RootCAs == nil || len(tc.Certificates) != 1 || tc.ServerName != "broker" || tc.MinVersion != tls.VersionTLS12 || tc.InsecureSkipVerify {
				t.Errorf("config %+v", tc)
			}
		}},
		{"verification off", Config{InsecureSkipVerify: true}, "", func(t *testing.T, tc *tls.Config) {
			if !tc.InsecureSkipVerify {
				t.Error("insecure_skip_verify ignored")
			}
		}},
		{"missing CA file", Config{CAFile: filepath.Join(dir, "none.pem")}, "tls.ca_file", nil},
		{"CA file without PEM", Config{CAFile: notPEM}, "holds no PEM certificate", nil},
		{"cert without key", Config{CertFile: cert}, "set both or neither", nil},
		{"bad key pair", Config{CertFile: cert, KeyFile: notPEM}, "tls.cert_file/tls.key_file", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.c.Client()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Client = %v, want an error containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, got)
		})
	}
}

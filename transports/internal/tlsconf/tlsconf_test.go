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

func TestServer(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := testutil.WriteCerts(t, dir, "127.0.0.1")
	notPEM := filepath.Join(dir, "x.txt")
	_ = os.WriteFile(notPEM, []byte("hello"), 0o600)
	missing := filepath.Join(dir, "none.pem")
	cases := []struct {
		name  string
		s     Server
		err   string
		check func(t *testing.T, tc *tls.Config)
	}{
		{"certificate and key", Server{CertFile: cert, KeyFile: key}, "", func(t *testing.T, tc *tls.Config) {
			if len(tc.Certificates) != 1 || tc.MinVersion != tls.VersionTLS12 || tc.ClientAuth != tls.NoClientCert {
				t.Errorf("config %+v", tc)
			}
		}},
		{"client CA requires client certificates", Server{CertFile: cert, KeyFile: key, ClientCAFile: ca}, "", func(t *testing.T, tc *tls.Config) {
			if tc.ClientCAs == nil || tc.ClientAuth != tls.RequireAndVerifyClientCert {
				t.Errorf("config %+v", tc)
			}
		}},
		{"no certificate", Server{KeyFile: key}, "tls.cert_file: required", nil},
		{"no key", Server{CertFile: cert}, "tls.key_file: required", nil},
		{"missing certificate", Server{CertFile: missing, KeyFile: key}, "tls.cert_file: open", nil},
		{"missing key", Server{CertFile: cert, KeyFile: missing}, "tls.key_file: open", nil},
		{"key of something else", Server{CertFile: cert, KeyFile: notPEM}, "tls.key_file: " + notPEM + " does not go with", nil},
		{"missing client CA", Server{CertFile: cert, KeyFile: key, ClientCAFile: missing}, "tls.client_ca_file: open", nil},
		{"client CA without PEM", Server{CertFile: cert, KeyFile: key, ClientCAFile: notPEM}, "tls.client_ca_file: " + notPEM + " holds no PEM", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.s.Config()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Config = %v, want an error containing %q", err, tc.err)
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

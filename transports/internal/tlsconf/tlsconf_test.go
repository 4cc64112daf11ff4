package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writePair writes a self-signed certificate and its key to dir.
func writePair(t *testing.T, dir string) (cert, key string) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	cert, key = filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	_ = os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)
	return cert, key
}

func TestClient(t *testing.T) {
	dir := t.TempDir()
	cert, key := writePair(t, dir)
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

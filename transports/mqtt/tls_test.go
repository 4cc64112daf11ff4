package mqtt

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/mqtt/mqtttest"
)

// writeCerts writes a CA and a server certificate for 127.0.0.1 to dir.
func writeCerts(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "turnout test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(srvKey)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", srvDER), write("server.key", "EC PRIVATE KEY", keyDER)
}

func TestOutputOverTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := writeCerts(t, dir)
	port := testutil.FreePort(t)
	mqtttest.StartWithConfig(t,
		fmt.Sprintf("listener %d 127.0.0.1", port), "cafile "+ca, "certfile "+cert, "keyfile "+key)
	url := fmt.Sprintf("ssl://127.0.0.1:%d", port)

	for _, c := range []struct {
		name  string
		tls   TLSConfig
		ready bool
	}{
		{"trusted CA", TLSConfig{CAFile: ca}, true},
		{"unknown CA", TLSConfig{}, false},
		{"verification off", TLSConfig{InsecureSkipVerify: true}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			deps, _ := testDeps(t)
			cfg := OutputConfig{ConnectionConfig: fastConn(url, ""), Topic: "tls/x"}
			cfg.TLS = c.tls
			out, err := newOutput("tls", cfg, deps)
			if err != nil {
				t.Fatal(err)
			}
			if err := out.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			defer out.Close(t.Context())
			if !c.ready {
				if out.Ready() {
					t.Fatal("connected to a broker whose certificate it cannot verify")
				}
				return
			}
			waitFor(t, "output ready over TLS", 10*time.Second, out.Ready)
			if err := out.Send(t.Context(), newEvent("1", nil)); err != nil {
				t.Fatalf("Send over TLS: %v", err)
			}
		})
	}
}

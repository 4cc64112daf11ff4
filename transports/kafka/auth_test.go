package kafka

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/internal/tlsconf"
	"github.com/turnout-router/turnout/transports/kafka/kafkatest"
	"github.com/turnout-router/turnout/transports/transporttest"
)

// roundTripThrough sends one event with an output of conn and reads it back with an input of
// conn, or checks that the output cannot deliver (not ready, Send fails retryably).
func roundTripThrough(t *testing.T, c *kafkatest.Cluster, conn ConnectionConfig, ok bool) {
	t.Helper()
	topic := kafkatest.Name("auth")
	c.CreateTopic(t, topic, 1)
	o, err := newOutput("out", OutputConfig{ConnectionConfig: conn, Topic: topic, AckTimeout: time.Second}, testDeps())
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer o.Close(t.Context())
	err = o.Send(t.Context(), transporttest.Event("auth-1"))
	if !ok {
		if err == nil || engine.IsPermanent(err) {
			t.Fatalf("send with refused credentials or certificate: %v, want a retryable error", err)
		}
		if o.Ready() {
			t.Error("output ready although the cluster refuses it")
		}
		return
	}
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	cfg := inputConfig(c, topic, kafkatest.Name("g"))
	cfg.ConnectionConfig = conn
	_, d, _ := startInput(t, cfg)
	x := d.Next(t, 20*time.Second)
	x.Settle(nil)
	if id := idOf(t, x); id != "auth-1" {
		t.Fatalf("read %s back", id)
	}
}

func TestSASL(t *testing.T) {
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			c := kafkatest.Start(t, kafkatest.With(kfake.EnableSASL(), kfake.Superuser(mech, "turnout", "s3cret")))
			for _, tc := range []struct {
				name string
				sasl SASLConfig
				ok   bool
			}{
				{"right password", SASLConfig{Mechanism: mech, Username: "turnout", Password: "s3cret"}, true},
				{"wrong password", SASLConfig{Mechanism: mech, Username: "turnout", Password: "guess"}, false},
			} {
				t.Run(tc.name, func(t *testing.T) {
					conn := fastConn(c)
					conn.SASL = tc.sasl
					roundTripThrough(t, c, conn, tc.ok)
				})
			}
		})
	}
}

func TestTLS(t *testing.T) {
	ca, cert, key := testutil.WriteCerts(t, t.TempDir(), "127.0.0.1")
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	c := kafkatest.Start(t, kafkatest.With(kfake.TLS(&tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})))
	cases := []struct {
		name    string
		tls     tlsconf.Config
		enabled bool
		ok      bool
	}{
		{"verified with ca_file", tlsconf.Config{CAFile: ca}, false, true},
		{"system pool does not know the CA", tlsconf.Config{}, true, false},
		{"wrong server name", tlsconf.Config{CAFile: ca, ServerName: "elsewhere.example"}, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn := fastConn(c)
			conn.TLS, conn.TLSEnabled = tc.tls, tc.enabled
			roundTripThrough(t, c, conn, tc.ok)
		})
	}
}

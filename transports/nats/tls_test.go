package nats

import (
	"strings"
	"testing"
	"time"

	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/internal/tlsconf"
	"github.com/turnout-router/turnout/transports/nats/natstest"
)

func TestTLS(t *testing.T) {
	ca, cert, key := testutil.WriteCerts(t, t.TempDir(), "127.0.0.1")
	srv := natstest.StartWithArgs(t, "--tls", "--tlscert", cert, "--tlskey", key)
	url := strings.Replace(srv.URL(), "nats://", "tls://", 1)
	cases := []struct {
		name string
		tls  tlsconf.Config
		ok   bool
	}{
		{"verified with ca_file", tlsconf.Config{CAFile: ca}, true},
		{"system pool does not know the CA", tlsconf.Config{}, false},
		{"wrong server name", tlsconf.Config{CAFile: ca, ServerName: "elsewhere.example"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := OutputConfig{ConnectionConfig: fastConn(url), Subject: "tls.x", AckTimeout: time.Second}
			cfg.TLS = tc.tls
			o, err := newOutput("tls", cfg, testDeps())
			if err != nil {
				t.Fatal(err)
			}
			if err := o.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			defer o.Close(t.Context())
			if tc.ok {
				waitFor(t, "connected over TLS", o.Ready)
				return
			}
			time.Sleep(time.Second)
			if o.Ready() {
				t.Fatal("connected although the certificate does not verify")
			}
		})
	}
}

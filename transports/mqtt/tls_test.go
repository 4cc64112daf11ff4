package mqtt

import (
	"fmt"
	"testing"
	"time"

	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/mqtt/mqtttest"
)

func TestOutputOverTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := testutil.WriteCerts(t, dir, "127.0.0.1")
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
			testutil.WaitFor(t, "output ready over TLS", 10*time.Second, out.Ready)
			if err := out.Send(t.Context(), newEvent("1", nil)); err != nil {
				t.Fatalf("Send over TLS: %v", err)
			}
		})
	}
}

package amqp

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/amqp/amqptest"
	"github.com/turnout-router/turnout/transports/internal/tlsconf"
)

// tlsProxy terminates TLS with the given certificate on a free loopback port and forwards the
// bytes to backend; the test's cleanup stops it and its connections.
func tlsProxy(t *testing.T, certFile, keyFile, backend string) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", backend)
			if err != nil {
				_ = c.Close()
				continue
			}
			track(c)
			track(b)
			wg.Go(func() { _, _ = io.Copy(b, c); _ = b.Close() })
			wg.Go(func() { _, _ = io.Copy(c, b); _ = c.Close() })
		}
	})
	return l.Addr().String()
}

// TestTLS connects over amqps:// through a TLS proxy in front of the shared broker, with the
// certificate checks of the tls block.
func TestTLS(t *testing.T) {
	n := amqptest.Shared(t)
	ca, cert, key := testutil.WriteCerts(t, t.TempDir(), "broker.test")
	url := "amqps://guest:guest@" + tlsProxy(t, cert, key, n.Addr())
	q := amqptest.QueueName(t, "tls-")
	deleteQueue(t, n, q)
	cases := []struct {
		name  string
		tls   tlsconf.Config
		ready bool
	}{
		{"trusted CA and server name", tlsconf.Config{CAFile: ca, ServerName: "broker.test"}, true},
		{"certificate for another name", tlsconf.Config{CAFile: ca}, false},
		{"unknown CA", tlsconf.Config{ServerName: "broker.test"}, false},
		{"verification off", tlsconf.Config{InsecureSkipVerify: true}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := outputConfig(url, q, "")
			cfg.TLS = tc.tls
			deps, _ := testDeps()
			o, err := newOutput("out", cfg, deps)
			if err != nil {
				t.Fatal(err)
			}
			if err := o.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			defer o.Close(t.Context())
			if !tc.ready {
				if o.Ready() {
					t.Fatal("connected to a broker whose certificate it cannot verify")
				}
				return
			}
			waitFor(t, "output attached over TLS", o.Ready)
			if err := o.Send(t.Context(), testEvent(tc.name)); err != nil {
				t.Fatalf("Send over TLS: %v", err)
			}
		})
	}
}

// TestSASL attaches with each way of giving credentials; wrong credentials never attach.
func TestSASL(t *testing.T) {
	n := amqptest.Shared(t)
	addr := n.Addr()
	q := amqptest.QueueName(t, "sasl-")
	deleteQueue(t, n, q)
	cases := []struct {
		name         string
		url          string
		user, pass   string
		sasl         string
		wantAttached bool
	}{
		{"plain from the url", "amqp://guest:guest@" + addr, "", "", "", true},
		{"plain from the keys", "amqp://" + addr, "guest", "guest", "", true},
		{"keys override the url", "amqp://nobody:wrong@" + addr, "guest", "guest", "", true},
		{"anonymous", "amqp://" + addr, "", "", "anonymous", true},
		{"wrong password", "amqp://guest:wrong@" + addr, "", "", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := inputConfig(tc.url, q)
			cfg.Username, cfg.Password, cfg.SASL = tc.user, tc.pass, tc.sasl
			deps, _ := testDeps()
			in, err := newInput("in", cfg, deps)
			if err != nil {
				t.Fatal(err)
			}
			if err := in.Start(t.Context(), testutil.NewDispatcher()); err != nil {
				t.Fatal(err)
			}
			defer in.Close(t.Context())
			if tc.wantAttached {
				waitFor(t, "input attached", in.Ready)
			} else if in.Ready() {
				t.Fatal("attached with wrong credentials")
			}
		})
	}
}

package mqtt

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/internal/tlsconf"
)

func startBroker(t testing.TB, cfg BrokerConfig) (*Broker, *prometheus.Registry) {
	t.Helper()
	deps, reg := testDeps(t)
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	b, err := NewBroker(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b, reg
}

func TestBrokerStartStop(t *testing.T) {
	b, _ := startBroker(t, BrokerConfig{Enabled: true})
	addr := b.Addr()
	if strings.HasSuffix(addr, ":0") {
		t.Fatalf("Addr() = %q, want the bound port", addr)
	}
	c := rawClient(t, "tcp://"+addr)
	if !c.IsConnectionOpen() {
		t.Fatal("client not connected to the embedded broker")
	}
	if err := b.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "client disconnected by Close", 5*time.Second, func() bool { return !c.IsConnectionOpen() })
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Fatal("broker still accepts connections after Close")
	}
}

func TestBrokerConfigErrors(t *testing.T) {
	deps, _ := testDeps(t)
	dir := t.TempDir()
	_, cert, key := testutil.WriteCerts(t, dir, "127.0.0.1")
	missing := filepath.Join(dir, "missing.pem")
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	alice := func(u BrokerUser) BrokerConfig {
		if u.Username == "" {
			u.Username = "alice"
		}
		return BrokerConfig{Users: []BrokerUser{u}}
	}
	for _, c := range []struct {
		name, key string // key: the error starts with it
		want      string // and contains this
		cfg       BrokerConfig
	}{
		{"queue too large", "broker.max_queued", "outside", BrokerConfig{MaxQueued: 70000}},
		{"password alone", "broker.password", "username", BrokerConfig{Password: "p"}},
		{"no listener", "broker.listen", "no listener", BrokerConfig{Listen: "none"}},
		{"TLS without certificate", "broker.tls.cert_file", "required", BrokerConfig{TLS: BrokerTLSConfig{Listen: "127.0.0.1:0"}}},
		{"TLS certificate missing", "broker.tls.cert_file", missing, BrokerConfig{TLS: BrokerTLSConfig{Server: tlsconf.Server{CertFile: missing, KeyFile: key}}}},
		{"TLS key unreadable", "broker.tls.key_file", "is a directory", BrokerConfig{TLS: BrokerTLSConfig{Server: tlsconf.Server{CertFile: cert, KeyFile: dir}}}},
		{"TLS key not the certificate's", "broker.tls.key_file", "does not go with", BrokerConfig{TLS: BrokerTLSConfig{Server: tlsconf.Server{CertFile: cert, KeyFile: cert}}}},
		{"TLS client CA missing", "broker.tls.client_ca_file", missing, BrokerConfig{TLS: BrokerTLSConfig{Server: tlsconf.Server{CertFile: cert, KeyFile: key, ClientCAFile: missing}}}},
		{"users and username", "broker.users", "not both", BrokerConfig{Username: "u", Password: "p", Users: []BrokerUser{{Username: "a", Password: "b"}}}},
		{"user without name", "broker.users[0].username", "required", BrokerConfig{Users: []BrokerUser{{Password: "p"}}}},
		{"user without password", "broker.users[0].password", "required", alice(BrokerUser{})},
		{"user twice", "broker.users[1].username", "twice", BrokerConfig{Users: []BrokerUser{{Username: "a", Password: "p"}, {Username: "a", Password: "q"}}}},
		{"invalid publish filter", "broker.users[0].publish[1]", `"a/#/b"`, alice(BrokerUser{Password: "p", Publish: []string{"a/#", "a/#/b"}})},
		{"wildcard inside a level", "broker.users[0].subscribe[0]", `"a/b+"`, alice(BrokerUser{Password: "p", Subscribe: []string{"a/b+"}})},
		{"shared filter to publish", "broker.users[0].publish[0]", "$share", alice(BrokerUser{Password: "p", Publish: []string{"$share/g/a"}})},
		{"persistence under a regular file", "broker.persistence", "not a directory", BrokerConfig{Persistence: filepath.Join(regular, "broker")}},
		{"persistence is a regular file", "broker.persistence", "not a directory", BrokerConfig{Persistence: regular}},
		// /proc/sys refuses new files even to root (tests run as root: modes do not stop it).
		{"persistence not writable", "broker.persistence", "not writable", BrokerConfig{Persistence: "/proc/sys/turnout-broker"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewBroker(c.cfg, deps)
			if err == nil || !strings.HasPrefix(err.Error(), c.key+": ") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q: ...%s...", err, c.key, c.want)
			}
		})
	}
	b, err := NewBroker(BrokerConfig{Listen: "127.0.0.1:0"}, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	// Same registry: a configuration check builds a broker before the running one does.
	other, err := NewBroker(BrokerConfig{Listen: b.Addr()}, deps)
	if err != nil {
		t.Fatalf("second broker on the same registry: %v", err)
	}
	if err := other.Start(t.Context()); err == nil {
		other.Close(context.Background())
		t.Fatal("a second broker started on a port already in use")
	}
}

func TestBrokerAuth(t *testing.T) {
	b, _ := startBroker(t, BrokerConfig{Username: "turnout", Password: "s3cret"})
	url := "tcp://" + b.Addr()
	for _, c := range []struct {
		name, user, pass string
		ok               bool
	}{
		{"right credentials", "turnout", "s3cret", true},
		{"wrong password", "turnout", "nope", false},
		{"anonymous", "", "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := paho.NewClientOptions().AddBroker(url).SetClientID(uniq(t)).SetProtocolVersion(4).
				SetUsername(c.user).SetPassword(c.pass).SetConnectTimeout(2 * time.Second)
			cl := paho.NewClient(o)
			tok := cl.Connect()
			tok.WaitTimeout(5 * time.Second)
			if (tok.Error() == nil) != c.ok {
				t.Fatalf("connect error = %v, want ok=%v", tok.Error(), c.ok)
			}
			cl.Disconnect(50)
		})
	}
}

// TestBrokerCarriesEventsEndToEnd runs the output and the input against the embedded broker.
func TestBrokerCarriesEventsEndToEnd(t *testing.T) {
	b, _ := startBroker(t, BrokerConfig{})
	url := "tcp://" + b.Addr()
	_, d, _ := startInput(t, url, uniq(t), "alarms/#")
	out := startOutput(t, url, OutputConfig{TopicTemplate: "alarms/{type}"})
	testutil.WaitFor(t, "output ready", 10*time.Second, out.Ready)
	want := ids("b", 0, 20)
	for _, id := range want {
		if err := out.Send(t.Context(), newEvent(id, nil)); err != nil {
			t.Fatalf("Send %s: %v", id, err)
		}
	}
	expectIDs(t, d, want, func(_ int, x testutil.Dispatched) {
		if x.M.Origin != "alarms/test.event" {
			t.Errorf("Origin = %q", x.M.Origin)
		}
		x.Settle(nil)
	})
}

// TestBrokerRefusesInsteadOfDropping fills an offline persistent session to max_queued: the
// next publication must fail for the publisher (no PUBACK), never be accepted and dropped, and
// the session must still hold every accepted message.
func TestBrokerRefusesInsteadOfDropping(t *testing.T) {
	b, reg := startBroker(t, BrokerConfig{MaxQueued: 3})
	url := "tcp://" + b.Addr()
	id := uniq(t)
	in, _, _ := startInput(t, url, id, "q/#") // creates the persistent session
	if err := in.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	out := startOutput(t, url, OutputConfig{Topic: "q/x"})
	testutil.WaitFor(t, "output ready", 10*time.Second, out.Ready)
	for _, e := range ids("q", 0, 3) {
		if err := out.Send(t.Context(), newEvent(e, nil)); err != nil {
			t.Fatalf("Send %s: %v", e, err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := out.Send(ctx, newEvent("overflow", nil)); err == nil {
		t.Fatal("the broker confirmed a message beyond max_queued")
	}
	if v := testutil.Metric(t, reg, "turnout_broker_publishes_refused_total", nil); v < 1 {
		t.Errorf("turnout_broker_publishes_refused_total = %v, want >= 1", v)
	}
	if v := testutil.Metric(t, reg, "turnout_broker_messages_dropped_total", nil); v != 0 {
		t.Errorf("turnout_broker_messages_dropped_total = %v, want 0", v)
	}
	_, d, _ := startInput(t, url, id, "q/#")
	expectIDs(t, d, ids("q", 0, 3), func(_ int, x testutil.Dispatched) { x.Settle(nil) })
}

// The broker library logs a warning without a message for the listener connection it closes
// itself at shutdown; turnout's log leaves it out and keeps the library's other warnings.
func TestBrokerLogLeavesOutClosedConnections(t *testing.T) {
	var buf testutil.SyncBuffer
	log := slog.New(warnOnly{slog.NewTextHandler(&buf, nil)})
	closed := &net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}
	log.Warn("", "listener", "tcp", "error", closed)
	log.Warn("", "listener", "tcp", "error", errors.New("tls: handshake failure"))
	log.Info("client connected", "client", "pendant-17")
	out := buf.String()
	if strings.Contains(out, "closed network connection") {
		t.Errorf("the shutdown's closed connection was logged:\n%s", out)
	}
	if !strings.Contains(out, "tls: handshake failure") {
		t.Errorf("another warning of the library was left out:\n%s", out)
	}
	if strings.Contains(out, "client connected") {
		t.Errorf("an info record of the library was logged:\n%s", out)
	}
}

package mqtt

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/internal/tlsconf"
)

func TestFilterCovers(t *testing.T) {
	for _, c := range []struct {
		allowed, f string
		want       bool
	}{
		{"alarms/#", "alarms/fall", true},
		{"alarms/#", "alarms", true},
		{"alarms/#", "alarms/+", true},
		{"alarms/#", "alarms/#", true},
		{"alarms/#", "#", false},
		{"alarms/#", "other/x", false},
		{"alarms/+", "alarms/fall", true},
		{"alarms/+", "alarms/+", true},
		{"alarms/+", "alarms/#", false},
		{"alarms/+", "alarms/fall/x", false},
		{"alarms/+", "alarms", false},
		{"+/alarms", "home/alarms", true},
		{"+/alarms", "+/alarms", true},
		{"home/alarms", "+/alarms", false},
		{"home/alarms", "home/alarms", true},
		{"home/alarms", "home/alarms/x", false},
		{"#", "anything/at/all", true},
		{"#", "$SYS/broker/uptime", false},
		{"+/broker/uptime", "$SYS/broker/uptime", false},
		{"$SYS/#", "$SYS/broker/uptime", true},
	} {
		if got := filterCovers(c.allowed, c.f); got != c.want {
			t.Errorf("filterCovers(%q, %q) = %v, want %v", c.allowed, c.f, got, c.want)
		}
	}
}

// userClient connects a paho client (MQTT 3.1.1, clean session) with a username and password,
// which sends the messages it receives to got (if not nil); it returns nil when the broker
// refuses the connection.
func userClient(t *testing.T, url, user, pass string, got chan paho.Message) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(url).SetClientID(uniq(t)).SetProtocolVersion(4).
		SetUsername(user).SetPassword(pass).SetConnectTimeout(2 * time.Second).SetAutoReconnect(false)
	if got != nil {
		o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- m })
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		return nil
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

// TestBrokerUsersACL: with broker.users, anonymous clients and wrong passwords are refused, and
// each user publishes and subscribes only where its filters allow; every refusal is counted.
func TestBrokerUsersACL(t *testing.T) {
	b, reg := startBroker(t, BrokerConfig{Users: []BrokerUser{
		{Username: "device", Password: "d-secret", Publish: []string{"homes/+/alarms"}},
		{Username: "turnout", Password: "t-secret", Subscribe: []string{"homes/#"}, Publish: []string{"out/#"}},
	}})
	url := "tcp://" + b.Addr()
	denied := func(action string) float64 {
		return testutil.Metric(t, reg, "turnout_broker_access_denied_total", map[string]string{"action": action})
	}

	t.Run("connect", func(t *testing.T) {
		if userClient(t, url, "", "", nil) != nil {
			t.Error("anonymous client accepted")
		}
		if userClient(t, url, "device", "t-secret", nil) != nil {
			t.Error("another user's password accepted")
		}
		if userClient(t, url, "nobody", "d-secret", nil) != nil {
			t.Error("unknown user accepted")
		}
		if v := denied("connect"); v != 3 {
			t.Errorf("connect refusals counted %v, want 3", v)
		}
	})

	got := make(chan paho.Message, 10)
	reader := userClient(t, url, "turnout", "t-secret", got)
	subscribe := func(filter string) byte {
		tok := reader.Subscribe(filter, 1, nil)
		if !tok.WaitTimeout(5 * time.Second) {
			t.Fatalf("no SUBACK for %s", filter)
		}
		return tok.(*paho.SubscribeToken).Result()[filter]
	}

	t.Run("subscribe", func(t *testing.T) {
		if code := subscribe("homes/+/alarms"); code != 1 {
			t.Errorf("allowed subscription: SUBACK 0x%x, want granted QoS 1", code)
		}
		if code := subscribe("#"); code != 0x80 {
			t.Errorf("subscription beyond the user's filters: SUBACK 0x%x, want failure 0x80", code)
		}
		if v := denied("subscribe"); v != 1 {
			t.Errorf("subscribe refusals counted %v, want 1", v)
		}
	})

	t.Run("publish", func(t *testing.T) {
		device := userClient(t, url, "device", "d-secret", nil)
		publish(t, device, "homes/42/alarms", []byte("allowed"))
		select {
		case m := <-got:
			if string(m.Payload()) != "allowed" {
				t.Fatalf("got %q", m.Payload())
			}
		case <-time.After(5 * time.Second):
			t.Fatal("allowed publication not delivered")
		}
		// Not allowed: MQTT 3.1.1 has no negative PUBACK, the broker closes the connection.
		tok := device.Publish("homes/42/telemetry", 1, false, []byte("denied"))
		if tok.WaitTimeout(2*time.Second) && tok.Error() == nil {
			t.Error("a publication outside the user's filters was acknowledged")
		}
		testutil.WaitFor(t, "publisher disconnected", 5*time.Second, func() bool { return !device.IsConnectionOpen() })
		select {
		case m := <-got:
			t.Fatalf("denied publication delivered: %q", m.Payload())
		case <-time.After(200 * time.Millisecond):
		}
		if v := denied("publish"); v != 1 {
			t.Errorf("publish refusals counted %v, want 1", v)
		}
	})
}

// tlsClient connects a paho client over TLS trusting caFile, with a client certificate when
// certFile is set; it returns the connect error.
func tlsClient(t *testing.T, url, caFile, certFile, keyFile string) error {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	o := paho.NewClientOptions().AddBroker(url).SetClientID(uniq(t)).SetProtocolVersion(4).
		SetTLSConfig(tc).SetConnectTimeout(2 * time.Second).SetAutoReconnect(false)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(5 * time.Second) {
		return os.ErrDeadlineExceeded
	}
	if tok.Error() != nil {
		return tok.Error()
	}
	// With TLS 1.3 a refused client certificate shows only after the handshake: check that the
	// connection carries traffic.
	sub := c.Subscribe("tls/check", 1, nil)
	if !sub.WaitTimeout(2*time.Second) || sub.Error() != nil || !c.IsConnectionOpen() {
		c.Disconnect(50)
		return os.ErrClosed
	}
	c.Disconnect(50)
	return nil
}

// TestBrokerTLS: a TLS-only broker (listen: none), with and without client certificates.
func TestBrokerTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := testutil.WriteCerts(t, dir, "127.0.0.1")
	clientCert, clientKey := testutil.WriteClientCert(t, dir, "device-1")

	t.Run("server certificate only", func(t *testing.T) {
		b, _ := startBroker(t, BrokerConfig{Listen: "none", TLS: BrokerTLSConfig{
			Listen: "127.0.0.1:0", Server: tlsconf.Server{CertFile: cert, KeyFile: key}}})
		if b.Addr() != "" {
			t.Fatalf("plain listener on %s with listen: none", b.Addr())
		}
		if err := tlsClient(t, "ssl://"+b.TLSAddr(), ca, "", ""); err != nil {
			t.Fatalf("TLS client: %v", err)
		}
		// A plain MQTT client on the TLS port gets no CONNACK.
		o := paho.NewClientOptions().AddBroker("tcp://" + b.TLSAddr()).SetClientID(uniq(t)).
			SetConnectTimeout(time.Second).SetAutoReconnect(false)
		c := paho.NewClient(o)
		if tok := c.Connect(); tok.WaitTimeout(3*time.Second) && tok.Error() == nil {
			c.Disconnect(50)
			t.Fatal("plain MQTT accepted on the TLS listener")
		}
	})

	t.Run("client certificates required", func(t *testing.T) {
		b, _ := startBroker(t, BrokerConfig{TLS: BrokerTLSConfig{
			Listen: "127.0.0.1:0", Server: tlsconf.Server{CertFile: cert, KeyFile: key, ClientCAFile: ca}}})
		url := "ssl://" + b.TLSAddr()
		if err := tlsClient(t, url, ca, clientCert, clientKey); err != nil {
			t.Fatalf("client with a certificate of the CA: %v", err)
		}
		if err := tlsClient(t, url, ca, "", ""); err == nil {
			t.Fatal("client without a certificate accepted")
		}
		// The server certificate is of the same CA but not for client authentication.
		if err := tlsClient(t, url, ca, cert, key); err == nil {
			t.Fatal("client with a server-only certificate accepted")
		}
		// The plain listener stays on unless listen: none.
		if c := rawClient(t, "tcp://"+b.Addr()); !c.IsConnectionOpen() {
			t.Fatal("plain listener not serving beside the TLS one")
		}
	})
}

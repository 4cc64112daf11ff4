package mqtt

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/internal/testutil"
)

// restartBroker closes b (unless nil) and starts a broker with cfg, whose persistence and
// listen address are usually the same as b's.
func restartBroker(t *testing.T, b *Broker, cfg BrokerConfig) (*Broker, *prometheus.Registry) {
	t.Helper()
	if b != nil {
		if err := b.Close(t.Context()); err != nil {
			t.Fatalf("close broker: %v", err)
		}
	}
	nb, reg := startBroker(t, cfg)
	return nb, reg
}

// persistentSubscriber connects a paho client with a persistent session (CleanSession=0) and
// QoS 1, subscribes to filter and returns the client and the channel of its messages.
func persistentSubscriber(t *testing.T, url, clientID, filter string) (paho.Client, chan paho.Message) {
	t.Helper()
	got := make(chan paho.Message, 1000)
	o := paho.NewClientOptions().AddBroker(url).SetClientID(clientID).SetCleanSession(false).
		SetProtocolVersion(4).SetConnectTimeout(2 * time.Second).SetAutoReconnect(false).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- m })
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	if filter != "" {
		if tok := c.Subscribe(filter, 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe %s: %v", filter, tok.Error())
		}
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c, got
}

func expectPayloads(t *testing.T, got chan paho.Message, want []string) {
	t.Helper()
	for i, w := range want {
		select {
		case m := <-got:
			if string(m.Payload()) != w {
				t.Fatalf("message %d: got %q, want %q", i, m.Payload(), w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d (%q) did not arrive", i, w)
		}
	}
}

func expectNothing(t *testing.T, got chan paho.Message, within time.Duration) {
	t.Helper()
	select {
	case m := <-got:
		t.Fatalf("unexpected message %q on %s", m.Payload(), m.Topic())
	case <-time.After(within):
	}
}

func publishAll(t *testing.T, c paho.Client, topic string, payloads []string) {
	t.Helper()
	for _, p := range payloads {
		publish(t, c, topic, []byte(p))
	}
}

// TestBrokerPersistenceSurvivesRestart: a persistent session with its subscription, the QoS 1
// messages queued for it while it was away, the ones it had received but not acknowledged when
// the broker stopped, and a retained message all come back from the store after Close and a new
// broker on the same directory; in publish order, new messages after the restored ones; and an
// acknowledged message does not come back.
func TestBrokerPersistenceSurvivesRestart(t *testing.T) {
	cfg := BrokerConfig{Listen: testutil.FreeAddr(t), Persistence: t.TempDir()}
	b, _ := startBroker(t, cfg)
	url := "tcp://" + b.Addr()
	id := uniq(t)

	// An input (persistent session, manual acknowledgement) holds two messages unacknowledged.
	in, d, _ := startInput(t, url, id, "q/#")
	out := startOutput(t, url, OutputConfig{Topic: "q/x"})
	testutil.WaitFor(t, "output ready", 10*time.Second, out.Ready)
	for _, e := range ids("held", 0, 2) {
		if err := out.Send(t.Context(), newEvent(e, nil)); err != nil {
			t.Fatal(err)
		}
	}
	expectIDs(t, d, ids("held", 0, 2), nil)
	if err := in.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Queued while the session is away.
	for _, e := range ids("queued", 0, 20) {
		if err := out.Send(t.Context(), newEvent(e, nil)); err != nil {
			t.Fatal(err)
		}
	}
	pub := rawClient(t, url)
	if tok := pub.Publish("state/home", 1, true, []byte("retained-1")); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	pub.Disconnect(50)
	if err := out.Close(t.Context()); err != nil {
		t.Fatal(err)
	}

	b, reg := restartBroker(t, b, cfg)
	if v := testutil.Metric(t, reg, "turnout_broker_persistence_inflight_messages", nil); v != 22 {
		t.Errorf("turnout_broker_persistence_inflight_messages after restart = %v, want 22", v)
	}
	out = startOutput(t, url, OutputConfig{Topic: "q/x"})
	testutil.WaitFor(t, "output ready", 10*time.Second, out.Ready)
	for _, e := range ids("new", 0, 3) { // published after the restart, before the session returns
		if err := out.Send(t.Context(), newEvent(e, nil)); err != nil {
			t.Fatal(err)
		}
	}
	_, d, _ = startInput(t, url, id, "q/#")
	want := append(append(ids("held", 0, 2), ids("queued", 0, 20)...), ids("new", 0, 3)...)
	expectIDs(t, d, want, func(_ int, x testutil.Dispatched) { x.Settle(nil) })

	_, retained := persistentSubscriber(t, url, uniq(t), "state/#")
	expectPayloads(t, retained, []string{"retained-1"})

	// Everything was acknowledged: a third broker on the same store has nothing to deliver.
	waitStored(t, reg, 0)
	if v := testutil.Metric(t, reg, "turnout_broker_persistence_commits_total", nil); v < 1 {
		t.Errorf("turnout_broker_persistence_commits_total = %v, want >= 1", v)
	}
	b, reg = restartBroker(t, b, cfg)
	if v := testutil.Metric(t, reg, "turnout_broker_persistence_inflight_messages", nil); v != 0 {
		t.Errorf("turnout_broker_persistence_inflight_messages after all were acknowledged = %v, want 0", v)
	}
	_, d, _ = startInput(t, url, id, "q/#")
	d.None(t, 500*time.Millisecond)
}

// waitStored waits until the store holds n messages of persistent sessions (acknowledgements
// reach the broker after the client's callback).
func waitStored(t *testing.T, reg *prometheus.Registry, n float64) {
	t.Helper()
	testutil.WaitFor(t, fmt.Sprintf("%v stored messages", n), 10*time.Second, func() bool {
		return testutil.Metric(t, reg, "turnout_broker_persistence_inflight_messages", nil) == n
	})
}

// TestBrokerPersistenceCleanSessionsNotStored: a session that ends with its connection leaves
// nothing in the store, and a clean start ends a stored session.
func TestBrokerPersistenceCleanSessionsNotStored(t *testing.T) {
	cfg := BrokerConfig{Listen: testutil.FreeAddr(t), Persistence: t.TempDir()}
	b, _ := startBroker(t, cfg)
	url := "tcp://" + b.Addr()
	id := uniq(t)
	sub, _ := persistentSubscriber(t, url, id, "c/#")
	sub.Disconnect(50)
	pub := rawClient(t, url)
	publishAll(t, pub, "c/x", []string{"1", "2"})
	dropSession(t, url, id) // clean start: the stored session and its messages go

	b, reg := restartBroker(t, b, cfg)
	if v := testutil.Metric(t, reg, "turnout_broker_persistence_inflight_messages", nil); v != 0 {
		t.Errorf("stored messages of a session ended by a clean start = %v, want 0", v)
	}
	_, got := persistentSubscriber(t, url, id, "")
	expectNothing(t, got, 300*time.Millisecond)
	pub = rawClient(t, url)
	publish(t, pub, "c/x", []byte("3")) // the subscription went with the session
	expectNothing(t, got, 300*time.Millisecond)
}

// TestBrokerPersistenceMQTT5Properties: a message queued for an MQTT 5 session keeps its user
// properties and content type across a restart (binary-mode CloudEvents attributes).
func TestBrokerPersistenceMQTT5Properties(t *testing.T) {
	cfg := BrokerConfig{Listen: testutil.FreeAddr(t), Persistence: t.TempDir()}
	b, _ := startBroker(t, cfg)
	id := uniq(t)
	sub, _ := dialV5(t, b.Addr(), id, 3600)
	if code := sub.subscribe("ce/#"); code != 1 {
		t.Fatalf("SUBACK reason 0x%x, want granted QoS 1", code)
	}
	sub.disconnect()
	pub, _ := dialV5(t, b.Addr(), uniq(t), 0)
	props := packets.Properties{
		ContentType: "application/json",
		User: []packets.UserProperty{
			{Key: "specversion", Val: "1.0"}, {Key: "id", Val: "e-1"},
			{Key: "source", Val: "/home/42"}, {Key: "type", Val: "alarm.fall"},
		},
	}
	if code := pub.publish("ce/alarms", []byte(`{"level":"high"}`), props); code != 0 {
		t.Fatalf("PUBACK reason 0x%x", code)
	}
	pub.disconnect()

	b, _ = restartBroker(t, b, cfg)
	sub, present := dialV5(t, b.Addr(), id, 3600)
	if !present {
		t.Fatal("CONNACK Session Present = 0 after the restart, want the stored session")
	}
	got := sub.next(10 * time.Second)
	if got.TopicName != "ce/alarms" || string(got.Payload) != `{"level":"high"}` {
		t.Fatalf("got %q %q", got.TopicName, got.Payload)
	}
	if got.Properties.ContentType != "application/json" {
		t.Errorf("content type %q after the restart", got.Properties.ContentType)
	}
	if fmt.Sprint(got.Properties.User) != fmt.Sprint(props.User) {
		t.Errorf("user properties after the restart: %v, want %v", got.Properties.User, props.User)
	}
}

// TestBrokerPendingPublicationReplayed simulates a crash in the window the library leaves
// between the PUBACK to the publisher and the storing of the subscribers' copies: the store
// stops writing right after the pending record of the publication committed. The next broker
// on the store must publish it again to the persistent session.
func TestBrokerPendingPublicationReplayed(t *testing.T) {
	cfg := BrokerConfig{Listen: testutil.FreeAddr(t), Persistence: t.TempDir()}
	b, _ := startBroker(t, cfg)
	url := "tcp://" + b.Addr()
	id := uniq(t)
	sub, _ := persistentSubscriber(t, url, id, "p/#")
	sub.Disconnect(50)
	crash := func() { b.store.crash() }
	b.afterPending.Store(&crash)
	pub := rawClient(t, url)
	publish(t, pub, "p/x", []byte("acknowledged-before-the-crash")) // PUBACK received
	pub.Disconnect(50)

	b, reg := restartBroker(t, b, cfg)
	if v := testutil.Metric(t, reg, "turnout_broker_persistence_replayed_total", nil); v != 1 {
		t.Errorf("turnout_broker_persistence_replayed_total = %v, want 1", v)
	}
	_, got := persistentSubscriber(t, url, id, "")
	expectPayloads(t, got, []string{"acknowledged-before-the-crash"})

	// Replayed once: the record went, a further restart publishes nothing again.
	waitStored(t, reg, 0)
	_, reg = restartBroker(t, b, cfg)
	if v := testutil.Metric(t, reg, "turnout_broker_persistence_replayed_total", nil); v != 0 {
		t.Errorf("replayed again on the next start: %v", v)
	}
}

// TestBrokerPersistenceLocked: a second broker on the same directory is refused with the path
// in the error, while the first one runs.
func TestBrokerPersistenceLocked(t *testing.T) {
	dir := t.TempDir()
	startBroker(t, BrokerConfig{Persistence: dir})
	deps, _ := testDeps(t)
	other, err := NewBroker(BrokerConfig{Listen: "127.0.0.1:0", Persistence: dir}, deps)
	if err != nil {
		t.Fatal(err)
	}
	err = other.Start(t.Context())
	if err == nil {
		other.Close(context.Background())
		t.Fatal("a second broker started on a store in use")
	}
	if path := filepath.Join(dir, "broker.db"); !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("error %q does not say that %s is locked", err, path)
	}
}

// TestBrokerPersistenceRelativeToDataDir: a relative persistence directory is under data_dir.
func TestBrokerPersistenceRelativeToDataDir(t *testing.T) {
	deps, _ := testDeps(t)
	deps.DataDir = t.TempDir()
	b, err := NewBroker(BrokerConfig{Listen: "127.0.0.1:0", Persistence: "broker"}, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	if want := filepath.Join(deps.DataDir, "broker", "broker.db"); b.dbPath != want {
		t.Fatalf("store at %s, want %s", b.dbPath, want)
	}
}

// TestBrokerPersistenceWriteFailure: while the store cannot write, a publication that needs
// it is refused (no PUBACK, the publisher is disconnected and publishes again later) rather than
// acknowledged unstored; once writing works again, publications are accepted and delivered.
func TestBrokerPersistenceWriteFailure(t *testing.T) {
	b, reg := startBroker(t, BrokerConfig{Persistence: t.TempDir()})
	url := "tcp://" + b.Addr()
	sub, got := persistentSubscriber(t, url, uniq(t), "w/#")
	b.store.failWrites.Store(true)
	pub := userClient(t, url, "", "", nil) // no automatic reconnect: the refusal stays visible
	tok := pub.Publish("w/x", 1, false, []byte("refused"))
	if tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
		t.Fatal("a publication the store could not write was acknowledged")
	}
	testutil.WaitFor(t, "publisher disconnected", 5*time.Second, func() bool { return !pub.IsConnectionOpen() })
	for _, m := range []string{"turnout_broker_publishes_refused_total", "turnout_broker_persistence_errors_total"} {
		if v := testutil.Metric(t, reg, m, nil); v < 1 {
			t.Errorf("%s = %v, want >= 1", m, v)
		}
	}
	expectNothing(t, got, 200*time.Millisecond)

	b.store.failWrites.Store(false)
	pub = rawClient(t, url)
	testutil.WaitFor(t, "publications accepted again", 15*time.Second, func() bool {
		tok := pub.Publish("w/x", 1, false, []byte("accepted"))
		return tok.WaitTimeout(2*time.Second) && tok.Error() == nil
	})
	m := <-got
	if string(m.Payload()) != "accepted" {
		t.Fatalf("got %q", m.Payload())
	}
	sub.Disconnect(50)
}

// TestBrokerPendingPublicationKeepsMQTT5Properties: a publication published again from its
// pending record keeps its MQTT 5 properties (binary-mode CloudEvents attributes).
func TestBrokerPendingPublicationKeepsMQTT5Properties(t *testing.T) {
	cfg := BrokerConfig{Listen: testutil.FreeAddr(t), Persistence: t.TempDir()}
	b, _ := startBroker(t, cfg)
	id := uniq(t)
	sub, _ := dialV5(t, b.Addr(), id, 3600)
	if code := sub.subscribe("ce/#"); code != 1 {
		t.Fatalf("SUBACK reason 0x%x", code)
	}
	sub.disconnect()
	crash := func() { b.store.crash() }
	b.afterPending.Store(&crash)
	pub, _ := dialV5(t, b.Addr(), uniq(t), 0)
	user := []packets.UserProperty{{Key: "id", Val: "e-2"}, {Key: "type", Val: "alarm.fall"}}
	if code := pub.publish("ce/alarms", []byte("{}"), packets.Properties{ContentType: "application/json", User: user}); code != 0 {
		t.Fatalf("PUBACK reason 0x%x", code)
	}
	pub.disconnect()

	b, reg := restartBroker(t, b, cfg)
	if v := testutil.Metric(t, reg, "turnout_broker_persistence_replayed_total", nil); v != 1 {
		t.Fatalf("turnout_broker_persistence_replayed_total = %v, want 1", v)
	}
	sub, _ = dialV5(t, b.Addr(), id, 3600)
	got := sub.next(10 * time.Second)
	if got.TopicName != "ce/alarms" || got.Properties.ContentType != "application/json" || fmt.Sprint(got.Properties.User) != fmt.Sprint(user) {
		t.Fatalf("replayed %q content type %q user properties %v, want ce/alarms application/json %v",
			got.TopicName, got.Properties.ContentType, got.Properties.User, user)
	}
}

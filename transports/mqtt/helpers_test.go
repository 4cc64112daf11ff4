package mqtt

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/internal/reconnect"
)

func uniq(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	n := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	return n + "-" + hex.EncodeToString(b[:])
}

func testDeps(t testing.TB) (engine.Deps, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return engine.Deps{Logger: log, Registerer: reg}, reg
}

func fastConn(url, clientID string) ConnectionConfig {
	c := ConnectionConfig{Brokers: []string{url}, ClientID: clientID, Settings: reconnect.Fast}
	c.ConnectTimeout = 2 * time.Second // also the ping timeout: a stalled input is noticed soon
	return c
}

// startInput builds and starts an input and waits until it is ready; the test's cleanup closes
// it.
func startInput(t testing.TB, url, clientID string, topics ...string) (*Input, *testutil.Dispatcher, *prometheus.Registry) {
	t.Helper()
	deps, reg := testDeps(t)
	in, err := newInput("in", InputConfig{ConnectionConfig: fastConn(url, clientID), Topics: topics}, deps)
	if err != nil {
		t.Fatal(err)
	}
	d := testutil.NewDispatcher()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := in.Start(ctx, d); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Close(context.Background()) })
	testutil.WaitFor(t, "input ready", 10*time.Second, in.Ready)
	return in, d, reg
}

func startOutput(t testing.TB, url string, cfg OutputConfig) *Output {
	t.Helper()
	deps, _ := testDeps(t)
	cfg.ConnectionConfig = fastConn(url, cfg.ClientID)
	o, err := newOutput("out", cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := o.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Close(context.Background()) })
	return o
}

// rawClient connects a plain paho client (auto-ack, clean session) for publishing or observing.
func rawClient(t testing.TB, url string) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(url).SetClientID(uniq(t)).SetCleanSession(true).
		SetProtocolVersion(4).SetConnectTimeout(2 * time.Second)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("raw client connect %s: %v", url, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func publish(t testing.TB, c paho.Client, topic string, payload []byte) {
	t.Helper()
	tok := c.Publish(topic, 1, false, payload)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// eventPayload returns a structured JSON event with the given id.
func eventPayload(t testing.TB, id string) []byte {
	t.Helper()
	e := event.New()
	e.SetID(id)
	e.SetSource("/test")
	e.SetType("test.event")
	if err := e.SetData(event.ApplicationJSON, map[string]string{"id": id}); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newEvent(id string, extra map[string]string) *event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource("/test")
	e.SetType("test.event")
	for k, v := range extra {
		e.SetExtension(k, v)
	}
	_ = e.SetData(event.ApplicationJSON, map[string]string{"id": id})
	return &e
}

// dropSession removes a persistent session from the broker (connect with clean session).
func dropSession(t testing.TB, url, clientID string) {
	o := paho.NewClientOptions().AddBroker(url).SetClientID(clientID).SetCleanSession(true).SetProtocolVersion(4)
	c := paho.NewClient(o)
	if tok := c.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
		c.Disconnect(100)
	}
}

func eventID(t testing.TB, x testutil.Dispatched) string {
	t.Helper()
	if x.M.DecodeErr != nil {
		t.Fatalf("unexpected decode error: %v", x.M.DecodeErr)
	}
	return x.M.Event.ID()
}

package nats

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/transports/nats/natstest"
	"github.com/turnout-router/turnout/transports/transporttest"
)

// TestConformance runs the transport conformance suite against nats-server with JetStream in
// binary and structured mode; restarts use a private server.
func TestConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Harness{
		Modes:      []transporttest.Mode{transporttest.Binary, transporttest.Structured},
		CanRestart: true,
		Server: func(t *testing.T, restartable bool) transporttest.Server {
			if restartable {
				srv := natstest.Start(t)
				return &confServer{url: srv.URL(), srv: srv}
			}
			return &confServer{url: natstest.Shared(t)}
		},
	})
}

// confServer is the conformance harness for one nats-server. Its own client encodes and
// decodes [CE-NATS] messages independently of codec.go, so the suite checks the wire format.
// A destination is a subject "conf.<stream>" captured by a stream of its own.
type confServer struct {
	url string
	srv *natstest.Server // nil for the shared server
}

var (
	_ transporttest.Server      = (*confServer)(nil)
	_ transporttest.WireFetcher = (*confServer)(nil)
)

func streamOf(dest string) string { return strings.TrimPrefix(dest, "conf.") }

func (s *confServer) Dest(t *testing.T) string {
	name := natstest.Name("CONF")
	natstest.Stream(t, s.url, name, "conf."+name)
	return "conf." + name
}

func (s *confServer) Input(t *testing.T, dest string) engine.Source {
	in, err := newInput("conf", InputConfig{ConnectionConfig: fastConn(s.url), Stream: streamOf(dest), Consumer: "conf",
		AckWait: 2 * time.Second, NakMinDelay: 50 * time.Millisecond, NakMaxDelay: 200 * time.Millisecond}, testDeps())
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func (s *confServer) Output(t *testing.T, dest string, mode transporttest.Mode) engine.Sink {
	o, err := newOutput("conf", OutputConfig{ConnectionConfig: fastConn(s.url), Subject: dest, Mode: string(mode)}, testDeps())
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// js connects the harness's own client for one operation; the test's cleanup closes it.
func (s *confServer) js(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.url, nats.Timeout(5*time.Second), nats.RetryOnFailedConnect(false))
	if err != nil {
		t.Fatalf("harness connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func (s *confServer) Publish(t *testing.T, dest string, mode transporttest.Mode, e *event.Event) {
	t.Helper()
	s.publish(t, confEncode(t, dest, mode, e))
}

func (s *confServer) PublishRaw(t *testing.T, dest, contentType string, body []byte) {
	t.Helper()
	m := nats.NewMsg(dest)
	if contentType != "" {
		m.Header.Set("Content-Type", contentType)
	}
	m.Data = body
	s.publish(t, m)
}

func (s *confServer) publish(t *testing.T, m *nats.Msg) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.js(t).PublishMsg(ctx, m); err != nil {
		t.Fatalf("harness publish %s: %v", m.Subject, err)
	}
}

func (s *confServer) Fetch(t *testing.T, dest string, within time.Duration) (*event.Event, transporttest.Mode) {
	t.Helper()
	f := s.FetchWire(t, dest, within)
	return f.Event, f.Mode
}

func (s *confServer) FetchWire(t *testing.T, dest string, within time.Duration) transporttest.Fetched {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	cons, err := s.js(t).CreateOrUpdateConsumer(ctx, streamOf(dest), jetstream.ConsumerConfig{Durable: "harness", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("harness consumer %s: %v", dest, err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(within))
	if err != nil {
		t.Fatalf("fetch %s: %v", dest, err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("fetch %s: ack: %v", dest, err)
		}
		e, mode := confDecode(t, m.Headers(), m.Data())
		return transporttest.Fetched{Event: e, Mode: mode, Body: m.Data()}
	}
	t.Fatalf("fetch %s: nothing within %v (%v)", dest, within, batch.Error())
	return transporttest.Fetched{}
}

func (s *confServer) Restart(t *testing.T) {
	if s.srv == nil {
		t.Fatal("restart of the shared nats-server")
	}
	s.srv.Restart()
}

// confEncode writes e as [CE-NATS] §3.1 (binary: ce- headers, percent-encoded here with
// url.PathEscape, which escapes more than the minimum) or §3.2 (structured) prescribes.
func confEncode(t *testing.T, subject string, mode transporttest.Mode, e *event.Event) *nats.Msg {
	t.Helper()
	m := nats.NewMsg(subject)
	if mode == transporttest.Structured {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		m.Header.Set("Content-Type", "application/cloudevents+json")
		m.Data = b
		return m
	}
	set := func(name, v string) {
		if v != "" {
			m.Header["ce-"+name] = []string{url.PathEscape(v)}
		}
	}
	set("specversion", e.SpecVersion())
	set("id", e.ID())
	set("source", e.Source())
	set("type", e.Type())
	set("subject", e.Subject())
	set("dataschema", e.DataSchema())
	set("datacontenttype", e.DataContentType())
	if !e.Time().IsZero() {
		set("time", e.Time().Format(time.RFC3339Nano))
	}
	for k, v := range e.Extensions() {
		s, err := types.Format(v)
		if err != nil {
			t.Fatal(err)
		}
		set(k, s)
	}
	m.Data = e.Data()
	return m
}

// confDecode reads a [CE-NATS] message: structured when its Content-Type says so, else binary.
func confDecode(t *testing.T, h nats.Header, body []byte) (*event.Event, transporttest.Mode) {
	t.Helper()
	e := event.New()
	if strings.HasPrefix(h.Get("Content-Type"), "application/cloudevents+json") {
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatalf("fetch: structured body: %v: %q", err, body)
		}
		return &e, transporttest.Structured
	}
	for k, vs := range h {
		name, ok := strings.CutPrefix(strings.ToLower(k), "ce-")
		if !ok {
			continue
		}
		v, err := url.PathUnescape(vs[0])
		if err != nil {
			t.Fatalf("fetch: header %s: %v", k, err)
		}
		switch name {
		case "specversion":
			e.SetSpecVersion(v)
		case "id":
			e.SetID(v)
		case "source":
			e.SetSource(v)
		case "type":
			e.SetType(v)
		case "subject":
			e.SetSubject(v)
		case "dataschema":
			e.SetDataSchema(v)
		case "datacontenttype":
			e.SetDataContentType(v)
		case "time":
			ts, err := types.ParseTime(v)
			if err != nil {
				t.Fatalf("fetch: time %q: %v", v, err)
			}
			e.SetTime(ts)
		default:
			e.SetExtension(name, v)
		}
	}
	if len(body) > 0 {
		e.DataEncoded = body
	}
	return &e, transporttest.Binary
}

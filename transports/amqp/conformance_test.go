package amqp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/Azure/go-amqp"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/transports/amqp/amqptest"
	"github.com/turnout-router/turnout/transports/transporttest"
)

// TestConformance runs the transport conformance suite against RabbitMQ's AMQP 1.0 plugin in
// binary and structured mode; restarts use a private node (StopApp/StartApp).
func TestConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Harness{
		Modes:           []transporttest.Mode{transporttest.Binary, transporttest.Structured},
		CanRestart:      true,
		TypedExtensions: true,
		Server: func(t *testing.T, restartable bool) transporttest.Server {
			if restartable {
				return &confServer{node: amqptest.Start(t), private: true}
			}
			return &confServer{node: amqptest.Shared(t)}
		},
	})
}

// confServer is the conformance harness for one RabbitMQ node. Its own client encodes and
// decodes [CE-AMQP] messages independently of codec.go, so the suite checks the wire format.
type confServer struct {
	node    *amqptest.Node
	private bool
}

var (
	_ transporttest.Server      = (*confServer)(nil)
	_ transporttest.WireFetcher = (*confServer)(nil)
)

func (s *confServer) Dest(t *testing.T) string {
	q := amqptest.QueueName(t, "conf")
	deleteQueue(t, s.node, q)
	return "/queue/" + q
}

func (s *confServer) Input(t *testing.T, dest string) engine.Source {
	deps, _ := testDeps()
	in, err := newInput("conf", InputConfig{ConnectionConfig: fastConn(s.node.URL()), Address: dest}, deps)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func (s *confServer) Output(t *testing.T, dest string, mode transporttest.Mode) engine.Sink {
	deps, _ := testDeps()
	o, err := newOutput("conf", OutputConfig{ConnectionConfig: fastConn(s.node.URL()), Address: dest, Mode: string(mode)}, deps)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// conn opens a connection and session of the harness's own for one operation.
func (s *confServer) conn(t *testing.T, ctx context.Context) (*amqp.Conn, *amqp.Session) {
	t.Helper()
	c, err := amqp.Dial(ctx, s.node.URL(), nil)
	if err != nil {
		t.Fatalf("harness dial: %v", err)
	}
	ss, err := c.NewSession(ctx, nil)
	if err != nil {
		_ = c.Close()
		t.Fatalf("harness session: %v", err)
	}
	return c, ss
}

func (s *confServer) Publish(t *testing.T, dest string, mode transporttest.Mode, e *event.Event) {
	t.Helper()
	s.send(t, dest, confEncode(t, mode, e))
}

func (s *confServer) PublishRaw(t *testing.T, dest, contentType string, body []byte) {
	t.Helper()
	m := &amqp.Message{Data: [][]byte{body}, Header: &amqp.MessageHeader{Durable: true}}
	if contentType != "" {
		m.Properties = &amqp.MessageProperties{ContentType: &contentType}
	}
	s.send(t, dest, m)
}

// send sends m to dest on a connection of its own and requires Accepted.
func (s *confServer) send(t *testing.T, dest string, m *amqp.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, ss := s.conn(t, ctx)
	defer c.Close()
	rawSend(t, ss, dest, m)
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
	c, ss := s.conn(t, ctx)
	defer c.Close()
	r, err := ss.NewReceiver(ctx, dest, &amqp.ReceiverOptions{Credit: -1, SourceDurability: amqp.DurabilityConfiguration})
	if err != nil {
		t.Fatalf("harness receiver %s: %v", dest, err)
	}
	if err := r.IssueCredit(1); err != nil {
		t.Fatal(err)
	}
	m, err := r.Receive(ctx, nil)
	if err != nil {
		t.Fatalf("fetch %s: %v", dest, err)
	}
	if err := r.AcceptMessage(ctx, m); err != nil {
		t.Fatalf("fetch %s: accept: %v", dest, err)
	}
	return confDecode(t, m)
}

func (s *confServer) Restart(t *testing.T) {
	if !s.private {
		t.Fatal("restart of the shared RabbitMQ")
	}
	s.node.StopApp()
	s.node.StartApp()
}

// confEncode writes e as [CE-AMQP] §3.1 (binary) or §3.2 (structured) prescribes.
func confEncode(t *testing.T, mode transporttest.Mode, e *event.Event) *amqp.Message {
	t.Helper()
	if mode == transporttest.Structured {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		ct := "application/cloudevents+json"
		return &amqp.Message{Properties: &amqp.MessageProperties{ContentType: &ct}, Data: [][]byte{b}, Header: &amqp.MessageHeader{Durable: true}}
	}
	p := map[string]any{
		"cloudEvents_specversion": e.SpecVersion(),
		"cloudEvents_id":          e.ID(),
		"cloudEvents_source":      e.Source(),
		"cloudEvents_type":        e.Type(),
	}
	if v := e.Subject(); v != "" {
		p["cloudEvents_subject"] = v
	}
	if v := e.DataSchema(); v != "" {
		p["cloudEvents_dataschema"] = v
	}
	if v := e.Time(); !v.IsZero() {
		p["cloudEvents_time"] = v
	}
	for k, v := range e.Extensions() {
		switch v := v.(type) {
		case string, int32, bool, []byte:
			p["cloudEvents_"+k] = v
		case types.Timestamp:
			p["cloudEvents_"+k] = v.Time // an AMQP timestamp
		default:
			s, err := types.Format(v)
			if err != nil {
				t.Fatal(err)
			}
			p["cloudEvents_"+k] = s
		}
	}
	m := &amqp.Message{ApplicationProperties: p, Data: [][]byte{e.Data()}, Header: &amqp.MessageHeader{Durable: true}}
	if ct := e.DataContentType(); ct != "" {
		m.Properties = &amqp.MessageProperties{ContentType: &ct}
	}
	return m
}

// confDecode reads a [CE-AMQP] message: structured when its content type says so, else binary.
func confDecode(t *testing.T, m *amqp.Message) transporttest.Fetched {
	t.Helper()
	ct := ""
	if m.Properties != nil && m.Properties.ContentType != nil {
		ct = *m.Properties.ContentType
	}
	body := bytes.Join(m.Data, nil)
	e := event.New()
	if strings.HasPrefix(ct, "application/cloudevents+json") {
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatalf("fetch: structured body: %v: %q", err, body)
		}
		return transporttest.Fetched{Event: &e, Mode: transporttest.Structured, Body: body}
	}
	for k, v := range m.ApplicationProperties {
		name, ok := strings.CutPrefix(k, "cloudEvents_")
		if !ok {
			if name, ok = strings.CutPrefix(k, "cloudEvents:"); !ok {
				continue
			}
		}
		str := fmt.Sprint(v)
		switch name {
		case "specversion":
			e.SetSpecVersion(str)
		case "id":
			e.SetID(str)
		case "source":
			e.SetSource(str)
		case "type":
			e.SetType(str)
		case "subject":
			e.SetSubject(str)
		case "dataschema":
			e.SetDataSchema(str)
		case "time":
			switch tv := v.(type) {
			case time.Time:
				e.SetTime(tv)
			default:
				ts, err := types.ParseTime(str)
				if err != nil {
					t.Fatalf("fetch: time %q: %v", str, err)
				}
				e.SetTime(ts)
			}
		default:
			e.SetExtension(name, v)
		}
	}
	if ct != "" {
		e.SetDataContentType(ct)
	}
	if len(body) > 0 {
		e.DataEncoded = body
	}
	return transporttest.Fetched{Event: &e, Mode: transporttest.Binary, Body: body}
}

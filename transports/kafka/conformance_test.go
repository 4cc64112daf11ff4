package kafka

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/transports/kafka/kafkatest"
	"github.com/turnout-router/turnout/transports/transporttest"
)

// TestConformance runs the transport conformance suite against an in-process Kafka cluster
// (kfake, on loopback TCP ports) in binary and structured mode. Every subtest gets a cluster of
// its own.
//
// The cluster restarts with its data (kafkatest.Restart). A Kafka consumer keeps its group
// membership and its partitions across a broker restart, so the records an input holds
// unsettled are still with the engine afterwards and are not read again until their partition
// changes hands (KeepsUnsettledAcrossRestart); TestInputBrokerRestart checks the commits around
// a restart in more detail.
func TestConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Harness{
		Modes:                       []transporttest.Mode{transporttest.Binary, transporttest.Structured},
		CanRestart:                  true,
		KeepsUnsettledAcrossRestart: true,
		Server: func(t *testing.T, _ bool) transporttest.Server {
			return &confServer{t: t, c: kafkatest.Start(t), fetchers: map[string]*kgo.Client{}}
		},
	})
}

// confServer is the conformance harness for one cluster. Its own client encodes and decodes
// [CE-Kafka] records independently of codec.go, so the suite checks the wire format. A
// destination is a topic of 3 partitions; the inputs made for it share the group "g-<topic>".
type confServer struct {
	t *testing.T // the test that owns the cluster and the harness's clients
	c *kafkatest.Cluster

	mu       sync.Mutex
	fetchers map[string]*kgo.Client // per destination, reading from its start
}

var (
	_ transporttest.Server      = (*confServer)(nil)
	_ transporttest.WireFetcher = (*confServer)(nil)
)

func (s *confServer) Dest(t *testing.T) string { return s.c.Topic(t, "conf", 3) }

func (s *confServer) Input(t *testing.T, dest string) engine.Source {
	in, err := newInput("conf", InputConfig{ConnectionConfig: fastConn(s.c), Group: "g-" + dest, Topics: []string{dest},
		CommitInterval: 100 * time.Millisecond, RetryMinDelay: 50 * time.Millisecond, RetryMaxDelay: 200 * time.Millisecond}, testDeps())
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func (s *confServer) Output(t *testing.T, dest string, mode transporttest.Mode) engine.Sink {
	o, err := newOutput("conf", OutputConfig{ConnectionConfig: fastConn(s.c), Topic: dest, Mode: string(mode)}, testDeps())
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func (s *confServer) Publish(t *testing.T, dest string, mode transporttest.Mode, e *event.Event) {
	t.Helper()
	s.c.Produce(t, dest, confEncode(t, mode, e))
}

func (s *confServer) PublishRaw(t *testing.T, dest, contentType string, body []byte) {
	t.Helper()
	r := &kgo.Record{Value: body}
	if contentType != "" {
		r.Headers = []kgo.RecordHeader{{Key: "content-type", Value: []byte(contentType)}}
	}
	s.c.Produce(t, dest, r)
}

func (s *confServer) Fetch(t *testing.T, dest string, within time.Duration) (*event.Event, transporttest.Mode) {
	t.Helper()
	f := s.FetchWire(t, dest, within)
	return f.Event, f.Mode
}

func (s *confServer) FetchWire(t *testing.T, dest string, within time.Duration) transporttest.Fetched {
	t.Helper()
	r := s.fetchRecord(t, dest, within)
	e, mode := confDecode(t, r)
	return transporttest.Fetched{Event: e, Mode: mode, Body: r.Value}
}

// fetchRecord returns the next record of dest, in the order of each partition.
func (s *confServer) fetchRecord(t *testing.T, dest string, within time.Duration) *kgo.Record {
	t.Helper()
	s.mu.Lock()
	cl := s.fetchers[dest]
	if cl == nil {
		cl = s.c.Client(s.t, kgo.ConsumeTopics(dest), kgo.ConsumeStartOffset(kgo.NewOffset().AtStart()))
		s.fetchers[dest] = cl
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		fs := cl.PollRecords(ctx, 1)
		if recs := fs.Records(); len(recs) > 0 {
			return recs[0]
		}
		if ctx.Err() != nil {
			t.Fatalf("fetch %s: nothing within %v", dest, within)
		}
	}
}

func (s *confServer) Restart(t *testing.T) { s.c.Restart(t) }

// confEncode writes e as [CE-Kafka] §3.2 (binary: ce_ headers with the attributes' strings,
// content-type for datacontenttype) or §3.3 (structured) prescribes, with the partitionkey
// extension as the key [CE-Kafka-3.1].
func confEncode(t *testing.T, mode transporttest.Mode, e *event.Event) *kgo.Record {
	t.Helper()
	r := &kgo.Record{}
	if pk, ok := e.Extensions()["partitionkey"].(string); ok {
		r.Key = []byte(pk)
	}
	if mode == transporttest.Structured {
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: "content-type", Value: []byte("application/cloudevents+json")})
		r.Value = b
		return r
	}
	set := func(name, v string) {
		if v != "" {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: name, Value: []byte(v)})
		}
	}
	set("ce_specversion", e.SpecVersion())
	set("ce_id", e.ID())
	set("ce_source", e.Source())
	set("ce_type", e.Type())
	set("ce_subject", e.Subject())
	set("ce_dataschema", e.DataSchema())
	set("content-type", e.DataContentType())
	if !e.Time().IsZero() {
		set("ce_time", e.Time().Format(time.RFC3339Nano))
	}
	for k, v := range e.Extensions() {
		s, err := types.Format(v)
		if err != nil {
			t.Fatal(err)
		}
		set("ce_"+k, s)
	}
	r.Value = e.Data()
	return r
}

// confDecode reads a [CE-Kafka] record: structured when its content-type says so, else binary.
func confDecode(t *testing.T, r *kgo.Record) (*event.Event, transporttest.Mode) {
	t.Helper()
	e := event.New()
	contentType := ""
	for _, h := range r.Headers {
		if h.Key == "content-type" {
			contentType = string(h.Value)
		}
	}
	if strings.HasPrefix(contentType, "application/cloudevents+json") {
		if err := json.Unmarshal(r.Value, &e); err != nil {
			t.Fatalf("fetch: structured value: %v: %q", err, r.Value)
		}
		return &e, transporttest.Structured
	}
	for _, h := range r.Headers {
		name, ok := strings.CutPrefix(h.Key, "ce_")
		if !ok {
			continue
		}
		v := string(h.Value)
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
	if contentType != "" {
		e.SetDataContentType(contentType)
	}
	if len(r.Value) > 0 {
		e.DataEncoded = r.Value
	}
	return &e, transporttest.Binary
}

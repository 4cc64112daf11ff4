package kafka

import (
	"bytes"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/turnout-router/turnout/internal/ce"
	"github.com/turnout-router/turnout/transports/transporttest"
)

func hdrs(kv ...string) []kgo.RecordHeader {
	var out []kgo.RecordHeader
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, kgo.RecordHeader{Key: kv[i], Value: []byte(kv[i+1])})
	}
	return out
}

var binaryMinimal = []string{"ce_specversion", "1.0", "ce_id", "1", "ce_source", "/s", "ce_type", "t"}

func TestDecode(t *testing.T) {
	cases := []struct {
		name    string
		r       *kgo.Record
		wantErr string // "" for a valid event
		check   func(t *testing.T, r *kgo.Record)
	}{
		{"binary", &kgo.Record{Headers: hdrs(append(binaryMinimal, "content-type", "text/plain", "ce_tenant", "a b ü")...), Value: []byte("hi")}, "",
			func(t *testing.T, r *kgo.Record) {
				e := decode(r).Event
				if e.DataContentType() != "text/plain" || string(e.Data()) != "hi" || e.Extensions()["tenant"] != "a b ü" {
					t.Errorf("decoded %v", e)
				}
			}},
		{"binary header names in upper case", &kgo.Record{Headers: hdrs("CE_SPECVERSION", "1.0", "Ce_Id", "1", "ce_source", "/s", "ce_type", "t", "Content-Type", "text/plain")}, "",
			func(t *testing.T, r *kgo.Record) {
				if e := decode(r).Event; e.ID() != "1" || e.DataContentType() != "text/plain" {
					t.Errorf("decoded %v", e)
				}
			}},
		{"key is not an attribute", &kgo.Record{Key: []byte("k-1"), Headers: hdrs(binaryMinimal...)}, "",
			func(t *testing.T, r *kgo.Record) {
				if pk, ok := decode(r).Event.Extensions()["partitionkey"]; ok {
					t.Errorf("the record key became partitionkey %v", pk)
				}
			}},
		{"structured ignores ce_ headers", &kgo.Record{Headers: hdrs("content-type", "application/cloudevents+json", "ce_id", "other", "ce_a-b", "x"),
			Value: []byte(`{"specversion":"1.0","id":"x","source":"/s","type":"t"}`)}, "",
			func(t *testing.T, r *kgo.Record) {
				if e := decode(r).Event; e.ID() != "x" {
					t.Errorf("decoded %v", e)
				}
			}},
		{"structured", &kgo.Record{Headers: hdrs("Content-Type", "Application/CloudEvents+JSON; charset=UTF-8"),
			Value: []byte(`{"specversion":"1.0","id":"x","source":"/s","type":"t","data":{"a":1}}`)}, "",
			func(t *testing.T, r *kgo.Record) {
				if e := decode(r).Event; e.ID() != "x" || string(e.Data()) != `{"a":1}` {
					t.Errorf("decoded %v", e)
				}
			}},
		{"no specversion", &kgo.Record{Headers: hdrs("ce_id", "1"), Value: []byte("v")}, "ce_specversion", nil},
		{"plain value", &kgo.Record{Value: []byte("not an event")}, "ce_specversion", nil},
		{"unknown specversion", &kgo.Record{Headers: hdrs("ce_specversion", "9.9", "ce_id", "1")}, "unsupported", nil},
		{"missing type", &kgo.Record{Headers: hdrs("ce_specversion", "1.0", "ce_id", "1", "ce_source", "/s")}, "type", nil},
		{"duplicate header", &kgo.Record{Headers: hdrs(append(binaryMinimal, "ce_id", "2")...)}, "more than once", nil},
		{"duplicate content-type", &kgo.Record{Headers: hdrs(append(binaryMinimal, "content-type", "a/b", "content-type", "c/d")...)}, "more than once", nil},
		{"bad attribute name", &kgo.Record{Headers: hdrs(append(binaryMinimal, "ce_a-b", "x")...)}, "ce_a-b", nil},
		{"header not utf-8", &kgo.Record{Headers: hdrs(append(binaryMinimal, "ce_x", "\xff")...)}, "UTF-8", nil},
		{"bad time", &kgo.Record{Headers: hdrs(append(binaryMinimal, "ce_time", "yesterday")...)}, "ce_time", nil},
		{"structured avro", &kgo.Record{Headers: hdrs("content-type", "application/cloudevents+avro"), Value: []byte("x")}, "only application/cloudevents+json", nil},
		{"structured truncated", &kgo.Record{Headers: hdrs("content-type", "application/cloudevents+json"), Value: []byte(`{"id":`)}, "structured event", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.r.Topic, tc.r.Partition, tc.r.Offset = "events", 2, 40
			m := decode(tc.r)
			if tc.wantErr == "" {
				if m.DecodeErr != nil {
					t.Fatalf("decode error %v", m.DecodeErr)
				}
				tc.check(t, tc.r)
				return
			}
			if m.Event != nil || m.DecodeErr == nil || !strings.Contains(m.DecodeErr.Error(), tc.wantErr) {
				t.Fatalf("event %v, error %v; want an error containing %q", m.Event, m.DecodeErr, tc.wantErr)
			}
			if !strings.Contains(m.DecodeErr.Error(), "events/2@40") || m.Origin != "events/2@40" {
				t.Errorf("error %q, origin %q: want the record's place events/2@40", m.DecodeErr, m.Origin)
			}
			if !bytes.Contains(m.Raw, tc.r.Value) || (len(tc.r.Headers) > 0 && !bytes.Contains(m.Raw, []byte(tc.r.Headers[0].Key))) {
				t.Errorf("Raw %q lacks the record's headers or value", m.Raw)
			}
		})
	}
}

// TestEncodeDecode: what the output writes, the input reads back unchanged, in both modes.
func TestEncodeDecode(t *testing.T) {
	for _, structured := range []bool{false, true} {
		e := transporttest.Event("rt")
		enc := encoder{topic: "t", structured: structured, keyed: true}
		r, err := enc.encode(e)
		if err != nil {
			t.Fatal(err)
		}
		if string(r.Key) != "p 1;x=é" {
			t.Errorf("structured=%v: key %q", structured, r.Key)
		}
		m := decode(r)
		if m.DecodeErr != nil {
			t.Fatalf("structured=%v: %v", structured, m.DecodeErr)
		}
		if d := ce.Diff(e, m.Event); d != nil {
			t.Errorf("structured=%v: %s", structured, strings.Join(d, "; "))
		}
	}
}

// FuzzDecode feeds arbitrary records to the decoder: it never panics, every record is either an
// event or a decode error with the record in Raw, and every event it accepts survives being
// written again in either mode and read back.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(nil), "ce_specversion\x001.0\x00ce_id\x001\x00ce_source\x00/s\x00ce_type\x00t\x00content-type\x00text/plain", []byte("hi"))
	f.Add([]byte("key"), "content-type\x00application/cloudevents+json", []byte(`{"specversion":"1.0","id":"x","source":"/s","type":"t","data_base64":"AAE="}`))
	f.Add([]byte{0xff}, "ce_specversion\x000.3\x00ce_id\x00\x00ce_time\x002026-01-01T00:00:00Z", []byte{})
	f.Fuzz(func(t *testing.T, key []byte, headers string, value []byte) {
		parts := strings.Split(headers, "\x00")
		r := &kgo.Record{Topic: "f", Key: key, Headers: hdrs(parts...), Value: value}
		m := decode(r)
		if (m.Event == nil) == (m.DecodeErr == nil) {
			t.Fatalf("event %v and error %v", m.Event, m.DecodeErr)
		}
		if m.Event == nil {
			if !bytes.Contains(m.Raw, value) {
				t.Fatalf("Raw %q lacks the value %q", m.Raw, value)
			}
			return
		}
		for _, structured := range []bool{false, true} {
			again, err := encoder{topic: "f", structured: structured, keyed: true}.encode(m.Event)
			if err != nil {
				t.Fatalf("structured=%v: encode of a decoded event: %v", structured, err)
			}
			back := decode(again)
			if back.DecodeErr != nil {
				t.Fatalf("structured=%v: %v", structured, back.DecodeErr)
			}
			want := m.Event
			if structured {
				want = ce.ThroughJSON(want)
			}
			if d := ce.Diff(want, back.Event); d != nil {
				t.Fatalf("structured=%v: %s", structured, strings.Join(d, "; "))
			}
		}
	})
}

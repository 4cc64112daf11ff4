package mqtt

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
)

func testEvent(t testing.TB) *event.Event {
	t.Helper()
	e := event.New()
	e.SetID("id-1")
	e.SetSource("/home/42")
	e.SetType("fall")
	e.SetSubject("room+kitchen#1")
	e.SetTime(time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC))
	e.SetExtension("priority", 3)
	e.SetExtension("zone", "")
	if err := e.SetData(event.ApplicationJSON, map[string]any{"hr": 42}); err != nil {
		t.Fatal(err)
	}
	return &e
}

func TestTopicTemplate(t *testing.T) {
	e := testEvent(t)
	cases := []struct {
		name, tmpl, want string
	}{
		{"fixed topic", "alarms/all", "alarms/all"},
		{"type and source, slash sanitised", "alarms/{type}/{source}", "alarms/fall/_home_42"},
		{"wildcards in value sanitised", "s/{subject}", "s/room_kitchen_1"},
		{"missing attribute", "a/{dataschema}/x", "a/_/x"},
		{"empty extension", "a/{zone}", "a/_"},
		{"integer extension", "p/{priority}", "p/3"},
		{"time", "t/{time}", "t/2026-11-24T10:00:00Z"},
		{"placeholders side by side in one level", "{type}-{id}", "fall-id-1"},
		{"specversion", "{specversion}/x", "1.0/x"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tt, err := parseTopicTemplate(c.tmpl)
			if err != nil {
				t.Fatalf("parse %q: %v", c.tmpl, err)
			}
			got, err := tt.topic(e)
			if err != nil {
				t.Fatalf("topic: %v", err)
			}
			if got != c.want {
				t.Errorf("topic(%q) = %q, want %q", c.tmpl, got, c.want)
			}
			if err := validTopicName(got); err != nil {
				t.Errorf("result %q is not a valid topic name: %v", got, err)
			}
		})
	}
}

func TestTopicTemplateSanitisesHostileValues(t *testing.T) {
	tt, err := parseTopicTemplate("x/{subject}")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"#", "+", "a/b", "\x00", "\xff\xfe", "a+/#"} {
		t.Run(v, func(t *testing.T) {
			e := testEvent(t)
			e.SetSubject(v)
			got, err := tt.topic(e)
			if err != nil {
				t.Fatal(err)
			}
			if err := validTopicName(got); err != nil {
				t.Errorf("subject %q gave invalid topic %q: %v", v, got, err)
			}
			if strings.Count(got, "/") != 1 {
				t.Errorf("subject %q gave %q: a placeholder must fill exactly one level", v, got)
			}
		})
	}
}

func TestTopicTemplateTooLong(t *testing.T) {
	tt, err := parseTopicTemplate("x/{subject}")
	if err != nil {
		t.Fatal(err)
	}
	e := testEvent(t)
	e.SetSubject(strings.Repeat("a", 70000))
	if _, err := tt.topic(e); err == nil {
		t.Fatal("a topic above 65535 bytes was accepted")
	}
}

func TestTopicTemplateInvalid(t *testing.T) {
	for _, c := range []struct{ name, tmpl string }{
		{"unclosed", "a/{type"},
		{"unmatched close", "a/type}"},
		{"empty placeholder", "a/{}"},
		{"upper-case name", "a/{Type}"},
		{"wildcard +", "a/+/{type}"},
		{"wildcard #", "a/{type}/#"},
		{"nested", "a/{{type}}"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := parseTopicTemplate(c.tmpl); err == nil {
				t.Errorf("template %q was accepted", c.tmpl)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	valid, err := json.Marshal(testEvent(t))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		payload string
		wantErr bool
	}{
		{"valid structured event", string(valid), false},
		{"not JSON", "hello", true},
		{"JSON but no event", `{"a":1}`, true},
		{"missing id", `{"specversion":"1.0","source":"/s","type":"t"}`, true},
		{"unknown specversion", `{"specversion":"9","id":"1","source":"/s","type":"t"}`, true},
		{"empty", "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := decode("devices/1", []byte(c.payload))
			if m.Origin != "devices/1" {
				t.Errorf("Origin = %q, want the topic", m.Origin)
			}
			if c.wantErr {
				if m.DecodeErr == nil || m.Event != nil {
					t.Fatalf("want DecodeErr and no Event, got err=%v event=%v", m.DecodeErr, m.Event)
				}
				if !bytes.Equal(m.Raw, []byte(c.payload)) {
					t.Errorf("Raw = %q, want the payload", m.Raw)
				}
				return
			}
			if m.DecodeErr != nil {
				t.Fatalf("DecodeErr = %v", m.DecodeErr)
			}
			if m.Event.ID() != "id-1" || m.Event.Type() != "fall" {
				t.Errorf("decoded %v", m.Event)
			}
		})
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	cases := []struct {
		name       string
		ct         string
		data       []byte
		wantBase64 bool
	}{
		{"json data stays json", event.ApplicationJSON, []byte(`{"hr":42}`), false},
		{"text stays a string", "text/plain", []byte("help"), false},
		{"binary becomes data_base64", "application/octet-stream", []byte{0xff, 0x00, 0xfe}, true},
		{"invalid json under a json type becomes data_base64", event.ApplicationJSON, []byte("{not json"), true},
		{"no content type and binary", "", []byte{0x80, 0x81}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := event.New()
			e.SetID("1")
			e.SetSource("/s")
			e.SetType("t")
			if c.ct != "" {
				e.SetDataContentType(c.ct)
			}
			e.DataEncoded = c.data
			b, err := encode(&e)
			if err != nil {
				t.Fatal(err)
			}
			var raw map[string]any
			if err := json.Unmarshal(b, &raw); err != nil {
				t.Fatalf("output is not JSON: %v: %s", err, b)
			}
			if _, ok := raw["data_base64"]; ok != c.wantBase64 {
				t.Errorf("data_base64 present = %v, want %v: %s", ok, c.wantBase64, b)
			}
			if e.DataBase64 {
				t.Error("encode modified the event")
			}
			m := decode("t", b)
			if m.DecodeErr != nil {
				t.Fatalf("decode of encoded event: %v", m.DecodeErr)
			}
			if !bytes.Equal(m.Event.Data(), c.data) {
				t.Errorf("data after round trip = %q, want %q", m.Event.Data(), c.data)
			}
		})
	}
}

// FuzzDecode feeds arbitrary payloads to the input's decoder: it must never panic, must always
// either decode a valid event or report why (keeping the bytes), and valid events must survive
// an encode/decode round trip.
func FuzzDecode(f *testing.F) {
	valid, _ := json.Marshal(testEvent(f))
	f.Add(valid)
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"AAE="}`))
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":"x"}`))
	f.Add([]byte("not json"))
	f.Add([]byte(`{"specversion":"1.0"}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		m := decode("fuzz", payload)
		if (m.Event == nil) == (m.DecodeErr == nil) {
			t.Fatalf("exactly one of Event and DecodeErr must be set: %v %v", m.Event, m.DecodeErr)
		}
		if m.DecodeErr != nil {
			if !bytes.Equal(m.Raw, payload) {
				t.Fatal("Raw does not hold the payload")
			}
			return
		}
		b, err := encode(m.Event)
		if err != nil {
			return // e.g. an extension value the JSON writer refuses: Send reports it as permanent
		}
		m2 := decode("fuzz", b)
		if m2.DecodeErr != nil {
			t.Fatalf("re-decoding our own encoding failed: %v\nin:  %q\nout: %q", m2.DecodeErr, payload, b)
		}
		if m2.Event.ID() != m.Event.ID() || !bytes.Equal(m2.Event.Data(), m.Event.Data()) {
			t.Fatalf("round trip changed the event:\nin:  %q\nout: %q", payload, b)
		}
	})
}

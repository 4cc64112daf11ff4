package nats

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"

	"github.com/turnout-router/turnout/internal/ce"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	binary := []byte{0, 1, 2, 0xff, 0xfe, '\r', '\n'}
	big := bytes.Repeat([]byte("x"), 64<<10)
	cases := []struct {
		name, mode, ct string
		data           []byte
	}{
		{"binary mode json", modeBinary, "application/json", []byte(`{"a":1,"b":"ü"}`)},
		{"binary mode bytes", modeBinary, "application/octet-stream", binary},
		{"binary mode 64KiB", modeBinary, "text/plain", big},
		{"binary mode no data", modeBinary, "", nil},
		{"structured mode json", modeStructured, "application/json", []byte(`{"a":1}`)},
		{"structured mode bytes", modeStructured, "application/octet-stream", binary},
		{"structured mode 64KiB", modeStructured, "text/plain", big},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := fullEvent("id-1", tc.data, tc.ct, tc.mode == modeBinary)
			var m *nats.Msg
			if tc.mode == modeBinary {
				m = encodeBinary("s", want)
			} else {
				var err error
				if m, err = encodeStructured("s", want); err != nil {
					t.Fatal(err)
				}
			}
			got := decode("s", m.Header, m.Data)
			if got.DecodeErr != nil {
				t.Fatalf("decode: %v", got.DecodeErr)
			}
			if d := ce.Diff(want, got.Event); d != nil {
				t.Fatalf("differences:\n%s", strings.Join(d, "\n"))
			}
		})
	}
}

func TestBinaryWireForm(t *testing.T) {
	e := fullEvent("id 1%", []byte("hi"), "text/plain; charset=utf-8", true)
	m := encodeBinary("s", e)
	for k, want := range map[string]string{
		"ce-specversion":     "1.0",
		"ce-id":              "id%201%25",
		"ce-subject":         "sub%20ject/%25%C3%A9%20%22q%22",
		"ce-datacontenttype": "text/plain;%20charset=utf-8",
		"ce-time":            "2026-11-30T04:05:06.789Z",
		"ce-region":          "eu%20west%201%20%C3%BC",
	} {
		if got := m.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if m.Header.Get("Content-Type") != "" {
		t.Errorf("binary mode wrote Content-Type %q", m.Header.Get("Content-Type"))
	}
	if string(m.Data) != "hi" {
		t.Errorf("payload %q, want the data", m.Data)
	}
}

func TestDecode(t *testing.T) {
	structured := `{"specversion":"1.0","id":"1","source":"s","type":"t","data":{"x":1}}`
	cases := []struct {
		name    string
		header  nats.Header
		data    string
		wantErr string // "" means a valid event
	}{
		{name: "binary with Content-Type as datacontenttype", header: nats.Header{
			"ce-specversion": {"1.0"}, "ce-id": {"1"}, "ce-source": {"s"}, "ce-type": {"t"}, "Content-Type": {"text/plain"},
		}, data: "hello"},
		{name: "binary header names in any case", header: nats.Header{
			"Ce-Specversion": {"1.0"}, "CE-ID": {"1"}, "ce-source": {"s"}, "ce-type": {"t"},
		}},
		{name: "structured", header: nats.Header{"Content-Type": {"application/cloudevents+json; charset=utf-8"}}, data: structured},
		{name: "no headers", data: structured, wantErr: "neither a CloudEvents content type nor a ce-specversion"},
		{name: "structured bad json", header: nats.Header{"Content-Type": {"application/cloudevents+json"}}, data: "{", wantErr: "structured event"},
		{name: "structured batch", header: nats.Header{"Content-Type": {"application/cloudevents-batch+json"}}, data: "[]", wantErr: "only application/cloudevents+json"},
		{name: "bad percent-encoding", header: nats.Header{
			"ce-specversion": {"1.0"}, "ce-id": {"%zz"}, "ce-source": {"s"}, "ce-type": {"t"},
		}, wantErr: "bad percent-encoding"},
		{name: "missing id", header: nats.Header{"ce-specversion": {"1.0"}, "ce-source": {"s"}, "ce-type": {"t"}}, wantErr: "id"},
		{name: "unknown specversion", header: nats.Header{"ce-specversion": {"9"}, "ce-id": {"1"}}, wantErr: "unsupported"},
		{name: "bad attribute name", header: nats.Header{"ce-specversion": {"1.0"}, "ce-Bad_Name": {"x"}}, wantErr: "a-z and 0-9"},
		{name: "attribute twice", header: nats.Header{"ce-specversion": {"1.0"}, "ce-id": {"1", "2"}}, wantErr: "more than once"},
		{name: "bad time", header: nats.Header{
			"ce-specversion": {"1.0"}, "ce-id": {"1"}, "ce-source": {"s"}, "ce-type": {"t"}, "ce-time": {"yesterday"},
		}, wantErr: "ce-time"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := decode("subj", tc.header, []byte(tc.data))
			if m.Origin != "subj" {
				t.Errorf("origin %q", m.Origin)
			}
			if tc.wantErr == "" {
				if m.DecodeErr != nil || m.Event == nil {
					t.Fatalf("decode: %v", m.DecodeErr)
				}
				return
			}
			if m.DecodeErr == nil || !strings.Contains(m.DecodeErr.Error(), tc.wantErr) {
				t.Fatalf("DecodeErr = %v, want one containing %q", m.DecodeErr, tc.wantErr)
			}
			if m.Event != nil || !bytes.Contains(m.Raw, []byte(tc.data)) {
				t.Fatalf("malformed message: Event %v, Raw %q: want no event and the message kept", m.Event, m.Raw)
			}
		})
	}
}

// FuzzDecode feeds messages of arbitrary headers (name, value, name, value, ... separated by
// NUL) and payload, binary and structured mode alike. Each is an event or a decode error whose
// Raw holds the payload and that names the subject; an event is valid, in binary mode its data
// is the payload, and it comes back the same (extensions compared as text: binary mode carries
// them so; JSON data without white space after it in structured mode) when written again in
// either mode.
func FuzzDecode(f *testing.F) {
	for _, binary := range []bool{true, false} {
		for _, data := range [][]byte{[]byte(`{"a":1,"b":"ü"}`), {0, 1, 0xff}, nil} {
			e := fullEvent("id-1", data, "application/json", binary)
			var m *nats.Msg
			if binary {
				m = encodeBinary("s", e)
			} else {
				var err error
				if m, err = encodeStructured("s", e); err != nil {
					f.Fatal(err)
				}
			}
			var kv []string
			for k, vs := range m.Header {
				kv = append(kv, k, vs[0])
			}
			f.Add(strings.Join(kv, "\x00"), m.Data)
		}
	}
	f.Add("ce-specversion\x001.0\x00ce-id\x00id\x00ce-source\x00s\x00ce-type\x00t\x00Content-Type\x00text/plain", []byte("data"))
	f.Add("Content-Type\x00application/cloudevents+json", []byte(`{"specversion":"1.0","id":"1","source":"s","type":"t"}`))
	f.Add("ce-specversion\x000.3\x00ce-id\x00%41\x00ce-source\x00s\x00ce-type\x00t\x00ce-schemaurl\x00%zz", []byte{0xff})
	f.Add("CE-SPECVERSION\x001.0\x00ce-Id\x001\x00ce-id\x002\x00ce-source\x00s\x00ce-type\x00t", []byte(nil))
	f.Add("Content-Type\x00application/cloudevents-batch+json", []byte(`[]`))
	f.Fuzz(func(t *testing.T, headers string, data []byte) {
		h := nats.Header{}
		kv := strings.Split(headers, "\x00")
		for i := 0; i+1 < len(kv); i += 2 {
			h[kv[i]] = append(h[kv[i]], kv[i+1])
		}
		m := decode("subj", h, data)
		if (m.Event == nil) == (m.DecodeErr == nil) {
			t.Fatalf("want exactly one of Event and DecodeErr: %v, %v", m.Event, m.DecodeErr)
		}
		if m.Event == nil {
			if !strings.HasPrefix(m.DecodeErr.Error(), "nats message on subj: ") {
				t.Fatalf("error %q does not name the subject", m.DecodeErr)
			}
			if !bytes.Contains(m.Raw, data) {
				t.Fatalf("Raw %q does not hold the payload %q", m.Raw, data)
			}
			return
		}
		if err := m.Event.Validate(); err != nil {
			t.Fatalf("decoded an invalid event: %v", err)
		}
		if h.Get("ce-specversion") != "" && !strings.HasPrefix(strings.ToLower(h.Get("Content-Type")), "application/cloudevents") && !bytes.Equal(m.Event.Data(), data) {
			t.Fatalf("binary-mode data %q, want the payload %q", m.Event.Data(), data)
		}
		for _, c := range []struct {
			enc  func() (*nats.Msg, error)
			want *event.Event
		}{
			{func() (*nats.Msg, error) { return encodeBinary("s", m.Event), nil }, m.Event},
			{func() (*nats.Msg, error) { return encodeStructured("s", m.Event) }, ce.ThroughJSON(m.Event)},
		} {
			out, err := c.enc()
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			back := decode("s", out.Header, out.Data)
			if back.DecodeErr != nil {
				t.Fatalf("re-decode: %v\nheaders %q\npayload %q", back.DecodeErr, out.Header, out.Data)
			}
			if d := ce.Diff(extensionsAsText(c.want), extensionsAsText(back.Event)); d != nil {
				t.Fatalf("re-encoded event differs:\n%s\nheaders %q\npayload %q", strings.Join(d, "\n"), out.Header, out.Data)
			}
		}
	})
}

// extensionsAsText returns a copy of e with every extension value as its canonical string.
func extensionsAsText(e *event.Event) *event.Event {
	c := e.Clone()
	for k, v := range c.Extensions() {
		s, _ := types.Format(v)
		c.SetExtension(k, s)
	}
	return &c
}

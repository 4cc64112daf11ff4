package ce

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
)

func base() event.Event {
	e := event.New()
	e.SetID("1")
	e.SetSource("/s")
	e.SetType("t")
	return e
}

func TestStructuredRoundTrip(t *testing.T) {
	cases := []struct {
		name       string
		ct         string
		data       []byte
		wantBase64 bool
	}{
		{"JSON data", event.ApplicationJSON, []byte(`{"a":1}`), false},
		{"JSON data without content type", "", []byte(`[1,2]`), false},
		{"text data", "text/plain; charset=utf-8", []byte("grüße"), false},
		{"binary data", "application/octet-stream", []byte{0, 0xff, 0x80}, true},
		{"invalid JSON under a JSON type", event.ApplicationJSON, []byte("{not json"), true},
		{"non-UTF-8 text", "text/plain", []byte{0xc3, 0x28}, true},
		{"no data", "", nil, false},
		// sdk-go writes data under a JSON type in any case as JSON, and reads it as JSON only
		// under the type in lower case.
		{"JSON data under a JSON type in upper case", "Application/JSON", []byte(`{"a":1}`), true},
		{"JSON data under a JSON type with parameters in upper case", "TEXT/json; charset=utf-8", []byte(`{}`), true},
		{"JSON data under a JSON type with parameters", "application/json; charset=utf-8", []byte(`"x"`), false},
		{"JSON string that is not UTF-8", event.ApplicationJSON, []byte("\"\x88\""), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := base()
			e.SetTime(time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC))
			e.SetExtension("seq", 3)
			e.SetExtension("ok", true)
			if tc.ct != "" {
				e.SetDataContentType(tc.ct)
			}
			e.DataEncoded = tc.data
			b, err := EncodeStructured(&e)
			if err != nil {
				t.Fatal(err)
			}
			if got := bytes.Contains(b, []byte(`"data_base64"`)); got != tc.wantBase64 {
				t.Errorf("data_base64 in %s: %v, want %v", b, got, tc.wantBase64)
			}
			if e.DataBase64 {
				t.Error("EncodeStructured modified its argument")
			}
			back, err := DecodeStructured(b)
			if err != nil {
				t.Fatalf("decode %s: %v", b, err)
			}
			if d := Diff(&e, back); d != nil {
				t.Errorf("round trip differs:\n%s", strings.Join(d, "\n"))
			}
		})
	}
}

// TestDecodeStructuredTrims: the attributes sdk-go's setters trim (as binary-mode decoders set
// them) are trimmed in structured mode too, so an event reads the same in either mode.
func TestDecodeStructuredTrims(t *testing.T) {
	e, err := DecodeStructured([]byte(`{"specversion":"1.0","id":" 1 ","source":"s","type":"\tt ","subject":" ","datacontenttype":" text/plain","data":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	if e.ID() != "1" || e.Type() != "t" || e.Subject() != "" || e.DataContentType() != "text/plain" {
		t.Errorf("attributes not trimmed: id %q type %q subject %q datacontenttype %q", e.ID(), e.Type(), e.Subject(), e.DataContentType())
	}
}

func TestDecodeStructuredRejects(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"not JSON", `{`, ""},
		{"missing source", `{"specversion":"1.0","id":"1","type":"t"}`, "source"},
		{"extension named Data", `{"specversion":"1.0","id":"1","source":"s","type":"t","Data":1}`, "invalid extension attribute name"},
		{"not UTF-8", "{\"specversion\":\"1.0\",\"id\":\"\xff\",\"source\":\"s\",\"type\":\"t\"}", "UTF-8"},
		{"id of white space", `{"specversion":"1.0","id":"  ","source":"s","type":"t"}`, "attribute id"},
		{"type of white space", `{"specversion":"1.0","id":"1","source":"s","type":" "}`, "type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeStructured([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("DecodeStructured = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestMarkBinaryData(t *testing.T) {
	// Data as a binary-mode reader leaves it: bytes, no flag (SetData with []byte would set it).
	e := base()
	e.SetDataContentType("application/octet-stream")
	e.DataEncoded = []byte{0xff}
	MarkBinaryData(&e)
	if !e.DataBase64 {
		t.Error("binary data not marked")
	}
	e = base()
	e.SetDataContentType("text/plain")
	e.DataEncoded = []byte("text")
	MarkBinaryData(&e)
	if e.DataBase64 {
		t.Error("text data marked as binary")
	}
	e = event.New(event.CloudEventsVersionV03)
	e.SetID("1")
	e.SetSource("/s")
	e.SetType("t")
	e.SetDataContentType("application/octet-stream")
	e.DataEncoded = []byte{0xff}
	MarkBinaryData(&e)
	if e.DeprecatedDataContentEncoding() != event.Base64 {
		t.Error("0.3 binary data not marked with datacontentencoding")
	}
}

func TestValidAttrNameAndAttrString(t *testing.T) {
	for n, want := range map[string]bool{"a": true, "abc123": true, "": false, "aB": false, "a_b": false, "ü": false} {
		if ValidAttrName(n) != want {
			t.Errorf("ValidAttrName(%q) = %v", n, !want)
		}
	}
	e := base()
	e.SetTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600)))
	e.SetExtension("n", 5)
	e.SetExtension("b", []byte{1})
	for name, want := range map[string]string{"id": "1", "time": "2026-01-02T02:04:05Z", "n": "5", "b": "AQ==", "subject": "", "missing": ""} {
		if got := AttrString(&e, name); got != want {
			t.Errorf("AttrString(%s) = %q, want %q", name, got, want)
		}
	}
}

func TestDiff(t *testing.T) {
	a, b := base(), base()
	a.SetExtension("n", 1)
	b.SetExtension("n", "1")
	b.SetSubject("x")
	d := Diff(&a, &b)
	if len(d) != 2 || !strings.Contains(d[0], "subject") || !strings.Contains(d[1], "extension n") {
		t.Errorf("Diff = %q", d)
	}
	if d := Diff(&a, &a); d != nil {
		t.Errorf("Diff of an event with itself = %q", d)
	}
}

func FuzzDecodeStructured(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"s","type":"t","data":{"a":1}}`))
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"application/octet-stream","data_base64":"/w=="}`))
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"s","type":"t","x":5,"time":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"Application/JSON","data":{"a":1}}`))
	// The stock rules' test events, one JSON object per file or an array of them.
	files, _ := filepath.Glob("../../filters/rules/*/testdata/*/events/*.json")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeStructured(b)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("refused without a reason")
			}
			return
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("decoded an invalid event: %v", err)
		}
		if e.SpecVersion() != event.CloudEventsVersionV1 {
			return
		}
		out, err := EncodeStructured(e)
		if err != nil {
			t.Fatalf("a decoded event cannot be encoded: %v", err)
		}
		back, err := DecodeStructured(out)
		if err != nil {
			t.Fatalf("re-decode %s: %v", out, err)
		}
		if d := Diff(e, back); d != nil {
			t.Fatalf("round trip differs:\n%s", strings.Join(d, "\n"))
		}
	})
}

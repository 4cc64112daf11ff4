package httpin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/internal/ce"
)

// testdataEvents returns the events of the stock rules' test data (JSON objects, each with the
// "expect" member the rule tests add, and without it), as seeds.
func testdataEvents(f *testing.F) [][]byte {
	f.Helper()
	files, err := filepath.Glob("../../filters/rules/*/testdata/*.json")
	if err != nil {
		f.Fatal(err)
	}
	more, _ := filepath.Glob("../../filters/rules/*/testdata/*/events/*.json")
	more2, _ := filepath.Glob("../../filters/rules/*/testdata/*/events.json")
	var out [][]byte
	for _, p := range append(append(files, more...), more2...) {
		if strings.HasSuffix(p, "config.json") || strings.HasSuffix(p, ".expect.json") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		var objs []map[string]any
		if err := json.Unmarshal(b, &objs); err != nil {
			var one map[string]any
			if err := json.Unmarshal(b, &one); err != nil {
				f.Fatalf("%s: %v", p, err)
			}
			objs = []map[string]any{one}
		}
		for _, o := range objs {
			raw, _ := json.Marshal(o)
			delete(o, "expect")
			clean, _ := json.Marshal(o)
			out = append(out, raw, clean)
		}
	}
	if len(out) == 0 {
		f.Fatal("no test data events found")
	}
	return out
}

// FuzzDecodeBatch feeds arbitrary bodies to a batch request. A body that is not a JSON array is
// one malformed part keeping the body; an array gives one part per element, in order, each an
// event (valid, CloudEvents 1.0, the same as the element sent alone in structured mode) or an
// error naming the element's index and keeping the element's bytes. The events, sent again as a
// batch, come back the same.
func FuzzDecodeBatch(f *testing.F) {
	evs := testdataEvents(f)
	f.Add([]byte("[" + string(bytes.Join(evs, []byte(","))) + "]"))
	for _, e := range evs {
		f.Add([]byte("[" + string(e) + "]"))
	}
	for _, p := range []string{"../../filters/rules/attrroute/testdata/all-matches/events.json", "../../filters/rules/passthrough/testdata/events.json"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`[]`))
	f.Add([]byte(` [{"specversion":"1.0","id":"1","source":"/s","type":"t","data":"x"}, 7, null, [], {"id":2}]`))
	f.Add([]byte(`[{"specversion":"0.3","id":"1","source":"/s","type":"t"}]`))
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t"}`))
	f.Add([]byte(`[{"specversion":"1.0","id":"1","source":"/s","type":"t"},`))
	batch := http.Header{"Content-Type": {"application/cloudevents-batch+json; charset=utf-8"}}
	structured := http.Header{"Content-Type": {event.ApplicationCloudEventsJSON}}
	f.Fuzz(func(t *testing.T, body []byte) {
		parts := decodeRequest(batch, body)
		var elems []json.RawMessage
		isArray := json.Unmarshal(body, &elems) == nil && bytes.HasPrefix(bytes.TrimLeft(body, " \t\r\n"), []byte("["))
		if !isArray {
			if len(parts) != 1 || parts[0].Err == nil || parts[0].Err.Index != -1 || !bytes.Equal(parts[0].Raw, body) {
				t.Fatalf("a body that is not a JSON array gave %d part(s), want one malformed part holding the body: %+v", len(parts), parts)
			}
			if parts[0].Err.Status != http.StatusBadRequest || !strings.Contains(parts[0].Err.Error(), "JSON array") {
				t.Fatalf("error %q (%d) does not say the batch is not a JSON array", parts[0].Err, parts[0].Err.Status)
			}
			return
		}
		if len(parts) != len(elems) {
			t.Fatalf("%d parts from an array of %d elements", len(parts), len(elems))
		}
		var events []*event.Event
		for i, p := range parts {
			if (p.Event == nil) == (p.Err == nil) {
				t.Fatalf("element %d: want an event or an error: %+v", i, p)
			}
			// The element alone, in structured mode, decodes the same.
			alone := decodeRequest(structured, elems[i])
			if len(alone) != 1 || (alone[0].Event == nil) != (p.Event == nil) {
				t.Fatalf("element %d decodes differently alone: %+v and in the batch: %+v", i, alone, p)
			}
			if p.Err != nil {
				if p.Err.Index != i || p.Err.Status != http.StatusBadRequest || !strings.HasPrefix(p.Err.Error(), fmt.Sprintf("batch element %d: ", i)) {
					t.Fatalf("element %d: error %q (index %d, status %d) does not name the element", i, p.Err, p.Err.Index, p.Err.Status)
				}
				if !bytes.Equal(p.Raw, elems[i]) {
					t.Fatalf("element %d: Raw %q, want the element %q", i, p.Raw, elems[i])
				}
				continue
			}
			if err := p.Event.Validate(); err != nil || p.Event.SpecVersion() != event.CloudEventsVersionV1 {
				t.Fatalf("element %d: decoded an invalid event (%v) or not 1.0 (%s)", i, err, p.Event.SpecVersion())
			}
			if d := ce.Diff(alone[0].Event, p.Event); d != nil {
				t.Fatalf("element %d differs from its decoding alone:\n%s", i, strings.Join(d, "\n"))
			}
			events = append(events, p.Event)
		}
		// The events, written as a batch, read back the same.
		var again bytes.Buffer
		again.WriteByte('[')
		for i, e := range events {
			b, err := ce.EncodeStructured(e)
			if err != nil {
				t.Fatalf("a decoded event cannot be encoded: %v", err)
			}
			if i > 0 {
				again.WriteByte(',')
			}
			again.Write(b)
		}
		again.WriteByte(']')
		back := decodeRequest(batch, again.Bytes())
		if len(back) != len(events) {
			t.Fatalf("re-encoded batch of %d events gave %d parts", len(events), len(back))
		}
		for i, p := range back {
			if p.Err != nil {
				t.Fatalf("re-encoded event %d refused: %v\n%s", i, p.Err, again.Bytes())
			}
			if d := ce.Diff(events[i], p.Event); d != nil {
				t.Fatalf("re-encoded event %d differs:\n%s", i, strings.Join(d, "\n"))
			}
		}
	})
}

// FuzzDecodeBinary feeds a binary-mode request of arbitrary headers (name, value, name, value,
// ... separated by NUL) and body. It is one part: an error with a 400 or 415 status that names
// the attribute it blames and keeps the body, or a valid 1.0 event whose data is the body and
// that comes back the same when written again in binary mode (as the HTTP output writes it) and
// in structured mode (there, JSON data without white space after it).
func FuzzDecodeBinary(f *testing.F) {
	for _, raw := range testdataEvents(f) {
		e, err := ce.DecodeStructured(raw)
		if err != nil {
			continue
		}
		h := http.Header{}
		if err := writeBinaryHeaders(h, e); err != nil {
			f.Fatal(err)
		}
		var kv []string
		for k, vs := range h {
			kv = append(kv, k, vs[0])
		}
		f.Add(strings.Join(kv, "\x00"), e.Data())
	}
	f.Add("Ce-Specversion\x001.0\x00Ce-Id\x00a%20b\x00Ce-Source\x00/s\x00Ce-Type\x00t\x00Content-Type\x00text/plain; charset=utf-8", []byte("caf\xc3\xa9"))
	f.Add("ce-specversion\x001.0\x00ce-id\x001\x00ce-source\x00/s\x00ce-type\x00t\x00ce-time\x002026-12-01T08:00:00Z\x00ce-myext\x00%zz", []byte{})
	f.Add("Ce-Specversion\x000.3\x00Ce-Id\x001\x00Ce-Source\x00/s\x00Ce-Type\x00t\x00Ce-Schemaurl\x00http://x", []byte(`{}`))
	f.Add("Ce-Specversion\x001.0\x00Ce-Id\x001\x00Ce-Id\x002\x00Ce-Source\x00/s\x00Ce-Type\x00t", []byte(nil))
	f.Add("Ce-Bad_Name\x00x\x00Ce-Specversion\x001.0", []byte("x"))
	f.Add("Content-Type\x00application/json", []byte(`{"a":1}`))
	f.Add("X-Other\x00y", []byte("z"))
	f.Fuzz(func(t *testing.T, headers string, body []byte) {
		h := http.Header{}
		kv := strings.Split(headers, "\x00")
		for i := 0; i+1 < len(kv); i += 2 {
			if strings.ContainsAny(kv[i], "\r\n:") || strings.ContainsAny(kv[i+1], "\r\n") {
				return // not a header line a server would pass on
			}
			h.Add(kv[i], kv[i+1])
		}
		parts := decodeRequest(h, body)
		if len(parts) != 1 {
			if ct, _, _ := strings.Cut(h.Get("Content-Type"), ";"); strings.TrimSpace(strings.ToLower(ct)) == event.ApplicationCloudEventsBatchJSON {
				return // a batch: FuzzDecodeBatch
			}
			t.Fatalf("%d parts from one request", len(parts))
		}
		p := parts[0]
		if (p.Event == nil) == (p.Err == nil) {
			t.Fatalf("want an event or an error: %+v", p)
		}
		if p.Err != nil {
			if p.Err.Status != http.StatusBadRequest && p.Err.Status != http.StatusUnsupportedMediaType || p.Err.Reason == "" {
				t.Fatalf("error %q has status %d, want a 400 or 415 with a reason", p.Err, p.Err.Status)
			}
			if p.Err.Attribute != "" && !strings.Contains(p.Err.Error(), "attribute "+p.Err.Attribute+": ") {
				t.Fatalf("error %q does not name the attribute %s", p.Err, p.Err.Attribute)
			}
			if !bytes.Contains(p.Raw, body) {
				t.Fatalf("Raw %q does not hold the body %q", p.Raw, body)
			}
			return
		}
		e := p.Event
		if err := e.Validate(); err != nil || e.SpecVersion() != event.CloudEventsVersionV1 {
			t.Fatalf("decoded an invalid event (%v) or not 1.0 (%s)", err, e.SpecVersion())
		}
		if ct, _, _ := strings.Cut(h.Get("Content-Type"), ";"); !strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "application/cloudevents") && !bytes.Equal(e.Data(), body) {
			t.Fatalf("binary-mode data %q, want the body %q", e.Data(), body)
		}
		// Written again as the HTTP output writes it, it reads back the same.
		h2 := http.Header{}
		if err := writeBinaryHeaders(h2, e); err != nil {
			return // e.g. a control character in datacontenttype: the output refuses to send it
		}
		back := decodeRequest(h2, e.Data())
		if len(back) != 1 || back[0].Err != nil {
			t.Fatalf("re-encoded in binary mode, refused: %+v\nheaders %q", back, h2)
		}
		if d := ce.Diff(e, back[0].Event); d != nil {
			t.Fatalf("re-encoded in binary mode, differs:\n%s\nheaders %q", strings.Join(d, "\n"), h2)
		}
		b, err := ce.EncodeStructured(e)
		if err != nil {
			t.Fatalf("a decoded event cannot be encoded in structured mode: %v", err)
		}
		back = decodeRequest(http.Header{"Content-Type": {event.ApplicationCloudEventsJSON}}, b)
		if len(back) != 1 || back[0].Err != nil {
			t.Fatalf("re-encoded in structured mode, refused: %+v\n%s", back, b)
		}
		if d := ce.Diff(ce.ThroughJSON(e), back[0].Event); d != nil {
			t.Fatalf("re-encoded in structured mode, differs:\n%s\n%s", strings.Join(d, "\n"), b)
		}
	})
}

package httpin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/engine/enginetest"
	"github.com/turnout-router/turnout/internal/ce"
	"github.com/turnout-router/turnout/internal/testutil"
)

// fakeDispatcher is an engine stand-in. By default it takes every message and settles it on
// another goroutine with nackAt[i] (nil = ack), i being the dispatch order.
type fakeDispatcher struct {
	nackAt map[int]error
	hold   bool // keep settle funcs for the test to call
	block  bool // never take a message: wait for ctx like a full engine
	closed bool // engine shut down

	mu         sync.Mutex
	msgs       []*engine.Message
	settles    []engine.SettleFunc
	dispatched chan struct{}
}

func newFake() *fakeDispatcher { return &fakeDispatcher{dispatched: make(chan struct{}, 1024)} }

func (f *fakeDispatcher) Dispatch(ctx context.Context, m *engine.Message, settle engine.SettleFunc) error {
	if f.closed {
		return engine.ErrClosed
	}
	if f.block {
		<-ctx.Done()
		return ctx.Err()
	}
	f.mu.Lock()
	idx := len(f.msgs)
	f.msgs = append(f.msgs, m)
	f.settles = append(f.settles, settle)
	f.mu.Unlock()
	f.dispatched <- struct{}{}
	if !f.hold {
		go settle(f.nackAt[idx])
	}
	return nil
}

func (f *fakeDispatcher) events() []*event.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*event.Event, len(f.msgs))
	for i, m := range f.msgs {
		out[i] = m.Event
	}
	return out
}

func (f *fakeDispatcher) settle(i int, err error) {
	f.mu.Lock()
	s := f.settles[i]
	f.mu.Unlock()
	s(err)
}

type fixture struct {
	in  *Input
	fd  *fakeDispatcher
	url string
	reg *prometheus.Registry
}

func newFixture(t *testing.T, c Config, fd *fakeDispatcher) *fixture {
	t.Helper()
	if c.Listen == "" {
		c.Listen = "127.0.0.1:0"
	}
	reg := prometheus.NewRegistry()
	in, err := New("test", c, engine.Deps{Registerer: reg})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	in.d = fd
	srv := httptest.NewServer(in)
	t.Cleanup(srv.Close)
	return &fixture{in: in, fd: fd, url: srv.URL + in.cfg.Path, reg: reg}
}

func (fx *fixture) post(t *testing.T, h http.Header, body []byte) (*http.Response, errorBody) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, fx.url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var eb errorBody
	if resp.StatusCode >= 300 {
		if err := json.Unmarshal(raw, &eb); err != nil {
			t.Fatalf("status %d: body %q is not the JSON error body: %v", resp.StatusCode, raw, err)
		}
	}
	return resp, eb
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h[kv[i]] = append(h[kv[i]], kv[i+1])
	}
	return h
}

func binaryHeaders(extra ...string) http.Header {
	return hdr(append([]string{"Ce-Specversion", "1.0", "Ce-Id", "a1", "Ce-Source", "/care/home-7", "Ce-Type", "care.alarm"}, extra...)...)
}

// headerValue is h's first value for key, whatever the case of the key in h.
func headerValue(h http.Header, key string) string {
	for k, vs := range h {
		if strings.EqualFold(k, key) {
			return vs[0]
		}
	}
	return ""
}

func mustEvent(t *testing.T, js string) event.Event {
	t.Helper()
	var e event.Event
	if err := json.Unmarshal([]byte(js), &e); err != nil {
		t.Fatalf("test event: %v", err)
	}
	return e
}

func TestBinaryMode(t *testing.T) {
	tests := []struct {
		name     string
		headers  http.Header
		body     []byte
		want     func(t *testing.T, e *event.Event)
		wantB64  bool
		wantData []byte
	}{
		{
			name: "percent-encoded attributes and extensions",
			headers: binaryHeaders("Ce-Subject", "Caf%C3%A9%20%22bed%202%22%20100%25",
				"Ce-Patientid", "p%2F42", "Ce-Priority", "high", "Ce-Time", "2026-11-24T10:00:00Z",
				"Content-Type", "application/json"),
			body: []byte(`{"alarm":"fall"}`),
			want: func(t *testing.T, e *event.Event) {
				if e.Subject() != `Café "bed 2" 100%` {
					t.Errorf("subject = %q", e.Subject())
				}
				if got := e.Extensions()["patientid"]; got != "p/42" {
					t.Errorf("extension patientid = %v", got)
				}
				if got := e.Extensions()["priority"]; got != "high" {
					t.Errorf("extension priority = %v", got)
				}
				if e.Time().UTC().Format(time.RFC3339) != "2026-11-24T10:00:00Z" {
					t.Errorf("time = %v", e.Time())
				}
				if e.DataContentType() != "application/json" {
					t.Errorf("datacontenttype = %q", e.DataContentType())
				}
			},
			wantData: []byte(`{"alarm":"fall"}`),
		},
		{
			name:     "binary data kept in data_base64",
			headers:  binaryHeaders("Content-Type", "application/octet-stream"),
			body:     []byte{0xff, 0x00, 0xfe, '\n'},
			wantB64:  true,
			wantData: []byte{0xff, 0x00, 0xfe, '\n'},
		},
		{
			name:     "invalid JSON under a JSON type kept in data_base64",
			headers:  binaryHeaders("Content-Type", "application/json"),
			body:     []byte(`{"cut`),
			wantB64:  true,
			wantData: []byte(`{"cut`),
		},
		{
			name:     "text data kept as text",
			headers:  binaryHeaders("Content-Type", "text/plain; charset=utf-8"),
			body:     []byte("help, bed 2"),
			wantData: []byte("help, bed 2"),
		},
		{
			name:    "no data",
			headers: binaryHeaders(),
		},
		{
			name:     "lower-case header names",
			headers:  hdr("ce-specversion", "1.0", "ce-id", "x", "ce-source", "/s", "ce-type", "t", "ce-room", "12%2Fb"),
			wantData: nil,
			want: func(t *testing.T, e *event.Event) {
				if e.ID() != "x" || e.Extensions()["room"] != "12/b" {
					t.Errorf("event = %v", e)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFixture(t, Config{}, newFake())
			resp, eb := fx.post(t, tt.headers, tt.body)
			if resp.StatusCode != http.StatusNoContent {
				t.Fatalf("status %d (%s), want 204", resp.StatusCode, eb.Error)
			}
			evs := fx.fd.events()
			if len(evs) != 1 {
				t.Fatalf("dispatched %d events, want 1", len(evs))
			}
			e := evs[0]
			if err := e.Validate(); err != nil {
				t.Fatalf("dispatched invalid event: %v", err)
			}
			if e.SpecVersion() != "1.0" || e.Type() != headerValue(tt.headers, "Ce-Type") || e.Source() != headerValue(tt.headers, "Ce-Source") {
				t.Errorf("attributes: %v", e)
			}
			if !bytes.Equal(e.Data(), tt.wantData) {
				t.Errorf("data = %q, want %q", e.Data(), tt.wantData)
			}
			if e.DataBase64 != tt.wantB64 {
				t.Errorf("DataBase64 = %v, want %v", e.DataBase64, tt.wantB64)
			}
			// The event must survive the JSON format unchanged (what an output writes).
			js, err := json.Marshal(e)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			back := mustEvent(t, string(js))
			if !bytes.Equal(back.Data(), tt.wantData) || back.Subject() != e.Subject() || fmt.Sprint(back.Extensions()) != fmt.Sprint(e.Extensions()) {
				t.Errorf("JSON round trip changed the event:\n%s", js)
			}
			if tt.want != nil {
				tt.want(t, e)
			}
		})
	}
}

func TestStructuredAndBatch(t *testing.T) {
	one := `{"specversion":"1.0","id":"s1","source":"/care/home-7","type":"care.alarm","subject":"bed 2","patientid":"p42","datacontenttype":"application/json","data":{"a":1}}`
	bin := `{"specversion":"1.0","id":"s2","source":"/s","type":"t","data_base64":"/wD+"}`
	tests := []struct {
		name    string
		ct      string
		body    string
		nackAt  map[int]error
		status  int
		wantIDs []string
	}{
		{name: "structured", ct: "application/cloudevents+json", body: one, status: 204, wantIDs: []string{"s1"}},
		{name: "structured with charset", ct: "application/cloudevents+json; charset=utf-8", body: bin, status: 204, wantIDs: []string{"s2"}},
		{name: "batch all acked", ct: "application/cloudevents-batch+json", body: "[" + one + "," + bin + "]", status: 204, wantIDs: []string{"s1", "s2"}},
		{name: "empty batch", ct: "application/cloudevents-batch+json", body: "[]", status: 204},
		{name: "batch one nacked", ct: "application/cloudevents-batch+json", body: "[" + one + "," + bin + "]",
			nackAt: map[int]error{1: errors.New("output down")}, status: 502, wantIDs: []string{"s1", "s2"}},
		{name: "structured nacked", ct: "application/cloudevents+json", body: one,
			nackAt: map[int]error{0: errors.New("output down")}, status: 502, wantIDs: []string{"s1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fd := newFake()
			fd.nackAt = tt.nackAt
			fx := newFixture(t, Config{}, fd)
			resp, eb := fx.post(t, hdr("Content-Type", tt.ct), []byte(tt.body))
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, eb.Error, tt.status)
			}
			var ids []string
			for _, e := range fd.events() {
				ids = append(ids, e.ID())
			}
			if fmt.Sprint(ids) != fmt.Sprint(tt.wantIDs) {
				t.Errorf("dispatched ids %v, want %v", ids, tt.wantIDs)
			}
		})
	}
	t.Run("structured attributes preserved", func(t *testing.T) {
		fx := newFixture(t, Config{}, newFake())
		if resp, eb := fx.post(t, hdr("Content-Type", "application/cloudevents+json"), []byte(one)); resp.StatusCode != 204 {
			t.Fatalf("status %d: %s", resp.StatusCode, eb.Error)
		}
		got, want := fx.fd.events()[0], mustEvent(t, one)
		if got.String() != want.String() {
			t.Errorf("got\n%s\nwant\n%s", got, want)
		}
	})
}

// routed is an HTTP input on a real socket feeding a real engine route whose rule-less default
// output is out and whose dead-letter output is dl (none when nil).
type routed struct {
	url string
	out *enginetest.Sink
}

func newRouted(t *testing.T, dl engine.Sink) *routed {
	t.Helper()
	return newRoutedConfig(t, Config{}, dl)
}

// newRoutedConfig is newRouted with the input configured by c (Listen and Path are set).
func newRoutedConfig(t *testing.T, c Config, dl engine.Sink) *routed {
	t.Helper()
	c.Listen, c.Path = "127.0.0.1:0", "/events"
	in, err := New("hook", c, engine.Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	out := &enginetest.Sink{}
	r := engine.Route{
		Config: engine.RouteConfig{Name: "r", DefaultOutputs: []string{"out"},
			Retry: engine.RetryPolicy{MaxAttempts: 2, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 10 * time.Millisecond}},
		Inputs:  map[string]engine.Source{"hook": in},
		Outputs: map[string]engine.Sink{"out": out},
	}
	if dl != nil {
		r.DeadLetter, r.DeadLetterName = dl, "dl"
	}
	e := engine.New(engine.Options{})
	if err := e.AddRoute(r); err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
	})
	return &routed{url: "http://" + in.Addr().String() + "/events", out: out}
}

func (rt *routed) post(t *testing.T, h http.Header, body []byte) (*http.Response, errorBody) {
	t.Helper()
	return (&fixture{url: rt.url}).post(t, h, body)
}

// TestMalformed checks what becomes of requests that are not CloudEvents: each malformed message
// reaches the engine, which dead-letters it with the reason and the message as received (the
// client then gets 204), or, on a route without a dead-letter output, the client gets 400 or 415
// naming the attribute and batch index. The valid events of a batch are delivered either way.
func TestMalformed(t *testing.T) {
	ok := `{"specversion":"1.0","id":"b0","source":"/s","type":"t"}`
	tests := []struct {
		name      string
		headers   http.Header
		body      string
		status    int
		index     int // -1: no index
		attribute string
		reason    string   // substring of the error
		raw       []string // substrings of the dead-lettered message (default: the body)
		delivered []string // ids of the valid events of the request
	}{
		{name: "binary missing id", headers: hdr("Ce-Specversion", "1.0", "Ce-Source", "/s", "Ce-Type", "t"), status: 400, index: -1, attribute: "id",
			raw: []string{"Ce-Source: /s\r\n", "Ce-Specversion: 1.0\r\n", "Ce-Type: t\r\n\r\n"}},
		{name: "binary wrong specversion", headers: hdr("Ce-Specversion", "2.0", "Ce-Id", "1", "Ce-Source", "/s", "Ce-Type", "t"), status: 400, index: -1, attribute: "specversion", reason: `"2.0"`,
			raw: []string{"Ce-Specversion: 2.0\r\n"}},
		{name: "binary specversion 0.3", headers: hdr("Ce-Specversion", "0.3", "Ce-Id", "1", "Ce-Source", "/s", "Ce-Type", "t"), status: 400, index: -1, attribute: "specversion", reason: `"0.3"`,
			raw: []string{"Ce-Specversion: 0.3\r\n"}},
		{name: "structured specversion 0.3", headers: hdr("Content-Type", "application/cloudevents+json"), body: `{"specversion":"0.3","id":"1","source":"/s","type":"t"}`, status: 400, index: -1, attribute: "specversion", reason: `"0.3"`},
		{name: "binary missing specversion", headers: hdr("Ce-Id", "1", "Ce-Source", "/s", "Ce-Type", "t"), status: 400, index: -1, attribute: "specversion"},
		{name: "binary bad percent-encoding", headers: binaryHeaders("Ce-Subject", "100%zz", "Content-Type", "text/plain"), body: "bed 2", status: 400, index: -1, attribute: "subject", reason: "percent",
			raw: []string{"Ce-Subject: 100%zz\r\n", "Content-Type: text/plain\r\n", "\r\n\r\nbed 2"}},
		{name: "binary bad attribute name", headers: binaryHeaders("Ce-Bed-Nr", "2"), status: 400, index: -1, attribute: "bed-nr"},
		{name: "binary header repeated", headers: binaryHeaders("Ce-Id", "again"), status: 400, index: -1, attribute: "id", reason: "more than once",
			raw: []string{"Ce-Id: a1\r\n", "Ce-Id: again\r\n"}},
		{name: "structured missing id", headers: hdr("Content-Type", "application/cloudevents+json"), body: `{"specversion":"1.0","source":"/s","type":"t"}`, status: 400, index: -1, attribute: "id"},
		{name: "structured wrong specversion", headers: hdr("Content-Type", "application/cloudevents+json"), body: `{"specversion":"2.0","id":"1","source":"/s","type":"t"}`, status: 400, index: -1, attribute: "specversion"},
		{name: "structured bad JSON", headers: hdr("Content-Type", "application/cloudevents+json"), body: `{"specversion":"1.0","id":`, status: 400, index: -1},
		{name: "batch not an array", headers: hdr("Content-Type", "application/cloudevents-batch+json"), body: ok, status: 400, index: -1, reason: "array"},
		{name: "batch null", headers: hdr("Content-Type", "application/cloudevents-batch+json"), body: "null", status: 400, index: -1, reason: "array"},
		{name: "batch element 1 missing source", headers: hdr("Content-Type", "application/cloudevents-batch+json"), body: "[" + ok + `,{"specversion":"1.0","id":"b1","type":"t"}]`, status: 400, index: 1, attribute: "source",
			raw: []string{`{"specversion":"1.0","id":"b1","type":"t"}`}, delivered: []string{"b0"}},
		{name: "batch element 2 not an object", headers: hdr("Content-Type", "application/cloudevents-batch+json"), body: "[" + ok + "," + strings.ReplaceAll(ok, "b0", "b1") + `,"x"]`, status: 400, index: 2,
			raw: []string{`"x"`}, delivered: []string{"b0", "b1"}},
		{name: "structured subject not UTF-8", headers: hdr("Content-Type", "application/cloudevents+json"), body: "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\",\"subject\":\"bed \xff\"}",
			status: 400, index: -1, attribute: "subject", reason: "not valid UTF-8 (byte 0xff at offset 70)"},
		{name: "batch element 1 extension not UTF-8", headers: hdr("Content-Type", "application/cloudevents-batch+json"), body: "[" + ok + ",{\"specversion\":\"1.0\",\"id\":\"b1\",\"source\":\"/s\",\"type\":\"t\",\"ward\":\"\xc3(\"}]",
			status: 400, index: 1, attribute: "ward", reason: "not valid UTF-8", raw: []string{"\"ward\":\"\xc3(\""}, delivered: []string{"b0"}},
		{name: "binary subject not UTF-8", headers: binaryHeaders("Ce-Subject", "bed%FF"), status: 400, index: -1, attribute: "subject", reason: "not UTF-8",
			raw: []string{"Ce-Subject: bed%FF\r\n"}},
		{name: "unsupported structured format", headers: hdr("Content-Type", "application/cloudevents+xml"), body: "<e/>", status: 415, index: -1,
			raw: []string{"Content-Type: application/cloudevents+xml\r\n\r\n<e/>"}},
		{name: "unsupported batch format", headers: hdr("Content-Type", "application/cloudevents-batch+avro"), body: "x", status: 415, index: -1},
		{name: "not a CloudEvent", headers: hdr("Content-Type", "text/plain"), body: "hello", status: 415, index: -1,
			raw: []string{"Content-Type: text/plain\r\n\r\nhello"}},
		{name: "no content type and no ce- headers", body: "not a CloudEvent {", status: 415, index: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Run("no dead-letter output", func(t *testing.T) {
				rt := newRouted(t, nil)
				resp, eb := rt.post(t, tt.headers, []byte(tt.body))
				if resp.StatusCode != tt.status {
					t.Fatalf("status %d (%s), want %d", resp.StatusCode, eb.Error, tt.status)
				}
				gotIndex := -1
				if eb.Index != nil {
					gotIndex = *eb.Index
				}
				if gotIndex != tt.index {
					t.Errorf("index = %d, want %d (%s)", gotIndex, tt.index, eb.Error)
				}
				if eb.Attribute != tt.attribute {
					t.Errorf("attribute = %q, want %q (%s)", eb.Attribute, tt.attribute, eb.Error)
				}
				if !strings.Contains(eb.Error, tt.reason) || eb.Error == "" {
					t.Errorf("error %q does not mention %q", eb.Error, tt.reason)
				}
				if got := ids(rt.out.Confirmed()); fmt.Sprint(got) != fmt.Sprint(tt.delivered) {
					t.Errorf("delivered %v, want the valid events %v", got, tt.delivered)
				}
			})
			t.Run("dead-lettered", func(t *testing.T) {
				dl := &enginetest.Sink{}
				rt := newRouted(t, dl)
				resp, eb := rt.post(t, tt.headers, []byte(tt.body))
				if resp.StatusCode != http.StatusNoContent {
					t.Fatalf("status %d (%s), want 204", resp.StatusCode, eb.Error)
				}
				// 204 came after the settlement: the dead letter is there now.
				dead := dl.Confirmed()
				if len(dead) != 1 {
					t.Fatalf("%d dead letters, want 1", len(dead))
				}
				d := dead[0]
				if d.Type() != engine.TypeMalformed {
					t.Errorf("dead letter type %q, want %q", d.Type(), engine.TypeMalformed)
				}
				why := ce.AttrString(d, engine.ExtError)
				if !strings.Contains(why, tt.reason) || (tt.attribute != "" && !strings.Contains(why, "attribute "+tt.attribute)) {
					t.Errorf("dead letter reason %q does not name attribute %q and %q", why, tt.attribute, tt.reason)
				}
				if tt.index >= 0 && !strings.Contains(ce.AttrString(d, engine.ExtOrigin), fmt.Sprintf("batch element %d", tt.index)) {
					t.Errorf("dead letter origin %q does not name batch element %d", ce.AttrString(d, engine.ExtOrigin), tt.index)
				}
				raw := tt.raw
				if raw == nil {
					raw = []string{tt.body}
				}
				for _, want := range raw {
					if !bytes.Contains(d.Data(), []byte(want)) {
						t.Errorf("dead letter data %q does not hold %q", d.Data(), want)
					}
				}
				if got := ids(rt.out.Confirmed()); fmt.Sprint(got) != fmt.Sprint(tt.delivered) {
					t.Errorf("delivered %v, want the valid events %v", got, tt.delivered)
				}
			})
		})
	}
}

// TestMalformedDeadLetterOutcomes checks that the client of a malformed request learns the fate
// the dead-letter output gave it: 204 only once it confirmed, 5xx (resend) while it fails, 400
// when it refuses the message for good.
func TestMalformedDeadLetterOutcomes(t *testing.T) {
	body := []byte(`{"specversion":"1.0","id":`)
	h := hdr("Content-Type", "application/cloudevents+json")
	t.Run("answered only once the dead-letter output confirmed", func(t *testing.T) {
		release := make(chan struct{})
		dl := &enginetest.Sink{Fail: func(ctx context.Context, _ int, _ *event.Event) error {
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}}
		rt := newRouted(t, dl)
		done := make(chan int, 1)
		go func() {
			resp, _ := rt.post(t, h, body)
			done <- resp.StatusCode
		}()
		select {
		case code := <-done:
			t.Fatalf("answered %d before the dead-letter output confirmed", code)
		case <-time.After(200 * time.Millisecond):
		}
		close(release)
		if code := <-done; code != http.StatusNoContent {
			t.Fatalf("status %d, want 204", code)
		}
		if n := len(dl.Confirmed()); n != 1 {
			t.Fatalf("%d dead letters, want 1", n)
		}
	})
	tests := []struct {
		name   string
		fail   error
		status int
		reason string
	}{
		{name: "dead-letter output down", fail: errors.New("dead-letter broker unreachable"), status: 502, reason: "dead-letter broker unreachable"},
		{name: "dead-letter output refuses", fail: engine.Permanent(errors.New("413 from the archive")), status: 400, reason: "invalid event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dl := &enginetest.Sink{Fail: func(context.Context, int, *event.Event) error { return tt.fail }}
			rt := newRouted(t, dl)
			resp, eb := rt.post(t, h, body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, eb.Error, tt.status)
			}
			if !strings.Contains(eb.Error, tt.reason) {
				t.Errorf("error %q does not mention %q", eb.Error, tt.reason)
			}
		})
	}
}

func ids(es []*event.Event) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.ID())
	}
	sort.Strings(out)
	return out
}

func TestSizeLimit(t *testing.T) {
	const max = 64 << 10
	big := func(n int) []byte { return bytes.Repeat([]byte("a"), n) }
	tests := []struct {
		name    string
		body    []byte
		chunked bool
		status  int
	}{
		{name: "64 KiB event accepted", body: big(max), status: 204},
		{name: "over the limit with Content-Length", body: big(max + 1), status: 413},
		{name: "over the limit chunked", body: big(max + 1), chunked: true, status: 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFixture(t, Config{MaxBodyBytes: max}, newFake())
			var r io.Reader = bytes.NewReader(tt.body)
			if tt.chunked {
				r = io.MultiReader(r) // hides the length: sent chunked
			}
			req, _ := http.NewRequest(http.MethodPost, fx.url, r)
			req.Header = binaryHeaders("Content-Type", "text/plain")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status == 204 && len(fx.fd.events()[0].Data()) != len(tt.body) {
				t.Errorf("data truncated")
			}
		})
	}
}

func TestBackpressureAndFailures(t *testing.T) {
	tests := []struct {
		name       string
		fd         func() *fakeDispatcher
		status     int
		retryAfter string
		reason     string
	}{
		{name: "saturated", fd: func() *fakeDispatcher { f := newFake(); f.block = true; return f }, status: 429, retryAfter: "2", reason: "saturated"},
		{name: "engine closed", fd: func() *fakeDispatcher { f := newFake(); f.closed = true; return f }, status: 503, retryAfter: "2", reason: "shutting down"},
		{name: "delivery failed", fd: func() *fakeDispatcher {
			f := newFake()
			f.nackAt = map[int]error{0: errors.New("broker unreachable")}
			return f
		}, status: 502, reason: "broker unreachable"},
		{name: "not settled in time", fd: func() *fakeDispatcher { f := newFake(); f.hold = true; return f }, status: 504, reason: "request_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFixture(t, Config{DispatchWait: 20 * time.Millisecond, RequestTimeout: 100 * time.Millisecond, RetryAfter: 1500 * time.Millisecond}, tt.fd())
			resp, eb := fx.post(t, binaryHeaders(), nil)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, eb.Error, tt.status)
			}
			if got := resp.Header.Get("Retry-After"); got != tt.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tt.retryAfter)
			}
			if !strings.Contains(eb.Error, tt.reason) {
				t.Errorf("error %q does not mention %q", eb.Error, tt.reason)
			}
		})
	}
}

// TestAnswerOnlyAfterSettle checks the guarantee itself: no 2xx before the engine settled every
// event of the request.
func TestAnswerOnlyAfterSettle(t *testing.T) {
	fd := newFake()
	fd.hold = true
	fx := newFixture(t, Config{}, fd)
	batch := `[{"specversion":"1.0","id":"1","source":"/s","type":"t"},{"specversion":"1.0","id":"2","source":"/s","type":"t"}]`
	done := make(chan int, 1)
	go func() {
		resp, _ := fx.post(t, hdr("Content-Type", "application/cloudevents-batch+json"), []byte(batch))
		done <- resp.StatusCode
	}()
	for range 2 {
		<-fd.dispatched
	}
	for i := range 2 {
		select {
		case code := <-done:
			t.Fatalf("answered %d before event %d was settled", code, i)
		case <-time.After(50 * time.Millisecond):
		}
		fd.settle(i, nil)
	}
	if code := <-done; code != http.StatusNoContent {
		t.Fatalf("status %d after both settled, want 204", code)
	}
}

func TestCloseWaitsForSettlement(t *testing.T) {
	tests := []struct {
		name string
		// settle settles the held event while Close runs; nil leaves it unsettled.
		settle   error
		deadline time.Duration
		status   int
	}{
		// The engine settles the event during its drain: the sender learns it was delivered.
		{name: "settled during the drain", settle: nil, deadline: 10 * time.Second, status: http.StatusNoContent},
		// Delivery failed during the drain: the sender resends.
		{name: "failed during the drain", settle: errors.New("output down"), deadline: 10 * time.Second, status: http.StatusBadGateway},
		// Close's deadline passed first: the sender resends.
		{name: "deadline passed", deadline: 300 * time.Millisecond, status: http.StatusServiceUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fd := newFake()
			fd.hold = true
			in, err := New("test", Config{Listen: "127.0.0.1:0"}, engine.Deps{Registerer: prometheus.NewRegistry()})
			if err != nil {
				t.Fatal(err)
			}
			if err := in.Start(context.Background(), fd); err != nil {
				t.Fatal(err)
			}
			url := "http://" + in.Addr().String() + in.cfg.Path
			post := func() (int, error) {
				req, _ := http.NewRequest(http.MethodPost, url, nil)
				req.Header = binaryHeaders()
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return 0, err
				}
				resp.Body.Close()
				return resp.StatusCode, nil
			}
			done := make(chan int, 1)
			go func() {
				code, _ := post()
				done <- code
			}()
			<-fd.dispatched
			ctx, cancel := context.WithTimeout(context.Background(), tc.deadline)
			defer cancel()
			closed := make(chan error, 1)
			go func() { closed <- in.Close(ctx) }()
			time.Sleep(20 * time.Millisecond)
			if code, err := post(); err == nil {
				t.Errorf("a request after Close began was answered %d, want the connection refused", code)
			}
			select {
			case code := <-done:
				t.Fatalf("answered %d while its event was unsettled and the deadline had not passed", code)
			case <-time.After(100 * time.Millisecond):
			}
			if tc.status != http.StatusServiceUnavailable {
				fd.settle(0, tc.settle)
			}
			if code := <-done; code != tc.status {
				t.Fatalf("status %d, want %d", code, tc.status)
			}
			err = <-closed
			if tc.status == http.StatusServiceUnavailable {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("Close = %v, want the deadline", err)
				}
				fd.settle(0, nil) // a late settlement must not block or panic
			} else if err != nil {
				t.Fatalf("Close = %v", err)
			}
		})
	}
}

func TestMethodAndPath(t *testing.T) {
	fx := newFixture(t, Config{Path: "/events"}, newFake())
	tests := []struct {
		name, method, path string
		status             int
	}{
		{"GET refused", http.MethodGet, "/events", 405},
		{"PUT refused", http.MethodPut, "/events", 405},
		{"other path", http.MethodPost, "/other", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, strings.TrimSuffix(fx.url, "/events")+tt.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status == 405 && resp.Header.Get("Allow") != "OPTIONS, POST" {
				t.Errorf("Allow = %q", resp.Header.Get("Allow"))
			}
		})
	}
}

func TestWebhookHandshake(t *testing.T) {
	tests := []struct {
		name        string
		cfg         Config
		origin      string
		status      int
		wantOrigin  string
		wantRate    string
		requireAuth bool
	}{
		{name: "any origin echoed", origin: "sender.example.com", status: 200, wantOrigin: "sender.example.com", wantRate: "*"},
		{name: "listed origin", cfg: Config{AllowedOrigins: []string{"a.example", "sender.example.com"}, AllowedRate: 120}, origin: "sender.example.com", status: 200, wantOrigin: "sender.example.com", wantRate: "120"},
		{name: "wildcard", cfg: Config{AllowedOrigins: []string{"*"}}, origin: "x.example", status: 200, wantOrigin: "*", wantRate: "*"},
		{name: "origin not allowed", cfg: Config{AllowedOrigins: []string{"a.example"}}, origin: "evil.example", status: 403},
		{name: "plain OPTIONS", origin: "", status: 204},
		{name: "no token needed", cfg: Config{Token: "s3cret"}, origin: "sender.example.com", status: 200, wantOrigin: "sender.example.com", wantRate: "*"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFixture(t, tt.cfg, newFake())
			req, _ := http.NewRequest(http.MethodOptions, fx.url, nil)
			if tt.origin != "" {
				req.Header.Set("WebHook-Request-Origin", tt.origin)
				req.Header.Set("WebHook-Request-Rate", "60")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if got := resp.Header.Get("WebHook-Allowed-Origin"); got != tt.wantOrigin {
				t.Errorf("WebHook-Allowed-Origin = %q, want %q", got, tt.wantOrigin)
			}
			if got := resp.Header.Get("WebHook-Allowed-Rate"); got != tt.wantRate {
				t.Errorf("WebHook-Allowed-Rate = %q, want %q", got, tt.wantRate)
			}
			if !strings.Contains(resp.Header.Get("Allow"), "POST") {
				t.Errorf("Allow = %q", resp.Header.Get("Allow"))
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	t.Setenv("TURNOUT_TEST_HTTP_TOKEN", "from-env")
	tests := []struct {
		name   string
		cfg    Config
		auth   string
		status int
	}{
		{"missing", Config{Token: "s3cret"}, "", 401},
		{"wrong", Config{Token: "s3cret"}, "Bearer nope", 401},
		{"other scheme", Config{Token: "s3cret"}, "Basic czNjcmV0", 401},
		{"right", Config{Token: "s3cret"}, "Bearer s3cret", 204},
		{"scheme case-insensitive", Config{Token: "s3cret"}, "bearer s3cret", 204},
		{"from env", Config{TokenEnv: "TURNOUT_TEST_HTTP_TOKEN"}, "Bearer from-env", 204},
		{"from env wrong", Config{TokenEnv: "TURNOUT_TEST_HTTP_TOKEN"}, "Bearer s3cret", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fx := newFixture(t, tt.cfg, newFake())
			h := binaryHeaders()
			if tt.auth != "" {
				h.Set("Authorization", tt.auth)
			}
			resp, _ := fx.post(t, h, nil)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.status == 401 && len(fx.fd.events()) != 0 {
				t.Errorf("unauthorized request dispatched")
			}
		})
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		key  string
	}{
		{"listen missing", `path: /x`, "listen"},
		{"listen without port", `listen: localhost`, "listen"},
		{"path relative", "listen: :8080\npath: events", "path"},
		{"body limit too small", "listen: :8080\nmax_body_bytes: 1000", "max_body_bytes"},
		{"write timeout too short", "listen: :8080\nrequest_timeout: 30s\nwrite_timeout: 10s", "write_timeout"},
		{"cert without key", "listen: :8080\ncert_file: a.pem", "key_file"},
		{"token and token_env", "listen: :8080\ntoken: a\ntoken_env: B", "token_env"},
		{"token_env unset", "listen: :8080\ntoken_env: TURNOUT_TEST_SURELY_UNSET", "token_env"},
		{"unknown key", "listen: :8080\nlisten_addr: x", "listen_addr"},
		{"header timeout above read timeout", "listen: :8080\nread_timeout: 5s\nread_header_timeout: 6s", "read_header_timeout"},
		{"negative idle timeout", "listen: :8080\nidle_timeout: -1s", "idle_timeout"},
		{"header limit too small", "listen: :8080\nmax_header_bytes: 1024", "max_header_bytes"},
		{"negative batch limit", "listen: :8080\nmax_batch_events: -1", "max_batch_events"},
		{"negative concurrency cap", "listen: :8080\nmax_concurrent_requests: -1", "max_concurrent_requests"},
	}
	factory, err := engine.LookupInput("http")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := factory("in", strictYAML(tt.yaml), engine.Deps{Registerer: prometheus.NewRegistry()})
			if err == nil || !strings.Contains(err.Error(), tt.key) {
				t.Fatalf("error %v does not name %s", err, tt.key)
			}
		})
	}
}

func strictYAML(src string) engine.Decoder {
	return func(v any) error {
		dec := yaml.NewDecoder(strings.NewReader(src))
		dec.KnownFields(true)
		return dec.Decode(v)
	}
}

// TestRealSocket runs the input as the engine does: built by its factory, Start on a real port.
func TestRealSocket(t *testing.T) {
	factory, err := engine.LookupInput("http")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	src, err := factory("alarms", strictYAML("listen: 127.0.0.1:0\npath: /events\nrequest_timeout: 5s"), engine.Deps{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	in := src.(*Input)
	if in.Ready() {
		t.Fatal("ready before Start")
	}
	fd := newFake()
	if err := in.Start(context.Background(), fd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Close(context.Background()) })
	if !in.Ready() {
		t.Fatal("not ready after Start")
	}
	connected := testutil.Metric(t, reg, "turnout_transport_connected", map[string]string{"transport": "http", "name": "alarms"})
	if connected != 1 {
		t.Errorf("turnout_transport_connected = %v, want 1", connected)
	}

	url := "http://" + in.Addr().String() + "/events"
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"n":1}`))
	req.Header = binaryHeaders("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := testutil.Metric(t, reg, "turnout_http_requests_total", map[string]string{"name": "alarms", "code": "204"}); got != 1 {
		t.Errorf("turnout_http_requests_total{code=204} = %v, want 1", got)
	}

	t.Run("second listener on the same address fails naming it", func(t *testing.T) {
		other, err := New("dup", Config{Listen: in.Addr().String()}, engine.Deps{Registerer: reg})
		if err != nil {
			t.Fatal(err)
		}
		err = other.Start(context.Background(), fd)
		if err == nil {
			_ = other.Close(context.Background())
			t.Fatal("second Start on a used port succeeded")
		}
		if !strings.Contains(err.Error(), in.Addr().String()) {
			t.Errorf("error %q does not name the address", err)
		}
	})

	if err := in.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if in.Ready() || testutil.Metric(t, reg, "turnout_transport_connected", map[string]string{"transport": "http", "name": "alarms"}) != 0 {
		t.Error("still ready/connected after Close")
	}
	if _, err := net.DialTimeout("tcp", in.Addr().String(), time.Second); err == nil {
		t.Error("still accepting connections after Close")
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add("application/cloudevents+json", "", "", "", []byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"a":[1,2]}}`))
	f.Add("application/cloudevents-batch+json", "", "", "", []byte(`[{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"AAE="}]`))
	f.Add("application/json", "1.0", "id%201", "caf%C3%A9", []byte(`{"x":1}`))
	f.Add("text/plain", "1.0", "1", "%zz", []byte("\xff\xfe"))
	f.Add("", "0.3", "1", "", []byte(`"s"`))
	f.Add("application/cloudevents-batch+json", "", "", "", []byte(`[{"specversion":"1.0","id":"1","source":"/s","type":"t"},{"id":2},"x"]`))
	f.Fuzz(func(t *testing.T, ct, sv, id, ext string, body []byte) {
		h := http.Header{}
		for k, v := range map[string]string{"Content-Type": ct, "Ce-Specversion": sv, "Ce-Id": id, "Ce-Myext": ext} {
			if v != "" {
				h.Set(k, v)
			}
		}
		if sv != "" {
			h.Set("Ce-Source", "/s")
			h.Set("Ce-Type", "t")
		}
		parts := decodeRequest(h, body)
		mt, _, _ := mime.ParseMediaType(ct)
		if mt != event.ApplicationCloudEventsBatchJSON && len(parts) != 1 {
			t.Fatalf("%d parts from a request that is not a batch, want 1", len(parts))
		}
		var events []*event.Event
		for _, p := range parts {
			if (p.Event == nil) == (p.Err == nil) {
				t.Fatalf("part %+v: want an event or an error", p)
			}
			if p.Err == nil {
				events = append(events, p.Event)
				continue
			}
			if (p.Err.Status != 400 && p.Err.Status != 415) || p.Err.Error() == "" {
				t.Fatalf("error %#v is not a 400/415 request error", p.Err)
			}
			// Nothing is lost: the malformed message holds the body, or is a part of it.
			if p.Err.Index < 0 && !bytes.Contains(p.Raw, body) || p.Err.Index >= 0 && !bytes.Contains(body, p.Raw) {
				t.Fatalf("malformed part's Raw %q does not hold the body %q (or the element)", p.Raw, body)
			}
		}
		for _, e := range events {
			if err := e.Validate(); err != nil {
				t.Fatalf("decoded an invalid event: %v", err)
			}
			js, err := json.Marshal(e)
			if err != nil {
				t.Fatalf("decoded event cannot be written as JSON: %v", err)
			}
			var back event.Event
			if err := json.Unmarshal(js, &back); err != nil {
				t.Fatalf("decoded event written as invalid JSON %q: %v", js, err)
			}
			if e.SpecVersion() == event.CloudEventsVersionV1 && !bytes.Equal(back.Data(), e.Data()) {
				if !(ce.IsJSONMediaType(e.DataMediaType()) && !e.DataBase64) {
					t.Fatalf("data changed through JSON: %q -> %q", e.Data(), back.Data())
				}
			}
		}
	})
}

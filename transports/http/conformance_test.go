package httpin

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/transporttest"
)

// HTTP has no broker that stores events. Its at-least-once contract lives in the two ends of a
// request: the sender keeps an event until it got a 2xx, and the receiver answers 2xx only once
// it has the event. So the conformance "server" of the HTTP transports is the pair a real
// deployment has around turnout:
//
//   - a webhook sender (confSender) in front of the HTTP input: Publish puts the event in its
//     outbox and returns (the sender has it); it POSTs every outbox entry concurrently and
//     retries until it gets a 2xx, as a webhook sender does. The input's negative
//     acknowledgement is a 5xx, and "redelivery after the input restarts" is the sender's retry
//     reaching a new input on the same address. Restart is the sender crashing and starting again
//     with its outbox: requests in flight are cut, and every entry is sent again.
//   - a recording webhook endpoint (confEndpoint) behind the HTTP output: it answers the web hook
//     handshake, keeps every request it answered 204, and Fetch reads them. Restart is the
//     endpoint going away (connections closed, listener shut) and coming back on the same port
//     with what it had recorded.
//
// Both speak the CloudEvents HTTP binding with code of their own: binary mode is translated to and
// from the JSON event format header by header, so the suite checks the wire format, not
// turnout's encoder against its own decoder.

// TestConformance runs the transport conformance suite in binary and structured mode: the output
// writes the mode under test, the sender posts single events in it. Every server is private to
// its subtest (nothing is shared between tests), so every one can restart.
func TestConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Harness{
		Modes:      []transporttest.Mode{transporttest.Binary, transporttest.Structured},
		CanRestart: true,
		Server: func(t *testing.T, _ bool) transporttest.Server {
			return newConfServer(t, false)
		},
	})
}

// TestConformanceBatch runs the suite with batches: the output in batch mode (the suite's sends
// come one at a time, so its batches hold one event each; TestOutputBatchMode covers larger
// ones), the sender posting application/cloudevents-batch+json arrays. The sender sends one event
// per batch because a batch is acknowledged as a whole: an input cannot acknowledge some events of
// a request and have the others redelivered, which is what the suite checks per event. Batches
// are the JSON event format, so the mode is structured.
func TestConformanceBatch(t *testing.T) {
	transporttest.Run(t, transporttest.Harness{
		Modes:      []transporttest.Mode{transporttest.Structured},
		CanRestart: true,
		Server: func(t *testing.T, _ bool) transporttest.Server {
			return newConfServer(t, true)
		},
	})
}

// confServer is the conformance harness: a webhook sender and a recording endpoint. A
// destination is a name; the input of a destination listens on an address of its own, the same
// for every input made for it, and the output posts to the endpoint's path /<dest>.
type confServer struct {
	batch    bool
	sender   *confSender
	endpoint *confEndpoint

	mu    sync.Mutex
	n     int
	addrs map[string]string // dest -> the address its inputs listen on
}

var (
	_ transporttest.Server      = (*confServer)(nil)
	_ transporttest.WireFetcher = (*confServer)(nil)
)

func newConfServer(t *testing.T, batch bool) *confServer {
	s := &confServer{batch: batch, addrs: map[string]string{}, sender: newConfSender(), endpoint: startEndpoint(t)}
	t.Cleanup(func() {
		s.sender.stop()
		s.endpoint.stop()
		for _, r := range s.sender.refusals() {
			t.Errorf("webhook sender: the input refused a request for good: %s", r)
		}
	})
	return s
}

func (s *confServer) Dest(t *testing.T) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	dest := fmt.Sprintf("dest%d", s.n)
	s.addrs[dest] = testutil.FreeAddr(t)
	s.endpoint.open(dest)
	return dest
}

func (s *confServer) addr(dest string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addrs[dest]
}

func (s *confServer) Input(t *testing.T, dest string) engine.Source {
	in, err := New("conf", Config{Listen: s.addr(dest), Path: "/events"}, engine.Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func (s *confServer) Output(t *testing.T, dest string, mode transporttest.Mode) engine.Sink {
	c := OutputConfig{URL: s.endpoint.url + "/" + dest, Mode: string(mode), Origin: "conformance.turnout"}
	if s.batch {
		c.Mode, c.BatchSize = ModeBatch, 8
	}
	o, err := NewOutput("conf", c, engine.Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func (s *confServer) Publish(t *testing.T, dest string, mode transporttest.Mode, e *event.Event) {
	t.Helper()
	h, body := confEncode(t, mode, e)
	if s.batch {
		h, body = http.Header{"Content-Type": {event.ApplicationCloudEventsBatchJSON}}, append(append([]byte("["), body...), ']')
	}
	s.sender.send(s.inputURL(dest), e.ID(), h, body)
}

func (s *confServer) PublishRaw(t *testing.T, dest, contentType string, body []byte) {
	t.Helper()
	h := http.Header{}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	s.sender.send(s.inputURL(dest), "raw "+strconv.Quote(string(body)), h, body)
}

func (s *confServer) inputURL(dest string) string { return "http://" + s.addr(dest) + "/events" }

func (s *confServer) Fetch(t *testing.T, dest string, within time.Duration) (*event.Event, transporttest.Mode) {
	t.Helper()
	f := s.FetchWire(t, dest, within)
	return f.Event, f.Mode
}

func (s *confServer) FetchWire(t *testing.T, dest string, within time.Duration) transporttest.Fetched {
	t.Helper()
	r := s.endpoint.next(t, dest, within)
	if s.batch != r.batch {
		t.Errorf("fetch %s: the output wrote a batch: %v, want %v (Content-Type %q)", dest, r.batch, s.batch, r.header.Get("Content-Type"))
	}
	e, mode := confDecode(t, r.header, r.body)
	return transporttest.Fetched{Event: e, Mode: mode, Body: r.body}
}

// Restart crashes and restarts both ends: the endpoint closes every connection and its listener
// and listens again; the sender cuts its requests and resends its whole outbox.
func (s *confServer) Restart(t *testing.T) {
	s.endpoint.restart(t)
	s.sender.restart()
}

// confSender is a webhook sender with an outbox in memory. Every entry is posted by a goroutine
// of its own until a 2xx answer removes it. 5xx, 408, 429 and connection errors are retried
// after retryEvery, or after Retry-After, capped at maxRetryAfter as a sender that must not
// stall for long caps it; any other answer is a refusal (the event is given up and recorded).
type confSender struct {
	client *http.Client

	mu      sync.Mutex
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	outbox  map[int]*outgoing
	seq     int
	refused []string
}

// outgoing is one request in the outbox; what names it in refusals.
type outgoing struct {
	url    string
	what   string
	header http.Header
	body   []byte
}

const (
	retryEvery = 50 * time.Millisecond
	// maxRetryAfter caps Retry-After (the input sends whole seconds): the suite counts one
	// second of silence as "nothing more comes back".
	maxRetryAfter = 200 * time.Millisecond
)

func newConfSender() *confSender {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	s := &confSender{client: &http.Client{Transport: tr, Timeout: time.Minute}, outbox: map[int]*outgoing{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// send puts a request in the outbox and starts posting it; the sender has it once send returned.
func (s *confSender) send(url, what string, h http.Header, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	o := &outgoing{url: url, what: what, header: h, body: body}
	s.outbox[s.seq] = o
	s.start(s.seq, o)
}

// start posts o on a goroutine of its own; s.mu is held.
func (s *confSender) start(id int, o *outgoing) {
	ctx := s.ctx
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.post(ctx, id, o)
	}()
}

func (s *confSender) post(ctx context.Context, id int, o *outgoing) {
	for ctx.Err() == nil {
		wait := retryEvery
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.url, bytes.NewReader(o.body))
		if err != nil {
			s.refuse(id, fmt.Sprintf("%s: %v", o.what, err))
			return
		}
		req.Header = o.header.Clone()
		resp, err := s.client.Do(req)
		if err == nil {
			answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			switch c := resp.StatusCode; {
			case c >= 200 && c < 300:
				s.mu.Lock()
				delete(s.outbox, id)
				s.mu.Unlock()
				return
			case c >= 500 || c == http.StatusRequestTimeout || c == http.StatusTooManyRequests:
				if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
					wait = min(time.Duration(secs)*time.Second, maxRetryAfter)
				}
			default:
				s.refuse(id, fmt.Sprintf("%s: %d %s", o.what, c, answer))
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

func (s *confSender) refuse(id int, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.outbox, id)
	s.refused = append(s.refused, why)
}

func (s *confSender) refusals() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.refused...)
}

// restart cuts every request in flight, waits for the posting goroutines to end, and starts
// posting the whole outbox again.
func (s *confSender) restart() {
	s.stop()
	s.client.CloseIdleConnections()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for id, o := range s.outbox {
		s.start(id, o)
	}
}

func (s *confSender) stop() {
	s.mu.Lock()
	cancel := s.cancel
	s.mu.Unlock()
	cancel()
	s.wg.Wait()
}

// confEndpoint is a webhook endpoint that records what it is sent, by path, on a fixed address.
type confEndpoint struct {
	addr, url string

	mu   sync.Mutex
	srv  *http.Server
	recs map[string]chan record // dest -> requests answered 204, batches split into their events
}

// record is one event the endpoint received: the request's header and, for a batch, the
// element's JSON as the body.
type record struct {
	header http.Header
	body   []byte
	batch  bool
}

func startEndpoint(t *testing.T) *confEndpoint {
	ep := &confEndpoint{recs: map[string]chan record{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("endpoint listen: %v", err)
	}
	ep.addr = ln.Addr().String()
	ep.url = "http://" + ep.addr
	ep.serve(ln)
	return ep
}

func (ep *confEndpoint) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(ep.handle), ReadHeaderTimeout: 10 * time.Second}
	ep.mu.Lock()
	ep.srv = srv
	ep.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

func (ep *confEndpoint) open(dest string) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	ep.recs[dest] = make(chan record, 1000)
}

// handle answers the web hook handshake [CE-Webhook §4.1] and records POSTs.
func (ep *confEndpoint) handle(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodOptions {
		if o := r.Header.Get("WebHook-Request-Origin"); o != "" {
			w.Header().Set("WebHook-Allowed-Origin", o)
			w.Header().Set("WebHook-Allowed-Rate", "*")
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	ep.mu.Lock()
	ch := ep.recs[strings.TrimPrefix(r.URL.Path, "/")]
	ep.mu.Unlock()
	if r.Method != http.MethodPost || ch == nil {
		http.Error(w, "POST to a destination", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != event.ApplicationCloudEventsBatchJSON {
		ch <- record{header: r.Header, body: body}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(body, &elems); err != nil {
		http.Error(w, "batch: "+err.Error(), http.StatusBadRequest)
		return
	}
	for _, el := range elems {
		ch <- record{header: http.Header{"Content-Type": {event.ApplicationCloudEventsJSON}}, body: el, batch: true}
	}
	w.WriteHeader(http.StatusNoContent)
}

func (ep *confEndpoint) next(t *testing.T, dest string, within time.Duration) record {
	t.Helper()
	ep.mu.Lock()
	ch := ep.recs[dest]
	ep.mu.Unlock()
	select {
	case r := <-ch:
		return r
	case <-time.After(within):
		t.Fatalf("fetch %s: nothing received within %v", dest, within)
		return record{}
	}
}

// restart closes the listener and every connection, then listens on the same address again.
func (ep *confEndpoint) restart(t *testing.T) {
	ep.stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err := net.Listen("tcp", ep.addr)
		if err == nil {
			ep.serve(ln)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoint listen again on %s: %v", ep.addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (ep *confEndpoint) stop() {
	ep.mu.Lock()
	srv := ep.srv
	ep.mu.Unlock()
	_ = srv.Close()
}

// confEncode writes e in mode [CE-HTTP-3]: structured is the JSON event format; binary turns
// each member of the JSON event into a ce- header, percent-encoded (url.PathEscape escapes more
// than [CE-HTTP-3.1.3.2] requires, which a receiver must accept), datacontenttype into
// Content-Type and the data into the body.
func confEncode(t *testing.T, mode transporttest.Mode, e *event.Event) (http.Header, []byte) {
	t.Helper()
	js, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if mode == transporttest.Structured {
		return http.Header{"Content-Type": {event.ApplicationCloudEventsJSON}}, js
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(js, &members); err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	for name, raw := range members {
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			v = string(raw) // a number or boolean: its JSON text is its canonical string
		}
		switch name {
		case "data", "data_base64":
		case "datacontenttype":
			h.Set("Content-Type", v)
		default:
			h["ce-"+name] = []string{url.PathEscape(v)}
		}
	}
	return h, e.Data()
}

// confDecode reads a request: structured when its Content-Type is the JSON event format, else
// binary, translated into the JSON event format (ce- headers percent-decoded into members,
// Content-Type into datacontenttype, the body into data_base64) and read as such.
func confDecode(t *testing.T, h http.Header, body []byte) (*event.Event, transporttest.Mode) {
	t.Helper()
	e := event.New()
	if mt, _, _ := mime.ParseMediaType(h.Get("Content-Type")); mt == event.ApplicationCloudEventsJSON {
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatalf("fetch: structured body: %v: %q", err, body)
		}
		return &e, transporttest.Structured
	}
	members := map[string]string{}
	for k, vs := range h {
		name, ok := strings.CutPrefix(strings.ToLower(k), "ce-")
		if !ok {
			continue
		}
		if i := strings.IndexFunc(vs[0], func(r rune) bool { return r <= ' ' || r > '~' || r == '"' }); i >= 0 {
			t.Errorf("fetch: header %s: %q is not percent-encoded at byte %d [CE-HTTP-3.1.3.2]", k, vs[0], i)
		}
		v, err := url.PathUnescape(vs[0])
		if err != nil {
			t.Fatalf("fetch: header %s: %v", k, err)
		}
		members[name] = v
	}
	if ct := h.Get("Content-Type"); ct != "" {
		members["datacontenttype"] = ct
	}
	if len(body) > 0 {
		members["data_base64"] = base64.StdEncoding.EncodeToString(body)
	}
	js, err := json.Marshal(members)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(js, &e); err != nil {
		t.Fatalf("fetch: binary-mode request %v: %v", h, err)
	}
	return &e, transporttest.Binary
}

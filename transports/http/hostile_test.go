package httpin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/testutil"
)

// The tests of this file play slow and hostile clients against an input listening on a real
// TCP port, speaking HTTP/1.1 by hand where a well-behaved client library would not.

// startInput starts an input configured by c (Listen and Path are set) on a real port.
func startInput(t *testing.T, c Config, fd *fakeDispatcher) *Input {
	t.Helper()
	c.Listen, c.Path = "127.0.0.1:0", "/events"
	in, err := New("hostile", c, engine.Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Start(context.Background(), fd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Close(context.Background()) })
	return in
}

// answer is a response read off the wire.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// reason is the error of the answer's JSON body (the body itself when it is not JSON).
func (a answer) reason() string {
	var eb errorBody
	if json.Unmarshal(a.body, &eb) == nil && eb.Error != "" {
		return eb.Error
	}
	return string(a.body)
}

// exchange sends head (request line and headers, up to the empty line excluded) and the body
// write produces (none when nil) on a new connection, while reading the answer: the server may
// answer before the client is done sending, as it does to what it refuses.
func exchange(t *testing.T, addr, head string, write func(w io.Writer) error) answer {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() {
		if _, err := io.WriteString(conn, head+"\r\n"); err != nil || write == nil {
			return
		}
		_ = write(conn) // fails once the server closed the connection: expected
	}()
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: body}
}

// postHead is the head of a POST to /events with the given headers (each ending in \r\n).
func postHead(addr, headers string) string {
	return "POST /events HTTP/1.1\r\nHost: " + addr + "\r\n" + headers
}

// chunked writes n bytes of 'a' as chunks of 32 KiB, then the last chunk. It allocates nothing
// in proportion to n.
func chunked(size int64) func(w io.Writer) error {
	return func(w io.Writer) error {
		n := size
		chunk := bytes.Repeat([]byte("a"), 32<<10)
		bw := bufio.NewWriter(w)
		for n > 0 {
			c := chunk[:min(int64(len(chunk)), n)]
			fmt.Fprintf(bw, "%x\r\n", len(c))
			bw.Write(c)
			bw.WriteString("\r\n")
			n -= int64(len(c))
		}
		bw.WriteString("0\r\n\r\n")
		return bw.Flush()
	}
}

// batchOf is a batch of n minimal valid events.
func batchOf(n int) []byte {
	var b bytes.Buffer
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"specversion":"1.0","id":"%d","source":"/s","type":"t"}`, i)
	}
	b.WriteByte(']')
	return b.Bytes()
}

func withBody(body []byte) func(w io.Writer) error {
	return func(w io.Writer) error { _, err := w.Write(body); return err }
}

// TestSlowloris: a client that dribbles its headers a byte at a time is disconnected once
// read_header_timeout passed, long before read_timeout; nothing is dispatched. A client that
// sends its headers and dribbles its body gets 408 once read_timeout passed.
func TestSlowloris(t *testing.T) {
	const headerTimeout, readTimeout = 300 * time.Millisecond, 8 * time.Second
	fd := newFake()
	in := startInput(t, Config{ReadHeaderTimeout: headerTimeout, ReadTimeout: readTimeout}, fd)
	addr := in.Addr().String()

	t.Run("headers", func(t *testing.T) {
		took := testutil.Slowloris(t, addr, "/events", readTimeout)
		if took < headerTimeout {
			t.Errorf("connection closed after %v, before read_header_timeout %v", took, headerTimeout)
		}
		t.Logf("closed after %v (read_header_timeout %v, read_timeout %v)", took, headerTimeout, readTimeout)
	})

	t.Run("body", func(t *testing.T) {
		if testing.Short() {
			t.Skip("waits for read_timeout")
		}
		a := exchange(t, addr, postHead(addr, "Ce-Specversion: 1.0\r\nCe-Id: 1\r\nCe-Source: /s\r\nCe-Type: t\r\nContent-Length: 100000\r\n"), func(w io.Writer) error {
			for {
				time.Sleep(50 * time.Millisecond)
				if _, err := w.Write([]byte("a")); err != nil {
					return err
				}
			}
		})
		if a.status != http.StatusRequestTimeout || !strings.Contains(a.reason(), "read_timeout") {
			t.Errorf("dribbled body: %d %q, want 408 naming read_timeout", a.status, a.reason())
		}
	})
	if n := len(fd.events()); n != 0 {
		t.Errorf("%d events dispatched, want 0", n)
	}
}

// TestOversizedHeaders: header lines over max_header_bytes get 431; a binary-mode event whose
// attributes fill most of the default limit is taken.
func TestOversizedHeaders(t *testing.T) {
	fd := newFake()
	in := startInput(t, Config{}, fd)
	addr := in.Addr().String()
	event := "Ce-Specversion: 1.0\r\nCe-Id: 1\r\nCe-Source: /s\r\nCe-Type: t\r\nContent-Length: 0\r\n"

	a := exchange(t, addr, postHead(addr, event+"Ce-Notes: "+strings.Repeat("n", 100<<10)+"\r\n"), nil)
	if a.status != http.StatusNoContent {
		t.Fatalf("event with 100 KiB of attributes: %d %q, want 204", a.status, a.reason())
	}
	a = exchange(t, addr, postHead(addr, event+"Ce-Notes: "+strings.Repeat("n", 200<<10)+"\r\n"), nil)
	if a.status != http.StatusRequestHeaderFieldsTooLarge || !strings.Contains(a.reason(), "Header Fields Too Large") {
		t.Errorf("200 KiB of headers (max_header_bytes %d): %d %q, want 431", DefaultMaxHeaderBytes, a.status, a.reason())
	}
	a = exchange(t, addr, postHead(addr, strings.Repeat("X-Many: h\r\n", 20000)+event), nil)
	if a.status != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("20000 header lines: %d %q, want 431", a.status, a.reason())
	}
	if n := len(fd.events()); n != 1 {
		t.Errorf("%d events dispatched, want 1", n)
	}
}

// TestHugeBatch: a batch of 100,000 valid events within max_body_bytes is refused with 413
// naming max_batch_events before any event is decoded: nothing is dispatched, and the request
// allocates about its body's size, not the events'. A batch of max_batch_events is taken.
func TestHugeBatch(t *testing.T) {
	const maxBody = 8 << 20
	fd := newFake()
	in := startInput(t, Config{MaxBodyBytes: maxBody, MaxBatchEvents: 500}, fd)
	addr := in.Addr().String()
	huge := batchOf(100_000)
	if len(huge) > maxBody {
		t.Fatalf("test batch is %d bytes, over max_body_bytes", len(huge))
	}
	head := postHead(addr, fmt.Sprintf("Content-Type: application/cloudevents-batch+json\r\nContent-Length: %d\r\n", len(huge)))

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	a := exchange(t, addr, head, withBody(huge))
	runtime.ReadMemStats(&after)
	if a.status != http.StatusRequestEntityTooLarge || !strings.Contains(a.reason(), "max_batch_events 500") {
		t.Fatalf("100,000-event batch: %d %q, want 413 naming max_batch_events", a.status, a.reason())
	}
	if n := len(fd.events()); n != 0 {
		t.Fatalf("%d events dispatched, want 0", n)
	}
	// Decoding the events would allocate over 100 MiB; reading the body (of a known length) its size.
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("100,000-event batch of %d bytes: %d bytes allocated", len(huge), alloc)
	if limit := uint64(2 * len(huge)); alloc > limit {
		t.Errorf("refusing the batch allocated %d bytes, over twice the body (%d)", alloc, limit)
	}

	ok := batchOf(500)
	a = exchange(t, addr, postHead(addr, fmt.Sprintf("Content-Type: application/cloudevents-batch+json\r\nContent-Length: %d\r\n", len(ok))), withBody(ok))
	if a.status != http.StatusNoContent || len(fd.events()) != 500 {
		t.Errorf("batch of max_batch_events: %d %q, %d dispatched; want 204, 500", a.status, a.reason(), len(fd.events()))
	}
}

// TestDeepNesting: JSON nested 100,000 levels deep, as a structured event's data, as a batch
// and inside a batch element, gets a clear 400 from a route without a dead-letter output, and
// the input goes on serving.
func TestDeepNesting(t *testing.T) {
	rt := newRoutedConfig(t, Config{}, nil)
	deep := strings.Repeat("[", 100_000)
	ev := `{"specversion":"1.0","id":"1","source":"/s","type":"t","data":`
	for _, tt := range []struct {
		name, contentType, body string
		index                   int
	}{
		{"structured data", "application/cloudevents+json", ev + deep + strings.Repeat("]", 100_000) + "}", -1},
		{"structured unterminated", "application/cloudevents+json", ev + deep, -1},
		{"batch", "application/cloudevents-batch+json", deep, -1},
		{"batch element", "application/cloudevents-batch+json", "[" + ev + deep + strings.Repeat("]", 100_000) + "}]", -1}, // the array as a whole is refused
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, eb := rt.post(t, hdr("Content-Type", tt.contentType), []byte(tt.body))
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(eb.Error, "depth") {
				t.Fatalf("%d %q, want 400 naming the depth", resp.StatusCode, eb.Error)
			}
			if got := -1; eb.Index != nil && *eb.Index != tt.index || eb.Index == nil && tt.index != got {
				t.Errorf("index %v, want %d", eb.Index, tt.index)
			}
		})
	}
	resp, eb := rt.post(t, hdr("Content-Type", "application/cloudevents+json"), []byte(ev+`{"ok":true}}`))
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("a valid event after the deep ones: %d %q, want 204", resp.StatusCode, eb.Error)
	}
}

// TestConcurrencyCap: with max_concurrent_requests N and N requests waiting for their events to
// settle, the next POST gets 429 with Retry-After before its body is read and nothing of it is
// dispatched; once one of the N is answered, POSTs are taken again.
func TestConcurrencyCap(t *testing.T) {
	const n = 3
	fd := newFake()
	fd.hold = true
	in := startInput(t, Config{MaxConcurrentRequests: n, RetryAfter: 2 * time.Second}, fd)
	url := "http://" + in.Addr().String() + "/events"
	post := func(id string) (*http.Response, errorBody) {
		return (&fixture{url: url}).post(t, binaryHeaders("Ce-Id", id), nil)
	}
	held := make(chan int, n)
	for i := range n {
		go func() {
			resp, _ := post(fmt.Sprint("held", i))
			held <- resp.StatusCode
		}()
		<-fd.dispatched
	}
	resp, eb := post("over")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "2" || !strings.Contains(eb.Error, "max_concurrent_requests") {
		t.Fatalf("request %d with %d held: %d Retry-After %q %q, want 429 with Retry-After 2 naming max_concurrent_requests",
			n+1, n, resp.StatusCode, resp.Header.Get("Retry-After"), eb.Error)
	}
	if got := len(fd.events()); got != n {
		t.Errorf("%d events dispatched, want the %d held", got, n)
	}
	fd.settle(0, nil)
	if code := <-held; code != http.StatusNoContent {
		t.Fatalf("held request answered %d, want 204", code)
	}
	// The slot is given back when the handler returns, just after the answer: retry briefly.
	deadline := time.Now().Add(5 * time.Second)
	for {
		done := make(chan int, 1)
		go func() { resp, _ := post("after"); done <- resp.StatusCode }()
		select {
		case <-fd.dispatched:
			fd.settle(n, nil)
			if code := <-done; code != http.StatusNoContent {
				t.Fatalf("request after a slot freed: %d, want 204", code)
			}
			for i := 1; i < n; i++ {
				fd.settle(i, nil)
				<-held
			}
			return
		case code := <-done:
			if code != http.StatusTooManyRequests || time.Now().After(deadline) {
				t.Fatalf("request after a slot freed: %d, want 204", code)
			}
		}
	}
}

// TestMemoryBoundedByLimits sends many requests far over the limits (bodies of 64 times
// max_body_bytes, chunked and with Content-Length, and batches over max_batch_events) and checks
// that what the input allocates for them is bounded by max_body_bytes, not by what was sent.
func TestMemoryBoundedByLimits(t *testing.T) {
	const maxBody, sent, rounds = 64 << 10, 4 << 20, 16
	fd := newFake()
	in := startInput(t, Config{MaxBodyBytes: maxBody, MaxBatchEvents: 100}, fd)
	addr := in.Addr().String()
	batch := batchOf(1000)[:maxBody-100] // over max_batch_events, within max_body_bytes (cut short)
	type attempt struct {
		name   string
		head   string
		write  func(w io.Writer) error
		status int
	}
	attempts := []attempt{
		{"chunked body", postHead(addr, "Ce-Specversion: 1.0\r\nCe-Id: 1\r\nCe-Source: /s\r\nCe-Type: t\r\nTransfer-Encoding: chunked\r\n"), chunked(sent), http.StatusRequestEntityTooLarge},
		{"declared body", postHead(addr, fmt.Sprintf("Ce-Specversion: 1.0\r\nCe-Id: 1\r\nCe-Source: /s\r\nCe-Type: t\r\nContent-Length: %d\r\n", sent)), withBody(bytes.Repeat([]byte("a"), 256<<10)), http.StatusRequestEntityTooLarge},
		{"chunked batch", postHead(addr, "Content-Type: application/cloudevents-batch+json\r\nTransfer-Encoding: chunked\r\n"), chunked(sent), http.StatusRequestEntityTooLarge},
		{"batch over max_batch_events", postHead(addr, fmt.Sprintf("Content-Type: application/cloudevents-batch+json\r\nContent-Length: %d\r\n", len(batch))), withBody(batch), http.StatusRequestEntityTooLarge},
	}
	exchange(t, addr, attempts[0].head, attempts[0].write) // warm up pools
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range rounds {
		for _, at := range attempts {
			if a := exchange(t, addr, at.head, at.write); a.status != at.status {
				t.Fatalf("%s: %d %q, want %d", at.name, a.status, a.reason(), at.status)
			}
		}
	}
	runtime.ReadMemStats(&after)
	requests := uint64(rounds * len(attempts))
	perRequest := (after.TotalAlloc - before.TotalAlloc) / requests
	// A request may hold its body (max_body_bytes), the buffers that grew to it and its
	// connection's buffers: a few times max_body_bytes, against 64 times that sent.
	limit := uint64(6 * maxBody)
	t.Logf("%d requests of up to %d bytes each (max_body_bytes %d): %d bytes allocated per request (limit %d)", requests, sent, maxBody, perRequest, limit)
	if perRequest > limit {
		t.Errorf("%d bytes allocated per refused request, over %d (6 x max_body_bytes)", perRequest, limit)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	// Connections closing in the background may still hold their buffers: allow 16 of them.
	grown := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("heap in use grew by %d bytes", grown)
	if grown > 16*maxBody {
		t.Errorf("heap in use grew by %d bytes after %d refused requests, over 16 x max_body_bytes", grown, requests)
	}
	if n := len(fd.events()); n != 0 {
		t.Errorf("%d events dispatched, want 0", n)
	}
}

// TestCountBatch: countBatch counts the elements of a JSON array as json.Unmarshal does,
// whatever the elements hold, and stops once past the limit.
func TestCountBatch(t *testing.T) {
	for _, body := range []string{
		`[]`, ` [ ] `, `[{}]`, `[{},{}]`, "[\n {\"a\":[1,2,{\"b\":\",]\"}]} ,\t\"x\\\",\" , [[],[]] , 3 ]",
		`[null,true,false,1.5e3,"",{}]`, `["\\\\",","]`,
	} {
		var want []json.RawMessage
		if err := json.Unmarshal([]byte(body), &want); err != nil {
			t.Fatalf("test body %s: %v", body, err)
		}
		if n, over := countBatch([]byte(body), 100); n != len(want) || over {
			t.Errorf("countBatch(%s) = %d, %v; want %d, false", body, n, over, len(want))
		}
		if len(want) > 0 {
			if n, over := countBatch([]byte(body), len(want)-1); n != len(want) || !over {
				t.Errorf("countBatch(%s, limit %d) = %d, %v; want %d, true", body, len(want)-1, n, over, len(want))
			}
		}
	}
	for _, body := range []string{``, `{}`, `null`, `"[1,2]"`} {
		if n, over := countBatch([]byte(body), 0); n != 0 || over {
			t.Errorf("countBatch(%s) = %d, %v; want 0, false (not an array)", body, n, over)
		}
	}
}

func FuzzCountBatch(f *testing.F) {
	for _, s := range []string{`[]`, `[{"a":"],["},[1,[2]],"\""]`, `[1,2,3]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var raw []json.RawMessage
		if json.Unmarshal(body, &raw) != nil {
			countBatch(body, 10) // must not panic
			return
		}
		if n, _ := countBatch(body, len(raw)); n != len(raw) {
			t.Errorf("countBatch(%q) = %d, json.Unmarshal counts %d", body, n, len(raw))
		}
	})
}

// TestNameInvalidUTF8: the member named is the top-level one holding the first invalid byte,
// whether in its value, nested deeper, or outside any string.
func TestNameInvalidUTF8(t *testing.T) {
	for _, tt := range []struct{ raw, attr, reason string }{
		{"{\"id\":\"1\",\"subject\":\"a\xffb\"}", "subject", "byte 0xff at offset 22"},
		{"{\"data\":{\"k\":[\"ok\",\"\xc3\"]},\"id\":\"\xff\"}", "data", "byte 0xc3"},
		{"{\"a\\\"b\":\"x\",\"ward\":\"\xe2\x82\"}", "ward", "offset 20"},
		{"{\"id\":\"1\",\"na\xffme\":\"x\"}", "", `name starting "na"`},
	} {
		parts := []part{{Err: badRequest(-1, "", "invalid event: not valid UTF-8"), Raw: []byte(tt.raw)}}
		nameInvalidUTF8(parts)
		if e := parts[0].Err; e.Attribute != tt.attr || !strings.Contains(e.Reason, tt.reason) {
			t.Errorf("%q: attribute %q reason %q; want %q and %q", tt.raw, e.Attribute, e.Reason, tt.attr, tt.reason)
		}
	}
}

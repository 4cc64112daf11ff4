//go:build otel

package main

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/turnout-router/turnout/internal/ce"
	"github.com/turnout-router/turnout/internal/testutil"
)

// otlpReceiver is an OTLP/HTTP collector: it decodes every export and keeps the spans.
type otlpReceiver struct {
	mu      sync.Mutex
	spans   []*tracepb.Span
	service []string // service.name of each resource seen
	headers []string // the Authorization header of each export
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "want POST /v1/traces with protobuf", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.headers = append(o.headers, r.Header.Get("Authorization"))
	for _, rs := range req.GetResourceSpans() {
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				o.service = append(o.service, a.GetValue().GetStringValue())
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			o.spans = append(o.spans, ss.GetSpans()...)
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

func attr(s *tracepb.Span, key string) string {
	for _, a := range s.GetAttributes() {
		if a.GetKey() == key {
			return a.GetValue().GetStringValue()
		}
	}
	return ""
}

// TestTracingOTLP runs turnout (built with -tags otel) with tracing on: an event posted with a
// traceparent and tracestate goes through the stock attrroute rule to a file output. The
// collector must receive turnout's spans for it in the event's trace (receive a child of the
// traceparent's span; rule and deliver children of receive), and the delivered event must carry
// traceparent and tracestate unchanged.
func TestTracingOTLP(t *testing.T) {
	const (
		traceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
		parentSpan  = "00f067aa0ba902b7"
		traceparent = "00-" + traceID + "-" + parentSpan + "-01"
		tracestate  = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
	)
	recv := &otlpReceiver{}
	collector := httptest.NewServer(recv)
	defer collector.Close()

	dir := t.TempDir()
	writeRule(t, dir, "attrroute")
	httpAddr, adminAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	out := filepath.Join(dir, "out.jsonl")
	path := writeConfig(t, dir, fmt.Sprintf(`
data_dir: "%s"
admin: { listen: "%s" }
tracing:
  otlp_endpoint: "%s"
  headers: { Authorization: "Bearer collector-secret" }
  service_name: care-router
inputs:
  webhook: { type: http, listen: "%s" }
outputs:
  alarms: { type: file, path: "%s" }
routes:
  care:
    inputs: [webhook]
    outputs: [alarms]
    rule:
      file: attrroute.wasm
      config: { filters: [{ attribute: type, prefix: care.alarm., outputs: [alarms] }], default: [alarms] }
`, filepath.Join(dir, "state"), adminAddr, collector.URL, httpAddr, out))

	r := startRun(t, path, adminAddr)
	if code := post(t, "http://"+httpAddr+"/", `{"level":"high"}`, map[string]string{"ce-specversion": "1.0",
		"ce-id": "alarm-1", "ce-source": "/home/42", "ce-type": "care.alarm.fall", "ce-traceparent": traceparent,
		"ce-tracestate": tracestate, "Content-Type": "application/json"}); code != http.StatusNoContent {
		t.Fatalf("POST = %d, want 204", code)
	}
	// Stopping flushes the exporter: every span is at the collector when turnout has exited.
	if code := r.stop(t); code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, r.stderr.String())
	}

	line, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := ce.DecodeStructured(bytes.TrimSpace(line))
	if err != nil {
		t.Fatalf("output %q: %v", line, err)
	}
	if got := ce.AttrString(ev, "traceparent"); got != traceparent {
		t.Errorf("delivered traceparent = %q, want %q unchanged", got, traceparent)
	}
	if got := ce.AttrString(ev, "tracestate"); got != tracestate {
		t.Errorf("delivered tracestate = %q, want %q unchanged", got, tracestate)
	}

	recv.mu.Lock()
	defer recv.mu.Unlock()
	byName := map[string]*tracepb.Span{}
	for _, s := range recv.spans {
		if byName[s.GetName()] != nil {
			t.Errorf("two spans named %q", s.GetName())
		}
		byName[s.GetName()] = s
		if got := hex.EncodeToString(s.GetTraceId()); got != traceID {
			t.Errorf("span %q in trace %s, want the event's trace %s", s.GetName(), got, traceID)
		}
	}
	receive, rule, deliver := byName["turnout receive"], byName["turnout rule"], byName["turnout deliver"]
	if receive == nil || rule == nil || deliver == nil || len(recv.spans) != 3 {
		names := make([]string, 0, len(recv.spans))
		for _, s := range recv.spans {
			names = append(names, s.GetName())
		}
		t.Fatalf("collector got spans %q, want turnout receive, rule and deliver", names)
	}
	if got := hex.EncodeToString(receive.GetParentSpanId()); got != parentSpan {
		t.Errorf("receive span's parent = %s, want the traceparent's span %s", got, parentSpan)
	}
	if receive.GetTraceState() != tracestate {
		t.Errorf("receive span's trace state = %q, want %q", receive.GetTraceState(), tracestate)
	}
	for _, s := range []*tracepb.Span{rule, deliver} {
		if !bytes.Equal(s.GetParentSpanId(), receive.GetSpanId()) {
			t.Errorf("%s span's parent is not the receive span", s.GetName())
		}
	}
	if receive.GetKind() != tracepb.Span_SPAN_KIND_CONSUMER || deliver.GetKind() != tracepb.Span_SPAN_KIND_PRODUCER {
		t.Errorf("kinds: receive %v, deliver %v; want consumer and producer", receive.GetKind(), deliver.GetKind())
	}
	if attr(receive, "cloudevents.event_id") != "alarm-1" || attr(receive, "turnout.route") != "care" ||
		attr(receive, "turnout.input") != "webhook" || attr(deliver, "turnout.output") != "alarms" {
		t.Errorf("attributes: receive %v, deliver %v", receive.GetAttributes(), deliver.GetAttributes())
	}
	// The receive span ends at settlement, after the delivery it waited for.
	if receive.GetEndTimeUnixNano() < deliver.GetEndTimeUnixNano() {
		t.Error("the receive span ended before the deliver span: it must last until the settlement")
	}
	for _, s := range recv.service {
		if s != "care-router" {
			t.Errorf("service.name = %q, want care-router", s)
		}
	}
	for _, h := range recv.headers {
		if h != "Bearer collector-secret" {
			t.Errorf("export Authorization header = %q, want the configured one", h)
		}
	}
	if strings.Contains(r.stderr.String(), "collector-secret") {
		t.Errorf("the log shows the collector's header value:\n%s", r.stderr.String())
	}
}

// TestTracingCollectorDown runs turnout with tracing toward a collector that is not there:
// events are delivered all the same, and stopping does not hang.
func TestTracingCollectorDown(t *testing.T) {
	dir := t.TempDir()
	httpAddr, adminAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	out := filepath.Join(dir, "out.jsonl")
	path := writeConfig(t, dir, fmt.Sprintf(`
data_dir: "%s"
admin: { listen: "%s" }
tracing: { otlp_endpoint: "http://%s", timeout: 1s }
inputs:
  webhook: { type: http, listen: "%s" }
outputs:
  alarms: { type: file, path: "%s" }
routes:
  care: { inputs: [webhook], outputs: [alarms] }
`, filepath.Join(dir, "state"), adminAddr, testutil.FreeAddr(t), httpAddr, out))
	r := startRun(t, path, adminAddr)
	for i := range 20 {
		if code := postEvent(t, "http://"+httpAddr+"/", fmt.Sprintf("e%d", i), "care.ping"); code != http.StatusNoContent {
			t.Fatalf("POST e%d = %d, want 204 with the collector down", i, code)
		}
	}
	if code := r.stop(t); code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, r.stderr.String())
	}
	b, _ := os.ReadFile(out)
	if n := bytes.Count(b, []byte("\n")); n != 20 {
		t.Errorf("%d events delivered, want 20", n)
	}
}

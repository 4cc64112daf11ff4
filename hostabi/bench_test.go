package hostabi

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/rulebuild"
)

// benchConfig routes on type prefix, an extension and the subject suffix; the bench event
// matches the second filter, so the first one is evaluated and misses.
const benchConfig = `{"filters":[
	{"attribute":"type","prefix":"care.alarm.","outputs":["urgent"]},
	{"attribute":"region","exact":"north","outputs":["north"]},
	{"attribute":"subject","suffix":".low","outputs":["maintenance"]}],
	"default":["archive"]}`

func benchEvent() *event.Event {
	e := event.New()
	e.SetID("7f1c2a9e-5b1d-4c55-9d3e-2b8f0e4d6a11")
	e.SetSource("/homes/12/hub")
	e.SetType("care.sensor.door")
	e.SetSubject("front")
	e.SetTime(time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC))
	e.SetExtension("region", "north")
	_ = e.SetData("application/json", []byte(`{"door":"open","home":12,"battery":87,"signal":-61,"ts":"2026-11-24T10:00:00Z","fw":"2.4.1","seq":18331,"note":"pad"}`))
	return &e
}

// BenchmarkRule is the rule call path for every SDK's build of the stock rule attrroute: one
// call incl. encoding the event and decoding the decision, without and with the CPU guard. It
// reports the module's size and an instance's memory after the calls, so `make bench` prints
// the table of docs/benchmarks.md ("Rules per SDK").
func BenchmarkRule(b *testing.B) {
	for _, sdk := range rulebuild.SDKs() {
		for _, bc := range []struct {
			name    string
			timeout time.Duration
		}{{"no-guard", 0}, {"cpu-guard", time.Second}} {
			b.Run(sdk.Name+"/attrroute/"+bc.name, func(b *testing.B) {
				wasm := sdkBuild(b, sdk, "attrroute")
				h := newTestHost(b)
				r := h.load(b, wasm, RuleOptions{Name: "bench", Config: []byte(benchConfig), Timeout: bc.timeout, PoolSize: 1})
				e := benchEvent()
				ctx := context.Background()
				b.ReportAllocs()
				for b.Loop() {
					d, err := r.Decide(ctx, e)
					if err != nil || len(d.Outputs) != 1 || d.Outputs[0] != "north" {
						b.Fatalf("%+v %v", d, err)
					}
				}
				b.ReportMetric(float64(len(wasm))/1024, "module-KiB")
				r.mu.Lock()
				for inst := range r.live {
					b.ReportMetric(float64(inst.mem.Size())/1024, "memory-KiB")
				}
				r.mu.Unlock()
			})
		}
	}
}

// nativeFilter is the attrroute logic written directly against *event.Event, for comparison.
type nativeFilter struct {
	attr, kind, value string
	outputs           []string
}

func nativeDecide(fs []nativeFilter, fallback []string, e *event.Event) engine.Decision {
	for _, f := range fs {
		var v string
		var ok bool
		switch f.attr {
		case "type":
			v, ok = e.Type(), true
		case "subject":
			v = e.Subject()
			ok = v != ""
		default:
			var x any
			x, ok = e.Context.(*event.EventContextV1).Extensions[f.attr]
			v, _ = x.(string)
		}
		if !ok {
			continue
		}
		if (f.kind == "exact" && v == f.value) || (f.kind == "prefix" && strings.HasPrefix(v, f.value)) ||
			(f.kind == "suffix" && strings.HasSuffix(v, f.value)) {
			return engine.Decision{Action: engine.ActionRoute, Outputs: f.outputs}
		}
	}
	return engine.Decision{Action: engine.ActionRoute, Outputs: fallback}
}

func BenchmarkNativeAttrRoute(b *testing.B) {
	fs := []nativeFilter{
		{"type", "prefix", "care.alarm.", []string{"urgent"}},
		{"region", "exact", "north", []string{"north"}},
		{"subject", "suffix", ".low", []string{"maintenance"}},
	}
	fallback := []string{"archive"}
	e := benchEvent()
	b.ReportAllocs()
	for b.Loop() {
		if d := nativeDecide(fs, fallback, e); d.Outputs[0] != "north" {
			b.Fatal(d)
		}
	}
}

// BenchmarkHostFloor is the host's fixed cost of a rule call: a hand-written rule whose
// turnout_decide returns a drop decision without reading the event, so what is measured is
// encoding the event, entering and leaving the guest, decoding the decision and the call's
// bookkeeping (pool, guard, metrics).
func BenchmarkHostFloor(b *testing.B) {
	for _, bc := range []struct {
		name    string
		timeout time.Duration
	}{{"no-guard", 0}, {"cpu-guard", time.Second}} {
		b.Run(bc.name, func(b *testing.B) {
			h := newTestHost(b)
			r := h.load(b, tinyRule(1, nil).bytes(), RuleOptions{Name: "floor", Timeout: bc.timeout, PoolSize: 1})
			e := benchEvent()
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if d, err := r.Decide(ctx, e); err != nil || d.Action != engine.ActionDrop {
					b.Fatalf("%+v %v", d, err)
				}
			}
		})
	}
}

// BenchmarkEncodeEvent is the host's encoding of the bench event into the ABI's event format.
func BenchmarkEncodeEvent(b *testing.B) {
	var enc encoder
	e := benchEvent()
	b.ReportAllocs()
	for b.Loop() {
		enc.encode(e)
	}
}

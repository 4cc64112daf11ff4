package hostabi

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current decisions")

type goldenEvent struct {
	name    string
	typ     string
	source  string
	subject string
	ext     map[string]any
}

func (g goldenEvent) event() *event.Event {
	e := event.New()
	e.SetID("golden-" + g.name)
	e.SetSource(g.source)
	e.SetType(g.typ)
	if g.subject != "" {
		e.SetSubject(g.subject)
	}
	for k, v := range g.ext {
		e.SetExtension(k, v)
	}
	return &e
}

// goldenEvents and goldenConfigs are the events and rule configurations of the golden files.
var goldenEvents = []goldenEvent{
	{name: "fall-alarm", typ: "care.alarm.fall", source: "/homes/12/pendant", ext: map[string]any{"region": "north", "priority": int32(1)}},
	{name: "heartbeat", typ: "care.heartbeat", source: "/homes/12/hub", ext: map[string]any{"region": "south"}},
	{name: "battery", typ: "care.device.battery", source: "urn:device:pendant-7", subject: "battery.low"},
	{name: "door", typ: "care.sensor.door", source: "https://gw.example/homes/3", ext: map[string]any{"region": "north", "test": true}},
	{name: "unrelated", typ: "com.other.thing", source: "/x"},
}

var goldenConfigs = []struct {
	rule, name, config string
}{
	{"attrroute", "first-match", `{"filters":[
		{"attribute":"type","prefix":"care.alarm.","outputs":["urgent"]},
		{"attribute":"region","exact":"north","outputs":["north"]},
		{"attribute":"subject","suffix":".low","outputs":["maintenance"]}],
		"default":["archive"]}`},
	{"attrroute", "all-matches", `{"match":"all","filters":[
		{"attribute":"type","prefix":"care.alarm.","outputs":["urgent","archive"]},
		{"attribute":"region","exact":"north","outputs":["north","archive"]},
		{"attribute":"source","prefix":"https://","outputs":["gateway"]},
		{"attribute":"test","exact":"true","outputs":["test"]}]}`},
	{"attrroute", "integer-extension-exact", `{"filters":[{"attribute":"priority","exact":"1","outputs":["urgent"]}],"default":[]}`},
	{"passthrough", "two-outputs", `{"outputs":["primary","audit"]}`},
}

// goldenDecisions runs each rule of wasms (rule name -> module) over the golden events with each
// of its golden configurations and returns the decisions, per rule, in the golden files' form.
func goldenDecisions(t *testing.T, h *testHost, wasms map[string][]byte) map[string]string {
	t.Helper()
	got := map[string]*strings.Builder{}
	for _, c := range goldenConfigs {
		wasm, ok := wasms[c.rule]
		if !ok {
			continue
		}
		r := h.load(t, wasm, RuleOptions{Name: c.rule, Config: []byte(c.config)})
		b := got[c.rule]
		if b == nil {
			b = &strings.Builder{}
			got[c.rule] = b
		}
		fmt.Fprintf(b, "## %s\n", c.name)
		for _, ev := range goldenEvents {
			d, err := r.Decide(context.Background(), ev.event())
			if err != nil {
				fmt.Fprintf(b, "%-10s error %v\n", ev.name, err)
				continue
			}
			fmt.Fprintf(b, "%-10s %s", ev.name, d.Action)
			if len(d.Outputs) > 0 {
				fmt.Fprintf(b, " %s", strings.Join(d.Outputs, ","))
			}
			if d.Reason != "" {
				fmt.Fprintf(b, " reason=%q", d.Reason)
			}
			if d.Event != nil {
				b.WriteString(" (event changed)")
			}
			b.WriteString("\n")
		}
	}
	out := map[string]string{}
	for rule, b := range got {
		out[rule] = b.String()
	}
	return out
}

// TestGoldenDecisions runs the stock rules, built to Wasm and loaded by the host, over a fixed
// set of events and compares every decision with testdata/<rule>.golden. (TestConformance runs
// the other SDKs' builds of attrroute against the same file.)
func TestGoldenDecisions(t *testing.T) {
	h := newTestHost(t)
	got := goldenDecisions(t, h, map[string][]byte{
		"attrroute":   buildRule(t, "filters/rules/attrroute"),
		"passthrough": buildRule(t, "filters/rules/passthrough"),
	})
	rules := make([]string, 0, len(got))
	for r := range got {
		rules = append(rules, r)
	}
	sort.Strings(rules)
	for _, rule := range rules {
		path := filepath.Join("testdata", rule+".golden")
		if *update {
			if err := os.WriteFile(path, []byte(got[rule]), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -run TestGoldenDecisions -update to create it)", err)
		}
		if got[rule] != string(want) {
			t.Errorf("%s decisions differ from %s:\n--- got\n%s--- want\n%s", rule, path, got[rule], want)
		}
	}
}

package hostabi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/ce"
	"github.com/turnout-router/turnout/internal/rulebuild"
	"github.com/turnout-router/turnout/internal/testutil"
)

// sdkBuild builds rule with sdk, or ends the test when the SDK's compiler is missing (a failure
// in CI).
func sdkBuild(t testing.TB, sdk rulebuild.SDK, rule string) []byte {
	t.Helper()
	wasm, err := sdk.Build(rule)
	if errors.Is(err, rulebuild.ErrToolchain) {
		testutil.Unavailable(t, "run scripts/toolchains.sh (make toolchains)", "%s SDK: %v", sdk.Name, err)
	}
	if err != nil {
		t.Fatalf("%s SDK: build %s: %v", sdk.Name, rule, err)
	}
	return wasm
}

// conformEvent is one event of the conformance suite.
type conformEvent struct {
	name string
	make func() *event.Event
}

func conformBase(id, typ string) *event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource("/conform/source")
	e.SetType(typ)
	return &e
}

// conformEvents covers every decision and mutation of the conformance rule, and the edge cases
// of the encoding: no data, empty data, 1 MiB of data, every attribute set, extensions of every
// CloudEvents type (in their canonical string form), unicode.
func conformEvents() []conformEvent {
	full := func(id, typ string) *event.Event {
		e := conformBase(id, typ)
		e.SetSubject("Gerät ✓ 日本")
		e.SetTime(time.Date(2026, 11, 30, 4, 5, 6, 789000000, time.UTC))
		e.SetDataSchema("https://schemas.example.org/alarm")
		e.SetExtension("str", "grüße, \"quoted\"\nline")
		e.SetExtension("num", int32(-42))
		e.SetExtension("flag", true)
		e.SetExtension("blob", []byte{0, 0xff, 7})
		e.SetExtension("seenat", time.Date(2026, 1, 2, 3, 4, 5, 6000000, time.UTC))
		u, _ := url.Parse("https://example.org/a?b=c")
		e.SetExtension("link", types.URI{URL: *u})
		e.SetExtension("x", "removed by mutate")
		_ = e.SetData(event.ApplicationJSON, []byte(`{"level":"high","n":[1,2.5,null]}`))
		return e
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	return []conformEvent{
		{"drop", func() *event.Event { return conformBase("e-drop", "conform.drop") }},
		{"route", func() *event.Event { return conformBase("e-route", "conform.route") }},
		{"fanout", func() *event.Event { return conformBase("e-fanout", "conform.fanout") }},
		{"fail-unicode", func() *event.Event { return full("e-fail", "conform.fail") }},
		{"fail-no-subject", func() *event.Event { return conformBase("e-fail2", "conform.fail") }},
		{"echo-no-data", func() *event.Event { return conformBase("e-echo1", "conform.echo") }},
		{"echo-empty-data", func() *event.Event {
			e := conformBase("e-echo2", "conform.echo")
			_ = e.SetData("application/octet-stream", []byte{})
			return e
		}},
		{"echo-1mib", func() *event.Event {
			e := full("e-echo3", "conform.echo")
			_ = e.SetData("application/octet-stream", big)
			return e
		}},
		{"attrs-full", func() *event.Event { return full("e-attrs1", "conform.attrs") }},
		{"attrs-minimal", func() *event.Event { return conformBase("e-attrs2", "conform.attrs") }},
		{"mutate-full", func() *event.Event { return full("e-mut1", "conform.mutate") }},
		{"mutate-no-data", func() *event.Event { return conformBase("e-mut2", "conform.mutate") }},
		{"mutate-1mib", func() *event.Event {
			e := conformBase("e-mut3", "conform.mutate")
			_ = e.SetData("application/octet-stream", big)
			return e
		}},
		{"remove", func() *event.Event { return full("e-remove", "conform.remove") }},
		{"log", func() *event.Event { return conformBase("e-log", "conform.log") }},
		{"badoutput", func() *event.Event { return conformBase("e-bad", "conform.badoutput") }},
		{"default", func() *event.Event { return conformBase("e-default", "com.example.other") }},
		{"trap", func() *event.Event { return conformBase("e-trap", "conform.trap") }},
	}
}

// describeDecision writes a decision, or the failure's kind, in a form that is the same for
// every SDK: the action, the outputs, the reason and, for a changed event, every attribute, the
// sorted extensions and the data (long data as its length and hash).
func describeDecision(b *strings.Builder, name string, d engine.Decision, err error) {
	if err != nil {
		kind := "error"
		var re *engine.RuleError
		if errors.As(err, &re) {
			kind = re.Kind
		}
		fmt.Fprintf(b, "%s: failed %s\n", name, kind)
		return
	}
	fmt.Fprintf(b, "%s: %s", name, d.Action)
	if len(d.Outputs) > 0 {
		fmt.Fprintf(b, " [%s]", strings.Join(d.Outputs, ","))
	}
	if d.Reason != "" {
		fmt.Fprintf(b, " reason=%q", d.Reason)
	}
	b.WriteString("\n")
	e := d.Event
	if e == nil {
		return
	}
	for _, a := range []string{"id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time"} {
		fmt.Fprintf(b, "  %s=%q\n", a, ce.AttrString(e, a))
	}
	names := make([]string, 0, len(e.Extensions()))
	for n := range e.Extensions() {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(b, "  ext %s=%q\n", n, ce.AttrString(e, n))
	}
	switch data := e.Data(); {
	case data == nil:
		b.WriteString("  no data\n")
	case len(data) > 80:
		fmt.Fprintf(b, "  data %d bytes, starting %q, sha256 %x\n", len(data), data[:16], sha256.Sum256(data))
	default:
		fmt.Fprintf(b, "  data %q\n", data)
	}
}

// TestConformance is the ABI conformance suite: every rule SDK's build of the conformance rule
// (hostabi/ABI.md, "Conformance rule") runs through this host over the same events, and every
// decision must match testdata/conform.golden, which the Go SDK's build writes with -update.
// The SDKs' builds of the stock rule attrroute must match testdata/attrroute.golden likewise.
// Each SDK's build must also refuse configurations alike, log through the host, trap into a
// failure of kind trap, and be stopped by the CPU guard when it loops.
func TestConformance(t *testing.T) {
	h := newTestHost(t)
	for _, sdk := range rulebuild.SDKs() {
		t.Run(sdk.Name, func(t *testing.T) {
			wasm := sdkBuild(t, sdk, "conform")
			r := h.load(t, wasm, RuleOptions{Name: "conform-" + sdk.Name, Config: []byte(`{"tag":"t-ü \"q\"\n"}`), Timeout: time.Second})
			var b strings.Builder
			for _, ce := range conformEvents() {
				d, err := r.Decide(context.Background(), ce.make())
				describeDecision(&b, ce.name, d, err)
			}
			got := b.String()
			path := filepath.Join("testdata", "conform.golden")
			if sdk.Name == "go" {
				if *update {
					if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestConformance/go -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("%s SDK: decisions differ from %s:\n%s", sdk.Name, path, lineDiff(string(want), got))
			}
			if !strings.Contains(h.logs.String(), "conform log: e-log") {
				t.Errorf("%s SDK: the host log lacks the rule's line \"conform log: e-log\":\n%s", sdk.Name, h.logs.String())
			}

			for _, tc := range []struct{ config, wantErr string }{
				{`{"refuse":"no, thank you ✓"}`, "init refused the configuration: no, thank you ✓"},
				{`{"tag":1}`, "init refused the configuration: conform config:"},
				{`{"other":"x"}`, "init refused the configuration: conform config:"},
				{`[1,2]`, "init refused the configuration: conform config:"},
			} {
				_, err := h.Load(context.Background(), wasm, RuleOptions{Name: "conform-" + sdk.Name, Config: []byte(tc.config)})
				var le *LoadError
				if !errors.As(err, &le) || le.Code != CodeInitFailed || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("%s SDK: config %s: load error %v, want %s with %q", sdk.Name, tc.config, err, CodeInitFailed, tc.wantErr)
				}
			}

			// An endless loop is stopped by the CPU guard within its timeout, as a timeout.
			guarded := h.load(t, wasm, RuleOptions{Name: "conform-loop-" + sdk.Name, Timeout: 100 * time.Millisecond})
			start := time.Now()
			_, err = guarded.Decide(context.Background(), conformBase("e-loop", "conform.loop"))
			var re *engine.RuleError
			if !errors.As(err, &re) || re.Kind != "timeout" {
				t.Errorf("%s SDK: an endless loop ended with %v, want a rule error of kind timeout", sdk.Name, err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("%s SDK: the endless loop was stopped after %v, its timeout is 100ms", sdk.Name, took)
			}
			// The instance was discarded: the next event gets a fresh one and is decided.
			if d, err := guarded.Decide(context.Background(), conformBase("e-after", "conform.route")); err != nil || d.Action != engine.ActionRoute {
				t.Errorf("%s SDK: the event after a timeout: %v %v, want route", sdk.Name, d, err)
			}

			attr := sdkBuild(t, sdk, "attrroute")
			if got := goldenDecisions(t, h, map[string][]byte{"attrroute": attr})["attrroute"]; got != mustRead(t, filepath.Join("testdata", "attrroute.golden")) {
				t.Errorf("%s SDK: attrroute decisions differ from testdata/attrroute.golden:\n%s", sdk.Name, lineDiff(mustRead(t, filepath.Join("testdata", "attrroute.golden")), got))
			}
		})
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// lineDiff lists the lines of got that differ from want, with their line numbers.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want %s\n  got  %s\n", i+1, wl, gl)
		}
	}
	return b.String()
}

package hostabi

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/tetratelabs/wazero"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/rulebuild"
)

// buildAS builds the AssemblyScript rule in dir (inside filters/sdk-as), or ends the test when
// Node.js is missing (a failure in CI), as sdkBuild does for a registered SDK's rules.
func buildAS(t *testing.T, dir string) []byte {
	t.Helper()
	return sdkBuild(t, rulebuild.SDK{Name: "assemblyscript", Build: func(string) ([]byte, error) { return rulebuild.BuildASDir(dir) }}, dir)
}

// TestAssemblyScriptBadRules loads rules written in AssemblyScript with the SDK that are broken
// the ways a rule author breaks them: each is refused with the code a Go or hand-written module
// broken the same way gets (TestLoadRefuses) and a message that says what is wrong.
func TestAssemblyScriptBadRules(t *testing.T) {
	h := newTestHost(t)
	for _, tt := range []struct {
		name, dir, code string
		opts            RuleOptions
		wants           []string
	}{
		{"missing turnout_decide export", "filters/sdk-as/testdata/nodecide", CodeExportMissing, RuleOptions{},
			[]string{"missing export turnout_decide (i32) -> (i64)"}},
		{"ABI version 2", "filters/sdk-as/testdata/abiv2", CodeABIVersionUnknown, RuleOptions{},
			[]string{"module speaks rule ABI v2, newer than this host's v1", "upgrade turnout"}},
		{"trap in init", "filters/sdk-as/testdata/inittrap", CodeInitFailed, RuleOptions{Config: []byte(`{"a":1}`)},
			[]string{"init: ", "unreachable", "(module output: abort: inittrap: cannot start with 7 bytes of config (testdata/inittrap/index.ts:"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wasm := buildAS(t, tt.dir)
			tt.opts.Name = "as-under-test"
			r, err := h.Load(context.Background(), wasm, tt.opts)
			if err == nil {
				r.Close(context.Background())
				t.Fatal("Load succeeded, want an error")
			}
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("error %q does not wrap a *LoadError", err)
			}
			if le.Code != tt.code {
				t.Errorf("LoadError.Code = %q, want %q (error %q)", le.Code, tt.code, err)
			}
			if !strings.Contains(err.Error(), "hostabi load rule as-under-test (version ") {
				t.Errorf("error %q does not name the rule and version", err)
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

// TestAssemblyScriptAttrrouteConfig loads the Go and the AssemblyScript builds of attrroute with
// the same configurations: both accept the same ones and refuse the others with the same
// message, word for word (the SDKs' JSON helpers report the same errors).
func TestAssemblyScriptAttrrouteConfig(t *testing.T) {
	h := newTestHost(t)
	builds := map[string][]byte{
		"go":             buildRule(t, "filters/rules/attrroute"),
		"assemblyscript": buildAS(t, rulebuild.ASSDKDir+"/rules/attrroute"),
	}
	filter := `{"attribute":"type","exact":"a","outputs":["x"]}`
	for _, config := range []string{
		`{"filters":`,
		`{"filter":[]}`,
		`[]`,
		`[1]`,
		`"filters"`,
		`{"filters":[]}`,
		`{"filters":"x"}`,
		`{"filters":{"a":1}}`,
		`{"filters":[` + filter + ` {"x":1}]}`,
		`{"filters":[` + filter + `],"match":"some"}`,
		`{"filters":[` + filter + `],"match":"all","match":"all"}`,
		`{"filters":[` + filter + `],"default":{}}`,
		`{"filters":[` + filter + `],"default":"x"}`,
		`{"filters":[` + filter + `],"default":["a\x"]}`,
		`{"filters":[` + filter + `],"default":["a",1]}`,
		`{"filters":[` + filter + `],"filte\u0072s\né":1}`,
		`{"filters":[{"attribute":"type","exact":"a"}]}`,
		`{"filters":[{"attribute":"type","exact":"a","prefix":"b","outputs":["x"]}]}`,
		`{"filters":[{"attribute":"type","outputs":["x"]}]}`,
		`{"filters":[{"attribute":"","suffix":"a","outputs":["x"]}]}`,
		`{"filters":[{"attribute":1,"exact":"a","outputs":["x"]}]}`,
		`{"filters":[{"attribute":"type","exact":"a","outputs":"x"}]}`,
		`{"filters":[{"attribute":"type","exact":"a","outputs":{"a":"b"}}]}`,
		`{"filters":[{"attribute":"type","exact":"a","outputs":["x"],"outputs":["y"]}]}`,
		`{"filters":[` + filter + `,"x"]}`,
		`{"filters":[` + filter + `,[` + filter + `]]}`,
		// accepted
		`{"filters":[` + filter + `]}`,
		` {"match" : "all", "filters":[{"attribute":"subject","suffix":"\u00e9\n\ud83d\ude00","outputs":["x","y"]}],"default":[]} `,
		`{"filters":[{"attribute":"region","prefix":"é\"","outputs":["\u0041"]}],"default":["archive"],"match":"first"}`,
	} {
		var got [2]string
		for i, sdk := range []string{"go", "assemblyscript"} {
			r, err := h.Load(context.Background(), builds[sdk], RuleOptions{Name: "attrroute", Config: []byte(config)})
			if err == nil {
				// Accepted: the decisions on events with and without the matched values.
				var b strings.Builder
				for _, ev := range attrrouteEvents() {
					d, err := r.Decide(context.Background(), ev)
					describeDecision(&b, ev.ID(), d, err)
				}
				r.Close(context.Background())
				got[i] = "accepted\n" + b.String()
				continue
			}
			var le *LoadError
			if !errors.As(err, &le) || le.Code != CodeInitFailed {
				t.Errorf("%s attrroute, config %s: %v, want a %s load error", sdk, config, err, CodeInitFailed)
			}
			got[i] = le.Detail
		}
		if got[0] != got[1] {
			t.Errorf("config %s:\n  go:             %s\n  assemblyscript: %s", config, got[0], got[1])
		}
	}
}

// attrrouteEvents are events for the accepted configurations of TestAssemblyScriptAttrrouteConfig:
// unicode in the matched values, a match of exactly the value, a value shorter than the prefix
// (no value ends in white space: the CloudEvents SDK trims it from the subject).
func attrrouteEvents() []*event.Event {
	var evs []*event.Event
	for i, f := range []struct{ typ, subject, region string }{
		{"a", "", ""},
		{"ab", "Gerät é\n😀", "é\"north"},
		{"b", "é\n😀", "é\""},
		{"a", "\n😀", "é"},
		{"", "x", "e\""},
	} {
		e := conformBase("e-"+strconv.Itoa(i), f.typ)
		if f.typ == "" {
			e.SetType("other")
		}
		if f.subject != "" {
			e.SetSubject(f.subject)
		}
		if f.region != "" {
			e.SetExtension("region", f.region)
		}
		evs = append(evs, e)
	}
	return evs
}

// TestAssemblyScriptModuleSurface checks what the SDK puts in a module: exactly the ABI's
// exports (no runtime helpers, table or start export) and no import beyond turnout.log and
// WASI fd_write (the AssemblyScript runtime's env.abort, env.trace and env.seed are replaced).
func TestAssemblyScriptModuleSurface(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	t.Cleanup(func() { rt.Close(ctx) })
	allowed := []string{"turnout.log", "wasi_snapshot_preview1.fd_write"}
	wantExports := []string{"memory", "turnout_abi_version", "turnout_buffer", "turnout_decide", "turnout_init"}
	for _, rule := range []string{"conform", "attrroute"} {
		t.Run(rule, func(t *testing.T) {
			wasm := buildAS(t, rulebuild.ASSDKDir+"/rules/"+rule)
			c, err := rt.CompileModule(ctx, wasm)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range c.ImportedFunctions() {
				mod, name, _ := f.Import()
				if !slices.Contains(allowed, mod+"."+name) {
					t.Errorf("%s imports %s.%s, want only %v", rule, mod, name, allowed)
				}
			}
			if n := len(c.ImportedMemories()); n != 0 {
				t.Errorf("%s imports %d memories", rule, n)
			}
			var exports []string
			for name := range c.ExportedFunctions() {
				exports = append(exports, name)
			}
			for name := range c.ExportedMemories() {
				exports = append(exports, name)
			}
			slices.Sort(exports)
			if !slices.Equal(exports, wantExports) {
				t.Errorf("%s exports %v, want exactly %v", rule, exports, wantExports)
			}
			t.Logf("%s: %d bytes", rule, len(wasm))
		})
	}
}

// TestAssemblyScriptRuntime runs the SDK's runtime behaviour through the host: garbage made while
// deciding is collected between events (the AssemblyScript collector runs only when the SDK
// calls it), and an abort (a throw) fails the event as a trap whose error quotes the message.
func TestAssemblyScriptRuntime(t *testing.T) {
	h := newTestHost(t)
	wasm := buildAS(t, rulebuild.ASSDKDir+"/rules/conform")

	t.Run("garbage is collected", func(t *testing.T) {
		// Each conform.mutate event makes a 64 KiB copy of its data; 200 of them without
		// collection would need 12.5 MiB, four times the cap.
		r := h.load(t, wasm, RuleOptions{Name: "as-gc", MemoryLimitPages: 48})
		data := bytes.Repeat([]byte("x"), 64<<10)
		for i := range 200 {
			e := conformBase("e-gc", "conform.mutate")
			_ = e.SetData("application/octet-stream", data)
			d, err := r.Decide(context.Background(), e)
			if err != nil {
				t.Fatalf("event %d: %v", i, err)
			}
			if d.Event == nil || len(d.Event.Data()) != len(data)+len("mutated: ") {
				t.Fatalf("event %d: decision %+v lacks the mutated data", i, d)
			}
		}
	})

	t.Run("abort is a trap that quotes its message", func(t *testing.T) {
		r := h.load(t, wasm, RuleOptions{Name: "as-trap"})
		_, err := r.Decide(context.Background(), conformBase("e-trap", "conform.trap"))
		var re *engine.RuleError
		if !errors.As(err, &re) || re.Kind != "trap" {
			t.Fatalf("Decide = %v, want a rule error of kind trap", err)
		}
		if !strings.Contains(err.Error(), "abort: conform: trap requested (rules/conform/index.ts:") {
			t.Errorf("error %q does not quote the abort message and its place", err)
		}
		// The instance was discarded; a fresh one decides the next event.
		if d, err := r.Decide(context.Background(), conformBase("e-next", "conform.route")); err != nil || d.Action != engine.ActionRoute {
			t.Errorf("the event after a trap: %+v %v, want route", d, err)
		}
	})
}

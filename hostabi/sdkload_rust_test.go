package hostabi

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/rulebuild"
	"github.com/turnout-router/turnout/internal/testutil"
)

// rustBuild builds the Rust rule crate in dir (relative to the module root), or ends the test
// when no Rust compiler for wasm32-unknown-unknown is installed (a failure in CI).
func rustBuild(t *testing.T, dir string) []byte {
	t.Helper()
	wasm, err := rulebuild.BuildRustDir(dir)
	if errors.Is(err, rulebuild.ErrToolchain) {
		testutil.Unavailable(t, "run scripts/toolchains.sh (make toolchains)", "rust SDK: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return wasm
}

// loadError loads wasm and returns its *LoadError, failing the test when Load succeeds or its
// error does not name the rule.
func loadError(t *testing.T, h *testHost, wasm []byte, opts RuleOptions) *LoadError {
	t.Helper()
	opts.Name = "under-test"
	r, err := h.Load(context.Background(), wasm, opts)
	if err == nil {
		r.Close(context.Background())
		t.Fatal("Load succeeded, want an error")
	}
	if !strings.Contains(err.Error(), "hostabi load rule under-test (version ") {
		t.Errorf("error %q does not name the rule and version", err)
	}
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("error %q does not wrap a *LoadError", err)
	}
	return le
}

// TestRustBadRules loads broken rules written with the Rust SDK (filters/sdk-rust/testdata): each
// is refused with the same code, and the same message, as its Go or hand-written counterpart in
// TestLoadRefuses.
func TestRustBadRules(t *testing.T) {
	h := newTestHost(t)
	noDecide := tinyRule(1, nil)
	noDecide.funcs = noDecide.funcs[:2]
	tests := []struct {
		name  string
		dir   string
		twin  []byte // the counterpart refused the same way, when there is one to compare
		code  string
		wants []string
	}{
		{"missing decide export", "filters/sdk-rust/testdata/nodecide", noDecide.bytes(), CodeExportMissing,
			[]string{"missing export turnout_decide (i32) -> (i64)"}},
		{"ABI newer than host", "filters/sdk-rust/testdata/abiv2", tinyRule(2, nil).bytes(), CodeABIVersionUnknown,
			[]string{"module speaks rule ABI v2, newer than this host's v1", "upgrade turnout"}},
		// A panic in init traps (panic = "abort"); the SDK's panic hook wrote its message to
		// stderr, which the host quotes.
		{"panic in init", "filters/sdk-rust/testdata/initpanic", nil, CodeInitFailed,
			[]string{"init: ", "unreachable", "initpanic: cannot start with a configuration of 7 bytes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			le := loadError(t, h, rustBuild(t, tt.dir), RuleOptions{Config: []byte(`{"a":1}`)})
			if le.Code != tt.code {
				t.Errorf("LoadError.Code = %q, want %q (%s)", le.Code, tt.code, le.Detail)
			}
			for _, w := range tt.wants {
				if !strings.Contains(le.Detail, w) {
					t.Errorf("error %q\ndoes not contain %q", le.Detail, w)
				}
			}
			if tt.twin != nil {
				twin := loadError(t, h, tt.twin, RuleOptions{})
				if twin.Code != le.Code || twin.Detail != le.Detail {
					t.Errorf("refused as %s %q; its counterpart as %s %q", le.Code, le.Detail, twin.Code, twin.Detail)
				}
			}
		})
	}
}

// TestRustAttrrouteConfigErrors loads the Go and the Rust builds of attrroute with the same bad
// configurations: both refuse each with the same message.
func TestRustAttrrouteConfigErrors(t *testing.T) {
	h := newTestHost(t)
	goWasm := buildRule(t, "filters/rules/attrroute")
	rustWasm := rustBuild(t, "filters/sdk-rust/rules/attrroute")
	for _, config := range []string{
		``,
		`{"filters":`,
		`["a"]`,
		`{"filter":[]}`,
		`{"filters":[]}`,
		`{"filters":{}}`,
		`{"filters":[],"bogus":1}`,
		`{"match":"all","match":"first","filters":[]}`,
		`{"match":"some","filters":[{"attribute":"type","exact":"a","outputs":["x"]}]}`,
		`{"filters":[{"attribute":"type","exact":"a"}]}`,
		`{"filters":[{"attribute":"type","exact":"a","prefix":"b","outputs":["x"]}]}`,
		`{"filters":[{"attribute":1,"exact":"a","outputs":["x"]}]}`,
		`{"filters":[{"attribute":"type","exact":"a","outputs":[1]}]}`,
		`{"filters":[{"attribute":"type","exact":"a","outputs":"x"}]}`,
		`{"filters":[{"exact":"a","outputs":["x"]}]}`,
		`{"filters":[{"attribute":"type","outputs":["x"]}]}`,
		`{"filters":[{"attribute":"type","exact":"a","outputs":["x"]}, 7]}`,
		`{"filters":[{"attribute":"type","exact":"a","outputs":["x"]}],"default":"archive"}`,
		`{"filters":[{"attribute":"type","exact":"a","outputs":["x"]}],"default":["a",2]}`,
		`{"filters":[{"attribute":"type","exact":"a" "outputs":["x"]}]}`,
		`{"filters":[{"attribute":"type","exact":"\q","outputs":["x"]}]}`,
	} {
		t.Run(config, func(t *testing.T) {
			goErr := loadError(t, h, goWasm, RuleOptions{Config: []byte(config)})
			rustErr := loadError(t, h, rustWasm, RuleOptions{Config: []byte(config)})
			if goErr.Code != CodeInitFailed || !strings.HasPrefix(goErr.Detail, "init refused the configuration: attrroute config: ") {
				t.Fatalf("Go build: %s %q, want an attrroute config refusal", goErr.Code, goErr.Detail)
			}
			if rustErr.Code != goErr.Code || rustErr.Detail != goErr.Detail {
				t.Errorf("Rust build refused with %s %q\nGo build with      %s %q", rustErr.Code, rustErr.Detail, goErr.Code, goErr.Detail)
			}
		})
	}
}

// TestRustTrapMessage checks that a panic while deciding is a trap whose error quotes the panic
// message, and that the rule keeps serving.
func TestRustTrapMessage(t *testing.T) {
	h := newTestHost(t)
	r := h.load(t, rustBuild(t, "filters/sdk-rust/rules/conform"), RuleOptions{Name: "conform-rust", PoolSize: 1})
	_, err := r.Decide(context.Background(), newEvent("conform.trap"))
	var re *engine.RuleError
	if !errors.As(err, &re) || re.Kind != "trap" {
		t.Fatalf("Decide = %v, want a rule error of kind trap", err)
	}
	if !strings.Contains(err.Error(), "conform: trap requested") {
		t.Errorf("trap error %q does not quote the panic message", err)
	}
	if d, err := r.Decide(context.Background(), newEvent("conform.route")); err != nil || d.Action != engine.ActionRoute {
		t.Errorf("the event after the trap: %+v %v, want route", d, err)
	}
}

// TestRustTextNotUTF8 decides events whose subject is not UTF-8 (the host passes attribute bytes
// through): a Rust rule that reads the subject fails the event with the SDK's reason instead of
// deciding on a wrong value, and one that does not read it decides as usual.
func TestRustTextNotUTF8(t *testing.T) {
	h := newTestHost(t)
	r := h.load(t, rustBuild(t, "filters/sdk-rust/rules/conform"), RuleOptions{Name: "conform-rust"})
	e := newEvent("conform.fail")
	e.SetSubject("bad \xff subject")
	d, err := r.Decide(context.Background(), e)
	if err != nil || d.Action != engine.ActionFail || !strings.HasPrefix(d.Reason, "sdk: event at byte ") || !strings.HasSuffix(d.Reason, ": text that is not UTF-8") {
		t.Errorf("a rule reading a subject that is not UTF-8: %s %q %v, want fail with the SDK's reason", d.Action, d.Reason, err)
	}
	e.SetType("conform.route")
	if d, err := r.Decide(context.Background(), e); err != nil || d.Action != engine.ActionRoute {
		t.Errorf("a rule not reading it: %s %q %v, want route", d.Action, d.Reason, err)
	}
}

// TestRustModuleSurface checks what the Rust builds import and export: only turnout.log and
// WASI's fd_write (the panic message), and the ABI's functions and memory (the linker's
// __data_end and __heap_base globals aside, which the host ignores).
func TestRustModuleSurface(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	t.Cleanup(func() { rt.Close(ctx) })
	for _, tc := range []struct {
		rule    string
		imports []string
	}{
		{"conform", []string{"turnout.log", "wasi_snapshot_preview1.fd_write"}},
		{"attrroute", []string{"wasi_snapshot_preview1.fd_write"}}, // it does not log
	} {
		wasm := rustBuild(t, "filters/sdk-rust/rules/"+tc.rule)
		c, err := rt.CompileModule(ctx, wasm)
		if err != nil {
			t.Fatal(err)
		}
		var imports []string
		for _, f := range c.ImportedFunctions() {
			mod, name, _ := f.Import()
			imports = append(imports, mod+"."+name)
		}
		slices.Sort(imports)
		if !slices.Equal(imports, tc.imports) || len(c.ImportedMemories()) > 0 {
			t.Errorf("%s imports %v and %d memories, want %v and none", tc.rule, imports, len(c.ImportedMemories()), tc.imports)
		}
		exports := append(slices.Collect(maps.Keys(c.ExportedFunctions())), slices.Collect(maps.Keys(c.ExportedMemories()))...)
		slices.Sort(exports)
		if want := []string{"memory", "turnout_abi_version", "turnout_buffer", "turnout_decide", "turnout_init"}; !slices.Equal(exports, want) {
			t.Errorf("%s exports %v, want exactly %v", tc.rule, exports, want)
		}
		t.Logf("%s: %d bytes", tc.rule, len(wasm))
	}
}

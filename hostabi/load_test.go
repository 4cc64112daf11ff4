package hostabi

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestLoadRefuses(t *testing.T) {
	h := newTestHost(t)
	attrroute := buildRule(t, "filters/rules/attrroute")
	withImport := func(mod, fn string, params, results []byte) []byte {
		m := tinyRule(1, nil)
		m.imports = []wimport{{mod, fn, params, results}}
		return m.bytes()
	}
	noDecide := tinyRule(1, nil)
	noDecide.funcs = noDecide.funcs[:2]
	noMarker := tinyRule(1, nil)
	noMarker.funcs = noMarker.funcs[1:]
	wrongType := tinyRule(1, nil)
	wrongType.funcs[2].results = []byte{tI32}
	wrongType.funcs[2].body = i32const(0)
	noMemory := tinyRule(1, nil)
	noMemory.noMemory, noMemory.data = true, nil
	bigMemory := tinyRule(1, nil)
	bigMemory.memMin = 600
	badInitType := tinyRule(1, nil)
	badInitType.funcs = append(badInitType.funcs, wfunc{export: "turnout_init", params: []byte{tI32}, results: []byte{tI64}, body: i64const(0x7fff0000<<32 | 16)})

	tests := []struct {
		name  string
		code  string // the *LoadError code
		wasm  []byte
		opts  RuleOptions
		wants []string
	}{
		{"empty", CodeNotWasm, nil, RuleOptions{}, []string{"not a WebAssembly module"}},
		{"json instead of wasm", CodeNotWasm, []byte(`{"rule":"attrroute"}`), RuleOptions{}, []string{"not a WebAssembly module"}},
		{"component binary", CodeNotWasm, []byte("\x00asm\x0d\x00\x01\x00"), RuleOptions{}, []string{"not a WebAssembly core module"}},
		{"truncated module", CodeCompile, wmod{raw: []byte{1, 0x20, 0x01}}.bytes(), RuleOptions{}, []string{"compile:"}},
		{"missing decide export", CodeExportMissing, noDecide.bytes(), RuleOptions{}, []string{"missing export turnout_decide (i32) -> (i64)"}},
		{"no ABI marker", CodeExportMissing, noMarker.bytes(), RuleOptions{}, []string{"no ABI marker (turnout_abi_version)", "missing export turnout_abi_version () -> (i32)"}},
		{"mistyped export", CodeExportMissing, wrongType.bytes(), RuleOptions{}, []string{"export turnout_decide has type (i32) -> (i32), want (i32) -> (i64)"}},
		{"no exported memory", CodeExportMissing, noMemory.bytes(), RuleOptions{}, []string{"missing export memory"}},
		{"ABI newer than host", CodeABIVersionUnknown, tinyRule(2, nil).bytes(), RuleOptions{}, []string{"module speaks rule ABI v2, newer than this host's v1", "upgrade turnout"}},
		{"ABI version zero", CodeABIVersionUnknown, tinyRule(0, nil).bytes(), RuleOptions{}, []string{"module reports rule ABI version 0"}},
		{"import outside the allowed modules", CodeImportNotAllowed, withImport("env", "fetch", []byte{tI32}, []byte{tI32}), RuleOptions{}, []string{"imports outside the allowed set", "env.fetch"}},
		{"WASI filesystem import", CodeImportNotAllowed, withImport("wasi_snapshot_preview1", "path_open", []byte{tI32}, []byte{tI32}), RuleOptions{}, []string{"imports outside the allowed set", "wasi_snapshot_preview1.path_open"}},
		{"WASI socket import", CodeImportNotAllowed, withImport("wasi_snapshot_preview1", "sock_accept", []byte{tI32, tI32, tI32}, []byte{tI32}), RuleOptions{}, []string{"wasi_snapshot_preview1.sock_accept"}},
		{"clock not granted", CodeImportNotAllowed, withImport("turnout", "now_unix_nano", nil, []byte{tI64}), RuleOptions{}, []string{"turnout.now_unix_nano (the clock is not granted to this rule)"}},
		{"memory minimum above default cap", CodeMemoryMinAboveCap, bigMemory.bytes(), RuleOptions{}, []string{"memory minimum above the cap of 512 pages", "min 600 pages"}},
		{"memory minimum above explicit cap", CodeMemoryMinAboveCap, bigMemory.bytes(), RuleOptions{MemoryLimitPages: 64}, []string{"memory minimum above the cap of 64 pages"}},
		{"config for a rule without init", CodeInitFailed, tinyRule(1, nil).bytes(), RuleOptions{Config: []byte(`{"a":1}`)}, []string{"exports no turnout_init"}},
		{"init message outside memory", CodeInitFailed, badInitType.bytes(), RuleOptions{}, []string{"init failed (its message is outside memory)"}},
		{"init refuses bad JSON", CodeInitFailed, attrroute, RuleOptions{Config: []byte(`{"filters":`)}, []string{"init refused the configuration: attrroute config: json: malformed or trailing data at byte 0"}},
		{"init refuses unknown key", CodeInitFailed, attrroute, RuleOptions{Config: []byte(`{"filter":[]}`)}, []string{`init refused the configuration: attrroute config: unknown key "filter"`}},
		{"init refuses filter without outputs", CodeInitFailed, attrroute, RuleOptions{Config: []byte(`{"filters":[{"attribute":"type","exact":"a"}]}`)}, []string{"filters[0]: outputs: at least one output is required"}},
		{"init refuses two match kinds", CodeInitFailed, attrroute, RuleOptions{Config: []byte(`{"filters":[{"attribute":"type","exact":"a","prefix":"b","outputs":["x"]}]}`)}, []string{"filters[0]: exactly one of exact, prefix, suffix is required"}},
		{"misbehave refuses a config without outputs", CodeInitFailed, buildRule(t, "hostabi/testdata/misbehave"), RuleOptions{Config: []byte(`{"x":1}`)}, []string{"init refused the configuration: misbehave: config needs outputs"}},
		{"passthrough without outputs", CodeInitFailed, buildRule(t, "filters/rules/passthrough"), RuleOptions{Config: []byte(`{}`)}, []string{"passthrough config: outputs: at least one output is required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Name = "under-test"
			r, err := h.Load(context.Background(), tt.wasm, tt.opts)
			if tt.wants == nil {
				if err != nil {
					t.Fatalf("Load: %v, want success", err)
				}
				r.Close(context.Background())
				return
			}
			if err == nil {
				r.Close(context.Background())
				t.Fatal("Load succeeded, want an error")
			}
			if !strings.Contains(err.Error(), "hostabi load rule under-test (version ") {
				t.Errorf("error %q does not name the rule and version", err)
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("error %q does not wrap a *LoadError", err)
			}
			if le.Code != tt.code {
				t.Errorf("LoadError.Code = %q, want %q", le.Code, tt.code)
			}
			if !strings.HasSuffix(err.Error(), ": "+le.Detail) {
				t.Errorf("error %q does not end with the LoadError detail %q", err, le.Detail)
			}
		})
	}
}

func TestLoadAccepts(t *testing.T) {
	h := newTestHost(t)
	clock := tinyRule(1, nil)
	clock.imports = []wimport{{"turnout", "now_unix_nano", nil, []byte{tI64}}}
	small := tinyRule(1, nil)
	small.memMin = 8
	tests := []struct {
		name string
		wasm []byte
		opts RuleOptions
	}{
		{"clock granted", clock.bytes(), RuleOptions{AllowClock: true}},
		{"memory minimum equal to cap", small.bytes(), RuleOptions{MemoryLimitPages: 8}},
		{"go rule with config", buildRule(t, "filters/rules/passthrough"), RuleOptions{Config: []byte(`{"outputs":["a"]}`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.load(t, tt.wasm, tt.opts)
			if len(r.Version()) != 12 {
				t.Errorf("Version() = %q, want 12 hex digits", r.Version())
			}
			if r.ABIVersion() != 1 {
				t.Errorf("ABIVersion() = %d, want 1", r.ABIVersion())
			}
			if ex := strings.Join(r.Exports(), ","); !strings.Contains(ex, "memory,turnout_abi_version,turnout_buffer,turnout_decide") {
				t.Errorf("Exports() = %s, want the ABI exports", ex)
			}
			if r.gauge() != 1 {
				t.Errorf("instances gauge = %v after Load, want 1 (the proven instance is kept)", r.gauge())
			}
		})
	}
}

func TestNewHost(t *testing.T) {
	t.Run("cache dir that is a file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := NewHost(context.Background(), Options{CacheDir: f}); err == nil || !strings.Contains(err.Error(), "hostabi compilation cache") {
			t.Errorf("NewHost = %v, want a compilation cache error", err)
		}
	})
	t.Run("two hosts share one registry", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		for range 2 {
			h, err := NewHost(context.Background(), Options{Registerer: reg})
			if err != nil {
				t.Fatal(err)
			}
			h.Close(context.Background())
		}
	})
}

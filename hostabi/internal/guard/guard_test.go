package guard

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// module assembles a module with one page of memory, the functions of bodies (each of type
// () -> i32 or () -> (), per results) exported as f0, f1, ..., and, when global is set, a global
// of its own so that the guard's globals come after an existing one.
func module(global bool, bodies ...[]byte) []byte {
	sec := func(id byte, payload []byte) []byte {
		return append(append([]byte{id}, appendU32(nil, uint32(len(payload)))...), payload...)
	}
	b := []byte("\x00asm\x01\x00\x00\x00")
	b = append(b, sec(1, []byte{2, 0x60, 0, 0, 0x60, 0, 1, 0x7f})...) // types: () -> (), () -> i32
	funcs := appendU32(nil, uint32(len(bodies)))
	for range bodies {
		funcs = append(funcs, 1) // () -> i32
	}
	b = append(b, sec(3, funcs)...)
	b = append(b, sec(5, []byte{1, 0, 1})...) // memory min 1
	if global {
		b = append(b, sec(6, []byte{1, 0x7f, 0x01, 0x41, 0x07, 0x0b})...) // mut i32 = 7
	}
	exports := appendU32(nil, uint32(len(bodies))+1)
	exports = append(appendName(exports, "memory"), 0x02, 0)
	for i := range bodies {
		exports = append(appendName(exports, "f"+string(rune('0'+i))), 0x00)
		exports = appendU32(exports, uint32(i))
	}
	b = append(b, sec(7, exports)...)
	code := appendU32(nil, uint32(len(bodies)))
	for _, body := range bodies {
		fn := append([]byte{0}, body...) // no locals
		code = append(append(code, appendU32(nil, uint32(len(fn)))...), fn...)
	}
	return append(b, sec(10, code)...)
}

var (
	// spin loops forever: loop br 0 end, then a result it never reaches.
	spin = []byte{0x03, 0x40, 0x0c, 0x00, 0x0b, 0x41, 0x00, 0x0b}
	// count sums 1..1000 in a loop with a block and br_if, exercising block types, locals-free
	// stack use and memory: it stores the sum at address 8 and returns it (500500).
	count = []byte{
		0x41, 0x08, 0x41, 0x00, 0x36, 0x02, 0x00, // mem[8] = 0
		0x41, 0x00, // i (on the stack as a loop parameter would need multi-value: use memory)
		0x1a,
		0x03, 0x40, // loop
		0x41, 0x08, 0x41, 0x08, 0x28, 0x02, 0x00, 0x41, 0x01, 0x6a, 0x36, 0x02, 0x00, // mem[8]++
		0x41, 0x08, 0x28, 0x02, 0x00, 0x41, 0xe8, 0x07, 0x48, 0x0d, 0x00, // br_if 0 while mem[8] < 1000
		0x0b,
		0x41, 0x08, 0x28, 0x02, 0x00, // return mem[8]
		0x0b,
	}
)

func instantiate(t *testing.T, wasm []byte) (api.Module, func()) {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler())
	mod, err := rt.Instantiate(ctx, wasm)
	if err != nil {
		rt.Close(ctx)
		t.Fatalf("instantiate: %v", err)
	}
	return mod, func() { rt.Close(ctx) }
}

// TestInterrupt: an endless loop, instrumented, runs until the flag is raised and then traps;
// meanwhile the garbage collector can stop the world (the check's exit to Go is a preemption
// point; without it runtime.GC would wait for the loop for ever).
func TestInterrupt(t *testing.T) {
	for _, global := range []bool{false, true} {
		t.Run(map[bool]string{false: "no-globals", true: "with-a-global"}[global], func(t *testing.T) {
			wasm, err := Instrument(module(global, spin, count))
			if err != nil {
				t.Fatal(err)
			}
			mod, done := instantiate(t, wasm)
			defer done()
			flag, ok := mod.ExportedGlobal(Export).(api.MutableGlobal)
			if !ok {
				t.Fatalf("no mutable global exported as %s", Export)
			}
			if res, err := mod.ExportedFunction("f1").Call(context.Background()); err != nil || res[0] != 1000 {
				t.Fatalf("the counting loop, instrumented, returned %v %v; want 1000", res, err)
			}
			if global {
				if g := mod.ExportedGlobal(Export).Get(); g != 0 {
					t.Fatalf("flag starts at %d", g)
				}
			}
			errc := make(chan error, 1)
			go func() {
				_, err := mod.ExportedFunction("f0").Call(context.Background())
				errc <- err
			}()
			time.Sleep(50 * time.Millisecond)
			gcDone := make(chan struct{})
			go func() { runtime.GC(); close(gcDone) }()
			select {
			case <-gcDone:
			case <-time.After(10 * time.Second):
				t.Fatal("runtime.GC did not finish while the guest spins: the check has no preemption point")
			}
			select {
			case err := <-errc:
				t.Fatalf("the endless loop ended by itself: %v", err)
			default:
			}
			flag.Set(1)
			select {
			case err := <-errc:
				if err == nil || !strings.Contains(err.Error(), "unreachable") {
					t.Errorf("interrupted call returned %v, want an unreachable trap", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the loop did not stop within 10s of the flag")
			}
		})
	}
}

func TestInstrumentRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		wasm       []byte
	}{
		{"not wasm", "not a WebAssembly core module", []byte("\x00asm\x02\x00\x00\x00")},
		{"truncated section", "unexpected end", []byte("\x00asm\x01\x00\x00\x00\x01\x05\x01")},
		{"unknown opcode", "unknown opcode 0xff", module(false, []byte{0xff, 0x0b})},
		{"export taken", "already exports", func() []byte {
			w, _ := Instrument(module(false, spin))
			return w
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Instrument(tc.wasm)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Instrument = %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// FuzzInstrument checks the invariant on arbitrary function bodies (the instruction decoder and
// the rewrite are what can go wrong): Instrument never panics, and a module wazero compiles
// still compiles once instrumented, unless Instrument refuses an instruction it does not know.
// The bodies sit in a module of sane sections: wazero itself can exhaust memory on arbitrary
// section counts, which would stop the fuzzer without telling anything about the guard.
func FuzzInstrument(f *testing.F) {
	f.Add(spin)
	f.Add(count)
	f.Add([]byte{0x02, 0x7f, 0x41, 0x01, 0x0b, 0x0b})                                                 // block (result i32)
	f.Add([]byte{0x41, 0x00, 0xfc, 0x0b, 0x00, 0x41, 0x00, 0x0b})                                     // memory.fill operands wrong: invalid
	f.Add([]byte{0xfd, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x1a, 0x41, 0x00, 0x0b}) // v128.const
	f.Fuzz(func(t *testing.T, body []byte) {
		ctx := context.Background()
		rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
		defer rt.Close(ctx)
		wasm := module(false, body)
		out, err := Instrument(wasm)
		if _, cerr := rt.CompileModule(ctx, wasm); cerr != nil {
			return // not a valid body: any refusal or output is fine
		}
		if err != nil {
			if !strings.Contains(err.Error(), "unknown") {
				t.Fatalf("a valid module was refused: %v", err)
			}
			return
		}
		if _, err := rt.CompileModule(ctx, out); err != nil {
			t.Fatalf("instrumented module does not compile: %v\nbody % x", err, body)
		}
	})
}

// TestCheckPlacement: a check goes at every loop head, and at the entry of a function only when
// it may call itself: it is on a cycle of direct calls, or calls indirectly. A function that
// neither loops nor recurses runs in bounded time.
func TestCheckPlacement(t *testing.T) {
	check := []byte{0xaa, 0xbb} // a marker: instrumentBody copies it as it is
	const (
		call, returnCall, callIndirect = 0x10, 0x12, 0x11
		end, drop                      = 0x0b, 0x1a
	)
	leaf := []byte{0x41, 0x07, end}
	for _, tc := range []struct {
		name    string
		imports uint32   // imported functions, numbered before the bodies
		bodies  [][]byte // after the (empty) locals
		checked []bool   // whether each body gets an entry check
	}{
		{"leaf", 0, [][]byte{leaf}, []bool{false}},
		{"a chain of calls", 0, [][]byte{{call, 1, end}, {call, 2, end}, leaf}, []bool{false, false, false}},
		{"calls itself", 0, [][]byte{{call, 0, end}}, []bool{true}},
		{"tail-calls itself", 0, [][]byte{{returnCall, 0, end}}, []bool{true}},
		{"a cycle and a caller of it", 0, [][]byte{{call, 1, end}, {call, 0, end}, {call, 0, end}}, []bool{true, true, false}},
		{"a cycle of three after a chain", 0, [][]byte{{call, 1, end}, {call, 2, end}, {call, 3, end}, {call, 1, end}}, []bool{false, true, true, true}},
		{"calls indirectly", 0, [][]byte{{0x41, 0x00, callIndirect, 0x00, 0x00, end}}, []bool{true}},
		{"calls an import", 1, [][]byte{{call, 0, end}}, []bool{false}},
		{"calls itself after imports", 1, [][]byte{{call, 1, end}}, []bool{true}},
		{"a call byte inside an immediate", 0, [][]byte{{0x41, call, drop, end}}, []bool{false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := instrumented(t, tc.imports, check, tc.bodies...)
			for i, body := range got {
				want := append([]byte{0}, tc.bodies[i]...)
				if tc.checked[i] {
					want = append([]byte{0}, append(append([]byte(nil), check...), tc.bodies[i]...)...)
				}
				if string(body) != string(want) {
					t.Errorf("body %d instrumented as % x, want % x", i, body, want)
				}
			}
		})
	}
	t.Run("loop head", func(t *testing.T) {
		got := instrumented(t, 0, check, spin)
		if want := []byte{0, 0x03, 0x40, 0xaa, 0xbb, 0x0c, 0x00, 0x0b, 0x41, 0x00, 0x0b}; string(got[0]) != string(want) {
			t.Errorf("instrumented as % x, want % x", got[0], want)
		}
	})
}

// instrumented runs instrumentCode on a code section of bodies (each with no locals) and
// returns the instrumented bodies.
func instrumented(t *testing.T, imports uint32, check []byte, bodies ...[]byte) [][]byte {
	t.Helper()
	sec := appendU32(nil, uint32(len(bodies)))
	for _, b := range bodies {
		fn := append([]byte{0}, b...)
		sec = append(appendU32(sec, uint32(len(fn))), fn...)
	}
	out, err := instrumentCode(sec, check, imports)
	if err != nil {
		t.Fatal(err)
	}
	r := reader{b: out}
	got := make([][]byte, r.u32())
	for i := range got {
		got[i] = r.bytes(int(r.u32()))
	}
	if r.err != nil || r.off != len(out) {
		t.Fatalf("instrumented code section does not decode: %v", r.err)
	}
	return got
}

// Package guard instruments a WebAssembly module so that the host can stop a call that runs too
// long without a goroutine and a timer per call. It adds two mutable i32 globals, a countdown
// and an interrupt flag (exported as Export), and at the entry of every function and the head of
// every loop, which every unbounded computation passes through, a check:
//
//	countdown -= 1
//	if countdown == 0 {
//		countdown = Interval
//		memory.grow 0      // an exit to the Go runtime: a point where the goroutine can be
//		                   // preempted, so a guest that never returns cannot stall the
//		                   // garbage collector's stop-the-world (compiled guest code can't be)
//		if flag { unreachable }
//	}
//
// The host (hostabi's watchdog) sets the flag from another goroutine when a call overruns; the
// guest traps within Interval more checks.
//
// Invariant: Instrument never changes what a module computes: the check leaves the operand
// stack and every branch depth outside it unchanged, memory.grow by 0 pages changes nothing, and
// the new globals and export take indices after all existing ones. A module Instrument cannot
// fully decode (an instruction it does not know) is refused, never passed through
// half-instrumented.
package guard

import (
	"errors"
	"fmt"
)

// Export is the name under which the interrupt flag is exported.
const Export = "turnout_interrupt"

// Interval is the number of checks between two exits to the Go runtime (and looks at the flag).
// An exit costs about 0.1 µs; a check about 1 ns.
const Interval = 1000

// Section ids of the WebAssembly binary format [WASM-5.5].
const (
	secCustom = 0
	secImport = 2
	secMemory = 5
	secGlobal = 6
	secExport = 7
	secCode   = 10
)

// Instrument returns a copy of the module wasm with the interrupt global, its export and the
// checks added. wasm must be a WebAssembly core module (magic and version 1); errors name the
// section and, in code, the function and offset that could not be decoded.
func Instrument(wasm []byte) ([]byte, error) {
	if len(wasm) < 8 || string(wasm[:8]) != "\x00asm\x01\x00\x00\x00" {
		return nil, errors.New("guard: not a WebAssembly core module")
	}
	type section struct {
		id      byte
		payload []byte
	}
	var secs []section
	for r := (reader{b: wasm, off: 8}); r.off < len(r.b); {
		id := r.byte()
		size := r.u32()
		payload := r.bytes(int(size))
		if r.err != nil {
			return nil, fmt.Errorf("guard: section at offset %d: %w", r.off, r.err)
		}
		secs = append(secs, section{id, payload})
	}

	importedGlobals, definedGlobals := 0, 0
	hasGlobal, hasExport, hasMemory := false, false, false
	for _, s := range secs {
		switch s.id {
		case secImport:
			n, mems, err := countImports(s.payload)
			if err != nil {
				return nil, fmt.Errorf("guard: import section: %w", err)
			}
			importedGlobals = n
			hasMemory = hasMemory || mems > 0
		case secGlobal:
			r := reader{b: s.payload}
			definedGlobals = int(r.u32())
			if r.err != nil {
				return nil, fmt.Errorf("guard: global section: %w", r.err)
			}
			hasGlobal = true
		case secExport:
			hasExport = true
		case secMemory:
			hasMemory = true
		}
	}
	countdown := uint32(importedGlobals + definedGlobals)
	flag := countdown + 1
	check := appendU32([]byte{0x23}, countdown)   // global.get $countdown
	check = append(check, 0x41, 0x01, 0x6b, 0x24) // i32.const 1; i32.sub; global.set
	check = appendU32(check, countdown)           //   $countdown
	check = append(check, 0x23)                   // global.get
	check = appendU32(check, countdown)           //   $countdown
	check = append(check, 0x45, 0x04, 0x40, 0x41) // i32.eqz; if; i32.const
	check = appendS32(check, Interval)            //   Interval
	check = append(check, 0x24)                   // global.set
	check = appendU32(check, countdown)           //   $countdown
	if hasMemory {
		check = append(check, 0x41, 0x00, 0x40, 0x00, 0x1a) // i32.const 0; memory.grow 0; drop
	}
	check = append(check, 0x23)                         // global.get
	check = appendU32(check, flag)                      //   $flag
	check = append(check, 0x04, 0x40, 0x00, 0x0b, 0x0b) // if; unreachable; end; end

	out := append([]byte(nil), wasm[:8]...)
	emit := func(id byte, payload []byte) {
		out = append(out, id)
		out = appendU32(out, uint32(len(payload)))
		out = append(out, payload...)
	}
	// The countdown, a mutable i32 starting at Interval, then the flag, a mutable i32 at 0.
	newGlobals := append([]byte{0x7f, 0x01, 0x41}, appendS32(nil, Interval)...)
	newGlobals = append(newGlobals, 0x0b, 0x7f, 0x01, 0x41, 0x00, 0x0b)
	newExport := appendName(nil, Export)
	newExport = append(newExport, 0x03) // global
	newExport = appendU32(newExport, flag)
	// Sections come in a fixed order [WASM-5.5.2]; a missing global or export section is put in
	// its place: before the first section that must follow it.
	order := func(id byte) int {
		switch id {
		case 1, 2, 3, 4, 5:
			return int(id)
		case 13: // tag
			return 5
		case secGlobal:
			return 6
		case secExport:
			return 7
		case 8, 9:
			return int(id)
		case 12: // data count
			return 9
		case secCode:
			return 10
		case 11:
			return 11
		}
		return -1 // custom sections stay where they are
	}
	for _, s := range secs {
		if o := order(s.id); o > 6 && !hasGlobal {
			emit(secGlobal, append([]byte{2}, newGlobals...))
			hasGlobal = true
		}
		if o := order(s.id); o > 7 && !hasExport {
			emit(secExport, append([]byte{1}, newExport...))
			hasExport = true
		}
		switch s.id {
		case secGlobal:
			emit(secGlobal, appendVecItems(s.payload, 2, newGlobals))
		case secExport:
			p, err := appendExport(s.payload, newExport)
			if err != nil {
				return nil, fmt.Errorf("guard: export section: %w", err)
			}
			emit(secExport, p)
		case secCode:
			p, err := instrumentCode(s.payload, check)
			if err != nil {
				return nil, fmt.Errorf("guard: code section: %w", err)
			}
			emit(secCode, p)
		default:
			emit(s.id, s.payload)
		}
	}
	if !hasGlobal {
		emit(secGlobal, append([]byte{2}, newGlobals...))
	}
	if !hasExport {
		emit(secExport, append([]byte{1}, newExport...))
	}
	return out, nil
}

// countImports returns how many imports of the import section are globals and memories.
func countImports(p []byte) (globals, memories int, err error) {
	r := reader{b: p}
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		r.name()
		r.name()
		switch kind := r.byte(); kind {
		case 0x00: // function: type index
			r.u32()
		case 0x01: // table: reference type, limits
			r.heapType()
			r.limits()
		case 0x02: // memory: limits
			r.limits()
			memories++
		case 0x03: // global: value type, mutability
			r.valType()
			r.byte()
			globals++
		case 0x04: // tag: attribute, type index
			r.byte()
			r.u32()
		default:
			return 0, 0, fmt.Errorf("import %d: unknown kind %#x", i, kind)
		}
	}
	return globals, memories, r.err
}

// appendVecItems returns the vector payload p (count, items) with n more items, encoded in
// items, appended.
func appendVecItems(p []byte, n uint32, items []byte) []byte {
	r := reader{b: p}
	count := r.u32()
	out := appendU32(nil, count+n)
	out = append(out, p[r.off:]...)
	return append(out, items...)
}

// appendExport appends the interrupt export to the export section, refusing a module that
// already exports the name.
func appendExport(p, item []byte) ([]byte, error) {
	r := reader{b: p}
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		if name := r.name(); string(name) == Export {
			return nil, fmt.Errorf("the module already exports %q, the name the guard needs", Export)
		}
		r.byte()
		r.u32()
	}
	if r.err != nil {
		return nil, r.err
	}
	return appendVecItems(p, 1, item), nil
}

// instrumentCode inserts check at the start of every function body and after every loop
// instruction.
func instrumentCode(p []byte, check []byte) ([]byte, error) {
	r := reader{b: p}
	n := r.u32()
	out := appendU32(make([]byte, 0, len(p)+len(p)/8), n)
	var body []byte
	for i := uint32(0); i < n; i++ {
		size := r.u32()
		start := r.off
		code := r.bytes(int(size))
		if r.err != nil {
			return nil, fmt.Errorf("function body %d: %w", i, r.err)
		}
		var err error
		body, err = instrumentBody(body[:0], code, check)
		if err != nil {
			return nil, fmt.Errorf("function body %d (section offset %d): %w", i, start, err)
		}
		out = appendU32(out, uint32(len(body)))
		out = append(out, body...)
	}
	if r.off != len(p) {
		return nil, errors.New("trailing bytes after the function bodies")
	}
	return out, nil
}

// instrumentBody appends to out the function body code with check inserted after the locals and
// after every loop's block type.
func instrumentBody(out, code, check []byte) ([]byte, error) {
	r := reader{b: code}
	groups := r.u32()
	for i := uint32(0); i < groups; i++ {
		r.u32()
		r.valType()
	}
	if r.err != nil {
		return nil, fmt.Errorf("locals: %w", r.err)
	}
	out = append(out, code[:r.off]...)
	out = append(out, check...)
	copied := r.off
	for r.off < len(code) {
		at := r.off
		op := r.byte()
		if err := r.immediates(op); err != nil {
			return nil, fmt.Errorf("instruction %#x at offset %d: %w", op, at, err)
		}
		if r.err != nil {
			return nil, fmt.Errorf("instruction %#x at offset %d: %w", op, at, r.err)
		}
		if op == 0x03 { // loop: check at the head of every iteration
			out = append(out, code[copied:r.off]...)
			out = append(out, check...)
			copied = r.off
		}
	}
	return append(out, code[copied:]...), nil
}

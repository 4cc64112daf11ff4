// Package guard instruments a WebAssembly module so that the host can stop a call that runs too
// long without a goroutine and a timer per call. It adds two mutable i32 globals, a countdown
// and an interrupt flag (exported as Export), and at the head of every loop and the entry of
// every function that may call itself (see instrumentCode), which every unbounded computation
// passes through, a check:
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

	importedFuncs, importedGlobals, definedGlobals := 0, 0, 0
	hasGlobal, hasExport, hasMemory := false, false, false
	for _, s := range secs {
		switch s.id {
		case secImport:
			fns, n, mems, err := countImports(s.payload)
			if err != nil {
				return nil, fmt.Errorf("guard: import section: %w", err)
			}
			importedFuncs, importedGlobals = fns, n
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
			p, err := instrumentCode(s.payload, check, uint32(importedFuncs))
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

// countImports returns how many imports of the import section are functions, globals and
// memories.
func countImports(p []byte) (funcs, globals, memories int, err error) {
	r := reader{b: p}
	n := r.u32()
	for i := uint32(0); i < n && r.err == nil; i++ {
		r.name()
		r.name()
		switch kind := r.byte(); kind {
		case 0x00: // function: type index
			r.u32()
			funcs++
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
			return 0, 0, 0, fmt.Errorf("import %d: unknown kind %#x", i, kind)
		}
	}
	return funcs, globals, memories, r.err
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

// instrumentCode inserts check after every loop instruction, and at the start of the body of
// every function that may call itself: one in a cycle of the module's direct calls, or one that
// calls indirectly (its callee is not known). Any endless computation either loops, and passes a
// loop head at each iteration, or calls without end, and so goes round a cycle of calls, which
// has a function of the first kind on it or one of the second. A function that is in no cycle,
// and whose own loops are checked, needs no check at its entry: skipping those spares the small
// helpers that compiled code calls most often (half the guard's cost on the stock rule's
// AssemblyScript and Rust builds). importedFuncs is the number of imported functions, which
// come first in the function index space and have no body here.
func instrumentCode(p []byte, check []byte, importedFuncs uint32) ([]byte, error) {
	r := reader{b: p}
	n := r.u32()
	if r.err != nil {
		return nil, r.err
	}
	bodies := make([][]byte, 0, min(n, uint32(len(p))))
	starts := make([]int, 0, cap(bodies))
	for i := uint32(0); i < n; i++ {
		size := r.u32()
		start := r.off
		code := r.bytes(int(size))
		if r.err != nil {
			return nil, fmt.Errorf("function body %d: %w", i, r.err)
		}
		bodies, starts = append(bodies, code), append(starts, start)
	}
	if r.off != len(p) {
		return nil, errors.New("trailing bytes after the function bodies")
	}
	calls := make([][]uint32, len(bodies))
	entry := make([]bool, len(bodies))
	for i, code := range bodies {
		var err error
		calls[i], entry[i], err = scanCalls(code, importedFuncs, uint32(len(bodies)))
		if err != nil {
			return nil, fmt.Errorf("function body %d (section offset %d): %w", i, starts[i], err)
		}
	}
	for i, cyclic := range inCycle(calls) {
		entry[i] = entry[i] || cyclic
	}
	out := appendU32(make([]byte, 0, len(p)+len(p)/8), n)
	var body []byte
	for i, code := range bodies {
		var err error
		body, err = instrumentBody(body[:0], code, check, entry[i])
		if err != nil {
			return nil, fmt.Errorf("function body %d (section offset %d): %w", i, starts[i], err)
		}
		out = appendU32(out, uint32(len(body)))
		out = append(out, body...)
	}
	return out, nil
}

// scanCalls returns the defined functions (indexes among the n bodies) that the function body
// code calls directly, and whether it calls indirectly.
func scanCalls(code []byte, importedFuncs, n uint32) (callees []uint32, indirect bool, err error) {
	r, err := afterLocals(code)
	if err != nil {
		return nil, false, err
	}
	for r.off < len(code) {
		at := r.off
		op := r.byte()
		switch op {
		case 0x10, 0x12: // call, return_call
			f := r.u32()
			if r.err == nil && f >= importedFuncs && f-importedFuncs < n {
				callees = append(callees, f-importedFuncs)
			}
			continue
		case 0x11, 0x13, 0x14, 0x15: // call_indirect, return_call_indirect, call_ref, return_call_ref
			indirect = true
		}
		if err := r.immediates(op); err != nil {
			return nil, false, fmt.Errorf("instruction %#x at offset %d: %w", op, at, err)
		}
		if r.err != nil {
			return nil, false, fmt.Errorf("instruction %#x at offset %d: %w", op, at, r.err)
		}
	}
	return callees, indirect, r.err
}

// inCycle reports, for each node of the graph given by its edges, whether it is on a cycle: in a
// strongly connected component of more than one node, or calling itself (Tarjan's algorithm,
// iterative so that a long chain of calls cannot exhaust the stack).
func inCycle(edges [][]uint32) []bool {
	n := len(edges)
	const unvisited = -1
	index, low := make([]int, n), make([]int, n)
	for i := range index {
		index[i] = unvisited
	}
	onStack := make([]bool, n)
	cyclic := make([]bool, n)
	var stack []int
	type frame struct{ v, next int }
	next := 0
	for root := range n {
		if index[root] != unvisited {
			continue
		}
		call := []frame{{root, 0}}
		index[root], low[root] = next, next
		next++
		stack = append(stack, root)
		onStack[root] = true
		for len(call) > 0 {
			f := &call[len(call)-1]
			if f.next < len(edges[f.v]) {
				w := int(edges[f.v][f.next])
				f.next++
				if w == f.v {
					cyclic[w] = true
				}
				switch {
				case index[w] == unvisited:
					index[w], low[w] = next, next
					next++
					stack = append(stack, w)
					onStack[w] = true
					call = append(call, frame{w, 0})
				case onStack[w]:
					low[f.v] = min(low[f.v], index[w])
				}
				continue
			}
			v := f.v
			call = call[:len(call)-1]
			if len(call) > 0 {
				u := call[len(call)-1].v
				low[u] = min(low[u], low[v])
			}
			if low[v] == index[v] { // v roots a component: pop it
				i := len(stack) - 1
				for stack[i] != v {
					i--
				}
				if len(stack)-i > 1 {
					for _, w := range stack[i:] {
						cyclic[w] = true
					}
				}
				for _, w := range stack[i:] {
					onStack[w] = false
				}
				stack = stack[:i]
			}
		}
	}
	return cyclic
}

// afterLocals returns a reader of the function body code positioned after its local
// declarations, at the first instruction.
func afterLocals(code []byte) (reader, error) {
	r := reader{b: code}
	groups := r.u32()
	for i := uint32(0); i < groups; i++ {
		r.u32()
		r.valType()
	}
	if r.err != nil {
		return r, fmt.Errorf("locals: %w", r.err)
	}
	return r, nil
}

// instrumentBody appends to out the function body code with check inserted after every loop's
// block type and, if entry is set, after the locals.
func instrumentBody(out, code, check []byte, entry bool) ([]byte, error) {
	r, err := afterLocals(code)
	if err != nil {
		return nil, err
	}
	out = append(out, code[:r.off]...)
	if entry {
		out = append(out, check...)
	}
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

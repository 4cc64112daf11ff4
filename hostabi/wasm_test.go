package hostabi

import "encoding/binary"

// A tiny WebAssembly binary builder for hand-made test modules (no wat compiler needed).

const (
	tI32 = 0x7f
	tI64 = 0x7e
)

type wimport struct {
	mod, name       string
	params, results []byte
}

type wfunc struct {
	export          string
	params, results []byte
	body            []byte // instructions without the final end
}

type wmod struct {
	imports  []wimport
	funcs    []wfunc
	memMin   uint32
	noMemory bool
	data     []byte // active data segment at address 0
	raw      []byte // appended verbatim after the header instead of the sections, when set
}

func uleb(dst []byte, v uint64) []byte {
	return binary.AppendUvarint(dst, v)
}

func sleb(dst []byte, v int64) []byte {
	for {
		b := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && b&0x40 == 0) || (v == -1 && b&0x40 != 0) {
			return append(dst, b)
		}
		dst = append(dst, b|0x80)
	}
}

func name(dst []byte, s string) []byte { return append(uleb(dst, uint64(len(s))), s...) }

func section(dst []byte, id byte, body []byte) []byte {
	dst = append(dst, id)
	dst = uleb(dst, uint64(len(body)))
	return append(dst, body...)
}

func functype(dst, params, results []byte) []byte {
	dst = append(dst, 0x60)
	dst = append(uleb(dst, uint64(len(params))), params...)
	return append(uleb(dst, uint64(len(results))), results...)
}

func (m wmod) bytes() []byte {
	out := []byte("\x00asm\x01\x00\x00\x00")
	if m.raw != nil {
		return append(out, m.raw...)
	}
	var types []byte
	types = uleb(types, uint64(len(m.imports)+len(m.funcs)))
	for _, im := range m.imports {
		types = functype(types, im.params, im.results)
	}
	for _, f := range m.funcs {
		types = functype(types, f.params, f.results)
	}
	out = section(out, 1, types)
	if len(m.imports) > 0 {
		var b []byte
		b = uleb(b, uint64(len(m.imports)))
		for i, im := range m.imports {
			b = name(b, im.mod)
			b = name(b, im.name)
			b = append(b, 0x00)
			b = uleb(b, uint64(i))
		}
		out = section(out, 2, b)
	}
	var fs []byte
	fs = uleb(fs, uint64(len(m.funcs)))
	for i := range m.funcs {
		fs = uleb(fs, uint64(len(m.imports)+i))
	}
	out = section(out, 3, fs)
	if !m.noMemory {
		out = section(out, 5, uleb([]byte{1, 0x00}, uint64(m.memMin)))
	}
	var ex []byte
	n := 0
	for _, f := range m.funcs {
		if f.export != "" {
			n++
		}
	}
	if !m.noMemory {
		n++
	}
	ex = uleb(ex, uint64(n))
	for i, f := range m.funcs {
		if f.export != "" {
			ex = name(ex, f.export)
			ex = append(ex, 0x00)
			ex = uleb(ex, uint64(len(m.imports)+i))
		}
	}
	if !m.noMemory {
		ex = name(ex, "memory")
		ex = append(ex, 0x02, 0x00)
	}
	out = section(out, 7, ex)
	var code []byte
	code = uleb(code, uint64(len(m.funcs)))
	for _, f := range m.funcs {
		body := append([]byte{0x00}, f.body...) // no locals
		body = append(body, 0x0b)
		code = uleb(code, uint64(len(body)))
		code = append(code, body...)
	}
	out = section(out, 10, code)
	if len(m.data) > 0 {
		d := []byte{1, 0x00, 0x41, 0x00, 0x0b}
		d = uleb(d, uint64(len(m.data)))
		d = append(d, m.data...)
		out = section(out, 11, d)
	}
	return out
}

// Instruction helpers.
func i32const(v int32) []byte { return sleb([]byte{0x41}, int64(v)) }
func i64const(v int64) []byte { return sleb([]byte{0x42}, v) }

var (
	opUnreachable = []byte{0x00}
	// loopForever is (loop (br 0)).
	loopForever = []byte{0x03, 0x40, 0x0c, 0x00, 0x0b}
	// growUntilFull is (loop (br_if 0 (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))).
	growUntilFull = []byte{0x03, 0x40, 0x41, 0x01, 0x40, 0x00, 0x41, 0x7f, 0x47, 0x0d, 0x00, 0x0b}
)

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// dropDecision is an encoded drop decision.
var dropDecision = []byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// tinyRule returns a minimal ABI v1 rule whose turnout_decide runs decide (which must leave an
// i64 on the stack); nil decide returns the drop decision stored at address 0.
func tinyRule(version int32, decide []byte) wmod {
	if decide == nil {
		decide = i64const(int64(len(dropDecision)))
	}
	return wmod{
		memMin: 1,
		data:   dropDecision,
		funcs: []wfunc{
			{export: "turnout_abi_version", results: []byte{tI32}, body: i32const(version)},
			{export: "turnout_buffer", params: []byte{tI32}, results: []byte{tI32}, body: i32const(1024)},
			{export: "turnout_decide", params: []byte{tI32}, results: []byte{tI64}, body: decide},
		},
	}
}

package guard

import (
	"errors"
	"fmt"
)

var errShort = errors.New("unexpected end")

// reader decodes the WebAssembly binary format. The first error sticks: later reads return
// zero values, and callers check err once after a group of reads.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.off = len(r.b)
}

func (r *reader) byte() byte {
	if r.off >= len(r.b) {
		r.fail(errShort)
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) bytes(n int) []byte {
	if n < 0 || r.off+n > len(r.b) {
		r.fail(errShort)
		return nil
	}
	b := r.b[r.off : r.off+n]
	r.off += n
	return b
}

// leb reads an unsigned or signed LEB128 number of at most maxBytes bytes, returning the
// unsigned value (enough for counts and indices; signed values are only skipped).
func (r *reader) leb(maxBytes int) uint64 {
	var v uint64
	for i := 0; i < maxBytes; i++ {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			return v
		}
	}
	r.fail(errors.New("LEB128 number too long"))
	return 0
}

func (r *reader) u32() uint32 { return uint32(r.leb(5)) }
func (r *reader) s32()        { r.leb(5) }
func (r *reader) s33()        { r.leb(5) }
func (r *reader) s64()        { r.leb(10) }

// name reads a name (a vector of bytes).
func (r *reader) name() []byte { return r.bytes(int(r.u32())) }

// valType skips a value type: a one-byte number, vector or reference type, or a typed reference
// (0x63/0x64 followed by a heap type).
func (r *reader) valType() {
	switch c := r.byte(); c {
	case 0x63, 0x64:
		r.heapType()
	}
}

// heapType skips a reference or heap type: an abstract one-byte type or a type index (s33).
func (r *reader) heapType() {
	if r.off < len(r.b) && r.b[r.off]&0x40 != 0 && r.b[r.off]&0x80 == 0 {
		r.off++ // a one-byte negative s33: an abstract heap type or a reference type
		return
	}
	r.s33()
}

// limits skips table or memory limits: flags, minimum, and a maximum when flags say so.
func (r *reader) limits() {
	flags := r.byte()
	r.leb(10)
	if flags&1 != 0 {
		r.leb(10)
	}
}

// blockType skips a block type: empty (0x40), a value type, or a type index (s33).
func (r *reader) blockType() {
	if r.off >= len(r.b) {
		r.fail(errShort)
		return
	}
	switch c := r.b[r.off]; {
	case c == 0x40, c >= 0x6f && c <= 0x7f:
		r.off++
	case c == 0x63 || c == 0x64:
		r.off++
		r.heapType()
	default:
		r.s33()
	}
}

// memarg skips a memory argument: alignment (bit 6 announces a memory index) and offset.
func (r *reader) memarg() {
	align := r.u32()
	if align&0x40 != 0 {
		r.u32()
	}
	r.leb(10)
}

// immediates skips the immediates of the instruction whose opcode op was just read
// [WASM-5.4], with the extensions in use by language toolchains: sign extension, saturating
// conversions, bulk memory, reference types, SIMD, threads, tail calls and the legacy exception
// instructions. An opcode it does not know is an error: skipping it wrongly would misread every
// instruction after it.
func (r *reader) immediates(op byte) error {
	switch {
	case op == 0x02 || op == 0x03 || op == 0x04 || op == 0x06: // block, loop, if, try
		r.blockType()
	case op == 0x00 || op == 0x01 || op == 0x05 || op == 0x0b || op == 0x0f || op == 0x19: // unreachable, nop, else, end, return, catch_all
	case op == 0x07 || op == 0x08 || op == 0x09 || op == 0x18: // catch, throw, rethrow, delegate
		r.u32()
	case op == 0x0c || op == 0x0d: // br, br_if
		r.u32()
	case op == 0x0e: // br_table
		n := r.u32()
		for i := uint32(0); i <= n && r.err == nil; i++ {
			r.u32()
		}
	case op == 0x10 || op == 0x12 || op == 0x14 || op == 0x15: // call, return_call, call_ref, return_call_ref
		r.u32()
	case op == 0x11 || op == 0x13: // call_indirect, return_call_indirect
		r.u32()
		r.u32()
	case op == 0x1a || op == 0x1b: // drop, select
	case op == 0x1c: // select t*
		n := r.u32()
		for i := uint32(0); i < n && r.err == nil; i++ {
			r.valType()
		}
	case op >= 0x20 && op <= 0x26: // local.get/set/tee, global.get/set, table.get/set
		r.u32()
	case op >= 0x28 && op <= 0x3e: // loads and stores
		r.memarg()
	case op == 0x3f || op == 0x40: // memory.size, memory.grow
		r.u32()
	case op == 0x41:
		r.s32()
	case op == 0x42:
		r.s64()
	case op == 0x43:
		r.bytes(4)
	case op == 0x44:
		r.bytes(8)
	case op >= 0x45 && op <= 0xc4: // numeric and sign extension
	case op == 0xd0: // ref.null
		r.heapType()
	case op == 0xd1 || op == 0xd3 || op == 0xd4: // ref.is_null, ref.eq, ref.as_non_null
	case op == 0xd2 || op == 0xd5 || op == 0xd6: // ref.func, br_on_null, br_on_non_null
		r.u32()
	case op == 0xfc:
		return r.prefixFC(r.u32())
	case op == 0xfd:
		return r.prefixFD(r.u32())
	case op == 0xfe:
		if sub := r.u32(); sub == 0x03 { // atomic.fence
			r.byte()
		} else {
			r.memarg()
		}
	default:
		return fmt.Errorf("unknown opcode %#x", op)
	}
	return nil
}

// prefixFC skips the immediates of the 0xfc instructions: saturating conversions, bulk memory
// and table instructions.
func (r *reader) prefixFC(sub uint32) error {
	switch {
	case sub <= 7: // trunc_sat
	case sub == 8 || sub == 10 || sub == 12 || sub == 14: // memory.init, memory.copy, table.init, table.copy
		r.u32()
		r.u32()
	case sub == 9 || sub == 11 || sub == 13 || (sub >= 15 && sub <= 17): // data.drop, memory.fill, elem.drop, table.grow/size/fill
		r.u32()
	default:
		return fmt.Errorf("unknown instruction 0xfc %d", sub)
	}
	return nil
}

// prefixFD skips the immediates of the SIMD instructions.
func (r *reader) prefixFD(sub uint32) error {
	switch {
	case sub <= 11 || sub == 92 || sub == 93: // v128 loads and stores, load32/64_zero
		r.memarg()
	case sub == 12 || sub == 13: // v128.const, i8x16.shuffle
		r.bytes(16)
	case sub >= 21 && sub <= 34: // extract and replace lane
		r.byte()
	case sub >= 84 && sub <= 91: // load and store lane
		r.memarg()
		r.byte()
	case sub <= 275: // every other SIMD instruction has none
	default:
		return fmt.Errorf("unknown instruction 0xfd %d", sub)
	}
	return nil
}

func appendU32(b []byte, v uint32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}

// appendS32 appends v as a signed LEB128 number.
func appendS32(b []byte, v int32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func appendName(b []byte, s string) []byte {
	b = appendU32(b, uint32(len(s)))
	return append(b, s...)
}

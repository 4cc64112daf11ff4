// Package wire is the binary encoding of turnout's rule ABI v1: the event the host hands to a
// rule and the decision the rule hands back. It is the one place that knows the byte layout; the
// host (package hostabi) and the guest SDK (package filters/sdk) both import it, so it is pure Go
// with no dependencies and builds for GOOS=wasip1.
//
// Invariant: the read side (EventView.Parse, DecisionView.Parse) never reads outside the slice it
// is given, never panics on any input, and does not allocate once its reusable slices have grown
// to the largest message seen. Views point into the parsed buffer: they are valid only as long as
// that buffer is neither modified nor reused. The layout is specified in hostabi/ABI.md.
package wire

import (
	"encoding/binary"
	"errors"
	"strconv"
)

// Version is the ABI version this package encodes. A rule exports turnout_abi_version returning
// the version it was built for; a host refuses a module whose version is newer than its own.
const Version = 1

// Absent is the length that marks an absent optional attribute or absent data.
const Absent = 0xFFFFFFFF

// Attribute indexes, in the order attributes appear in an encoded event.
const (
	AttrID = iota
	AttrSource
	AttrSpecVersion
	AttrType
	AttrDataContentType
	AttrDataSchema
	AttrSubject
	AttrTime
	NumAttrs
)

// AttrNames are the CloudEvents context attribute names, by index.
var AttrNames = [NumAttrs]string{"id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time"}

// AttrIndex returns the index of the context attribute called name, or -1 when name is not one
// of the attributes in AttrNames (it may then be an extension).
func AttrIndex(name string) int {
	for i, n := range AttrNames {
		if n == name {
			return i
		}
	}
	return -1
}

// Decision actions, the first byte of an encoded decision.
const (
	ActionDrop  = 1
	ActionRoute = 2
	ActionFail  = 3
)

// Mutation operations inside an encoded decision.
const (
	OpSetAttribute    = 1 // name = context attribute, value = its string form
	OpRemoveAttribute = 2 // name = optional context attribute, value empty
	OpSetExtension    = 3 // name = extension, value = its string form
	OpRemoveExtension = 4 // name = extension, value empty
	OpSetData         = 5 // name empty, value = the new data
)

// Limits a decoder enforces on a decision, so a broken rule cannot make the host allocate
// without bound.
const (
	MaxOutputs   = 256
	MaxMutations = 1024
)

// Errors returned by the parsers. They are wrapped with the position where parsing stopped.
var (
	ErrShort   = errors.New("truncated")
	ErrVersion = errors.New("unknown event format version")
	ErrAction  = errors.New("unknown action")
	ErrOp      = errors.New("unknown mutation op")
	ErrTrail   = errors.New("trailing bytes")
	ErrLimit   = errors.New("count over limit")
)

// ParseError is a parse failure at byte offset Off.
type ParseError struct {
	What string
	Off  int
	Err  error
}

func (e *ParseError) Error() string {
	return "wire: " + e.What + " at byte " + strconv.Itoa(e.Off) + ": " + e.Err.Error()
}
func (e *ParseError) Unwrap() error { return e.Err }

// AppendU32 appends n as 4 little-endian bytes.
func AppendU32(dst []byte, n uint32) []byte { return binary.LittleEndian.AppendUint32(dst, n) }

// AppendStr appends s as a length-prefixed string (u32 length, then the bytes).
func AppendStr[T ~string | ~[]byte](dst []byte, s T) []byte {
	dst = AppendU32(dst, uint32(len(s)))
	return append(dst, s...)
}

// Begin appends a placeholder length and returns its position, for a value the caller appends
// in place (a formatted time); End patches the length in.
func Begin(dst []byte) ([]byte, int) { return append(dst, 0, 0, 0, 0), len(dst) }

// End patches the length of the value started at pos by Begin.
func End(dst []byte, pos int) []byte {
	binary.LittleEndian.PutUint32(dst[pos:], uint32(len(dst)-pos-4))
	return dst
}

// span is a byte range of the parsed buffer.
type span struct{ off, n uint32 }

// reader walks a buffer; every read is bounds-checked.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) u8() byte {
	if r.err != nil || r.off >= len(r.b) {
		r.fail(ErrShort)
		return 0
	}
	v := r.b[r.off]
	r.off++
	return v
}

func (r *reader) u32() uint32 {
	if r.err != nil || len(r.b)-r.off < 4 {
		r.fail(ErrShort)
		return 0
	}
	v := binary.LittleEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v
}

// str reads a length-prefixed string; ok is false for the Absent marker when absentOK.
func (r *reader) str(absentOK bool) (s span, present bool) {
	n := r.u32()
	if r.err != nil {
		return span{}, false
	}
	if n == Absent && absentOK {
		return span{}, false
	}
	if uint64(n) > uint64(len(r.b)-r.off) {
		r.fail(ErrShort)
		return span{}, false
	}
	s = span{uint32(r.off), n}
	r.off += int(n)
	return s, true
}

func (r *reader) bytes(s span) []byte { return r.b[s.off : s.off+s.n : s.off+s.n] }

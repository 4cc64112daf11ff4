//go:build wasip1

package sdk

import (
	"unsafe"

	"github.com/turnout-router/turnout/hostabi/wire"
)

// buf is the ABI buffer (hostabi/ABI.md, "Memory"): the host writes the config and each event
// here. Go's garbage collector does not move objects, so its address is stable until it is
// replaced by a larger one in turnout_buffer.
var (
	buf    []byte
	errMsg []byte
)

func pack(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b))))<<32 | uint64(len(b))
}

//go:wasmexport turnout_abi_version
func abiVersion() int32 { return wire.Version }

//go:wasmexport turnout_buffer
func buffer(size uint32) uint32 {
	if size == 0 {
		size = 1
	}
	if uint32(cap(buf)) < size {
		c := uint32(4096)
		for c < size {
			c *= 2
		}
		buf = make([]byte, c)
	}
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(buf))))
}

//go:wasmexport turnout_init
func initExport(n uint32) uint64 {
	if err := initRule(buf[:n]); err != nil {
		errMsg = append(errMsg[:0], err.Error()...)
		if len(errMsg) == 0 {
			errMsg = append(errMsg, "init failed"...)
		}
		return pack(errMsg)
	}
	return 0
}

//go:wasmexport turnout_decide
func decideExport(n uint32) uint64 { return pack(decide(buf[:n])) }

//go:wasmimport turnout log
func turnoutLog(level int32, ptr unsafe.Pointer, n uint32)

func hostLog(level int, msg string) {
	turnoutLog(int32(level), unsafe.Pointer(unsafe.StringData(msg)), uint32(len(msg)))
}

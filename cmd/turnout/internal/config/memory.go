package config

import (
	"gopkg.in/yaml.v3"

	"github.com/turnout-router/turnout/internal/bytesize"
)

// MinMemoryLimit is the lowest memory_limit accepted: 32 MiB. turnout's Go heap alone is about
// 15 MiB idle with one route, and a soft limit below what the process needs makes the garbage
// collector run all the time; a smaller value is almost always a missing unit (200, not 200MiB).
const MinMemoryLimit = 32 << 20

// checkMemoryLimit decodes and checks the top-level memory_limit n (a size: bytes, or a number
// with a unit such as 200MiB, read by package bytesize) and returns it in bytes; 0 when it is
// absent or refused. It decodes the key on its own, so that a value that is not a size does not
// stop the decoding of the rest of the file.
func checkMemoryLimit(c *collector, n *yaml.Node) int64 {
	if n.Kind == 0 || isNull(n) {
		return 0
	}
	var v bytesize.Size
	if !decodeStrict(c, n, "memory_limit", &v) {
		return 0
	}
	switch {
	case v <= 0:
		c.add(n.Line, "memory_limit", "must be positive: a size such as 200MiB (leave it out for no limit)")
		return 0
	case v < MinMemoryLimit:
		c.add(n.Line, "memory_limit", "%d bytes is below the minimum of %s (a unit is missing? e.g. 200MiB)", int64(v), bytesize.Size(MinMemoryLimit))
		return 0
	}
	return int64(v)
}

package main

import (
	"log/slog"
	"runtime/debug"

	"github.com/turnout-router/turnout/internal/bytesize"
)

// applyMemoryLimit sets the Go runtime's soft memory limit (runtime/debug.SetMemoryLimit) to
// memory_limit (limit bytes; 0: not configured), unless the GOMEMLIMIT environment variable is
// set: the runtime applied that one at start and it wins. It logs which limit applies, and
// returns the limit in force (math.MaxInt64: none) and a function that puts back the limit that
// was in force before, which cmdRun calls when the run ends, so that a run in-process (tests)
// leaves the process as it found it. getenv is os.Getenv outside tests.
//
// The limit makes the garbage collector work harder as the heap nears it instead of letting the
// heap double between collections (GOGC=100), which on a small device is the difference between
// fitting and being killed for lack of memory. It is soft: when live data passes it, the process
// goes on (the collector's CPU is capped at about half a core) rather than failing.
func applyMemoryLimit(limit int64, getenv func(string) string, logger *slog.Logger) (inForce int64, restore func()) {
	current := debug.SetMemoryLimit(-1)
	if env := getenv("GOMEMLIMIT"); env != "" {
		attrs := []any{"source", "GOMEMLIMIT", "GOMEMLIMIT", env, "bytes", current}
		if limit > 0 {
			attrs = append(attrs, "memory_limit_ignored", bytesize.Size(limit).String())
		}
		logger.Info("memory limit", attrs...)
		return current, func() {}
	}
	if limit > 0 {
		debug.SetMemoryLimit(limit)
		logger.Info("memory limit", "source", "memory_limit", "limit", bytesize.Size(limit).String(), "bytes", limit)
		return limit, func() { debug.SetMemoryLimit(current) }
	}
	logger.Info("memory limit", "source", "none", "hint", "set memory_limit (or GOMEMLIMIT) on a device with little memory")
	return current, func() {}
}

// releaseStartupMemory collects garbage and hands the freed memory back to the operating system
// at once (runtime/debug.FreeOSMemory). Starting leaves behind what decoding and compiling the
// rules allocated, tens of MiB with several routes, which the runtime would otherwise return only
// gradually, keeping an idle process's RSS at twice its live heap. Called once, when turnout is
// running; it costs one collection.
func releaseStartupMemory() { debug.FreeOSMemory() }

package main

import (
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/turnout-router/turnout/internal/testutil"
)

// TestApplyMemoryLimit checks which soft memory limit applies: memory_limit when GOMEMLIMIT is
// not set, GOMEMLIMIT (already applied by the runtime) when it is, and none without either; that
// the log says which; and that restoring puts back the limit in force before.
func TestApplyMemoryLimit(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(orig) })
	const envLimit = 300 << 20 // what the runtime would have set from GOMEMLIMIT=300MiB
	tests := []struct {
		name   string
		config int64
		env    string
		want   int64
		log    []string
	}{
		{"memory_limit", 200 << 20, "", 200 << 20, []string{"source=memory_limit", "limit=200MiB", "bytes=209715200"}},
		{"GOMEMLIMIT wins", 200 << 20, "300MiB", envLimit, []string{"source=GOMEMLIMIT", "GOMEMLIMIT=300MiB", "bytes=314572800", "memory_limit_ignored=200MiB"}},
		{"GOMEMLIMIT alone", 0, "300MiB", envLimit, []string{"source=GOMEMLIMIT", "GOMEMLIMIT=300MiB"}},
		{"neither", 0, "", math.MaxInt64, []string{"source=none", "set memory_limit"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			debug.SetMemoryLimit(math.MaxInt64)
			if tt.env != "" {
				debug.SetMemoryLimit(envLimit)
			}
			logs := &testutil.SyncBuffer{}
			getenv := func(k string) string {
				if k == "GOMEMLIMIT" {
					return tt.env
				}
				return ""
			}
			before := debug.SetMemoryLimit(-1)
			got, restore := applyMemoryLimit(tt.config, getenv, slog.New(slog.NewTextHandler(logs, nil)))
			if now := debug.SetMemoryLimit(-1); got != tt.want || now != tt.want {
				t.Errorf("limit returned %d, in force %d, want %d", got, now, tt.want)
			}
			restore()
			if now := debug.SetMemoryLimit(-1); now != before {
				t.Errorf("limit %d after restore, want the %d in force before", now, before)
			}
			for _, w := range tt.log {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("log %q does not say %q", logs.String(), w)
				}
			}
		})
	}
}

// TestRunMemoryLimit runs turnout with memory_limit and reads the limit in force where an
// operator would, in the Go collector's metric go_gc_gomemlimit_bytes.
func TestRunMemoryLimit(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(orig) })
	t.Setenv("GOMEMLIMIT", "")
	dir := t.TempDir()
	adminAddr := testutil.FreeAddr(t)
	path := writeConfig(t, dir, fmt.Sprintf(`
data_dir: "%s"
memory_limit: 200MiB
admin: { listen: "%s" }
inputs:
  webhook: { type: http, listen: "%s" }
outputs:
  log: { type: file, path: "%s" }
routes:
  care: { inputs: [webhook], outputs: [log] }
`, filepath.Join(dir, "state"), adminAddr, testutil.FreeAddr(t), filepath.Join(dir, "out.jsonl")))
	r := startRun(t, path, adminAddr)
	_, metrics, err := httpGet("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(metrics, "\ngo_gc_gomemlimit_bytes 2.097152e+08\n") {
		t.Errorf("go_gc_gomemlimit_bytes is not 200 MiB:\n%s", grepLines(metrics, "gomemlimit"))
	}
	if !strings.Contains(r.stderr.String(), "source=memory_limit") {
		t.Errorf("the log does not say memory_limit applied:\n%s", r.stderr.String())
	}
	if code := r.stop(t); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if now := debug.SetMemoryLimit(-1); now != orig {
		t.Errorf("memory limit %d after the run ended, want the %d in force before it", now, orig)
	}
}

// grepLines returns the lines of s containing sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

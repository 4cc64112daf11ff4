package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestMemoryLimit checks the top-level memory_limit: sizes with and without a unit are read in
// bytes, and a value that is not a size, not positive or implausibly small is refused with the
// file, line and key.
func TestMemoryLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "turnout.yaml")
	tests := []struct {
		name  string
		value string // the YAML after "memory_limit: "; empty: the key is absent
		want  int64
		err   string // "LINE: key: message-prefix"; empty: accepted
	}{
		{"absent", "", 0, ""},
		{"MiB", "200MiB", 200 << 20, ""},
		{"GiB with a fraction", "1.5GiB", 3 << 29, ""},
		{"decimal MB", "250MB", 250e6, ""},
		{"plain bytes", "209715200", 200 << 20, ""},
		{"quoted", `"64 MiB"`, 64 << 20, ""},
		{"the minimum", "32MiB", MinMemoryLimit, ""},
		{"zero", "0", 0, "2: memory_limit: must be positive"},
		{"negative", "-200MiB", 0, `2: memory_limit: "-200MiB" is not a size`},
		{"unit missing", "200", 0, "2: memory_limit: 200 bytes is below the minimum of 32MiB (a unit is missing? e.g. 200MiB)"},
		{"unknown unit", "200MiBs", 0, `2: memory_limit: "200MiBs" is not a size`},
		{"not a scalar", "{ soft: 200MiB }", 0, "2: memory_limit: expected a size such as 256MiB, got a mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := "log: { level: info }\n"
			if tt.value != "" {
				text += "memory_limit: " + tt.value + "\n"
			}
			text += strings.TrimPrefix(validDoc, "\n")
			cfg, err := Parse(path, []byte(text), Options{LookupEnv: noEnv})
			if tt.err == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if cfg.MemoryLimit != tt.want {
					t.Errorf("MemoryLimit = %d, want %d", cfg.MemoryLimit, tt.want)
				}
				return
			}
			var es Errors
			if !errors.As(err, &es) || len(es) != 1 {
				t.Fatalf("Parse error = %v, want one error", err)
			}
			if got := es[0].Error(); !strings.HasPrefix(got, path+":"+tt.err) {
				t.Errorf("error = %q\nwant prefix %q", got, path+":"+tt.err)
			}
			if cfg.MemoryLimit != 0 {
				t.Errorf("MemoryLimit = %d after a refused value, want 0", cfg.MemoryLimit)
			}
		})
	}
}

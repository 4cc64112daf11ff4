package bytesize

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Size
	}{
		{"0", 0},
		{"268435456", 256 << 20},
		{"256MiB", 256 << 20},
		{"256mib", 256 << 20},
		{" 64 MiB ", 64 << 20},
		{"1.5GiB", 3 << 29},
		{"500MB", 500e6},
		{"2kB", 2000},
		{"10KiB", 10 << 10},
		{"64M", 64 << 20},
		{"1G", 1 << 30},
		{"1TiB", 1 << 40},
		{"12B", 12},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("Parse(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{"", "MiB", "-1", "-1MiB", "1e6", "0x10", "ten", "1.5", "1,000", "99999999999999999999", "9999999TiB", "NaNMiB", "InfGiB", "1_000"} {
		t.Run(in, func(t *testing.T) {
			got, err := Parse(in)
			if err == nil {
				t.Fatalf("Parse(%q) = %d, want an error", in, got)
			}
			if !strings.Contains(err.Error(), "\""+in+"\"") {
				t.Errorf("error %q does not quote the input", err)
			}
		})
	}
}

func TestString(t *testing.T) {
	for _, tt := range []struct {
		in   Size
		want string
	}{{0, "0B"}, {1000, "1000B"}, {1 << 10, "1KiB"}, {256 << 20, "256MiB"}, {3 << 29, "1536MiB"}, {1 << 40, "1TiB"}} {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("Size(%d).String() = %q, want %q", tt.in, got, tt.want)
		}
		back, err := Parse(tt.in.String())
		if err != nil || back != tt.in {
			t.Errorf("Parse(%q) = %d, %v; want %d", tt.in.String(), back, err, tt.in)
		}
	}
}

// FuzzParse: Parse never panics, and what it accepts is non-negative and survives String.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"0", "256MiB", "1.5GiB", "500MB", "-1", "1e6", " 7 k "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := Parse(s)
		if err != nil {
			return
		}
		if v < 0 {
			t.Fatalf("Parse(%q) = %d < 0", s, v)
		}
		if back, err := Parse(v.String()); err != nil || back != v {
			t.Fatalf("Parse(%q) = %d; Parse(%q) = %d, %v", s, v, v.String(), back, err)
		}
	})
}

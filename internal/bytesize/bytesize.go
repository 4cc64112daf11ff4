// Package bytesize reads and writes amounts of bytes as configuration files spell them:
// "268435456", "256MiB", "1.5GiB", "500MB".
//
// Invariant: Parse accepts exactly a non-negative decimal number followed by an optional unit
// (B, KB, MB, GB, TB in powers of 1000; KiB, MiB, GiB, TiB in powers of 1024; case-insensitive
// for the letters after the first), and never returns a value above math.MaxInt64; everything
// else is an error that quotes the input.
package bytesize

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Size is an amount of bytes. In a configuration file it is an integer (bytes) or a string with
// a unit; it decodes itself from YAML through encoding.TextUnmarshaler.
type Size int64

var units = []struct {
	suffix string
	mult   float64
}{
	// Longest suffixes first: "MiB" must not be read as "B".
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30},
	{"b", 1},
}

// Parse reads s as an amount of bytes.
func Parse(s string) (Size, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, fmt.Errorf("%q is not a size: empty (want bytes, or a number with a unit such as 256MiB)", s)
	}
	num, mult := in, 1.0
	lower := strings.ToLower(in)
	for _, u := range units {
		if strings.HasSuffix(lower, u.suffix) {
			num, mult = strings.TrimSpace(in[:len(in)-len(u.suffix)]), u.mult
			break
		}
	}
	if num == "" || strings.ContainsAny(num, "+-eEpPxX_") {
		return 0, fmt.Errorf("%q is not a size (want bytes, or a number with a unit such as 256MiB)", s)
	}
	if mult == 1 {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not a size: want a whole number of bytes below 2^63, or a unit such as 256MiB", s)
		}
		return Size(n), nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is not a size (want bytes, or a number with a unit such as 256MiB)", s)
	}
	v := f * mult
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Size(math.Round(v)), nil
}

// UnmarshalText implements encoding.TextUnmarshaler (YAML scalars, JSON strings).
func (s *Size) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText implements encoding.TextMarshaler with String's form.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// String writes s with the largest binary unit that divides it exactly: 268435456 is "256MiB",
// 1000 is "1000B".
func (s Size) String() string {
	for _, u := range []struct {
		name string
		n    Size
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if s != 0 && s%u.n == 0 {
			return strconv.FormatInt(int64(s/u.n), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

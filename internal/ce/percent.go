package ce

import "strings"

// PercentEncode percent-encodes an attribute value for a ce-<name> header of the HTTP and NATS
// bindings [CE-HTTP-3.1.3.2]: space (U+0020), double quote (U+0022), percent (U+0025) and every
// byte of the UTF-8 encoding outside printable ASCII (U+0021..U+007E) become %XX. A value that
// needs none is returned as it is. Safe for concurrent use.
func PercentEncode(v string) string {
	n := 0
	for i := 0; i < len(v); i++ {
		if mustEscape(v[i]) {
			n++
		}
	}
	if n == 0 {
		return v
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(v) + 2*n)
	for i := 0; i < len(v); i++ {
		c := v[i]
		if mustEscape(c) {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func mustEscape(c byte) bool { return c <= ' ' || c >= 0x7f || c == '"' || c == '%' }

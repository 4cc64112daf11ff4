package httpin

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"
)

// encodeHeaderValue percent-encodes an attribute value for a ce-<name> header
// [CE-HTTP-3.1.3.2]: space (U+0020), double quote (U+0022), percent (U+0025) and every byte of
// the UTF-8 encoding outside printable ASCII (U+0021..U+007E) become %XX. decodeHeaderValue is
// its inverse. Safe for concurrent use.
func encodeHeaderValue(v string) string {
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

// errNotUTF8 is returned by decodeHeaderValue when the decoded bytes are not UTF-8.
var errNotUTF8 = errors.New("value is not UTF-8 after percent-decoding")

// decodeHeaderValue percent-decodes a ce-<name> header value [CE-HTTP-3.1.3.2]; the result must
// be UTF-8. Safe for concurrent use.
func decodeHeaderValue(v string) (string, error) {
	s, err := url.PathUnescape(v)
	if err != nil {
		return "", fmt.Errorf("bad percent-encoding: %w", err)
	}
	if !utf8.ValidString(s) {
		return "", errNotUTF8
	}
	return s, nil
}

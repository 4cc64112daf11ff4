package httpin

import (
	"errors"
	"fmt"
	"net/url"
	"unicode/utf8"
)

// errNotUTF8 is returned by decodeHeaderValue when the decoded bytes are not UTF-8.
var errNotUTF8 = errors.New("value is not UTF-8 after percent-decoding")

// decodeHeaderValue percent-decodes a ce-<name> header value [CE-HTTP-3.1.3.2], the inverse of
// ce.PercentEncode; the result must be UTF-8. Safe for concurrent use.
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

package sdk

import (
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// JSONField returns the value at a dotted path in the JSON document data, without allocating
// and without encoding/json (which costs tens of microseconds per event in a Wasm guest).
//
// Path segments are object keys, or decimal indexes into arrays: "a.b", "items.0.id". Keys are
// compared byte for byte with the raw key text (keys containing escapes or dots cannot be
// addressed). The result is a view into data: for a string, the text between the quotes with
// escape sequences left as they are; for any other value (number, true, false, null, object,
// array), its JSON text. ok is false when the path does not exist or data is not valid enough to
// walk.
func JSONField(data []byte, path string) (value []byte, ok bool) {
	i := skipWS(data, 0)
	for {
		seg := path
		rest := ""
		for j := 0; j < len(path); j++ {
			if path[j] == '.' {
				seg, rest = path[:j], path[j+1:]
				break
			}
		}
		if path == "" {
			break
		}
		if i >= len(data) {
			return nil, false
		}
		var found bool
		switch data[i] {
		case '{':
			i, found = findKey(data, i, seg)
		case '[':
			i, found = findIndex(data, i, seg)
		}
		if !found {
			return nil, false
		}
		path = rest
		if rest == "" {
			break
		}
	}
	end := skipValue(data, i)
	if end < 0 {
		return nil, false
	}
	if data[i] == '"' {
		return data[i+1 : end-1], true
	}
	return data[i:end], true
}

func skipWS(d []byte, i int) int {
	for i < len(d) && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n' || d[i] == '\r') {
		i++
	}
	return i
}

// findKey scans the object at d[i] for key; it returns the start of its value.
func findKey(d []byte, i int, key string) (int, bool) {
	i = skipWS(d, i+1)
	for i < len(d) && d[i] == '"' {
		end := skipString(d, i)
		if end < 0 {
			return 0, false
		}
		k := d[i+1 : end-1]
		i = skipWS(d, end)
		if i >= len(d) || d[i] != ':' {
			return 0, false
		}
		i = skipWS(d, i+1)
		if string(k) == key {
			return i, i < len(d)
		}
		if i = skipValue(d, i); i < 0 {
			return 0, false
		}
		i = skipWS(d, i)
		if i < len(d) && d[i] == ',' {
			i = skipWS(d, i+1)
		}
	}
	return 0, false
}

// findIndex returns the start of element seg (decimal) of the array at d[i].
func findIndex(d []byte, i int, seg string) (int, bool) {
	n := 0
	if seg == "" || len(seg) > 9 {
		return 0, false
	}
	for j := 0; j < len(seg); j++ {
		if seg[j] < '0' || seg[j] > '9' {
			return 0, false
		}
		n = n*10 + int(seg[j]-'0')
	}
	i = skipWS(d, i+1)
	for k := 0; i < len(d) && d[i] != ']'; k++ {
		if k == n {
			return i, true
		}
		if i = skipValue(d, i); i < 0 {
			return 0, false
		}
		i = skipWS(d, i)
		if i < len(d) && d[i] == ',' {
			i = skipWS(d, i+1)
		}
	}
	return 0, false
}

// skipString returns the index after the string starting at d[i] (a quote), or -1.
func skipString(d []byte, i int) int {
	for i++; i < len(d); i++ {
		switch d[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index after the value starting at d[i], or -1.
func skipValue(d []byte, i int) int {
	if i >= len(d) {
		return -1
	}
	switch d[i] {
	case '"':
		return skipString(d, i)
	case '{', '[':
		depth := 0
		for ; i < len(d); i++ {
			switch d[i] {
			case '"':
				e := skipString(d, i)
				if e < 0 {
					return -1
				}
				i = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	}
	j := i
	for j < len(d) {
		c := d[j]
		if c == ',' || c == '}' || c == ']' || c == ' ' || c == '\t' || c == '\n' || c == '\r' {
			break
		}
		j++
	}
	if j == i {
		return -1
	}
	return j
}

// JSONEach calls fn for every member of the JSON object, or every element of the JSON array,
// that data holds (surrounding whitespace allowed). For an object, key is the raw member name
// (without quotes, escapes left as they are); for an array, key is nil. value is the member's raw
// JSON text, quotes included for strings (see JSONString). It stops at, and returns, fn's first
// error. Meant for reading a rule's configuration in OnInit without encoding/json, which nearly
// doubles a Go rule's module size.
func JSONEach(data []byte, fn func(key, value []byte) error) error {
	i := skipWS(data, 0)
	if i >= len(data) || (data[i] != '{' && data[i] != '[') {
		return errJSON("want an object or an array", i)
	}
	if end := skipValue(data, i); end < 0 || skipWS(data, end) != len(data) {
		return errJSON("malformed or trailing data", i)
	}
	obj := data[i] == '{'
	close := byte(']')
	if obj {
		close = '}'
	}
	i = skipWS(data, i+1)
	for i < len(data) && data[i] != close {
		var key []byte
		if obj {
			if data[i] != '"' {
				return errJSON("want a member name", i)
			}
			end := skipString(data, i)
			key = data[i+1 : end-1]
			i = skipWS(data, end)
			if i >= len(data) || data[i] != ':' {
				return errJSON("want ':'", i)
			}
			i = skipWS(data, i+1)
		}
		end := skipValue(data, i)
		if end < 0 {
			return errJSON("malformed value", i)
		}
		if err := fn(key, data[i:end]); err != nil {
			return err
		}
		i = skipWS(data, end)
		if i < len(data) && data[i] == ',' {
			i = skipWS(data, i+1)
		} else if i < len(data) && data[i] != close {
			return errJSON("want ',' or the end", i)
		}
	}
	return nil
}

// JSONString decodes raw, the JSON text of a string value as JSONEach returns it (quotes
// included), into a Go string. ok is false when raw is not a valid JSON string.
func JSONString(raw []byte) (s string, ok bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' || skipString(raw, 0) != len(raw) {
		return "", false
	}
	b := make([]byte, 0, len(raw)-2)
	for i := 1; i < len(raw)-1; i++ {
		c := raw[i]
		if c < 0x20 {
			return "", false
		}
		if c != '\\' {
			b = append(b, c)
			continue
		}
		i++
		switch raw[i] {
		case '"', '\\', '/':
			b = append(b, raw[i])
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r, ok := hex4(raw, i+1)
			if !ok {
				return "", false
			}
			i += 4
			if utf16.IsSurrogate(r) {
				if r2, ok := hex4(raw, i+3); ok && raw[i+1] == '\\' && raw[i+2] == 'u' {
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						r = d
						i += 6
					}
				}
			}
			b = utf8.AppendRune(b, r)
		default:
			return "", false
		}
	}
	return string(b), true
}

// hex4 reads the 4 hex digits of a \u escape at raw[i:i+4], which must end before the closing
// quote.
func hex4(raw []byte, i int) (rune, bool) {
	if i+4 > len(raw)-1 {
		return 0, false
	}
	var r rune
	for _, h := range raw[i : i+4] {
		switch {
		case '0' <= h && h <= '9':
			r = r<<4 | rune(h-'0')
		case 'a' <= h && h <= 'f':
			r = r<<4 | rune(h-'a'+10)
		case 'A' <= h && h <= 'F':
			r = r<<4 | rune(h-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// JSONError is a malformed-JSON error from JSONEach.
type JSONError struct {
	What   string
	Offset int
}

func (e *JSONError) Error() string { return "json: " + e.What + " at byte " + strconv.Itoa(e.Offset) }

func errJSON(what string, off int) error { return &JSONError{what, off} }

// JSONStrings decodes raw, the JSON text of an array of strings, into a slice.
func JSONStrings(raw []byte) ([]string, error) {
	var out []string
	err := JSONEach(raw, func(key, v []byte) error {
		if key != nil {
			return errJSON("want an array, got an object", 0)
		}
		s, ok := JSONString(v)
		if !ok {
			return errJSON("want a string, got "+string(v), 0)
		}
		out = append(out, s)
		return nil
	})
	if err == nil && len(raw) > 0 && raw[skipWS(raw, 0)] != '[' {
		err = errJSON("want an array", 0)
	}
	return out, err
}

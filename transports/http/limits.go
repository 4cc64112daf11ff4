package httpin

import (
	"fmt"
	"mime"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
)

// The checks of this file run on a request's body before or after decodeRequest, in linear time
// and constant memory whatever the body holds (nesting depth included).

// jsonFormat is the CloudEvents JSON format of a request, if any.
type jsonFormat int

const (
	notJSONFormat jsonFormat = iota
	structuredFormat
	batchFormat
)

// jsonFormatOf returns the JSON format a Content-Type names.
func jsonFormatOf(contentType string) jsonFormat {
	mt, _, err := mime.ParseMediaType(contentType)
	switch {
	case err != nil:
		return notJSONFormat
	case mt == event.ApplicationCloudEventsJSON:
		return structuredFormat
	case mt == event.ApplicationCloudEventsBatchJSON:
		return batchFormat
	}
	return notJSONFormat
}

// countBatch counts the elements of the JSON array body, stopping as soon as there are more
// than limit: n is the count so far and over whether it passed limit. A body that is not an
// array counts 0 (decodeRequest refuses it); in a malformed array every comma at the top level
// counts, which only makes a refused body be refused as too large instead.
func countBatch(body []byte, limit int) (n int, over bool) {
	i := 0
	for i < len(body) && isSpace(body[i]) {
		i++
	}
	if i == len(body) || body[i] != '[' {
		return 0, false
	}
	var sc stringScanner
	depth, empty := 0, true
	for ; i < len(body); i++ {
		c := body[i]
		if sc.inString(c) {
			continue
		}
		switch c {
		case '[', '{':
			depth++
		case ']', '}':
			depth--
			if depth == 0 {
				return n, false
			}
		case ',':
			if depth == 1 {
				n++
				if n > limit {
					return n, true
				}
			}
		}
		if depth >= 1 && !isSpace(c) && empty && !(depth == 1 && c == '[') {
			// The first element starts: it counts now, each comma adds the next.
			empty = false
			n++
			if n > limit {
				return n, true
			}
		}
	}
	return n, false
}

// stringScanner follows a JSON text byte by byte to tell the bytes of its strings from the rest.
type stringScanner struct{ in, escaped bool }

// inString takes the next byte c and reports whether it belongs to a string after its opening
// quote (the closing quote included); an opening quote is reported as outside, so the caller
// sees where each string starts.
func (s *stringScanner) inString(c byte) bool {
	if !s.in {
		s.in = c == '"'
		return false
	}
	switch {
	case s.escaped:
		s.escaped = false
	case c == '\\':
		s.escaped = true
	case c == '"':
		s.in = false
	}
	return true
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// nameInvalidUTF8 completes the error of each malformed JSON part refused because its bytes are
// not UTF-8: it names the attribute (the top-level member) holding the first invalid byte and
// its offset, so that the sender learns which value to fix.
func nameInvalidUTF8(parts []part) {
	for i := range parts {
		p := &parts[i]
		if p.Err == nil || p.Err.Attribute != "" || utf8.Valid(p.Raw) {
			continue
		}
		off := firstInvalidUTF8(p.Raw)
		member, inName := memberAt(p.Raw, off)
		if member == "" && !inName {
			continue
		}
		re := *p.Err
		re.Attribute = member
		re.Reason = fmt.Sprintf("value is not valid UTF-8 (byte 0x%02x at offset %d)", p.Raw[off], off)
		if inName {
			re.Attribute = ""
			re.Reason = fmt.Sprintf("an attribute name is not valid UTF-8 (byte 0x%02x at offset %d, name starting %q)", p.Raw[off], off, member)
		}
		p.Err = &re
	}
}

// firstInvalidUTF8 returns the offset of the first byte of b that is not part of a valid UTF-8
// sequence (len(b) when there is none).
func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return len(b)
}

// memberAt returns the name of the member of the top-level JSON object b whose name or value
// holds offset off, and whether off is inside the name itself (the name is then the part before
// off). It returns "" when off is outside any member.
func memberAt(b []byte, off int) (name string, inName bool) {
	var sc stringScanner
	depth, expectName := 0, false
	nameStart, current := -1, ""
	for i := 0; i < len(b) && i <= off; i++ {
		c := b[i]
		if sc.in && i == off {
			if nameStart >= 0 {
				return string(b[nameStart:i]), true
			}
			return current, false
		}
		if sc.inString(c) {
			if !sc.in && nameStart >= 0 { // the name's closing quote
				current, nameStart = string(b[nameStart:i]), -1
			}
			continue
		}
		if i == off {
			break
		}
		switch c {
		case '"':
			if depth == 1 && expectName {
				nameStart, expectName = i+1, false
			}
		case '{', '[':
			depth++
			if depth == 1 && c == '{' {
				expectName = true
			}
		case '}', ']':
			depth--
		case ',':
			if depth == 1 {
				expectName = true
			}
		}
	}
	if depth >= 1 {
		return current, false
	}
	return "", false
}

package ce

import (
	"encoding/base64"
	"encoding/json"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
)

// The single-pass reader of the JSON format.
//
// decodeFast reads the common shape of a CloudEvents 1.0 event in one pass over its bytes,
// checking the JSON grammar as it goes, and builds the event sdk-go's reader (json.Unmarshal
// into event.Event, which first scans the whole input to validate it, then parses it again
// with json-iterator) would build from the same bytes. It takes only what it is sure of:
// anything else (a specversion other than "1.0", a member given twice, an escape sequence in a
// name or in a string the event keeps, an extension that is not a string, a boolean or an
// integer of at most 9 digits, an empty attribute, an invalid value...) makes it give up, and
// the caller then uses sdk-go's reader, whose answer (the event or its error) is then the
// answer. So decodeFast never refuses anything: it either returns the very event the slow path
// would, or nothing. FuzzDecodeFast checks that against sdk-go on arbitrary input.

// maxFastDepth bounds the nesting of data the fast path checks; deeper data goes the slow way
// (encoding/json's own limit is 10000).
const maxFastDepth = 512

// fastMember flags the members the fast path reads, to refuse duplicates.
const (
	mSpecversion = 1 << iota
	mID
	mType
	mSource
	mSubject
	mTime
	mDataContentType
	mDataSchema
	mData
	mDataBase64
)

// decodeFast decodes b, a whole JSON text holding one event, or reports false. b must be
// valid UTF-8 (the caller checked).
func decodeFast(b []byte) (*event.Event, bool) {
	e, end, ok := decodeFastObject(b, skipWS(b, 0))
	if !ok || skipWS(b, end) != len(b) {
		return nil, false
	}
	return e, true
}

// decodeFastObject decodes the event whose object starts at b[i] and returns it with the index
// just past the object.
func decodeFastObject(b []byte, i int) (*event.Event, int, bool) {
	if i >= len(b) || b[i] != '{' {
		return nil, 0, false
	}
	ctx := &event.EventContextV1{}
	var (
		seen                int
		data                []byte // the value of data as written, from just after the colon
		dataBase64          string
		dataIsString        bool
		ok                  bool
		key                 []byte
		valueStart, valueAt int
	)
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil, 0, false // no specversion
	}
	for {
		if key, i, ok = plainBytes(b, i); !ok {
			return nil, 0, false
		}
		if i = skipWS(b, i); i >= len(b) || b[i] != ':' {
			return nil, 0, false
		}
		valueStart = i + 1
		valueAt = skipWS(b, valueStart)
		i = valueAt
		flag := 0
		switch string(key) {
		case "specversion", "id", "type", "source", "subject", "time", "datacontenttype", "dataschema":
			var s string
			if s, i, ok = plainString(b, i); !ok || s == "" {
				return nil, 0, false
			}
			switch string(key) {
			case "specversion":
				if s != event.CloudEventsVersionV1 {
					return nil, 0, false
				}
				flag = mSpecversion
			case "id":
				ctx.ID, flag = s, mID
			case "type":
				ctx.Type, flag = s, mType
			case "source":
				u := types.ParseURIRef(s)
				if u == nil {
					return nil, 0, false
				}
				ctx.Source, flag = *u, mSource
			case "subject":
				sub := s
				ctx.Subject, flag = &sub, mSubject
			case "time":
				t, err := types.ParseTimestamp(s)
				if err != nil || t == nil {
					return nil, 0, false
				}
				ctx.Time, flag = t, mTime
			case "datacontenttype":
				dct := s
				ctx.DataContentType, flag = &dct, mDataContentType
			case "dataschema":
				u := types.ParseURI(s)
				if u == nil {
					return nil, 0, false
				}
				ctx.DataSchema, flag = u, mDataSchema
			}
		case "data":
			flag = mData
			dataIsString = i < len(b) && b[i] == '"'
			if i, ok = skipValue(b, i, 0); !ok {
				return nil, 0, false
			}
			data = b[valueStart:i]
		case "data_base64":
			// sdk-go's reader fails on data_base64 with blanks before it when it meets it
			// before datacontenttype; the slow path tells.
			flag = mDataBase64
			if valueAt != valueStart {
				return nil, 0, false
			}
			if dataBase64, i, ok = plainString(b, i); !ok {
				return nil, 0, false
			}
		case "schemaurl", "datacontentencoding":
			// Extensions in 1.0 that sdk-go's reader takes a path of its own for.
			return nil, 0, false
		default:
			if !validAttrNameBytes(key) {
				return nil, 0, false
			}
			if _, dup := ctx.Extensions[string(key)]; dup {
				return nil, 0, false
			}
			var v any
			if v, i, ok = extensionValue(b, i); !ok {
				return nil, 0, false
			}
			if ctx.Extensions == nil {
				ctx.Extensions = make(map[string]any, 1)
			}
			ctx.Extensions[string(key)] = v
		}
		if seen&flag != 0 {
			return nil, 0, false
		}
		seen |= flag
		var done bool
		if i, done, ok = afterElement(b, i, '}'); !ok {
			return nil, 0, false
		}
		if done {
			break
		}
	}
	if seen&mSpecversion == 0 || seen&(mData|mDataBase64) == mData|mDataBase64 {
		return nil, 0, false
	}
	e := &event.Event{Context: ctx}
	switch {
	case seen&mDataBase64 != 0:
		e.DataBase64 = true
		e.DataEncoded = make([]byte, base64.StdEncoding.DecodedLen(len(dataBase64)))
		n, err := base64.StdEncoding.Decode(e.DataEncoded, []byte(dataBase64))
		if err != nil {
			return nil, 0, false
		}
		e.DataEncoded = e.DataEncoded[:n]
	case seen&mData != 0:
		mt, _ := ctx.GetDataMediaType()
		if sdkIsJSON(mt) {
			e.DataEncoded = append(make([]byte, 0, len(data)), data...)
			break
		}
		// Any other media type: the data is a JSON string, its text is the data.
		if !dataIsString {
			return nil, 0, false
		}
		s, _, ok := plainString(data, skipWS(data, 0))
		if !ok {
			return nil, 0, false
		}
		e.DataEncoded = []byte(s)
	}
	if err := e.Validate(); err != nil {
		return nil, 0, false
	}
	return e, i, true
}

// sdkIsJSON is sdk-go's rule for data written as JSON rather than as a string, applied to the
// media type of datacontenttype (without its parameters).
func sdkIsJSON(mt string) bool {
	switch mt {
	case event.ApplicationJSON, event.TextJSON, event.ApplicationCloudEventsJSON, event.ApplicationCloudEventsBatchJSON, "":
		return true
	}
	return false
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// plainString reads the JSON string at b[i] when it holds no escape sequence, and returns its
// text and the index past its closing quote.
func plainString(b []byte, i int) (string, int, bool) {
	t, end, ok := plainBytes(b, i)
	if !ok {
		return "", 0, false
	}
	return string(t), end, true
}

// plainBytes is plainString returning the text's bytes within b.
func plainBytes(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// validAttrNameBytes is ValidAttrName on bytes.
func validAttrNameBytes(n []byte) bool {
	if len(n) == 0 {
		return false
	}
	for _, c := range n {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// extensionValue reads an extension's value at b[i]: a string without escapes, true, false,
// or an integer of at most 9 digits (sdk-go reads numbers as float64 and keeps them as int32;
// these convert exactly).
func extensionValue(b []byte, i int) (any, int, bool) {
	if i >= len(b) {
		return nil, 0, false
	}
	switch c := b[i]; {
	case c == '"':
		return plainString(b, i)
	case c == 't' && hasLiteral(b, i, "true"):
		return true, i + 4, true
	case c == 'f' && hasLiteral(b, i, "false"):
		return false, i + 5, true
	case c == '-' || c >= '0' && c <= '9':
		j, neg := i, c == '-'
		if neg {
			j++
		}
		start := j
		var n int32
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			n = n*10 + int32(b[j]-'0')
			j++
		}
		digits := j - start
		if digits == 0 || digits > 9 || digits > 1 && b[start] == '0' {
			return nil, 0, false
		}
		if j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
			return nil, 0, false
		}
		if neg {
			n = -n
		}
		return n, j, true
	}
	return nil, 0, false
}

func hasLiteral(b []byte, i int, lit string) bool {
	return len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit && !isIdentByte(b, i+len(lit))
}

// isIdentByte reports whether b[i] exists and would continue a literal ("truex").
func isIdentByte(b []byte, i int) bool {
	if i >= len(b) {
		return false
	}
	c := b[i]
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// skipValue checks the JSON value at b[i] against the grammar [RFC 8259] and returns the index
// past it. Strings may hold any escape sequence; b is valid UTF-8.
func skipValue(b []byte, i, depth int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == '{' || c == '[':
		if depth >= maxFastDepth {
			return 0, false
		}
		end := byte(']')
		if c == '{' {
			end = '}'
		}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == end {
			return i + 1, true
		}
		for {
			var ok, done bool
			if c == '{' {
				if i, ok = skipString(b, i); !ok {
					return 0, false
				}
				if i = skipWS(b, i); i >= len(b) || b[i] != ':' {
					return 0, false
				}
				i = skipWS(b, i+1)
			}
			if i, ok = skipValue(b, i, depth+1); !ok {
				return 0, false
			}
			if i, done, ok = afterElement(b, i, end); !ok || done {
				return i, ok
			}
		}
	case c == 't':
		return i + 4, hasLiteral(b, i, "true")
	case c == 'f':
		return i + 5, hasLiteral(b, i, "false")
	case c == 'n':
		return i + 4, hasLiteral(b, i, "null")
	case c == '-' || c >= '0' && c <= '9':
		return skipNumber(b, i)
	}
	return 0, false
}

// validJSON is json.Valid: one check of the grammar, encoding/json's own when the value nests
// deeper than the fast check follows.
func validJSON(b []byte) bool {
	if end, ok := skipValue(b, skipWS(b, 0), 0); ok {
		return skipWS(b, end) == len(b)
	}
	return json.Valid(b)
}

// afterElement reads what follows a member of an object or an element of an array closed by
// end: it returns the index past end (done) or that of the next member after a comma.
func afterElement(b []byte, i int, end byte) (next int, done, ok bool) {
	if i = skipWS(b, i); i >= len(b) {
		return 0, false, false
	}
	switch b[i] {
	case end:
		return i + 1, true, true
	case ',':
		return skipWS(b, i+1), false, true
	}
	return 0, false, false
}

func skipString(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return j + 1, true
		case c < 0x20:
			return 0, false
		case c == '\\':
			j++
			if j >= len(b) {
				return 0, false
			}
			switch b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(b)-j < 5 || !isHex(b[j+1]) || !isHex(b[j+2]) || !isHex(b[j+3]) || !isHex(b[j+4]) {
					return 0, false
				}
				j += 4
			default:
				return 0, false
			}
		}
	}
	return 0, false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// skipNumber checks the number at b[i]: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func skipNumber(b []byte, i int) (int, bool) {
	if b[i] == '-' {
		i++
	}
	digits := func() bool {
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i > start
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return 0, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return 0, false
		}
	}
	return i, !isIdentByte(b, i)
}

// BatchElement is one element of a JSON array of events: the event when the one-pass reader
// took it, otherwise nil and the element's bytes, for DecodeStructured to answer (an element
// that is no object included).
type BatchElement struct {
	Event *event.Event
	Raw   []byte
}

// ReadBatch reads b, a JSON array of events (the JSON batch format [CE-JSON-4]), in one pass:
// it checks the grammar of the whole array and decodes the elements the one-pass reader takes
// as it goes. It reports false when b is not valid UTF-8 or not a valid JSON array; the caller
// then reads b as it would without ReadBatch, to give the reason. Raw aliases b.
func ReadBatch(b []byte) ([]BatchElement, bool) {
	if !utf8.Valid(b) {
		return nil, false
	}
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '[' {
		return nil, false
	}
	var out []BatchElement
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return []BatchElement{}, skipWS(b, i+1) == len(b)
	}
	for {
		start := i
		e, end, ok := decodeFastObject(b, i)
		if ok {
			out = append(out, BatchElement{Event: e})
		} else {
			if end, ok = skipValue(b, i, 1); !ok {
				return nil, false
			}
			out = append(out, BatchElement{Raw: b[start:end]})
		}
		var done bool
		if i, done, ok = afterElement(b, end, ']'); !ok {
			return nil, false
		}
		if done {
			return out, skipWS(b, i) == len(b)
		}
	}
}

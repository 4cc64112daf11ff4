// Package ce holds the CloudEvents helpers every transport shares: the structured-mode JSON
// format [CE-JSON] (encoding with data_base64 where the data's bytes need it, decoding with
// validation, of one event or of a batch [CE-JSON-4]), the binary mode of the bindings that
// carry attributes as string headers (DecodeBinary, PercentEncode), the attribute naming rule
// [CE-2] and the string form of attribute values.
//
// Decoding takes a fast path for the common shapes of a CloudEvents 1.0 event (one pass over
// the JSON text; the context's setters for binary mode) and sdk-go's readers for everything
// else; both give the same event for the same input, and every refusal comes from sdk-go's.
//
// Invariant: EncodeStructured and DecodeStructured are inverses for every valid event: the
// attributes, the extensions' values and the data's bytes survive the trip unchanged. Nothing
// here keeps state; every function is safe for concurrent use.
package ce

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
)

// ContentTypeJSON is the media type of the structured-mode JSON format [CE-JSON-3].
const ContentTypeJSON = event.ApplicationCloudEventsJSON

// ValidAttrName reports whether n is a CloudEvents attribute name: lower-case ASCII letters and
// digits, at least one ([CE-2] "Attribute Naming Convention"; the 20-character limit is only a
// SHOULD, so longer names are kept).
func ValidAttrName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// AttrString returns the canonical string form of a context attribute or extension of e
// ([CE-2] "Type System"), "" when it is absent.
func AttrString(e *event.Event, name string) string {
	switch name {
	case "specversion":
		return e.SpecVersion()
	case "id":
		return e.ID()
	case "source":
		return e.Source()
	case "type":
		return e.Type()
	case "subject":
		return e.Subject()
	case "datacontenttype":
		return e.DataContentType()
	case "dataschema":
		return e.DataSchema()
	case "time":
		if e.Time().IsZero() {
			return ""
		}
		return e.Time().UTC().Format(time.RFC3339Nano)
	}
	v, ok := e.Extensions()[name]
	if !ok {
		return ""
	}
	s, err := types.Format(v)
	if err != nil {
		return ""
	}
	return s
}

// DecodeStructured decodes one event in the JSON format and validates it. The error says why the
// bytes are not a valid event; callers add where they came from. The common shapes of an event
// are read in one pass (decodeFast); the rest by sdk-go's reader, which defines the result.
func DecodeStructured(b []byte) (*event.Event, error) {
	if !utf8.Valid(b) {
		// JSON text is UTF-8 [RFC 8259 §8.1]; sdk-go's reader would pass the bytes on into
		// attribute strings that no AMQP or MQTT writer accepts.
		return nil, errors.New("not valid UTF-8")
	}
	if e, ok := decodeFast(b); ok && !untrimmed(e) {
		return e, nil
	}
	return decodeSDK(b)
}

// untrimmed reports whether one of the attributes trimAttributes trims has white space around
// it; the fast reader leaves those events to decodeSDK, which trims them.
func untrimmed(e *event.Event) bool {
	c := e.Context
	for _, v := range [...]string{c.GetID(), c.GetType(), c.GetSubject(), c.GetDataContentType(), c.GetDataSchema()} {
		if v != strings.TrimSpace(v) {
			return true
		}
	}
	return false
}

// decodeSDK is DecodeStructured by sdk-go's reader, for valid UTF-8.
func decodeSDK(b []byte) (*event.Event, error) {
	e := event.New()
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, err
	}
	if err := trimAttributes(&e); err != nil {
		return nil, err
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	for name := range e.Extensions() {
		// The JSON reader folds case and takes unknown members as extensions: "Data" or "dAtA"
		// would come back as an extension named "data", which no writer can represent.
		if !ValidAttrName(name) || name == "data" {
			return nil, fmt.Errorf("invalid extension attribute name %q", name)
		}
	}
	return &e, nil
}

// trimAttributes trims the white space around the attributes that sdk-go's setters trim and its
// JSON reader does not (id, type, subject, datacontenttype, dataschema): binary-mode decoders go
// through the setters, so without it an event read in structured mode with type " t" would
// become "t" once forwarded in binary mode.
func trimAttributes(e *event.Event) error {
	c := e.Context
	for _, a := range []struct {
		name, v string
		set     func(string) error
	}{
		{"id", c.GetID(), c.SetID},
		{"type", c.GetType(), c.SetType},
		{"subject", c.GetSubject(), c.SetSubject},
		{"datacontenttype", c.GetDataContentType(), c.SetDataContentType},
		{"dataschema", c.GetDataSchema(), c.SetDataSchema},
	} {
		if a.v != strings.TrimSpace(a.v) {
			if err := a.set(a.v); err != nil {
				return fmt.Errorf("attribute %s: %w", a.name, err)
			}
		}
	}
	return nil
}

// EncodeStructured renders e in the JSON format. Data that the JSON form cannot carry as it is
// (bytes that are not UTF-8 under a non-JSON media type, or that are not JSON under a JSON media
// type) is written as data_base64 [CE-JSON-3.1], so the bytes survive unchanged. JSON data is
// written as the JSON value it is: white space after it is not kept (DecodeStructured gives
// "100" for "100 "; see ThroughJSON). e is not modified.
func EncodeStructured(e *event.Event) ([]byte, error) {
	if needsBase64(e) {
		c := e.Clone()
		c.DataBase64 = true
		e = &c
	}
	b, err := e.MarshalJSON() // not json.Marshal: it would HTML-escape the data's bytes
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.ID(), err)
	}
	return b, nil
}

// MarkBinaryData flags e's data as binary when the JSON format could not carry its bytes
// verbatim, so that every JSON writer (not only EncodeStructured) emits data_base64 (or, for a
// 0.3 event, datacontentencoding base64). Binary-mode decoders call it: sdk-go's readers leave
// the flag unset for bytes that came from a message body.
func MarkBinaryData(e *event.Event) {
	if !needsBase64(e) {
		return
	}
	if e.SpecVersion() == event.CloudEventsVersionV03 {
		e.SetDataContentEncoding(event.Base64)
		return
	}
	e.DataBase64 = true
}

// needsBase64 reports whether e's data must be written as data_base64 in the JSON format.
func needsBase64(e *event.Event) bool {
	data := e.Data()
	if e.DataBase64 || len(data) == 0 {
		return false
	}
	if ct := e.DataContentType(); IsJSONMediaType(ct) {
		// Written verbatim as the value of "data": it must be JSON itself, and sdk-go's reader
		// must take it as JSON too. The writer lower-cases and trims the media type, the reader
		// does not: under "Application/JSON" the data would be written as JSON and read back
		// as a string, which fails. data_base64 is read back whatever the type. validJSON, like
		// json.Valid, passes strings that are not UTF-8, which DecodeStructured refuses.
		return !readsAsJSON(ct) || !validJSON(data) || !utf8.Valid(data)
	}
	// Written as a JSON string: only UTF-8 text survives that.
	return !utf8.Valid(data)
}

// plainMediaType reports whether ct holds only lower-case letters, digits and "/+.-": no
// parameters, blanks or upper case, so that it is its own media type.
func plainMediaType(ct string) bool {
	for i := 0; i < len(ct); i++ {
		switch c := ct[i]; {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '/', c == '+', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

// readsAsJSON reports whether sdk-go's JSON reader takes data of content type ct as JSON: its
// media type compared exactly as written (case kept, and without parameters, surrounding space
// kept too).
func readsAsJSON(ct string) bool {
	mt := ct
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		mt = strings.TrimSpace(ct[:i])
	}
	switch mt {
	case "", event.ApplicationJSON, event.TextJSON, event.ApplicationCloudEventsJSON, event.ApplicationCloudEventsBatchJSON:
		return true
	}
	return false
}

// IsJSONMediaType reports whether the JSON format writes data of content type ct as JSON rather
// than as a string: no content type, or a JSON media type (the rule of sdk-go's writer).
func IsJSONMediaType(ct string) bool {
	mt := ""
	if plainMediaType(ct) {
		mt = ct // what mime.ParseMediaType or the fallback below would make of it
	} else if ct != "" {
		var err error
		if mt, _, err = mime.ParseMediaType(ct); err != nil {
			mt = strings.ToLower(strings.TrimSpace(strings.SplitN(ct, ";", 2)[0]))
		}
	}
	switch mt {
	case "", event.ApplicationJSON, event.TextJSON, event.ApplicationCloudEventsJSON, event.ApplicationCloudEventsBatchJSON:
		return true
	}
	return false
}

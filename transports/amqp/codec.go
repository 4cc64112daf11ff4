package amqp

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"mime"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/Azure/go-amqp"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/ce"
)

// Application-property prefixes of the binary mode [CE-AMQP §3.1.3.1]: the input reads both, the
// output writes the first (the colon form is older and not a valid name in every AMQP API).
const (
	propPrefix      = "cloudEvents_"
	propPrefixColon = "cloudEvents:"
)

// errEncode marks an event this output can never send (the caller wraps it with
// engine.Permanent).
var errEncode = errors.New("amqp encode")

// encodeBinary renders e as a binary-mode message [CE-AMQP §3.1]: every context attribute and
// extension except data and datacontenttype as an application property cloudEvents_<name>,
// datacontenttype as properties.content-type, the data as the one data section of the body
// [AMQP 1.0 §3.2.6]. The header says durable [AMQP 1.0 §3.2.1].
//
// Attribute types map to AMQP types [CE-AMQP §3.1.3.2]: Boolean to boolean, Integer to int,
// String to string, Binary to binary, URI and URI-reference to string, Timestamp to timestamp.
// An AMQP timestamp counts milliseconds: a time with a finer part is written in its canonical
// string form instead (the binding allows the string form for every attribute), so no digit is
// lost on the way.
func encodeBinary(e *event.Event) (*amqp.Message, error) {
	props := make(map[string]any, 6+len(e.Extensions()))
	props[propPrefix+"specversion"] = e.SpecVersion()
	props[propPrefix+"id"] = e.ID()
	props[propPrefix+"source"] = e.Source()
	props[propPrefix+"type"] = e.Type()
	if s := e.Subject(); s != "" {
		props[propPrefix+"subject"] = s
	}
	if s := e.DataSchema(); s != "" {
		props[propPrefix+"dataschema"] = s
	}
	if t := e.Time(); !t.IsZero() {
		props[propPrefix+"time"] = timeValue(t)
	}
	for name, v := range e.Extensions() {
		if !ce.ValidAttrName(name) {
			return nil, fmt.Errorf("%w event %s: invalid extension attribute name %q", errEncode, e.ID(), name)
		}
		av, err := extensionToAMQP(v)
		if err != nil {
			return nil, fmt.Errorf("%w event %s: extension %s: %v", errEncode, e.ID(), name, err)
		}
		props[propPrefix+name] = av
	}
	ct := e.DataContentType()
	for k, v := range props {
		if s, ok := v.(string); ok && !utf8.ValidString(s) {
			return nil, fmt.Errorf("%w event %s: attribute %s is not valid UTF-8", errEncode, e.ID(), k[len(propPrefix):])
		}
	}
	if !utf8.ValidString(ct) {
		return nil, fmt.Errorf("%w event %s: datacontenttype is not valid UTF-8", errEncode, e.ID())
	}
	m := &amqp.Message{
		Header:                &amqp.MessageHeader{Durable: true},
		ApplicationProperties: props,
		Data:                  [][]byte{e.Data()},
	}
	if ct != "" {
		m.Properties = &amqp.MessageProperties{ContentType: &ct}
	}
	return m, nil
}

// encodeStructured renders e as a structured-mode message [CE-AMQP §3.2]: content-type
// application/cloudevents+json and the JSON event as the one data section (data_base64 for data
// the JSON form cannot carry verbatim).
func encodeStructured(e *event.Event) (*amqp.Message, error) {
	b, err := ce.EncodeStructured(e)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errEncode, err)
	}
	ct := ce.ContentTypeJSON
	return &amqp.Message{
		Header:     &amqp.MessageHeader{Durable: true},
		Properties: &amqp.MessageProperties{ContentType: &ct},
		Data:       [][]byte{b},
	}, nil
}

// timeValue is the AMQP form of a Timestamp attribute: an AMQP timestamp when t has no finer
// part than milliseconds, the RFC 3339 string otherwise (see encodeBinary).
func timeValue(t time.Time) any {
	if t.Nanosecond()%int(time.Millisecond) == 0 {
		return t.UTC()
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// extensionToAMQP maps the value of an extension (one of the types sdk-go stores) to its AMQP
// form.
func extensionToAMQP(v any) (any, error) {
	switch v := v.(type) {
	case bool, int32, string, []byte:
		return v, nil
	case types.Timestamp:
		return timeValue(v.Time), nil
	case types.URI:
		return v.String(), nil
	case types.URIRef:
		return v.String(), nil
	}
	s, err := types.Format(v)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// decode turns one received AMQP message into an engine.Message. A message that is not a valid
// CloudEvent gives a Message with DecodeErr and Raw set, never an error: the engine
// dead-letters it. Raw is the body for a structured or non-CloudEvents message, and the whole
// message in its AMQP encoding [AMQP 1.0 §3.2] for a binary-mode one, whose attributes live
// outside the body.
//
// The mode is decided by the content type [CE-AMQP §3.2]: application/cloudevents+json is
// structured; anything else with a cloudEvents_specversion (or cloudEvents:specversion)
// application property is binary.
func decode(origin string, m *amqp.Message) *engine.Message {
	out := &engine.Message{Origin: origin}
	fail := func(raw []byte, format string, args ...any) *engine.Message {
		out.DecodeErr = fmt.Errorf("amqp decode from %s: "+format, append([]any{origin}, args...)...)
		out.Raw = raw
		return out
	}
	body, berr := bodyBytes(m)
	ct := ""
	if m.Properties != nil && m.Properties.ContentType != nil {
		ct = *m.Properties.ContentType
	}
	mt := ""
	if ct != "" {
		var err error
		if mt, _, err = mime.ParseMediaType(ct); err != nil {
			mt = strings.ToLower(strings.TrimSpace(strings.SplitN(ct, ";", 2)[0]))
		}
	}
	if strings.HasPrefix(mt, "application/cloudevents") {
		if berr != nil {
			return fail(encoded(m), "structured mode: %v", berr)
		}
		if mt != ce.ContentTypeJSON {
			return fail(body, "structured mode: event format %q is not supported (use %s)", mt, ce.ContentTypeJSON)
		}
		e, err := ce.DecodeStructured(body)
		if err != nil {
			return fail(body, "structured mode: %v", err)
		}
		out.Event = e
		return out
	}
	attrs, err := ceProperties(m.ApplicationProperties)
	if err != nil {
		return fail(encoded(m), "binary mode: %v", err)
	}
	if _, ok := attrs["specversion"]; !ok {
		if berr != nil {
			return fail(encoded(m), "not a CloudEvent: no content type %s and no %sspecversion property; %v", ce.ContentTypeJSON, propPrefix, berr)
		}
		return fail(body, "not a CloudEvent: no content type %s and no %sspecversion property", ce.ContentTypeJSON, propPrefix)
	}
	if berr != nil {
		return fail(encoded(m), "binary mode: %v", berr)
	}
	e, err := decodeBinary(attrs, ct, body)
	if err != nil {
		return fail(encoded(m), "binary mode: %v", err)
	}
	out.Event = e
	return out
}

// bodyBytes returns the application data of m [AMQP 1.0 §3.2]: the data sections, concatenated,
// or an amqp-value holding a string or binary. Other bodies (amqp-sequence, other values) are
// errors; no body gives nil.
func bodyBytes(m *amqp.Message) ([]byte, error) {
	switch {
	case len(m.Data) == 1:
		return m.Data[0], nil
	case len(m.Data) > 1:
		return bytes.Join(m.Data, nil), nil
	case len(m.Sequence) > 0:
		return nil, errors.New("body is an amqp-sequence; want data sections or an amqp-value string or binary")
	}
	switch v := m.Value.(type) {
	case nil, amqp.Null:
		return nil, nil
	case string:
		return []byte(v), nil
	case []byte:
		return v, nil
	default:
		return nil, fmt.Errorf("body is an amqp-value of type %T; want a string or binary", v)
	}
}

// encoded returns m in its AMQP encoding, for Raw; nil if it cannot be encoded.
func encoded(m *amqp.Message) []byte {
	b, err := m.MarshalBinary()
	if err != nil {
		return nil
	}
	return b
}

// ceProperties collects the CloudEvents attributes of a binary-mode message from its
// application properties, under either prefix [CE-AMQP §3.1.3.1]. An AMQP null means absent.
func ceProperties(props map[string]any) (map[string]any, error) {
	attrs := map[string]any{}
	for k, v := range props {
		var name string
		switch {
		case strings.HasPrefix(k, propPrefix):
			name = k[len(propPrefix):]
		case strings.HasPrefix(k, propPrefixColon):
			name = k[len(propPrefixColon):]
		default:
			continue
		}
		if !ce.ValidAttrName(name) || name == "data" {
			return nil, fmt.Errorf("application property %q: not a CloudEvents attribute name ([a-z0-9]+)", k)
		}
		if v == nil {
			continue
		}
		if _, dup := attrs[name]; dup {
			return nil, fmt.Errorf("attribute %s given under both prefixes", name)
		}
		attrs[name] = v
	}
	return attrs, nil
}

// decodeBinary builds and validates the event of a binary-mode message from its attributes,
// content type and body.
func decodeBinary(attrs map[string]any, contentType string, body []byte) (*event.Event, error) {
	sv, ok := attrs["specversion"].(string)
	if !ok {
		return nil, fmt.Errorf("attribute specversion: want a string, got %T", attrs["specversion"])
	}
	if sv != event.CloudEventsVersionV1 && sv != event.CloudEventsVersionV03 {
		return nil, fmt.Errorf("attribute specversion: unsupported value %q", sv)
	}
	e := event.New(sv)
	for name, v := range attrs {
		if err := setAttribute(&e, name, v); err != nil {
			return nil, fmt.Errorf("attribute %s: %w", name, err)
		}
	}
	if !utf8.ValidString(contentType) {
		return nil, errors.New("content-type is not valid UTF-8")
	}
	if contentType != "" {
		e.SetDataContentType(contentType)
	}
	if len(body) > 0 {
		e.DataEncoded = body
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	ce.MarkBinaryData(&e)
	return &e, nil
}

// setAttribute sets one attribute read from an application property on e.
func setAttribute(e *event.Event, name string, v any) error {
	if sym, ok := v.(amqp.Symbol); ok {
		v = string(sym)
	}
	if s, ok := v.(string); ok && !utf8.ValidString(s) {
		return errors.New("not valid UTF-8") // [AMQP 1.0 §1.6.20]; a CloudEvents String is Unicode
	}
	switch name {
	case "specversion":
		return nil
	case "id", "source", "type", "subject", "dataschema", "datacontenttype":
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("want a string, got %T", v)
		}
		switch name {
		case "id":
			e.SetID(s)
		case "source":
			e.SetSource(s)
		case "type":
			e.SetType(s)
		case "subject":
			e.SetSubject(s)
		case "dataschema":
			e.SetDataSchema(s)
		case "datacontenttype":
			e.SetDataContentType(s) // properties.content-type, when set, overrides it
		}
		return nil
	case "time":
		switch t := v.(type) {
		case time.Time:
			if err := rfc3339Range(t); err != nil {
				return err
			}
			e.SetTime(t.UTC())
		case string:
			pt, err := types.ParseTime(t)
			if err != nil {
				return err
			}
			e.SetTime(pt)
		default:
			return fmt.Errorf("want a timestamp or string, got %T", v)
		}
		return nil
	}
	ev, err := extensionFromAMQP(v)
	if err != nil {
		return err
	}
	return e.Context.SetExtension(name, ev)
}

// extensionFromAMQP maps an AMQP application-property value to the CloudEvents type of an
// extension [CE-AMQP §3.1.3.2]: boolean, string, binary and timestamp map to their types, every
// integer type within the range of Integer (int32) to Integer, symbol and uuid to String.
func extensionFromAMQP(v any) (any, error) {
	switch v := v.(type) {
	case bool, int32, string, []byte:
		return v, nil
	case time.Time:
		if err := rfc3339Range(v); err != nil {
			return nil, err
		}
		return types.Timestamp{Time: v.UTC()}, nil
	case amqp.UUID:
		return v.String(), nil
	case int8:
		return int32(v), nil
	case int16:
		return int32(v), nil
	case uint8:
		return int32(v), nil
	case uint16:
		return int32(v), nil
	case int64:
		if v < math.MinInt32 || v > math.MaxInt32 {
			return nil, fmt.Errorf("integer %d is outside the range of a CloudEvents Integer", v)
		}
		return int32(v), nil
	case uint32:
		if v > math.MaxInt32 {
			return nil, fmt.Errorf("integer %d is outside the range of a CloudEvents Integer", v)
		}
		return int32(v), nil
	case uint64:
		if v > math.MaxInt32 {
			return nil, fmt.Errorf("integer %d is outside the range of a CloudEvents Integer", v)
		}
		return int32(v), nil
	}
	return nil, fmt.Errorf("AMQP type %T has no CloudEvents counterpart", v)
}

// rfc3339Range checks that t can be written as a CloudEvents Timestamp (RFC 3339: years 0000 to
// 9999); an AMQP timestamp reaches much further [AMQP 1.0 §1.6.17].
func rfc3339Range(t time.Time) error {
	if y := t.UTC().Year(); y < 0 || y > 9999 {
		return fmt.Errorf("timestamp %d ms is outside the years 0000-9999 of RFC 3339", t.UnixMilli())
	}
	return nil
}

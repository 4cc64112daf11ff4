package ce

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
)

// specsByPrefix caches the attribute tables of spec.WithPrefix, one per header prefix.
var specsByPrefix sync.Map // prefix -> *spec.Versions

// DecodeBinary builds an event from a binary-mode message of a binding that carries attributes
// as string headers under prefix ("ce-" for HTTP and NATS, "ce_" for Kafka): attrs maps the
// attribute names, without the prefix, to their values; contentType is the message's content
// type, which is datacontenttype unless attrs holds one; data is the body, copied. Errors name
// the header (prefix and attribute); with several bad headers the same one is named on every
// delivery. Binary data is marked as such (MarkBinaryData).
func DecodeBinary(prefix string, attrs map[string]string, contentType string, data []byte) (*event.Event, error) {
	sv, ok := attrs["specversion"]
	if !ok {
		return nil, fmt.Errorf("neither a CloudEvents content type nor a %sspecversion header", prefix)
	}
	if sv == event.CloudEventsVersionV1 {
		if e, ok := decodeBinaryV1(attrs, contentType, data); ok {
			return e, nil
		}
	}
	return decodeBinarySpec(prefix, sv, attrs, contentType, data)
}

// decodeBinarySpec is DecodeBinary through sdk-go's attribute table for the version, setting
// the attributes in name order.
func decodeBinarySpec(prefix, sv string, attrs map[string]string, contentType string, data []byte) (*event.Event, error) {
	vs, ok := specsByPrefix.Load(prefix)
	if !ok {
		vs, _ = specsByPrefix.LoadOrStore(prefix, spec.WithPrefix(prefix))
	}
	version := vs.(*spec.Versions).Version(sv)
	if version == nil {
		return nil, fmt.Errorf("%sspecversion: unsupported value %q", prefix, sv)
	}
	names := make([]string, 0, len(attrs)+1)
	for n := range attrs {
		if n != "specversion" {
			names = append(names, n)
		}
	}
	if _, ok := attrs["datacontenttype"]; !ok && contentType != "" {
		names = append(names, "datacontenttype")
	}
	sort.Strings(names)
	ctx := version.NewContext()
	for _, name := range names {
		v, ok := attrs[name]
		if !ok {
			v = contentType // datacontenttype from the content type
		}
		var err error
		switch a := version.Attribute(prefix + name); {
		case a != nil:
			err = a.Set(ctx, v)
		case name == "data":
			err = errors.New("not an attribute")
		default:
			err = ctx.SetExtension(name, v)
		}
		if err != nil {
			return nil, fmt.Errorf("%s%s: %w", prefix, name, err)
		}
	}
	return binaryEvent(ctx, data)
}

// binaryEvent is the event of a binary-mode message with context ctx and body data (copied),
// validated, its data marked binary when it must be.
func binaryEvent(ctx event.EventContext, data []byte) (*event.Event, error) {
	e := event.Event{Context: ctx}
	if len(data) > 0 {
		e.DataEncoded = bytes.Clone(data)
	}
	if err := e.Validate(); err != nil {
		return nil, err
	}
	MarkBinaryData(&e)
	return &e, nil
}

// decodeBinaryV1 is DecodeBinary for a valid CloudEvents 1.0 event: it calls the context's
// setters that sdk-go's attribute table calls, in map order and without the table's
// conversions, and reports false on any error, for DecodeBinary's path in name order to name
// the header. TestDecodeBinaryV1Agrees checks that both build the same events.
func decodeBinaryV1(attrs map[string]string, contentType string, data []byte) (*event.Event, bool) {
	ctx := &event.EventContextV1{}
	for name, v := range attrs {
		var err error
		switch name {
		case "specversion":
		case "id":
			err = ctx.SetID(v)
		case "source":
			err = ctx.SetSource(v)
		case "type":
			err = ctx.SetType(v)
		case "subject":
			err = ctx.SetSubject(v)
		case "dataschema":
			err = ctx.SetDataSchema(v)
		case "datacontenttype":
			err = ctx.SetDataContentType(v)
		case "time":
			var t time.Time
			if t, err = time.Parse(time.RFC3339Nano, v); err == nil {
				err = ctx.SetTime(t)
			}
		case "data":
			return nil, false
		default:
			err = ctx.SetExtension(name, v)
		}
		if err != nil {
			return nil, false
		}
	}
	if _, ok := attrs["datacontenttype"]; !ok && contentType != "" {
		_ = ctx.SetDataContentType(contentType) // never fails
	}
	e, err := binaryEvent(ctx, data)
	return e, err == nil
}

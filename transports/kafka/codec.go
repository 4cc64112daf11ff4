package kafka

import (
	"bytes"
	"fmt"
	"mime"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/ce"
)

// cePrefix starts the header of every attribute but datacontenttype in binary mode
// [CE-Kafka-3.2.3].
const cePrefix = "ce_"

// headerContentType carries datacontenttype in binary mode [CE-Kafka-3.2.1] and the event
// format in structured mode [CE-Kafka-3.3.1].
const headerContentType = "content-type"

// partitionKey is the attribute of the Partitioning extension [CE-Partitioning] that the
// output's opt-in key mapping writes as the record key [CE-Kafka-3.1].
const partitionKey = "partitionkey"

// binaryAttrs are the context attributes written as ce_ headers, in writing order;
// datacontenttype goes to the content-type header.
var binaryAttrs = []string{"specversion", "id", "source", "type", "subject", "dataschema", "time"}

// encoder renders events as records of one topic.
type encoder struct {
	topic      string
	structured bool
	keyed      bool // the partitionkey extension becomes the record key
}

// encode renders e in the configured mode. Only an event the JSON format cannot carry fails.
func (c encoder) encode(e *event.Event) (*kgo.Record, error) {
	r := &kgo.Record{Topic: c.topic}
	if c.keyed {
		if k := ce.AttrString(e, partitionKey); k != "" {
			r.Key = []byte(k)
		}
	}
	if c.structured {
		b, err := ce.EncodeStructured(e)
		if err != nil {
			return nil, err
		}
		r.Headers = []kgo.RecordHeader{{Key: headerContentType, Value: []byte(ce.ContentTypeJSON)}}
		r.Value = b
		return r, nil
	}
	// Binary mode [CE-Kafka-3.2]: header values are the attributes' strings, as they are.
	r.Headers = make([]kgo.RecordHeader, 0, len(binaryAttrs)+1+len(e.Extensions()))
	for _, name := range binaryAttrs {
		if v := ce.AttrString(e, name); v != "" {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: cePrefix + name, Value: []byte(v)})
		}
	}
	if ct := e.DataContentType(); ct != "" {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: headerContentType, Value: []byte(ct)})
	}
	names := make([]string, 0, len(e.Extensions()))
	for name := range e.Extensions() {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: cePrefix + name, Value: []byte(ce.AttrString(e, name))})
	}
	if data := e.Data(); len(data) > 0 {
		r.Value = data
	}
	return r, nil
}

// decode turns one record into an engine message. A record that is not a valid CloudEvent gets
// DecodeErr and Raw (its headers and value, see rawRecord), so the engine can dead-letter it.
func decode(r *kgo.Record) *engine.Message {
	origin := fmt.Sprintf("%s/%d@%d", r.Topic, r.Partition, r.Offset)
	e, err := decodeEvent(r.Headers, r.Value)
	if err != nil {
		return &engine.Message{DecodeErr: fmt.Errorf("kafka record %s: %w", origin, err), Raw: rawRecord(r), Origin: origin}
	}
	return &engine.Message{Event: e, Origin: origin}
}

// decodeEvent decodes structured mode when the content-type header names a CloudEvents format
// (the ce_ headers a structured record may also carry are ignored), binary mode when a
// ce_specversion header is present [CE-Kafka-3]. The record key is not part of the event: a key
// mapping must not add attributes [CE-Kafka-3.1].
func decodeEvent(headers []kgo.RecordHeader, value []byte) (*event.Event, error) {
	contentType, haveCT := "", false
	for _, h := range headers {
		if strings.EqualFold(h.Key, headerContentType) {
			if haveCT {
				return nil, fmt.Errorf("header %s given more than once", h.Key)
			}
			contentType, haveCT = string(h.Value), true
		}
	}
	if mt, _, _ := mime.ParseMediaType(contentType); strings.HasPrefix(mt, "application/cloudevents") {
		if mt != ce.ContentTypeJSON {
			return nil, fmt.Errorf("content type %q: only %s is supported in structured mode", contentType, ce.ContentTypeJSON)
		}
		e, err := ce.DecodeStructured(value)
		if err != nil {
			return nil, fmt.Errorf("structured event: %w", err)
		}
		return e, nil
	}
	attrs := map[string]string{}
	for _, h := range headers {
		lk := strings.ToLower(h.Key)
		if !strings.HasPrefix(lk, cePrefix) {
			continue
		}
		name := lk[len(cePrefix):]
		if !ce.ValidAttrName(name) || name == "data" {
			return nil, fmt.Errorf("header %s: not an attribute name (a-z and 0-9 only)", h.Key)
		}
		if _, dup := attrs[name]; dup {
			return nil, fmt.Errorf("header %s given more than once", h.Key)
		}
		if !utf8.Valid(h.Value) {
			return nil, fmt.Errorf("header %s: value is not UTF-8", h.Key)
		}
		attrs[name] = string(h.Value)
	}
	return ce.DecodeBinary(cePrefix, attrs, contentType, value)
}

// rawRecord renders a record for a dead letter: its key and headers as "name: value" lines (the
// key as "key"), a blank line, then the value; a record with neither key nor headers is its
// value alone.
func rawRecord(r *kgo.Record) []byte {
	if len(r.Headers) == 0 && r.Key == nil {
		return bytes.Clone(r.Value)
	}
	var b bytes.Buffer
	if r.Key != nil {
		fmt.Fprintf(&b, "key: %s\r\n", r.Key)
	}
	for _, h := range r.Headers {
		fmt.Fprintf(&b, "%s: %s\r\n", h.Key, h.Value)
	}
	b.WriteString("\r\n")
	b.Write(r.Value)
	return b.Bytes()
}

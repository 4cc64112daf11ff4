package mqtt

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

	"github.com/turnout-router/turnout/engine"
)

// contentType is the structured-mode JSON format, the only one MQTT 3.1.1 can carry.
const contentType = event.ApplicationCloudEventsJSON

// decode turns one MQTT payload into an engine.Message. A payload that is not a valid
// structured-mode JSON CloudEvent gives a Message with DecodeErr and Raw set, never an error:
// the engine dead-letters it. The payload is not retained for valid events.
func decode(topic string, payload []byte) *engine.Message {
	m := &engine.Message{Origin: topic}
	e := event.New()
	if err := json.Unmarshal(payload, &e); err != nil {
		m.DecodeErr = fmt.Errorf("mqtt decode structured event from %s: %w", topic, err)
		m.Raw = payload
		return m
	}
	if err := e.Validate(); err != nil {
		m.DecodeErr = fmt.Errorf("mqtt decode structured event from %s: %w", topic, err)
		m.Raw = payload
		return m
	}
	for name := range e.Extensions() {
		// The JSON reader folds case and takes unknown members as extensions: "Data" or "dAtA"
		// would come back as an extension named "data", which the writer cannot represent.
		if !validAttrName(name) || name == "data" {
			m.DecodeErr = fmt.Errorf("mqtt decode structured event from %s: invalid extension attribute name %q", topic, name)
			m.Raw = payload
			return m
		}
	}
	m.Event = &e
	return m
}

// encode renders e in the structured JSON format. Data that the JSON form cannot carry as it is
// (non-JSON media types with bytes that are not UTF-8, or JSON media types with invalid JSON) is
// written as data_base64, so the bytes survive the trip unchanged. e is not modified.
func encode(e *event.Event) ([]byte, error) {
	if needsBase64(e) {
		c := e.Clone()
		c.DataBase64 = true
		e = &c
	}
	b, err := e.MarshalJSON() // not json.Marshal: it would HTML-escape the data's bytes
	if err != nil {
		return nil, fmt.Errorf("mqtt encode event %s: %w", e.ID(), err)
	}
	return b, nil
}

func needsBase64(e *event.Event) bool {
	data := e.Data()
	if e.DataBase64 || len(data) == 0 {
		return false
	}
	mt := ""
	if ct := e.DataContentType(); ct != "" {
		var err error
		if mt, _, err = mime.ParseMediaType(ct); err != nil {
			mt = strings.ToLower(strings.TrimSpace(strings.SplitN(ct, ";", 2)[0]))
		}
	}
	switch mt {
	case "", event.ApplicationJSON, event.TextJSON, event.ApplicationCloudEventsJSON, event.ApplicationCloudEventsBatchJSON:
		// Written verbatim as the value of "data": it must be JSON itself.
		return !json.Valid(data)
	}
	// Written as a JSON string: only UTF-8 text survives that.
	return !utf8.Valid(data)
}

// topicTemplate builds a topic name from event attributes; see the package documentation.
type topicTemplate struct {
	parts []templatePart
}

// templatePart is a literal or, when attr is set, a placeholder.
type templatePart struct {
	literal string
	attr    string
}

// errTopic marks a topic that cannot be built for an event; the event cannot be published by
// this output whatever the retries, so the caller wraps it with engine.Permanent.
var errTopic = errors.New("mqtt topic")

func parseTopicTemplate(s string) (*topicTemplate, error) {
	t := &topicTemplate{}
	rest := s
	for rest != "" {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			t.parts = append(t.parts, templatePart{literal: rest})
			break
		}
		if rest[open] == '}' {
			return nil, fmt.Errorf("unmatched '}' in %q", s)
		}
		if open > 0 {
			t.parts = append(t.parts, templatePart{literal: rest[:open]})
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("unclosed '{' in %q", s)
		}
		name := rest[open+1 : open+end]
		if !validAttrName(name) {
			return nil, fmt.Errorf("placeholder {%s} in %q: attribute names are [a-z0-9]+", name, s)
		}
		t.parts = append(t.parts, templatePart{attr: name})
		rest = rest[open+end+1:]
	}
	for _, p := range t.parts {
		if p.attr == "" && (strings.ContainsAny(p.literal, "+#{") || strings.ContainsRune(p.literal, 0)) {
			return nil, fmt.Errorf("literal text %q: '+', '#' and U+0000 are not allowed in a topic name ([MQTT-3.3.2-2])", p.literal)
		}
		if p.attr == "" && !utf8.ValidString(p.literal) {
			return nil, fmt.Errorf("literal text %q is not UTF-8", p.literal)
		}
	}
	return t, nil
}

func validAttrName(n string) bool {
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

// topic returns the topic for e. The error wraps errTopic when the result is not a valid topic
// name (too long).
func (t *topicTemplate) topic(e *event.Event) (string, error) {
	if len(t.parts) == 1 && t.parts[0].attr == "" {
		return t.parts[0].literal, nil
	}
	var b strings.Builder
	for _, p := range t.parts {
		if p.attr == "" {
			b.WriteString(p.literal)
			continue
		}
		b.WriteString(sanitizeLevel(attrValue(e, p.attr)))
	}
	s := b.String()
	if len(s) > maxTopicLen {
		return "", fmt.Errorf("%w for event %s: %d bytes, above 65535", errTopic, e.ID(), len(s))
	}
	return s, nil
}

// attrValue returns the string form of a context attribute or extension, "" when absent.
func attrValue(e *event.Event, name string) string {
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

// sanitizeLevel makes v exactly one non-empty topic level: '/', '+', '#' and U+0000 become '_',
// invalid UTF-8 becomes '_', and "" becomes "_".
func sanitizeLevel(v string) string {
	if v == "" {
		return "_"
	}
	v = strings.ToValidUTF8(v, "_")
	return strings.Map(func(r rune) rune {
		switch r {
		case '/', '+', '#', 0:
			return '_'
		}
		return r
	}, v)
}

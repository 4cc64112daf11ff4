package mqtt

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/ce"
)

// decode turns one MQTT payload into an engine.Message. A payload that is not a valid
// structured-mode JSON CloudEvent gives a Message with DecodeErr and Raw set, never an error:
// the engine dead-letters it. The payload is not retained for valid events.
func decode(topic string, payload []byte) *engine.Message {
	m := &engine.Message{Origin: topic}
	e, err := ce.DecodeStructured(payload)
	if err != nil {
		m.DecodeErr = fmt.Errorf("mqtt decode structured event from %s: %w", topic, err)
		m.Raw = payload
		return m
	}
	m.Event = e
	return m
}

// encode renders e in the structured JSON format (see ce.EncodeStructured). e is not modified.
func encode(e *event.Event) ([]byte, error) {
	b, err := ce.EncodeStructured(e)
	if err != nil {
		return nil, fmt.Errorf("mqtt %w", err)
	}
	return b, nil
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
		if !ce.ValidAttrName(name) {
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
		b.WriteString(sanitizeLevel(ce.AttrString(e, p.attr)))
	}
	s := b.String()
	if len(s) > maxTopicLen {
		return "", fmt.Errorf("%w for event %s: %d bytes, above 65535", errTopic, e.ID(), len(s))
	}
	return s, nil
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

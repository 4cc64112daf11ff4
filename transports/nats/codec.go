package nats

import (
	"bytes"
	"fmt"
	"mime"
	"net/url"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/ce"
)

// cePrefix starts the header of every attribute in binary mode [CE-NATS-3.1.3.1].
const cePrefix = "ce-"

// headerContentType carries the format in structured mode [CE-NATS-3.2.1].
const headerContentType = "Content-Type"

// contextAttrs are the context attributes of CloudEvents 1.0 and 0.3 in writing order.
var contextAttrs = []string{"specversion", "id", "source", "type", "subject", "datacontenttype", "dataschema", "time"}

// ceHeaders are the binary-mode header names of contextAttrs.
var ceHeaders = func() map[string]string {
	m := make(map[string]string, len(contextAttrs))
	for _, name := range contextAttrs {
		m[name] = cePrefix + name
	}
	return m
}()

// encodeBinary renders e in binary mode [CE-NATS-3.1]: one ce-<name> header per attribute and
// extension present, datacontenttype included, values percent-encoded [CE-HTTP-3.1.3.2]; the
// data's bytes are the payload.
func encodeBinary(subject string, e *event.Event) *nats.Msg {
	exts := e.Extensions() // a copy: take it once
	m := &nats.Msg{Subject: subject, Header: make(nats.Header, len(contextAttrs)+len(exts))}
	for _, name := range contextAttrs {
		if v := ce.AttrString(e, name); v != "" {
			m.Header[ceHeaders[name]] = []string{ce.PercentEncode(v)}
		}
	}
	for name, v := range exts {
		s, err := types.Format(v) // ce.AttrString's form of an extension
		if err != nil {
			s = ""
		}
		m.Header[cePrefix+name] = []string{ce.PercentEncode(s)}
	}
	m.Data = e.Data()
	return m
}

// encodeStructured renders e in structured mode [CE-NATS-3.2]: the JSON format as payload.
func encodeStructured(subject string, e *event.Event) (*nats.Msg, error) {
	b, err := ce.EncodeStructured(e)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(subject)
	m.Header[headerContentType] = []string{ce.ContentTypeJSON}
	m.Data = b
	return m, nil
}

// decode turns one received message into an engine message. A message that is not a valid
// CloudEvent gets DecodeErr and Raw (its header block and payload), so the engine can
// dead-letter it.
func decode(subject string, h nats.Header, data []byte) *engine.Message {
	e, err := decodeEvent(h, data)
	if err != nil {
		return &engine.Message{DecodeErr: fmt.Errorf("nats message on %s: %w", subject, err), Raw: rawMessage(h, data), Origin: subject}
	}
	return &engine.Message{Event: e, Origin: subject}
}

// decodeEvent decodes structured mode when the Content-Type is a CloudEvents format, binary mode
// when a ce-specversion header is present [CE-NATS-3].
func decodeEvent(h nats.Header, data []byte) (*event.Event, error) {
	attrs := map[string]string{}
	contentType := ""
	for k, vs := range h {
		lk := strings.ToLower(k)
		if lk == "content-type" && len(vs) > 0 {
			contentType = vs[0]
			continue
		}
		if !strings.HasPrefix(lk, cePrefix) {
			continue
		}
		name := lk[len(cePrefix):]
		if !ce.ValidAttrName(name) {
			return nil, fmt.Errorf("header %s: attribute names consist of a-z and 0-9 only", k)
		}
		if _, dup := attrs[name]; dup || len(vs) != 1 {
			return nil, fmt.Errorf("header %s given more than once", k)
		}
		v, err := url.PathUnescape(vs[0])
		if err != nil {
			return nil, fmt.Errorf("header %s: bad percent-encoding: %w", k, err)
		}
		if !utf8.ValidString(v) {
			return nil, fmt.Errorf("header %s: value is not UTF-8 after percent-decoding", k)
		}
		attrs[name] = v
	}
	if mt, _, _ := mime.ParseMediaType(contentType); strings.HasPrefix(mt, "application/cloudevents") {
		if mt != ce.ContentTypeJSON {
			return nil, fmt.Errorf("content type %q: only %s is supported in structured mode", contentType, ce.ContentTypeJSON)
		}
		e, err := ce.DecodeStructured(data)
		if err != nil {
			return nil, fmt.Errorf("structured event: %w", err)
		}
		return e, nil
	}
	return ce.DecodeBinary(cePrefix, attrs, contentType, data)
}

// rawMessage renders a message in the NATS wire form of headers and payload, for dead letters.
func rawMessage(h nats.Header, data []byte) []byte {
	if len(h) == 0 {
		return bytes.Clone(data)
	}
	var b bytes.Buffer
	b.WriteString("NATS/1.0\r\n")
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	b.Write(data)
	return b.Bytes()
}

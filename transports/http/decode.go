package httpin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/textproto"
	"sort"
	"strings"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/turnout-router/turnout/internal/ce"
)

// requestError is why (part of) a request is not a CloudEvent. Status is the HTTP status to
// answer when the engine cannot dead-letter it; Index is the position in a batch (-1 outside a
// batch); Attribute names the offending attribute when known.
type requestError struct {
	Status    int
	Index     int
	Attribute string
	Reason    string
}

func (e *requestError) Error() string {
	var b strings.Builder
	if e.Index >= 0 {
		fmt.Fprintf(&b, "batch element %d: ", e.Index)
	}
	if e.Attribute != "" {
		fmt.Fprintf(&b, "attribute %s: ", e.Attribute)
	}
	b.WriteString(e.Reason)
	return b.String()
}

func badRequest(index int, attr, format string, args ...any) *requestError {
	return &requestError{Status: http.StatusBadRequest, Index: index, Attribute: attr, Reason: fmt.Sprintf(format, args...)}
}

const cePrefix = "Ce-"

// part is one message of a request: an event, or, when Err is set, a malformed message and Raw,
// its bytes as received.
type part struct {
	Event *event.Event
	Err   *requestError
	Raw   []byte
}

// decodeRequest turns the headers and body of a POST into messages, per the CloudEvents HTTP
// binding: one for a binary or structured request, one per element for a batch (none for an
// empty one). What is not a CloudEvent becomes a part with Err and Raw, never an error: the
// engine dead-letters it. A batch that is not a JSON array is one malformed part; an invalid
// element is a malformed part of its own, beside the valid ones. It reads only its arguments
// and is safe for concurrent use.
func decodeRequest(h http.Header, body []byte) []part {
	ct := h.Get("Content-Type")
	mt := ""
	if ct != "" {
		var err error
		mt, _, err = mime.ParseMediaType(ct)
		if err != nil {
			return malformed(h, body, &requestError{Status: http.StatusUnsupportedMediaType, Index: -1, Reason: fmt.Sprintf("content type %q: %v", ct, err)})
		}
	}
	switch {
	// [CE-HTTP-3.3] batched mode.
	case strings.HasPrefix(mt, "application/cloudevents-batch"):
		if mt != event.ApplicationCloudEventsBatchJSON {
			return malformed(h, body, unsupported(mt))
		}
		return decodeBatch(body)
	// [CE-HTTP-3.2] structured mode.
	case strings.HasPrefix(mt, "application/cloudevents"):
		if mt != event.ApplicationCloudEventsJSON {
			return malformed(h, body, unsupported(mt))
		}
		e, err := decodeStructured(body, -1)
		if err != nil {
			return []part{{Err: err, Raw: body}}
		}
		return []part{{Event: e}}
	}
	if e, ok := decodeBinaryFast(h, body); ok {
		return []part{{Event: e}}
	}
	e, err := decodeBinary(h, body)
	if err != nil {
		return malformed(h, body, err)
	}
	return []part{{Event: e}}
}

// malformed is a request that is not a CloudEvent as one malformed part. Its Raw is the body of
// a request in a JSON format; for any other request, whose attributes may be in headers, the
// request's Content-Type and ce- header lines as received, sorted, then an empty line and the
// body (the body alone when there are no such headers).
func malformed(h http.Header, body []byte, err *requestError) []part {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	if mt == event.ApplicationCloudEventsJSON || mt == event.ApplicationCloudEventsBatchJSON {
		return []part{{Err: err, Raw: body}}
	}
	var lines []string
	for k, vs := range h {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if ck != "Content-Type" && !strings.HasPrefix(ck, cePrefix) {
			continue
		}
		for _, v := range vs {
			lines = append(lines, ck+": "+v+"\r\n")
		}
	}
	if len(lines) == 0 {
		return []part{{Err: err, Raw: body}}
	}
	sort.Strings(lines)
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(l)
	}
	b.WriteString("\r\n")
	b.Write(body)
	return []part{{Err: err, Raw: b.Bytes()}}
}

func unsupported(mt string) *requestError {
	return &requestError{Status: http.StatusUnsupportedMediaType, Index: -1,
		Reason: fmt.Sprintf("event format %q is not supported (use application/cloudevents+json, application/cloudevents-batch+json or binary mode)", mt)}
}

// decodeStructured decodes one event in the JSON event format.
func decodeStructured(body []byte, index int) (*event.Event, *requestError) {
	e, err := ce.DecodeStructured(body)
	if err != nil {
		return nil, eventError(index, err)
	}
	if sv := e.SpecVersion(); sv != event.CloudEventsVersionV1 {
		return nil, unsupportedVersion(index, sv)
	}
	return e, nil
}

// unsupportedVersion refuses a specversion other than 1.0, the only one the engine routes. The
// engine would find it malformed too, but its refusal on a route without a dead-letter output
// would reach the client as a failed delivery (502), resent forever, instead of a 400.
func unsupportedVersion(index int, sv string) *requestError {
	return badRequest(index, "specversion", "unsupported value %q (turnout routes CloudEvents %s)", sv, event.CloudEventsVersionV1)
}

// decodeBatch decodes a JSON array of events in the JSON event format ([CE-JSON-4]): one part
// per element, the element's JSON as Raw of a malformed one. ce.ReadBatch reads a valid array
// in one pass; encoding/json reads the others, to say what is wrong.
func decodeBatch(body []byte) []part {
	elements, ok := ce.ReadBatch(body)
	if !ok {
		var raw []json.RawMessage
		if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '[' {
			return []part{{Err: badRequest(-1, "", "batch is not a JSON array of events"), Raw: body}}
		}
		if err := json.Unmarshal(body, &raw); err != nil {
			return []part{{Err: badRequest(-1, "", "batch is not a JSON array of events: %v", err), Raw: body}}
		}
		elements = make([]ce.BatchElement, len(raw))
		for i, r := range raw {
			elements[i].Raw = r
		}
	}
	out := make([]part, 0, len(elements))
	for i, el := range elements {
		if el.Event != nil {
			out = append(out, part{Event: el.Event})
			continue
		}
		r := el.Raw
		if len(r) == 0 || r[0] != '{' {
			out = append(out, part{Err: badRequest(i, "", "not a JSON object"), Raw: r})
			continue
		}
		e, err := decodeStructured(r, i)
		if err != nil {
			out = append(out, part{Err: err, Raw: r})
			continue
		}
		out = append(out, part{Event: e})
	}
	return out
}

// decodeBinary decodes a binary-mode request ([CE-HTTP-3.1]): ce-<name> headers hold the
// attributes, percent-encoded ([CE-HTTP-3.1.3.2]); Content-Type is datacontenttype; the body is
// the data.
func decodeBinary(h http.Header, body []byte) (*event.Event, *requestError) {
	clean := make(http.Header, len(h))
	for k, vs := range h {
		ck := textproto.CanonicalMIMEHeaderKey(k)
		if ck == "Content-Type" {
			clean[ck] = vs
			continue
		}
		if !strings.HasPrefix(ck, cePrefix) {
			continue
		}
		name := strings.ToLower(ck[len(cePrefix):])
		if !ce.ValidAttrName(name) {
			return nil, badRequest(-1, name, "header %s: attribute names consist of a-z and 0-9 only", k)
		}
		if len(vs) != 1 || clean[ck] != nil {
			return nil, badRequest(-1, name, "header %s given more than once", k)
		}
		v, err := decodeHeaderValue(vs[0])
		if err != nil {
			return nil, badRequest(-1, name, "header %s: %v", k, err)
		}
		clean[ck] = []string{v}
	}
	sv := clean.Get(cePrefix + "Specversion")
	switch {
	case sv == event.CloudEventsVersionV1:
	case sv != "":
		return nil, unsupportedVersion(-1, sv)
	case len(clean) > 1 || (len(clean) == 1 && clean["Content-Type"] == nil):
		return nil, badRequest(-1, "specversion", "missing ce-specversion header")
	default:
		return nil, &requestError{Status: http.StatusUnsupportedMediaType, Index: -1,
			Reason: fmt.Sprintf("content type %q is not a CloudEvents format and no ce-specversion header makes it binary mode", h.Get("Content-Type"))}
	}
	msg := cehttp.NewMessage(clean, io.NopCloser(bytes.NewReader(body)))
	e, err := binding.ToEvent(context.Background(), msg)
	if err != nil {
		return nil, eventError(-1, err)
	}
	if err := e.Validate(); err != nil {
		return nil, eventError(-1, err)
	}
	// binding.ToEvent does not mark binary data as such; JSON writers would then emit data that
	// is not valid JSON, or not lossless.
	ce.MarkBinaryData(e)
	return e, nil
}

// binaryAttrs maps the canonical header names of the attributes a binary-mode request of
// CloudEvents 1.0 carries in ce- headers to the attributes' names.
var binaryAttrs = map[string]string{
	"Ce-Specversion": "specversion",
	"Ce-Id":          "id",
	"Ce-Source":      "source",
	"Ce-Type":        "type",
	"Ce-Subject":     "subject",
	"Ce-Time":        "time",
	"Ce-Dataschema":  "dataschema",
}

// decodeBinaryFast is decodeBinary for the common binary-mode request of a valid CloudEvents
// 1.0 event: canonical header names, one value each, attribute and extension names that need no
// special handling. It builds the same event as decodeBinary, in one pass over the headers and
// without sdk-go's message layer, or reports false, and the caller then takes decodeBinary's
// answer (with its reasons for refusing). TestDecodeBinaryFastAgrees and FuzzDecodeBinaryFast
// check that the two build the same events.
func decodeBinaryFast(h http.Header, body []byte) (*event.Event, bool) {
	attrs := make(map[string]string, len(h))
	contentType := ""
	for k, vs := range h {
		isCE := len(k) > len(cePrefix) && k[:len(cePrefix)] == cePrefix
		if !isCE && k != "Content-Type" {
			if len(k) >= len(cePrefix) && strings.EqualFold(k[:len(cePrefix)], cePrefix) || strings.EqualFold(k, "Content-Type") {
				return nil, false // not in canonical form
			}
			continue
		}
		if len(vs) != 1 || vs[0] == "" {
			return nil, false
		}
		if !isCE {
			contentType = vs[0]
			continue
		}
		name, ok := binaryAttrs[k]
		if !ok {
			if textproto.CanonicalMIMEHeaderKey(k) != k {
				return nil, false
			}
			name = strings.ToLower(k[len(cePrefix):])
			switch {
			case !ce.ValidAttrName(name):
				return nil, false
			case name == "data" || name == "datacontenttype" || name == "schemaurl" || name == "datacontentencoding":
				return nil, false
			}
		}
		v, err := decodeHeaderValue(vs[0])
		if err != nil {
			return nil, false
		}
		attrs[name] = v
	}
	if attrs["specversion"] != event.CloudEventsVersionV1 {
		return nil, false
	}
	e, err := ce.DecodeBinary("ce-", attrs, contentType, body)
	if err != nil {
		return nil, false
	}
	return e, true
}

// eventError turns an sdk decode or validation error into a 400 naming the attribute(s).
func eventError(index int, err error) *requestError {
	var ve event.ValidationError
	if errors.As(err, &ve) {
		attrs := make([]string, 0, len(ve))
		for k := range ve {
			attrs = append(attrs, k)
		}
		sort.Strings(attrs)
		reasons := make([]string, len(attrs))
		for i, a := range attrs {
			reasons[i] = fmt.Sprintf("%s: %v", a, ve[a])
		}
		return badRequest(index, attrs[0], "invalid event: %s", strings.Join(reasons, "; "))
	}
	return badRequest(index, "", "invalid event: %v", err)
}

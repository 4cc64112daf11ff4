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

// requestError is a request the input refuses before dispatching anything. Status is the HTTP
// status to answer; Index is the position in a batch (-1 outside a batch); Attribute names the
// offending attribute when known.
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

// decodeRequest turns the headers and body of a POST into events, per the CloudEvents HTTP
// binding. It reads only its arguments and is safe for concurrent use. On error it returns a
// *requestError and no events: a request is taken whole or not at all.
func decodeRequest(h http.Header, body []byte) ([]*event.Event, error) {
	ct := h.Get("Content-Type")
	mt := ""
	if ct != "" {
		var err error
		mt, _, err = mime.ParseMediaType(ct)
		if err != nil {
			return nil, &requestError{Status: http.StatusUnsupportedMediaType, Index: -1, Reason: fmt.Sprintf("content type %q: %v", ct, err)}
		}
	}
	switch {
	// [CE-HTTP-3.3] batched mode.
	case strings.HasPrefix(mt, "application/cloudevents-batch"):
		if mt != event.ApplicationCloudEventsBatchJSON {
			return nil, unsupported(mt)
		}
		return decodeBatch(body)
	// [CE-HTTP-3.2] structured mode.
	case strings.HasPrefix(mt, "application/cloudevents"):
		if mt != event.ApplicationCloudEventsJSON {
			return nil, unsupported(mt)
		}
		e, err := decodeStructured(body, -1)
		if err != nil {
			return nil, err
		}
		return []*event.Event{e}, nil
	}
	e, err := decodeBinary(h, body)
	if err != nil {
		return nil, err
	}
	return []*event.Event{e}, nil
}

func unsupported(mt string) *requestError {
	return &requestError{Status: http.StatusUnsupportedMediaType, Index: -1,
		Reason: fmt.Sprintf("event format %q is not supported (use application/cloudevents+json, application/cloudevents-batch+json or binary mode)", mt)}
}

// decodeStructured decodes one event in the JSON event format.
func decodeStructured(body []byte, index int) (*event.Event, error) {
	e, err := ce.DecodeStructured(body)
	if err != nil {
		return nil, eventError(index, err)
	}
	return e, nil
}

// decodeBatch decodes a JSON array of events in the JSON event format ([CE-JSON-4]).
func decodeBatch(body []byte) ([]*event.Event, error) {
	var raw []json.RawMessage
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '[' {
		return nil, badRequest(-1, "", "batch is not a JSON array of events")
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, badRequest(-1, "", "batch is not a JSON array of events: %v", err)
	}
	out := make([]*event.Event, 0, len(raw))
	for i, r := range raw {
		if len(r) == 0 || r[0] != '{' {
			return nil, badRequest(i, "", "not a JSON object")
		}
		e, err := decodeStructured(r, i)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// decodeBinary decodes a binary-mode request ([CE-HTTP-3.1]): ce-<name> headers hold the
// attributes, percent-encoded ([CE-HTTP-3.1.3.2]); Content-Type is datacontenttype; the body is
// the data.
func decodeBinary(h http.Header, body []byte) (*event.Event, error) {
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
	case sv == event.CloudEventsVersionV1 || sv == event.CloudEventsVersionV03:
	case sv != "":
		return nil, badRequest(-1, "specversion", "unsupported value %q (want %s or %s)", sv, event.CloudEventsVersionV1, event.CloudEventsVersionV03)
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

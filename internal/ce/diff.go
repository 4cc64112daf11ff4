package ce

import (
	"bytes"
	"fmt"
	"sort"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
)

// Diff compares two events attribute by attribute and returns one line per difference, nil
// when they are equal: every context attribute, every extension with its type and canonical
// value, and the data's bytes. How the data would be written (data_base64 or not) is not
// compared. Tests and checks of conversions use it.
func Diff(want, got *event.Event) []string {
	var out []string
	for _, name := range []string{"specversion", "id", "source", "type", "subject", "datacontenttype", "dataschema", "time"} {
		if w, g := AttrString(want, name), AttrString(got, name); w != g {
			out = append(out, fmt.Sprintf("%s: got %q, want %q", name, g, w))
		}
	}
	names := map[string]bool{}
	for n := range want.Extensions() {
		names[n] = true
	}
	for n := range got.Extensions() {
		names[n] = true
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		w, wok := want.Extensions()[n]
		g, gok := got.Extensions()[n]
		switch {
		case !gok:
			out = append(out, fmt.Sprintf("extension %s: missing, want %T %v", n, w, w))
		case !wok:
			out = append(out, fmt.Sprintf("extension %s: got %T %v, want none", n, g, g))
		default:
			ws, _ := types.Format(w)
			gs, _ := types.Format(g)
			if fmt.Sprintf("%T", w) != fmt.Sprintf("%T", g) || ws != gs {
				out = append(out, fmt.Sprintf("extension %s: got %T %q, want %T %q", n, g, gs, w, ws))
			}
		}
	}
	if !bytes.Equal(want.Data(), got.Data()) {
		out = append(out, fmt.Sprintf("data: got %q, want %q", got.Data(), want.Data()))
	}
	return out
}

// ThroughJSON returns a copy of e as the JSON format gives it back after EncodeStructured and
// DecodeStructured: data written as a JSON value (valid JSON under a JSON media type) without
// the white space after it, which sdk-go's reader does not keep (it keeps the white space
// before). Tests compare it with Diff.
func ThroughJSON(e *event.Event) *event.Event {
	c := e.Clone()
	if !c.DataBase64 && IsJSONMediaType(c.DataContentType()) && !needsBase64(&c) {
		c.DataEncoded = bytes.TrimRight(c.DataEncoded, " \t\r\n")
	}
	return &c
}

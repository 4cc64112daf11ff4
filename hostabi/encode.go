package hostabi

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"

	"github.com/turnout-router/turnout/hostabi/wire"
)

// encoder encodes events in the wire format (ABI.md, "Event encoding") for one instance. It
// reuses its buffer, and remembers three things consecutive events of a stream usually share, so
// that a repeat costs a comparison instead of the work: the source (rendering a URL reference
// takes a scan of each part), the date of the time attribute (splitting a time into a date is
// most of formatting it) and the set of extension names (ranging over a map starts at a random
// position, which costs a random number per event). What it remembers never changes its output:
// a miss does the full work, and the encoding of an event is the same with or without history,
// up to the order of extensions, which the ABI leaves open.
//
// In steady state it does not allocate for events whose source and dataschema are plain URI
// references and whose extensions are strings, integers or booleans.
type encoder struct {
	w wire.EventWriter

	src     url.URL // the last source rendered, and its text
	srcText []byte
	hasSrc  bool

	day     int64    // days since 1970-01-01 of the last time written, and its "YYYY-MM-DDT"
	date    [11]byte //
	hasDate bool

	extNames []string // the extension names of the last event, in the order written
	extVals  []any    // scratch: the values of the current event's extensions in that order
}

// encode encodes e and returns the encoding, valid until the next call.
func (enc *encoder) encode(e *event.Event) []byte {
	w := &enc.w
	w.Reset()
	ec, ok := e.Context.(*event.EventContextV1)
	if !ok {
		enc.context(e)
	} else {
		// The fields directly: the accessors of Event are interface calls, and some copy.
		w.Attr(ec.ID)
		enc.source(&ec.Source.URL)
		w.Attr(event.CloudEventsVersionV1)
		w.Attr(ec.Type)
		optionalPtr(w, ec.DataContentType)
		if ec.DataSchema != nil {
			appendURL(w, &ec.DataSchema.URL)
		} else {
			w.AttrAbsent()
		}
		optionalPtr(w, ec.Subject)
		if ec.Time != nil && !ec.Time.Time.IsZero() {
			enc.time(ec.Time.Time)
		} else {
			w.AttrAbsent()
		}
		enc.extensions(ec.Extensions)
	}
	d := e.Data()
	w.Data(d, d != nil)
	return w.Buf
}

// context encodes the attributes of an event whose context is not an EventContextV1, through
// the accessors.
func (enc *encoder) context(e *event.Event) {
	w := &enc.w
	w.Attr(e.ID())
	w.Attr(e.Source())
	w.Attr(e.SpecVersion())
	w.Attr(e.Type())
	optional(w, e.DataContentType())
	optional(w, e.DataSchema())
	optional(w, e.Subject())
	if t := e.Time(); !t.IsZero() {
		enc.time(t)
	} else {
		w.AttrAbsent()
	}
	enc.extensions(e.Extensions())
}

// source writes the source u, reusing the last rendering when u is the last source.
func (enc *encoder) source(u *url.URL) {
	w := &enc.w
	if enc.hasSrc && *u == enc.src {
		w.Buf = wire.AppendStr(w.Buf, enc.srcText)
		return
	}
	mark := len(w.Buf)
	appendURL(w, u)
	enc.src, enc.hasSrc = *u, true
	enc.srcText = append(enc.srcText[:0], w.Buf[mark+4:]...)
}

// time writes t in UTC as time.RFC3339Nano formats it (see appendTime), reusing the date of the
// last time written when t falls on the same day.
func (enc *encoder) time(t time.Time) {
	w := &enc.w
	pos := w.BeginValue()
	sec := t.Unix()
	day := sec / 86400
	if sec%86400 < 0 {
		day--
	}
	if !enc.hasDate || day != enc.day {
		y, mo, d := t.UTC().Date()
		if y < 0 || y > 9999 {
			enc.hasDate = false
			w.Buf = appendTime(w.Buf, t)
			w.EndValue(pos)
			return
		}
		copy(enc.date[:], appendDate(enc.date[:0], y, mo, d))
		enc.day, enc.hasDate = day, true
	}
	w.Buf = append(w.Buf, enc.date[:]...)
	s := int(sec - day*86400)
	w.Buf = appendClock(w.Buf, s/3600, s/60%60, s%60, t.Nanosecond())
	w.EndValue(pos)
}

// extensions writes the extension list. When the event has the last event's extension names,
// it writes them in the same order, found by lookups; otherwise it ranges over the map.
func (enc *encoder) extensions(exts map[string]any) {
	w := &enc.w
	w.Extensions()
	if len(exts) == 0 {
		enc.extNames = enc.extNames[:0]
		return
	}
	if len(exts) == len(enc.extNames) {
		enc.extVals = enc.extVals[:0]
		for _, name := range enc.extNames {
			v, ok := exts[name]
			if !ok {
				break
			}
			enc.extVals = append(enc.extVals, v)
		}
		if len(enc.extVals) == len(enc.extNames) { // the same set: as many names, each present
			for i, name := range enc.extNames {
				extension(w, name, enc.extVals[i])
			}
			clear(enc.extVals) // do not keep the event's values alive
			return
		}
	}
	enc.extNames = enc.extNames[:0]
	for name, v := range exts {
		enc.extNames = append(enc.extNames, name)
		extension(w, name, v)
	}
}

// extension writes one extension in its string form ([CE-3.1.1] canonical string encoding).
func extension(w *wire.EventWriter, name string, v any) {
	switch v := v.(type) {
	case string:
		w.Extension(name, v)
	case int32:
		w.ExtensionName(name)
		pos := w.BeginValue()
		w.Buf = strconv.AppendInt(w.Buf, int64(v), 10)
		w.EndValue(pos)
	case bool:
		w.ExtensionName(name)
		pos := w.BeginValue()
		w.Buf = strconv.AppendBool(w.Buf, v)
		w.EndValue(pos)
	default:
		s, err := types.Format(v)
		if err != nil {
			s = fmt.Sprint(v)
		}
		w.Extension(name, s)
	}
}

func optionalPtr(w *wire.EventWriter, s *string) {
	if s == nil || *s == "" {
		w.AttrAbsent()
	} else {
		w.Attr(*s)
	}
}

func optional(w *wire.EventWriter, s string) {
	if s == "" {
		w.AttrAbsent()
	} else {
		w.Attr(s)
	}
}

// appendURL writes u as url.URL.String would, without allocating for the common shapes
// (scheme:opaque, scheme://host/path, relative path) made of characters String leaves as they are.
func appendURL(w *wire.EventWriter, u *url.URL) {
	if !fastURL(u) {
		w.Attr(u.String())
		return
	}
	pos := w.BeginValue()
	switch {
	case u.Opaque != "":
		w.Buf = append(append(append(w.Buf, u.Scheme...), ':'), u.Opaque...)
	case u.Host != "":
		if u.Scheme != "" {
			w.Buf = append(append(w.Buf, u.Scheme...), ':')
		}
		w.Buf = append(append(append(w.Buf, "//"...), u.Host...), u.Path...)
	default:
		w.Buf = append(w.Buf, u.Path...)
	}
	w.EndValue(pos)
}

// fastURL reports whether appendURL's fast path renders u exactly as u.String() does.
func fastURL(u *url.URL) bool {
	if u.User != nil || u.RawPath != "" || u.ForceQuery || u.RawQuery != "" || u.Fragment != "" ||
		u.OmitHost || u.RawFragment != "" || !plain(u.Path) || !plain(u.Opaque) || !plain(u.Host) || !plain(u.Scheme) {
		return false
	}
	switch {
	case u.Opaque != "":
		return u.Scheme != "" && u.Host == "" && u.Path == ""
	case u.Host != "":
		return u.Path == "" || u.Path[0] == '/'
	case u.Scheme != "":
		return false
	}
	seg, _, _ := strings.Cut(u.Path, "/")
	return u.Path != "" && !strings.HasPrefix(u.Path, "//") && !strings.Contains(seg, ":")
}

// plain reports whether s consists of characters url.URL.String never escapes.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			continue
		}
		switch c {
		case '-', '.', '_', '~', '/', ':', '@':
			continue
		}
		return false
	}
	return true
}

// appendTime appends t in UTC as time.RFC3339Nano formats it (the CloudEvents canonical form),
// about four times faster than AppendFormat for years 0-9999.
func appendTime(b []byte, t time.Time) []byte {
	t = t.UTC()
	y, mo, d := t.Date()
	if y < 0 || y > 9999 {
		return t.AppendFormat(b, time.RFC3339Nano)
	}
	h, mi, sec := t.Clock()
	return appendClock(appendDate(b, y, mo, d), h, mi, sec, t.Nanosecond())
}

// appendDate appends "YYYY-MM-DDT" for a year in 0-9999.
func appendDate(b []byte, y int, mo time.Month, d int) []byte {
	return append(b, byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-',
		byte('0'+mo/10), byte('0'+mo%10), '-', byte('0'+d/10), byte('0'+d%10), 'T')
}

// appendClock appends "hh:mm:ss", the fraction of the second without trailing zeros (none when
// ns is 0) and "Z".
func appendClock(b []byte, h, mi, sec, ns int) []byte {
	b = append(b, byte('0'+h/10), byte('0'+h%10), ':', byte('0'+mi/10), byte('0'+mi%10), ':',
		byte('0'+sec/10), byte('0'+sec%10))
	if ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i >= 1; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' {
			n--
		}
		b = append(b, frac[:n]...)
	}
	return append(b, 'Z')
}

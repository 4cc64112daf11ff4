package hostabi

import (
	"bytes"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/hostabi/wire"
)

// checkRoundTrip encodes e, parses the bytes as a guest would and compares every field.
func checkRoundTrip(t *testing.T, e *event.Event) {
	t.Helper()
	var enc encoder
	var v wire.EventView
	if err := v.Parse(enc.encode(e)); err != nil {
		t.Fatalf("parse of an encoded event: %v", err)
	}
	attr := func(i int) string {
		b, _ := v.Attr(i)
		return string(b)
	}
	want := [wire.NumAttrs]string{e.ID(), e.Source(), e.SpecVersion(), e.Type(), e.DataContentType(), e.DataSchema(), e.Subject(), ""}
	if !e.Time().IsZero() {
		want[wire.AttrTime] = e.Time().UTC().Format(time.RFC3339Nano)
	}
	for i, w := range want {
		if got := attr(i); got != w {
			t.Errorf("attribute %s = %q, want %q", wire.AttrNames[i], got, w)
		}
	}
	if v.NumExtensions() != len(e.Extensions()) {
		t.Errorf("%d extensions, want %d", v.NumExtensions(), len(e.Extensions()))
	}
	for name, val := range e.Extensions() {
		got, ok := v.LookupExtension(name)
		s, _ := event.EventContextV1{Extensions: map[string]any{name: val}}.GetExtension(name)
		if ws, _ := s.(string); ok && ws != "" && string(got) != ws {
			t.Errorf("extension %s = %q, want %q", name, got, ws)
		}
		if !ok {
			t.Errorf("extension %s missing", name)
		}
	}
	data, has := v.Data()
	if has != (e.Data() != nil) || !bytes.Equal(data, e.Data()) {
		t.Errorf("data = %q (present %v), want %q", data, has, e.Data())
	}
}

func TestEncodeEvent(t *testing.T) {
	full := event.New()
	full.SetID("a1")
	full.SetSource("https://gw.example/homes/3?x=1")
	full.SetType("care.alarm.fall")
	full.SetSubject("room 4")
	full.SetDataSchema("https://schemas.example/alarm.json")
	full.SetTime(time.Date(2026, 1, 2, 3, 4, 5, 600, time.FixedZone("x", 3600)))
	full.SetExtension("region", "north")
	full.SetExtension("priority", 3)
	full.SetExtension("test", true)
	if err := full.SetData("application/json", []byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	minimal := event.New()
	minimal.SetID("b")
	minimal.SetSource("urn:device:7")
	minimal.SetType("t")
	empty := event.New()
	empty.SetID("c")
	empty.SetSource("/s")
	empty.SetType("t")
	empty.DataEncoded = []byte{}
	for name, e := range map[string]*event.Event{"all attributes": &full, "required only": &minimal, "empty data": &empty} {
		t.Run(name, func(t *testing.T) { checkRoundTrip(t, e) })
	}
	t.Run("time is UTC RFC 3339", func(t *testing.T) {
		var enc encoder
		var v wire.EventView
		if err := v.Parse(enc.encode(&full)); err != nil {
			t.Fatal(err)
		}
		if got, _ := v.Attr(wire.AttrTime); string(got) != "2026-01-02T02:04:05.0000006Z" {
			t.Errorf("time = %q", got)
		}
	})
}

// TestEncodeEventDoesNotAllocate: the host encodes each event into a reused buffer.
func TestEncodeEventDoesNotAllocate(t *testing.T) {
	e := newEvent("care.alarm.fall")
	e.SetSubject("room 4")
	e.SetTime(time.Now())
	e.SetExtension("region", "north")
	e.SetExtension("priority", 2)
	_ = e.SetData("application/json", bytes.Repeat([]byte("x"), 200))
	var enc encoder
	enc.encode(e)
	if n := testing.AllocsPerRun(100, func() { enc.encode(e) }); n != 0 {
		t.Errorf("encoding allocates %v times per event, want 0", n)
	}
}

func TestAppendTime(t *testing.T) {
	for _, tm := range []time.Time{
		time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 600, time.FixedZone("x", 3600)),
		time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-5, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 6, 1, 12, 0, 0, 120000000, time.FixedZone("y", -7*3600)),
	} {
		want := tm.UTC().Format(time.RFC3339Nano)
		if got := string(appendTime(nil, tm)); got != want {
			t.Errorf("appendTime(%v) = %q, want %q", tm, got, want)
		}
	}
}

func TestAppendURL(t *testing.T) {
	for _, s := range []string{
		"/sensors/kitchen", "sensors/kitchen", "urn:device:pendant-7", "https://gw.example/homes/3",
		"https://gw.example", "https://user@gw.example/x", "https://gw.example/a b", "//host/x",
		"https://gw.example/x?y=1#f", "mailto:someone@example.org", "a:b/c", "./a:b", "https://[::1]:80/x",
		"https://gw.example:8443/a/b.c_d~e", "/a%2Fb", "x", "",
	} {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		var w wire.EventWriter
		w.Buf = w.Buf[:0]
		appendURL(&w, u)
		got := string(w.Buf[4:])
		if got != u.String() {
			t.Errorf("appendURL(%q) = %q, want %q (url.URL.String)", s, got, u.String())
		}
	}
}

func FuzzEventRoundTrip(f *testing.F) {
	f.Add("id", "/src", "type", "subject", "ext", "value", []byte(`{"a":1}`), int64(0))
	f.Add("", "urn:x:y", "t", "", "region", "", []byte(nil), int64(1700000000123456789))
	f.Fuzz(func(t *testing.T, id, source, typ, subject, extName, extValue string, data []byte, ts int64) {
		e := event.New()
		e.SetID(id)
		e.SetSource(source)
		e.SetType(typ)
		e.SetSubject(subject)
		if ts != 0 {
			e.SetTime(time.Unix(0, ts))
			if got, want := string(appendTime(nil, time.Unix(0, ts))), time.Unix(0, ts).UTC().Format(time.RFC3339Nano); got != want {
				t.Fatalf("appendTime = %q, want %q", got, want)
			}
		}
		e.SetExtension(extName, extValue)
		if data != nil {
			e.DataEncoded = data
		}
		if e.Validate() != nil {
			return
		}
		checkRoundTrip(t, &e)
	})
}

// FuzzDecodeDecision feeds arbitrary bytes to the host's decision decoder: it must return a
// decision or an error, never panic, and a route decision always names an output.
func FuzzDecodeDecision(f *testing.F) {
	f.Add(dropDecision)
	f.Add(wire.AppendMutation(wire.AppendDecision(nil, wire.ActionRoute, []string{"a", "b"}, "", 1), wire.OpSetExtension, "seen", "yes"))
	f.Add(wire.AppendDecision(nil, wire.ActionFail, nil, "bad", 0))
	f.Add(wire.AppendMutation(wire.AppendDecision(nil, wire.ActionRoute, []string{"a"}, "", 1), wire.OpSetAttribute, "time", "2026-01-01T00:00:00Z"))
	f.Add(wire.AppendMutation(wire.AppendDecision(nil, wire.ActionRoute, []string{"a"}, "", 1), wire.OpSetData, "", "xyz"))
	f.Fuzz(func(t *testing.T, b []byte) {
		inst := &instance{outputs: map[string][]string{}}
		in := newEvent("fuzz")
		d, err := inst.decodeDecision(b, in)
		if err != nil {
			if d.Action != 0 {
				t.Fatalf("error %v with a decision %+v", err, d)
			}
			return
		}
		if d.Action == 0 || (d.Action.String() == "route" && len(d.Outputs) == 0) {
			t.Fatalf("accepted decision %+v", d)
		}
		if d.Event != nil {
			if err := d.Event.Validate(); err != nil {
				t.Fatalf("accepted an invalid mutated event: %v", err)
			}
		}
		if in.Type() != "fuzz" || len(in.Extensions()) != 0 {
			t.Fatalf("decoder modified the input event")
		}
	})
}

// TestEncoderHistory: what an encoder remembers from earlier events (source, date, extension
// names) never changes an encoding: a stream of events that share some of these and differ in
// others encodes, with one encoder, as each event does with a fresh one.
func TestEncoderHistory(t *testing.T) {
	ev := func(source string, tm time.Time, exts ...string) *event.Event {
		e := event.New()
		e.SetID("id")
		e.SetSource(source)
		e.SetType("t")
		if !tm.IsZero() {
			e.SetTime(tm)
		}
		for i := 0; i+1 < len(exts); i += 2 {
			e.SetExtension(exts[i], exts[i+1])
		}
		return &e
	}
	day := time.Date(2026, 12, 5, 23, 59, 59, 5, time.UTC)
	stream := []*event.Event{
		ev("/homes/1", day, "region", "north"),
		ev("/homes/1", day.Add(time.Second), "region", "south"),        // next day, same names
		ev("/homes/2", day.Add(time.Second), "zone", "south"),          // same count, other name
		ev("/homes/2", day, "zone", "a", "region", "b"),                // more names
		ev("/homes/2?x=1", day, "region", "b"),                         // fewer names; a source with a query
		ev("/homes/2", time.Date(1969, 12, 31, 23, 0, 0, 0, time.UTC)), // before 1970, no extensions
		ev("/homes/2", time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC), "region", "b"),
		ev("urn:x:y", time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), "region", "b"), // outside 0-9999
		ev("urn:x:y", time.Date(2026, 1, 1, 1, 0, 0, 0, time.FixedZone("x", 7200)), "region", "b"),
		ev("urn:x:y", time.Time{}, "region", "b"),
	}
	canon := func(b []byte) string {
		var v wire.EventView
		if err := v.Parse(b); err != nil {
			t.Fatalf("parse: %v", err)
		}
		var s []string
		for i := range wire.NumAttrs {
			a, ok := v.Attr(i)
			s = append(s, fmt.Sprintf("%s=%q/%v", wire.AttrNames[i], a, ok))
		}
		var exts []string
		for i := range v.NumExtensions() {
			n, val := v.Extension(i)
			exts = append(exts, fmt.Sprintf("%s=%q", n, val))
		}
		sort.Strings(exts)
		d, ok := v.Data()
		return strings.Join(append(append(s, exts...), fmt.Sprintf("data=%q/%v", d, ok)), " ")
	}
	var shared encoder
	for i, e := range stream {
		var fresh encoder
		got, want := canon(shared.encode(e)), canon(fresh.encode(e))
		if got != want {
			t.Errorf("event %d encoded after the others:\n%s\nalone:\n%s", i, got, want)
		}
		if tm := e.Time(); !tm.IsZero() && !strings.Contains(got, tm.UTC().Format(time.RFC3339Nano)) {
			t.Errorf("event %d: time %s not in %s", i, tm.UTC().Format(time.RFC3339Nano), got)
		}
	}
}

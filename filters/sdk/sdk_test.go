//go:build !wasip1

package sdk

import (
	"reflect"
	"strings"
	"testing"
)

func TestEventAccessorsAndMutations(t *testing.T) {
	var seen map[string]string
	Handle(func(e *Event) Decision {
		seen = map[string]string{
			"id": e.ID(), "source": e.Source(), "specversion": e.SpecVersion(), "type": e.Type(),
			"subject": e.Subject(), "time": e.Time(), "datacontenttype": e.DataContentType(),
			"dataschema": e.DataSchema(), "data": string(e.Data()),
		}
		for i := range e.NumExtensions() {
			n, v := e.Ext(i)
			seen["ext:"+n] = v
		}
		if v, ok := e.Attribute("region"); !ok || v != "north" {
			t.Errorf("Attribute(region) = %q %v", v, ok)
		}
		if _, ok := e.Attribute("dataschema"); ok {
			t.Error("Attribute(dataschema) present on an event without one")
		}
		if _, ok := e.Extension("missing"); ok {
			t.Error("Extension(missing) present")
		}
		e.SetExtension("seen", "yes")
		e.RemoveExtension("region")
		e.SetAttribute("subject", "changed")
		e.RemoveAttribute("time")
		e.SetData([]byte("new"))
		Log(LevelInfo, "decided "+e.ID())
		return Route("a", "b")
	})
	t.Cleanup(func() { Handle(nil) })
	r, err := Run(Fields{
		ID: "42", Source: "/homes/1", Type: "care.alarm.fall", Subject: "room 4",
		Time: "2026-11-24T10:00:00Z", DataContentType: "text/plain",
		Extensions: map[string]string{"region": "north", "priority": "1"}, Data: []byte("hello"),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"id": "42", "source": "/homes/1", "specversion": "1.0", "type": "care.alarm.fall", "subject": "room 4",
		"time": "2026-11-24T10:00:00Z", "datacontenttype": "text/plain", "dataschema": "", "data": "hello",
		"ext:region": "north", "ext:priority": "1",
	}
	if !reflect.DeepEqual(seen, want) {
		t.Errorf("handler saw %v\nwant %v", seen, want)
	}
	if r.Action != "route" || !reflect.DeepEqual(r.Outputs, []string{"a", "b"}) {
		t.Errorf("decision %s %v, want route [a b]", r.Action, r.Outputs)
	}
	wantMuts := []Mutation{
		{"set-extension", "seen", "yes"}, {"remove-extension", "region", ""}, {"set-attribute", "subject", "changed"},
		{"remove-attribute", "time", ""}, {"set-data", "", "new"},
	}
	if !reflect.DeepEqual(r.Mutations, wantMuts) {
		t.Errorf("mutations %v\nwant %v", r.Mutations, wantMuts)
	}
	if !reflect.DeepEqual(r.Logs, []string{"0 decided 42"}) {
		t.Errorf("logs %v", r.Logs)
	}
}

func TestDecisions(t *testing.T) {
	t.Cleanup(func() { Handle(nil) })
	for _, tt := range []struct {
		name   string
		h      Handler
		action string
		reason string
	}{
		{"drop", func(*Event) Decision { return Drop() }, "drop", ""},
		{"fail", func(*Event) Decision { return Fail("no route") }, "fail", "no route"},
		{"zero decision fails", func(e *Event) Decision { e.SetExtension("x", "y"); return Decision{} }, "fail", "sdk: handler returned the zero Decision"},
		{"no handler fails", nil, "fail", "sdk: no handler registered"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			Handle(tt.h)
			r, err := Run(Fields{ID: "1", Source: "/s", Type: "t"})
			if err != nil {
				t.Fatal(err)
			}
			if r.Action != tt.action || !strings.HasPrefix(r.Reason, tt.reason) || len(r.Mutations) != 0 {
				t.Errorf("got %+v, want %s %q without mutations", r, tt.action, tt.reason)
			}
		})
	}
}

func TestEventReadsDoNotAllocate(t *testing.T) {
	Handle(func(e *Event) Decision {
		_, _ = e.Attribute("region")
		_ = e.Type()
		_, _ = JSONField(e.Data(), "a.b")
		return Drop()
	})
	t.Cleanup(func() { Handle(nil) })
	w.Reset()
	for range 8 {
		w.Attr("x")
	}
	w.Extensions()
	w.Extension("region", "north")
	w.Data([]byte(`{"a":{"b":1}}`), true)
	decide(w.Buf)
	if n := testing.AllocsPerRun(100, func() { decide(w.Buf) }); n != 0 {
		t.Errorf("decide allocates %v times per event, want 0", n)
	}
}

func TestJSONField(t *testing.T) {
	doc := []byte(` {"a": {"b": "x\"y", "n": -1.5e3, "t": true, "arr": [1, {"id": "z"}, [2]]},
		"s": "plain", "empty": {}, "nul": null, "esc\"key": 1, "last": [ ] } `)
	for _, tt := range []struct {
		path, want string
		ok         bool
	}{
		{"s", "plain", true},
		{"a.b", `x\"y`, true},
		{"a.n", "-1.5e3", true},
		{"a.t", "true", true},
		{"a.arr.0", "1", true},
		{"a.arr.1.id", "z", true},
		{"a.arr.2", "[2]", true},
		{"a.arr.3", "", false},
		{"a", `{"b": "x\"y", "n": -1.5e3, "t": true, "arr": [1, {"id": "z"}, [2]]}`, true},
		{"empty", "{}", true},
		{"nul", "null", true},
		{"last", "[ ]", true},
		{"missing", "", false},
		{"a.missing", "", false},
		{"s.x", "", false},
		{"a.arr.x", "", false},
	} {
		t.Run(tt.path, func(t *testing.T) {
			got, ok := JSONField(doc, tt.path)
			if ok != tt.ok || string(got) != tt.want {
				t.Errorf("JSONField(%q) = %q, %v; want %q, %v", tt.path, got, ok, tt.want, tt.ok)
			}
		})
	}
	for _, bad := range []string{``, `{`, `{"a"`, `{"a":`, `{"a":"x`, `[1,`, `{"a" 1}`} {
		if v, ok := JSONField([]byte(bad), "a"); ok {
			t.Errorf("JSONField(%q, a) = %q, true on malformed JSON", bad, v)
		}
	}
}

func FuzzJSONField(f *testing.F) {
	f.Add([]byte(`{"a":{"b":[1,"x"]}}`), "a.b.1")
	f.Add([]byte(`[{"k":"v"}]`), "0.k")
	f.Fuzz(func(t *testing.T, data []byte, path string) {
		v, ok := JSONField(data, path)
		if !ok && v != nil {
			t.Fatalf("value %q returned with ok=false", v)
		}
	})
}

func TestJSONEachAndStrings(t *testing.T) {
	var got []string
	err := JSONEach([]byte(` {"a": "x", "b" : [1, 2], "c":{"d":null}} `), func(k, v []byte) error {
		got = append(got, string(k)+"="+string(v))
		return nil
	})
	if err != nil || !reflect.DeepEqual(got, []string{`a="x"`, "b=[1, 2]", `c={"d":null}`}) {
		t.Errorf("JSONEach = %v, %v", got, err)
	}
	for _, bad := range []string{``, `1`, `"s"`, `{"a":1,}x`, `{"a" 1}`, `{"a":1 "b":2}`, `[1,2`, `{"a":1} {}`} {
		if err := JSONEach([]byte(bad), func(k, v []byte) error { return nil }); err == nil {
			t.Errorf("JSONEach(%q) accepted malformed input", bad)
		}
	}
	ss, err := JSONStrings([]byte(`["a", "b\"c", "\u00e9\ud83d\ude00\n"]`))
	if err != nil || !reflect.DeepEqual(ss, []string{"a", `b"c`, "é😀\n"}) {
		t.Errorf("JSONStrings = %q, %v", ss, err)
	}
	for _, bad := range []string{`{"a":"b"}`, `[1]`, `["a\x"]`, `["\u12"]`, `"a"`} {
		if v, err := JSONStrings([]byte(bad)); err == nil {
			t.Errorf("JSONStrings(%q) = %q, want an error", bad, v)
		}
	}
}

func FuzzJSONString(f *testing.F) {
	f.Add([]byte(`"a\u00e9\ud83d\ude00\\"`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, _ = JSONString(raw)
		_ = JSONEach(raw, func(k, v []byte) error { _, _ = JSONString(v); return nil })
	})
}

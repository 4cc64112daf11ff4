package wire

import (
	"bytes"
	"errors"
	"testing"
)

// reencode writes a parsed event back with EventWriter.
func reencode(v *EventView) []byte {
	var w EventWriter
	w.Reset()
	for i := range NumAttrs {
		if a, ok := v.Attr(i); ok {
			w.Attr(string(a))
		} else {
			w.AttrAbsent()
		}
	}
	w.Extensions()
	for i := range v.NumExtensions() {
		n, val := v.Extension(i)
		w.Extension(string(n), string(val))
	}
	d, ok := v.Data()
	w.Data(d, ok)
	return w.Buf
}

func sampleEvent() []byte {
	var w EventWriter
	w.Reset()
	for i := range NumAttrs {
		if i == AttrDataSchema {
			w.AttrAbsent()
			continue
		}
		w.Attr(AttrNames[i] + "-value")
	}
	w.Extensions()
	w.Extension("region", "north")
	w.ExtensionName("priority")
	pos := w.BeginValue()
	w.Buf = append(w.Buf, "7"...)
	w.EndValue(pos)
	w.Data([]byte(`{"a":1}`), true)
	return w.Buf
}

func hugeExtensionCount() []byte {
	var w EventWriter
	w.Reset()
	for range NumAttrs {
		w.Attr("x")
	}
	w.Buf = append(w.Buf, 0xff, 0xff, 0xff, 0x7f)
	return AppendU32(w.Buf, Absent)
}

func TestEventParse(t *testing.T) {
	b := sampleEvent()
	var v EventView
	if err := v.Parse(b); err != nil {
		t.Fatal(err)
	}
	if got, _ := v.Attr(AttrType); string(got) != "type-value" {
		t.Errorf("type = %q", got)
	}
	if _, ok := v.Attr(AttrDataSchema); ok {
		t.Error("absent dataschema reported present")
	}
	if got, ok := v.LookupExtension("region"); !ok || string(got) != "north" {
		t.Errorf("region = %q %v", got, ok)
	}
	if !bytes.Equal(reencode(&v), b) {
		t.Error("re-encoding a parsed event changed its bytes")
	}
	for _, tt := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"wrong version", append([]byte{2}, b[1:]...), ErrVersion},
		{"truncated", b[:len(b)-1], ErrShort},
		{"trailing byte", append(bytes.Clone(b), 0), ErrTrail},
		{"huge extension count", hugeExtensionCount(), ErrShort},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := v.Parse(tt.b); !errors.Is(err, tt.want) {
				t.Errorf("Parse error = %v, want %v", err, tt.want)
			}
			if v.NumExtensions() != 0 {
				t.Error("a failed parse left extensions in the view")
			}
		})
	}
}

func TestDecisionParse(t *testing.T) {
	ok := AppendMutation(AppendDecision(nil, ActionRoute, []string{"a", "bb"}, "", 1), OpSetExtension, "x", "y")
	var d DecisionView
	if err := d.Parse(ok); err != nil {
		t.Fatal(err)
	}
	if d.NumOutputs() != 2 || string(d.Output(1)) != "bb" || d.NumMutations() != 1 || string(d.Mutation(0).Value) != "y" {
		t.Errorf("parsed %+v", d)
	}
	tooMany := AppendDecision(nil, ActionRoute, nil, "", 0)
	tooMany[1], tooMany[2] = 0xff, 0xff
	for _, tt := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"action 0", AppendDecision(nil, 0, nil, "", 0), ErrAction},
		{"action 4", AppendDecision(nil, 4, nil, "", 0), ErrAction},
		{"too many outputs", tooMany, ErrLimit},
		{"unknown op", AppendMutation(AppendDecision(nil, ActionDrop, nil, "", 1), 9, "x", ""), ErrOp},
		{"missing mutation", AppendDecision(nil, ActionDrop, nil, "", 1), ErrShort},
		{"trailing", append(AppendDecision(nil, ActionDrop, nil, "", 0), 1), ErrTrail},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := d.Parse(tt.b); !errors.Is(err, tt.want) {
				t.Errorf("Parse error = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestParseDoesNotAllocate(t *testing.T) {
	b := sampleEvent()
	var v EventView
	_ = v.Parse(b)
	dec := AppendMutation(AppendDecision(nil, ActionRoute, []string{"a"}, "", 1), OpSetData, "", "z")
	var d DecisionView
	_ = d.Parse(dec)
	if n := testing.AllocsPerRun(100, func() { _ = v.Parse(b); _ = d.Parse(dec) }); n != 0 {
		t.Errorf("Parse allocates %v times, want 0", n)
	}
}

// FuzzParseEvent: any bytes parse or fail without panicking, and what parses re-encodes to the
// same bytes.
func FuzzParseEvent(f *testing.F) {
	f.Add(sampleEvent())
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		var v EventView
		if v.Parse(b) != nil {
			return
		}
		if got := reencode(&v); !bytes.Equal(got, b) {
			t.Fatalf("re-encoded %x, parsed %x", got, b)
		}
	})
}

func FuzzParseDecision(f *testing.F) {
	f.Add(AppendMutation(AppendDecision(nil, ActionRoute, []string{"a"}, "r", 1), OpSetData, "", "z"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var d DecisionView
		if d.Parse(b) != nil {
			return
		}
		for i := range d.NumOutputs() {
			_ = d.Output(i)
		}
		for i := range d.NumMutations() {
			_ = d.Mutation(i)
		}
		_ = d.Reason()
	})
}

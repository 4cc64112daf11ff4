package wire

// Encoded event (all integers little-endian, every string a u32 length then its bytes):
//
//	u8      format version (1)
//	8 x str context attributes in AttrNames order; length 0xFFFFFFFF = absent
//	u32     extension count, then per extension: str name, str value (string form)
//	str     data; length 0xFFFFFFFF = the event has no data

// EventWriter encodes one event into Buf, reusing Buf's storage. Call Reset, then exactly
// NumAttrs attribute calls in AttrNames order, Extensions, the extension calls, then Data.
type EventWriter struct {
	Buf      []byte
	countPos int
	count    uint32
}

// Reset starts a new event.
func (w *EventWriter) Reset() { w.Buf = append(w.Buf[:0], Version) }

// Attr appends a present attribute value.
func (w *EventWriter) Attr(v string) { w.Buf = AppendStr(w.Buf, v) }

// AttrAbsent appends an absent attribute.
func (w *EventWriter) AttrAbsent() { w.Buf = AppendU32(w.Buf, Absent) }

// BeginValue starts a value the caller appends to Buf itself; EndValue finishes it.
func (w *EventWriter) BeginValue() int {
	var pos int
	w.Buf, pos = Begin(w.Buf)
	return pos
}

// EndValue finishes the value started by BeginValue at pos.
func (w *EventWriter) EndValue(pos int) { w.Buf = End(w.Buf, pos) }

// Extensions starts the extension list.
func (w *EventWriter) Extensions() {
	w.countPos = len(w.Buf)
	w.count = 0
	w.Buf = AppendU32(w.Buf, 0)
}

// Extension appends one extension with a string value.
func (w *EventWriter) Extension(name, value string) {
	w.Buf = AppendStr(w.Buf, name)
	w.Buf = AppendStr(w.Buf, value)
	w.count++
}

// ExtensionName appends an extension name whose value the caller then writes with
// BeginValue/EndValue.
func (w *EventWriter) ExtensionName(name string) {
	w.Buf = AppendStr(w.Buf, name)
	w.count++
}

// Data ends the event with its data; present false encodes "no data".
func (w *EventWriter) Data(d []byte, present bool) {
	b := w.Buf[w.countPos:]
	b[0], b[1], b[2], b[3] = byte(w.count), byte(w.count>>8), byte(w.count>>16), byte(w.count>>24)
	if !present {
		w.Buf = AppendU32(w.Buf, Absent)
		return
	}
	w.Buf = AppendStr(w.Buf, d)
}

// EventView is a parsed event: spans into the buffer given to Parse. Reuse one EventView across
// events to avoid allocation.
type EventView struct {
	buf     []byte
	attrs   [NumAttrs]span
	present uint16
	exts    []span // name, value pairs
	data    span
	hasData bool
}

// Parse indexes b. On error the view is empty.
func (v *EventView) Parse(b []byte) error {
	r := reader{b: b}
	v.buf = nil
	v.present = 0
	v.exts = v.exts[:0]
	v.hasData = false
	if r.u8() != Version && r.err == nil {
		return &ParseError{"event version", 0, ErrVersion}
	}
	for i := range NumAttrs {
		s, ok := r.str(true)
		if ok {
			v.attrs[i] = s
			v.present |= 1 << i
		}
	}
	n := r.u32()
	if r.err == nil && uint64(n)*8 > uint64(len(b)-r.off) {
		r.fail(ErrShort)
	}
	for i := uint32(0); i < n && r.err == nil; i++ {
		name, _ := r.str(false)
		val, _ := r.str(false)
		v.exts = append(v.exts, name, val)
	}
	v.data, v.hasData = r.str(true)
	if r.err == nil && r.off != len(b) {
		r.fail(ErrTrail)
	}
	if r.err != nil {
		v.present, v.exts, v.hasData = 0, v.exts[:0], false
		return &ParseError{"event", r.off, r.err}
	}
	v.buf = b
	return nil
}

// Attr returns attribute i (an Attr* index) and whether it is present.
func (v *EventView) Attr(i int) ([]byte, bool) {
	if i < 0 || i >= NumAttrs || v.present&(1<<i) == 0 {
		return nil, false
	}
	return v.buf[v.attrs[i].off : v.attrs[i].off+v.attrs[i].n], true
}

// NumExtensions returns the number of extensions.
func (v *EventView) NumExtensions() int { return len(v.exts) / 2 }

// Extension returns extension i's name and value.
func (v *EventView) Extension(i int) (name, value []byte) {
	n, val := v.exts[2*i], v.exts[2*i+1]
	return v.buf[n.off : n.off+n.n], v.buf[val.off : val.off+val.n]
}

// LookupExtension returns the value of the extension called name.
func (v *EventView) LookupExtension(name string) ([]byte, bool) {
	for i := 0; i < len(v.exts); i += 2 {
		n := v.exts[i]
		if string(v.buf[n.off:n.off+n.n]) == name {
			val := v.exts[i+1]
			return v.buf[val.off : val.off+val.n], true
		}
	}
	return nil, false
}

// Data returns the event data and whether the event has data.
func (v *EventView) Data() ([]byte, bool) {
	if !v.hasData {
		return nil, false
	}
	return v.buf[v.data.off : v.data.off+v.data.n], true
}

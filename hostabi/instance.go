package hostabi

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/tetratelabs/wazero/api"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/hostabi/wire"
)

// instance is one instantiated, initialised module. It is used by one goroutine at a time (the
// one that took it from the pool); its buffers are reused from call to call.
type instance struct {
	mod            api.Module
	mem            api.Memory
	fnBuffer       api.Function
	fnDecide       api.Function
	bufPtr, bufCap uint32
	stack          [1]uint64
	w              wire.EventWriter
	dv             wire.DecisionView
	out            *capture
	outputs        map[string][]string // decoded output lists, keyed by their encoding
	abi            int32               // what turnout_abi_version returned

	// The CPU guard (watchdog.go), for rules with a timeout. interrupt is the instance's
	// interrupt flag; deadline is the running call's deadline in nanoseconds since epoch, 0
	// between calls, interrupted once the watchdog raised the flag; timedOut records that for
	// the failed call's classification.
	interrupt api.MutableGlobal
	deadline  atomic.Int64
	timedOut  bool
}

// maxOutputLists bounds the per-instance cache of decoded output lists.
const maxOutputLists = 256

// decodeError marks a decision the host could not decode or apply.
type decodeError struct{ err error }

func (e *decodeError) Error() string { return "decision: " + e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }

func decodeErr(format string, args ...any) error {
	return &decodeError{fmt.Errorf(format, args...)}
}

// write copies b into the instance's ABI buffer, asking the guest for a larger one when needed.
func (inst *instance) write(ctx context.Context, b []byte) error {
	n := uint32(len(b))
	if n > inst.bufCap || inst.bufCap == 0 {
		want := max(n, 4096)
		inst.stack[0] = uint64(want)
		if err := inst.fnBuffer.CallWithStack(ctx, inst.stack[:]); err != nil {
			return err
		}
		inst.bufPtr, inst.bufCap = uint32(inst.stack[0]), want
	}
	if !inst.mem.Write(inst.bufPtr, b) {
		return decodeErr("turnout_buffer returned %#x, outside memory", inst.bufPtr)
	}
	return nil
}

// decide encodes e into the guest, calls turnout_decide and decodes the decision.
func (inst *instance) decide(ctx context.Context, e *event.Event) (engine.Decision, error) {
	inst.out.b = inst.out.b[:0]
	encodeEvent(&inst.w, e)
	if err := inst.write(ctx, inst.w.Buf); err != nil {
		return engine.Decision{}, err
	}
	inst.stack[0] = uint64(len(inst.w.Buf))
	if err := inst.fnDecide.CallWithStack(ctx, inst.stack[:]); err != nil {
		return engine.Decision{}, err
	}
	ptr, n := uint32(inst.stack[0]>>32), uint32(inst.stack[0])
	b, ok := inst.mem.Read(ptr, n)
	if !ok {
		return engine.Decision{}, decodeErr("turnout_decide returned %d bytes at %#x, outside memory", n, ptr)
	}
	return inst.decodeDecision(b, e)
}

// decodeDecision parses b and builds the engine decision, applying mutations to a clone of e.
func (inst *instance) decodeDecision(b []byte, e *event.Event) (engine.Decision, error) {
	dv := &inst.dv
	if err := dv.Parse(b); err != nil {
		return engine.Decision{}, &decodeError{err}
	}
	var d engine.Decision
	switch dv.Action {
	case wire.ActionDrop:
		d.Action = engine.ActionDrop
		return d, nil
	case wire.ActionRoute:
		d.Action = engine.ActionRoute
		if dv.NumOutputs() == 0 {
			return engine.Decision{}, decodeErr("route decision names no output")
		}
		if outs, ok := inst.outputs[string(dv.OutputsRaw)]; ok {
			d.Outputs = outs
		} else {
			outs = make([]string, dv.NumOutputs())
			for i := range outs {
				outs[i] = string(dv.Output(i))
			}
			if len(inst.outputs) < maxOutputLists {
				inst.outputs[string(dv.OutputsRaw)] = outs
			}
			d.Outputs = outs
		}
	case wire.ActionFail:
		d.Action = engine.ActionFail
		d.Reason = string(dv.Reason())
	}
	if dv.NumMutations() > 0 {
		c, err := applyMutations(dv, e)
		if err != nil {
			return engine.Decision{}, err
		}
		d.Event = c
	}
	return d, nil
}

// applyMutations applies the decision's mutations to a clone of e and validates the result.
func applyMutations(dv *wire.DecisionView, e *event.Event) (*event.Event, error) {
	c := e.Clone()
	for i := range dv.NumMutations() {
		m := dv.Mutation(i)
		name, value := string(m.Name), string(m.Value)
		var err error
		switch m.Op {
		case wire.OpSetAttribute:
			err = setAttribute(&c, name, value)
		case wire.OpRemoveAttribute:
			err = removeAttribute(&c, name)
		case wire.OpSetExtension:
			if wire.AttrIndex(name) >= 0 {
				err = errors.New("is a context attribute, not an extension")
			} else {
				err = c.Context.SetExtension(name, value)
			}
		case wire.OpRemoveExtension:
			err = c.Context.SetExtension(name, nil)
		case wire.OpSetData:
			c.DataEncoded = []byte(value)
		}
		if err != nil {
			return nil, decodeErr("mutation %d (op %d) %q: %v", i, m.Op, name, err)
		}
	}
	if err := c.Validate(); err != nil {
		return nil, decodeErr("mutated event is invalid: %v", err)
	}
	return &c, nil
}

func setAttribute(c *event.Event, name, value string) error {
	switch name {
	case "id":
		c.SetID(value)
	case "source":
		c.SetSource(value)
	case "type":
		c.SetType(value)
	case "subject":
		c.SetSubject(value)
	case "datacontenttype":
		c.SetDataContentType(value)
	case "dataschema":
		c.SetDataSchema(value)
	case "time":
		t, err := types.ParseTime(value)
		if err != nil {
			return err
		}
		c.SetTime(t)
	case "specversion":
		return errors.New("specversion cannot be changed")
	default:
		return errors.New("not a context attribute (use set-extension)")
	}
	return nil
}

func removeAttribute(c *event.Event, name string) error {
	switch name {
	case "subject":
		c.SetSubject("")
	case "datacontenttype":
		c.SetDataContentType("")
	case "dataschema":
		c.SetDataSchema("")
	case "time":
		c.SetTime(time.Time{})
	default:
		return errors.New("not an optional context attribute")
	}
	return nil
}

// encodeEvent writes e into w in the wire format (ABI.md, "Event encoding"). In steady state it
// does not allocate for events whose source and dataschema are plain URI references and whose
// extensions are strings, integers or booleans.
func encodeEvent(w *wire.EventWriter, e *event.Event) {
	w.Reset()
	ec, _ := e.Context.(*event.EventContextV1)
	w.Attr(e.ID())
	if ec != nil {
		appendURL(w, &ec.Source.URL)
	} else {
		w.Attr(e.Source())
	}
	w.Attr(e.SpecVersion())
	w.Attr(e.Type())
	optional(w, e.DataContentType())
	switch {
	case ec != nil && ec.DataSchema != nil:
		appendURL(w, &ec.DataSchema.URL)
	case ec != nil:
		w.AttrAbsent()
	default:
		optional(w, e.DataSchema())
	}
	optional(w, e.Subject())
	if t := e.Time(); !t.IsZero() {
		pos := w.BeginValue()
		w.Buf = appendTime(w.Buf, t)
		w.EndValue(pos)
	} else {
		w.AttrAbsent()
	}
	w.Extensions()
	exts := map[string]any(nil)
	if ec != nil {
		exts = ec.Extensions // e.Extensions() returns a copy
	} else {
		exts = e.Extensions()
	}
	for name, v := range exts {
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
	d := e.Data()
	w.Data(d, d != nil)
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
	b = append(b, byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10), '-',
		byte('0'+mo/10), byte('0'+mo%10), '-', byte('0'+d/10), byte('0'+d%10), 'T',
		byte('0'+h/10), byte('0'+h%10), ':', byte('0'+mi/10), byte('0'+mi%10), ':',
		byte('0'+sec/10), byte('0'+sec%10))
	if ns := t.Nanosecond(); ns != 0 {
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

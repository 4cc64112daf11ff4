package hostabi

import (
	"context"
	"errors"
	"fmt"
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
	enc            encoder
	dv             wire.DecisionView
	out            *capture
	outputs        map[string][]string // decoded output lists, keyed by their encoding
	abi            int32               // what turnout_abi_version returned

	// The CPU guard (watchdog.go), for rules with a timeout. interrupt is the instance's
	// interrupt flag; call is the running call's number (calls counts them), 0 between calls,
	// interrupted once the watchdog raised the flag; timedOut records that for the failed
	// call's classification. seenCall and seenAt are the watchdog's: the call it saw running
	// and when it first saw it (since epoch); only the watchdog touches them, under Rule.mu.
	interrupt api.MutableGlobal
	call      atomic.Uint64
	calls     uint64
	timedOut  bool
	seenCall  uint64
	seenAt    time.Duration

	sample uint32 // xorshift state choosing the calls whose duration is observed
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
	ev := inst.enc.encode(e)
	if err := inst.write(ctx, ev); err != nil {
		return engine.Decision{}, err
	}
	inst.stack[0] = uint64(len(ev))
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

package engine

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
)

// Extension attributes the engine sets on dead-letter events.
const (
	ExtError       = "turnouterror"       // why the event was dead-lettered
	ExtErrorRoute  = "turnouterrorroute"  // the route that dead-lettered it
	ExtErrorInput  = "turnouterrorinput"  // the input a malformed message came from
	ExtErrorOutput = "turnouterroroutput" // the output that failed
	ExtErrorKind   = "turnouterrorkind"   // the rule failure kind (RuleError.Kind, "fail", "decision")
	ExtOrigin      = "turnoutorigin"      // Message.Origin of a malformed message
	// TypeMalformed is the type of the dead-letter event wrapping a malformed message.
	TypeMalformed = "dev.turnout.malformed"
)

// errShutdown is the settlement error of deliveries cancelled at the drain deadline.
var errShutdown = errors.New("engine: shutting down, delivery cancelled")

// process decides and delivers one at-least-once message and returns how to settle it. It runs
// on the delivery's goroutine under the engine's processing context.
func (r *route) process(ctx context.Context, in *input, m *Message) (nackReason, error) {
	ev := m.Event
	if ev == nil {
		return r.malformed(ctx, in, m, m.DecodeErr)
	}
	if ev.SpecVersion() != event.CloudEventsVersionV1 {
		return r.malformed(ctx, in, m, fmt.Errorf("unsupported specversion %q", ev.SpecVersion()))
	}
	if err := ev.Validate(); err != nil {
		return r.malformed(ctx, in, m, err)
	}

	outs := r.defaults
	if r.rule != nil {
		rctx, end := r.e.startSpan(ctx, StageRule, SpanInfo{Route: r.name, Event: ev})
		d, err := decide(rctx, r.rule, ev)
		end(err)
		if err != nil {
			if ctx.Err() != nil {
				return reasonShutdown, errShutdown
			}
			r.m.decisions[decError].Inc()
			kind := "error"
			var re *RuleError
			if errors.As(err, &re) {
				kind = re.Kind
			}
			return r.ruleFailed(ctx, ev, kind, err.Error())
		}
		switch d.Action {
		case ActionDrop:
			r.m.decisions[decDrop].Inc()
			r.m.dropped.Inc()
			return reasonAck, nil
		case ActionFail:
			r.m.decisions[decFail].Inc()
			reason := d.Reason
			if reason == "" {
				reason = "rule decided fail"
			}
			return r.ruleFailed(ctx, ev, "fail", reason)
		case ActionRoute:
			r.m.decisions[decRoute].Inc()
			chosen, bad := r.resolve(d.Outputs)
			if bad != "" {
				return r.ruleFailed(ctx, ev, "decision", bad)
			}
			outs = chosen
			if d.Event != nil {
				ev = d.Event
			}
		default:
			r.m.decisions[decError].Inc()
			return r.ruleFailed(ctx, ev, "decision", "unknown action "+d.Action.String())
		}
	}
	return r.fanOut(ctx, ev, outs)
}

// resolve maps decided output names to outputs, dropping duplicates. bad explains an invalid
// decision (no outputs, or a name the route does not have).
func (r *route) resolve(names []string) (outs []*output, bad string) {
	if len(names) == 0 {
		return nil, "route decision with no outputs"
	}
	if len(names) == 1 {
		if o, ok := r.outputs[names[0]]; ok {
			// The common case: reuse a one-element slice of the route's outputs.
			for i, x := range r.outputList {
				if x == o {
					return r.outputList[i : i+1 : i+1], ""
				}
			}
		}
	}
	outs = make([]*output, 0, len(names))
	for _, n := range names {
		o, ok := r.outputs[n]
		if !ok {
			return nil, fmt.Sprintf("decision names output %q, which route %s does not have", n, r.name)
		}
		outs = appendUnique(outs, o)
	}
	return outs, ""
}

// malformed dead-letters a message that is not a valid CloudEvent, or nacks it without a
// dead-letter output.
func (r *route) malformed(ctx context.Context, in *input, m *Message, cause error) (nackReason, error) {
	if cause == nil {
		cause = errors.New("no event")
	}
	if r.dl == nil {
		return reasonMalformed, fmt.Errorf("route %s input %s: malformed message: %w", r.name, in.name, cause)
	}
	raw := m.Raw
	if raw == nil && m.Event != nil {
		raw, _ = json.Marshal(m.Event)
	}
	dl := event.New()
	dl.SetID(newUUID())
	dl.SetSource("turnout/" + r.name + "/" + in.name)
	dl.SetType(TypeMalformed)
	dl.SetTime(time.Now())
	_ = dl.SetData("application/octet-stream", raw)
	dl.SetExtension(ExtError, cause.Error())
	dl.SetExtension(ExtErrorRoute, r.name)
	dl.SetExtension(ExtErrorInput, in.name)
	if m.Origin != "" {
		dl.SetExtension(ExtOrigin, m.Origin)
	}
	return r.deadLetter(ctx, &dl, dlMalformed, cause)
}

// ruleFailed applies the route's OnRuleError policy to ev.
func (r *route) ruleFailed(ctx context.Context, ev *event.Event, kind, reason string) (nackReason, error) {
	r.e.log.Debug("rule failed", "route", r.name, "kind", kind, "reason", reason, "id", ev.ID())
	switch r.cfg.OnRuleError {
	case FailDrop:
		r.m.dropped.Inc()
		return reasonAck, nil
	case FailNack:
		return reasonRule, fmt.Errorf("route %s: rule %s: %s", r.name, kind, reason)
	}
	if r.dl == nil {
		return reasonRule, fmt.Errorf("route %s: rule %s: %s (no dead-letter output)", r.name, kind, reason)
	}
	dl := ev.Clone()
	dl.SetExtension(ExtError, reason)
	dl.SetExtension(ExtErrorRoute, r.name)
	dl.SetExtension(ExtErrorKind, kind)
	return r.deadLetter(ctx, &dl, dlRule, errors.New(reason))
}

// deadLetter sends ev to the dead-letter output with the retry policy. It is only called when
// r.dl is set.
func (r *route) deadLetter(ctx context.Context, ev *event.Event, why int, cause error) (nackReason, error) {
	sctx, end := r.e.startSpan(ctx, StageDeadLetter, SpanInfo{Route: r.name, Output: r.dl.name, Event: ev})
	err := r.send(sctx, r.dl, ev)
	end(err)
	switch {
	case err == nil:
		r.m.deadLettered[why].Inc()
		r.e.log.Warn("event dead-lettered", "route", r.name, "reason", dlLabels[why], "id", ev.ID(), "cause", cause)
		return reasonAck, nil
	case ctx.Err() != nil:
		return reasonShutdown, errShutdown
	default:
		return reasonDeadLetter, fmt.Errorf("route %s: dead-letter output %s: %w (after: %v)", r.name, r.dl.name, err, cause)
	}
}

// fanOut delivers ev to every output concurrently; each output retries on its own, so a partial
// failure retries only the outputs that have not confirmed. It acks when every output confirmed
// or was dead-lettered. The outputs read the same ev at the same time: a Sink must not modify
// the event it is given.
func (r *route) fanOut(ctx context.Context, ev *event.Event, outs []*output) (nackReason, error) {
	if len(outs) == 1 {
		return r.deliver(ctx, ev, outs[0])
	}
	type result struct {
		reason nackReason
		err    error
	}
	results := make([]result, len(outs))
	var wg sync.WaitGroup
	wg.Add(len(outs) - 1)
	for i := 1; i < len(outs); i++ {
		go func() {
			defer wg.Done()
			results[i].reason, results[i].err = r.deliver(ctx, ev, outs[i])
		}()
	}
	results[0].reason, results[0].err = r.deliver(ctx, ev, outs[0])
	wg.Wait()
	var worst result
	for _, res := range results {
		// Shutdown outranks a failure: the event was not given up on, the engine stopped.
		if res.reason == reasonShutdown || (res.reason != reasonAck && worst.reason == reasonAck) {
			worst = res
		}
		if worst.reason == reasonShutdown {
			break
		}
	}
	return worst.reason, worst.err
}

// deliver sends ev to o, and to the dead-letter output if o exhausts its attempts.
func (r *route) deliver(ctx context.Context, ev *event.Event, o *output) (nackReason, error) {
	sctx, end := r.e.startSpan(ctx, StageDeliver, SpanInfo{Route: r.name, Output: o.name, Event: ev})
	err := r.send(sctx, o, ev)
	end(err)
	if err == nil {
		o.m.routed.Inc()
		return reasonAck, nil
	}
	if ctx.Err() != nil {
		return reasonShutdown, errShutdown
	}
	if r.dl == nil {
		return reasonOutput, fmt.Errorf("route %s: output %s: %w", r.name, o.name, err)
	}
	dl := ev.Clone()
	dl.SetExtension(ExtError, err.Error())
	dl.SetExtension(ExtErrorRoute, r.name)
	dl.SetExtension(ExtErrorOutput, o.name)
	return r.deadLetter(ctx, &dl, dlOutput, err)
}

// send calls o.sink.Send up to MaxAttempts times, each bounded by Retry.Timeout, waiting an
// exponential backoff with full jitter between attempts. A Permanent error ends the attempts.
// It returns the last error, or ctx's error once ctx ended.
func (r *route) send(ctx context.Context, o *output, ev *event.Event) error {
	p := r.cfg.Retry
	backoff := p.InitialBackoff
	var err error
	for attempt := 1; ; attempt++ {
		sctx, cancel := context.WithTimeout(ctx, p.Timeout)
		err = SendOnce(sctx, o.sink, ev)
		timedOut := sctx.Err() == context.DeadlineExceeded
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case IsPermanent(err):
			o.m.failures[failPermanent].Inc()
			return err
		case timedOut || errors.Is(err, context.DeadlineExceeded):
			o.m.failures[failTimeout].Inc()
		default:
			o.m.failures[failError].Inc()
		}
		if attempt >= p.MaxAttempts {
			return err
		}
		r.e.log.Debug("send failed, retrying", "route", r.name, "output", o.name, "attempt", attempt, "err", err)
		if !sleep(ctx, rand.N(backoff+1)) {
			return ctx.Err()
		}
		o.m.retries.Inc()
		backoff = min(backoff*2, p.MaxBackoff)
	}
}

// decide calls rule.Decide, turning a panic into a rule failure of kind "panic": a faulty rule
// costs its event, not the process and every other in-flight message with it.
func decide(ctx context.Context, rule Rule, ev *event.Event) (d Decision, err error) {
	defer func() {
		if p := recover(); p != nil {
			d, err = Decision{}, &RuleError{Kind: "panic", Err: fmt.Errorf("%v", p)}
		}
	}()
	return rule.Decide(ctx, ev)
}

// SendOnce calls sink.Send, turning a panic into an error (retried like any other): a faulty
// output costs an attempt, not the process and every message in flight with it. Whatever sends
// to a Sink outside the engine (a spool forwarding its log) calls it too.
func SendOnce(ctx context.Context, sink Sink, ev *event.Event) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("output panicked: %v", p)
		}
	}()
	return sink.Send(ctx, ev)
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

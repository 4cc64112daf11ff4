package engine

import (
	"context"
	"errors"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// route is a validated Route with its metric children resolved.
type route struct {
	e          *Engine
	name       string
	cfg        RouteConfig
	rule       Rule
	inputs     []*input
	outputs    map[string]*output
	outputList []*output // sorted by name
	defaults   []*output // cfg.DefaultOutputs, resolved
	dl         *output   // nil: no dead-letter output
	m          routeMetrics
}

// output is one sink as one route sees it.
type output struct {
	name string
	sink Sink
	m    outputMetrics
}

func newRoute(e *Engine, r Route, cfg RouteConfig) *route {
	rt := &route{e: e, name: cfg.Name, cfg: cfg, rule: r.Rule, outputs: map[string]*output{},
		m: e.metrics.forRoute(cfg.Name)}
	for name, s := range r.Outputs {
		o := &output{name: name, sink: s, m: e.metrics.forOutput(cfg.Name, name)}
		rt.outputs[name] = o
		rt.outputList = append(rt.outputList, o)
	}
	sort.Slice(rt.outputList, func(i, j int) bool { return rt.outputList[i].name < rt.outputList[j].name })
	for _, name := range cfg.DefaultOutputs {
		rt.defaults = appendUnique(rt.defaults, rt.outputs[name])
	}
	if r.DeadLetter != nil {
		name := r.DeadLetterName
		if name == "" {
			name = "dead-letter"
		}
		rt.dl = &output{name: name, sink: r.DeadLetter, m: e.metrics.forOutput(cfg.Name, name)}
	}
	names := make([]string, 0, len(r.Inputs))
	for name := range r.Inputs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		src := r.Inputs[name]
		in := &input{r: rt, name: name, src: src, m: e.metrics.forInput(cfg.Name, name),
			sem: make(chan struct{}, cfg.MaxInFlight)}
		if os, ok := src.(OrderedSource); ok && os.OrderedSettlement() {
			in.ordered = true
			in.q.ring = make([]*delivery, cfg.MaxInFlight)
		}
		rt.inputs = append(rt.inputs, in)
	}
	return rt
}

func appendUnique(outs []*output, o *output) []*output {
	for _, x := range outs {
		if x == o {
			return outs
		}
	}
	return append(outs, o)
}

// input is the Dispatcher of one Source.
type input struct {
	r       *route
	name    string
	src     Source
	m       inputMetrics
	sem     chan struct{} // one token per unsettled message: the backpressure bound
	ordered bool
	q       orderedQueue
}

var _ Dispatcher = (*input)(nil)

// delivery is one dispatched message on its way to settlement.
type delivery struct {
	in     *input
	msg    *Message
	settle SettleFunc
	start  time.Time
	// Set by the processing goroutine before settlement; for ordered inputs done is guarded by
	// in.q.mu.
	reason nackReason
	err    error
	done   bool
	holds  atomic.Int32 // see unhold
	// end ends the delivery's StageReceive span at settlement; nil without a Tracer.
	end func(error)
}

// Dispatch implements Dispatcher: it takes an in-flight slot (blocking while the input has
// MaxInFlight unsettled messages), then processes m on a goroutine of its own.
func (in *input) Dispatch(ctx context.Context, m *Message, settle SettleFunc) error {
	if m == nil || settle == nil {
		return errors.New("engine: Dispatch with a nil message or settle func")
	}
	e := in.r.e
	select {
	case in.sem <- struct{}{}:
	default:
		select {
		case in.sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		case <-e.closing:
			return ErrClosed
		}
	}
	d := &delivery{in: in, msg: m, settle: settle, start: time.Now()}
	d.holds.Store(1)
	if in.r.cfg.Mode == BestEffort {
		d.holds.Store(2)
	}
	e.mu.RLock()
	if e.closed {
		e.mu.RUnlock()
		<-in.sem
		return ErrClosed
	}
	e.wg.Add(1)
	if in.ordered {
		in.q.push(d)
	}
	e.mu.RUnlock()
	in.m.received.Inc()
	in.m.inFlight.Inc()
	go in.run(d)
	return nil
}

// run processes d and settles it; it runs on d's own goroutine.
func (in *input) run(d *delivery) {
	e := in.r.e
	defer e.wg.Done()
	ctx, end := e.ctx, noEnd
	if e.tracer != nil {
		ctx, end = e.tracer.Start(ctx, StageReceive, SpanInfo{Route: in.r.name, Input: in.name, Event: d.msg.Event})
	}
	if in.r.cfg.Mode == BestEffort {
		// Acknowledged on receipt: the span covers the processing instead.
		in.complete(d, reasonAck, nil)
		reason, err := in.r.process(ctx, in, d.msg)
		if reason != reasonAck {
			e.log.Warn("best-effort event lost", "route", in.r.name, "input", in.name,
				"reason", reasonLabels[reason], "err", err)
			if err == nil {
				err = errors.New("engine: " + reasonLabels[reason])
			}
		}
		end(err)
		in.unhold(d)
		return
	}
	if e.tracer != nil {
		d.end = end
	}
	reason, err := in.r.process(ctx, in, d.msg)
	in.complete(d, reason, err)
}

// complete records d's outcome and settles it: at once, or for an ordered input once every
// message dispatched before it is settled.
func (in *input) complete(d *delivery, reason nackReason, err error) {
	if reason != reasonAck && err == nil {
		err = errors.New("engine: " + reasonLabels[reason])
	}
	d.reason, d.err = reason, err
	if !in.ordered {
		in.release(d)
		return
	}
	in.q.complete(d, in.release)
}

// release calls d's SettleFunc and accounts for it. It is called exactly once per delivery, with
// no engine lock held. The counters are updated just before the call, so that a source that saw
// its settlement sees them too.
func (in *input) release(d *delivery) {
	if d.reason == reasonAck {
		in.m.acked.Inc()
	} else {
		in.m.nacked[d.reason].Inc()
	}
	in.r.m.ackLatency.Observe(time.Since(d.start).Seconds())
	d.settle(d.err)
	if d.end != nil {
		d.end(d.err)
	}
	in.unhold(d)
}

// unhold drops one of d's holds on its in-flight slot and frees the slot with the last one. An
// at-least-once delivery has one hold, its settlement; a best-effort one has two, settlement and
// processing, so that the slot (and an ordered input's queue entry) is held until both ended and
// the number of unsettled or unprocessed messages stays within MaxInFlight.
func (in *input) unhold(d *delivery) {
	if d.holds.Add(-1) == 0 {
		in.m.inFlight.Dec()
		<-in.sem
	}
}

// orderedQueue releases settlements in Dispatch order. It is a ring of the input's unsettled
// deliveries (never more than MaxInFlight, as each holds a slot until released). One goroutine
// at a time is the releaser: it pops the completed prefix under mu, then calls the SettleFuncs
// without mu held, and repeats until the head is not complete. Every delivery is pushed and
// popped once, so releasing is O(1) amortised.
type orderedQueue struct {
	mu        sync.Mutex
	ring      []*delivery
	head, n   int
	releasing bool
	batch     []*delivery // used by the releaser only
}

// push appends d in Dispatch order. The caller holds an in-flight slot for d, so the ring has
// room.
func (q *orderedQueue) push(d *delivery) {
	q.mu.Lock()
	q.ring[(q.head+q.n)%len(q.ring)] = d
	q.n++
	q.mu.Unlock()
}

// complete marks d complete and, unless another goroutine is releasing, releases the
// completed prefix of the queue, calling release for each in order.
func (q *orderedQueue) complete(d *delivery, release func(*delivery)) {
	q.mu.Lock()
	d.done = true
	if q.releasing {
		// The releaser re-checks the head under mu before it stops, so it will see d.
		q.mu.Unlock()
		return
	}
	q.releasing = true
	for {
		batch := q.batch[:0]
		for q.n > 0 && q.ring[q.head].done {
			batch = append(batch, q.ring[q.head])
			q.ring[q.head] = nil
			q.head = (q.head + 1) % len(q.ring)
			q.n--
		}
		if len(batch) == 0 {
			q.releasing = false
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
		for i, x := range batch {
			release(x)
			batch[i] = nil
		}
		q.mu.Lock()
		q.batch = batch
	}
}

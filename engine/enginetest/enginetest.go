// Package enginetest provides in-memory implementations of engine.Source, engine.Sink and
// engine.Rule for tests of the engine and of the packages built on it.
//
// Invariant: the fakes record everything the engine does to them (every Dispatch, every
// settlement in the order it happened, every Send attempt) so tests can assert that each
// dispatched message was settled exactly once. All types are safe for concurrent use.
package enginetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/engine"
)

// NewEvent returns a valid CloudEvent with the given id, source "test" and type "test.event",
// carrying data as JSON.
func NewEvent(id string, data any) *event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource("test")
	e.SetType("test.event")
	if data != nil {
		if err := e.SetData(event.ApplicationJSON, data); err != nil {
			panic(fmt.Sprintf("enginetest: event data: %v", err))
		}
	}
	return &e
}

// Source is an in-memory engine.Source. A test calls Send (or Dispatch) to hand messages to the
// engine and inspects the Settlements.
type Source struct {
	// Ordered makes the source implement OrderedSettlement() == true.
	Ordered bool
	// NotReady makes Ready report false.
	NotReady atomic.Bool

	mu      sync.Mutex
	d       engine.Dispatcher
	seq     int
	order   []int // Seq of settlements, in the order the engine settled them
	all     []*Settlement
	started atomic.Int32
	closed  atomic.Int32
	doubles atomic.Int32
}

var (
	_ engine.Source        = (*Source)(nil)
	_ engine.OrderedSource = (*Source)(nil)
	_ engine.Readier       = (*Source)(nil)
)

// Start records the Dispatcher. The engine calls it once.
func (s *Source) Start(_ context.Context, d engine.Dispatcher) error {
	s.mu.Lock()
	s.d = d
	s.mu.Unlock()
	s.started.Add(1)
	return nil
}

// Close records the call. The engine calls it once at shutdown.
func (s *Source) Close(context.Context) error { s.closed.Add(1); return nil }

// OrderedSettlement implements engine.OrderedSource.
func (s *Source) OrderedSettlement() bool { return s.Ordered }

// Ready implements engine.Readier.
func (s *Source) Ready() bool { return !s.NotReady.Load() }

// Starts and Closes report how often the engine called Start and Close.
func (s *Source) Starts() int { return int(s.started.Load()) }

// Closes reports how often the engine called Close.
func (s *Source) Closes() int { return int(s.closed.Load()) }

// Settlement is the fate of one dispatched message.
type Settlement struct {
	// Seq numbers messages in Dispatch order, from 0.
	Seq  int
	msg  *engine.Message
	done chan struct{}
	err  error
	n    atomic.Int32
}

// Wait blocks until the message is settled or ctx ends; ok is false if ctx ended first.
func (st *Settlement) Wait(ctx context.Context) (err error, ok bool) {
	select {
	case <-st.done:
		return st.err, true
	case <-ctx.Done():
		return nil, false
	}
}

// Settled reports whether the engine settled the message, and with which error.
func (st *Settlement) Settled() (err error, ok bool) {
	select {
	case <-st.done:
		return st.err, true
	default:
		return nil, false
	}
}

// Message returns the dispatched message.
func (st *Settlement) Message() *engine.Message { return st.msg }

// Calls reports how often the engine called the message's SettleFunc (1 is right).
func (st *Settlement) Calls() int { return int(st.n.Load()) }

// Dispatch hands m to the engine through the Dispatcher it got at Start. When the engine takes
// the message it returns the Settlement to wait on; otherwise the Dispatcher's error.
func (s *Source) Dispatch(ctx context.Context, m *engine.Message) (*Settlement, error) {
	s.mu.Lock()
	d := s.d
	s.mu.Unlock()
	if d == nil {
		return nil, errors.New("enginetest: Dispatch before Start")
	}
	st := &Settlement{msg: m, done: make(chan struct{})}
	// Seq is assigned under mu after Dispatch returns, in the order Dispatch calls returned;
	// the engine's order is the order it accepted them, which for one dispatching goroutine is
	// the same. Tests of ordering dispatch from one goroutine.
	settle := func(err error) {
		if st.n.Add(1) != 1 {
			s.doubles.Add(1)
			return
		}
		st.err = err
		s.mu.Lock()
		s.order = append(s.order, st.Seq)
		s.mu.Unlock()
		close(st.done)
	}
	s.mu.Lock()
	st.Seq = s.seq
	s.seq++
	s.mu.Unlock()
	if err := d.Dispatch(ctx, m, settle); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.all = append(s.all, st)
	s.mu.Unlock()
	return st, nil
}

// Send dispatches a message carrying e.
func (s *Source) Send(ctx context.Context, e *event.Event) (*Settlement, error) {
	return s.Dispatch(ctx, &engine.Message{Event: e, Origin: "memory"})
}

// Order returns the Seq of settled messages in the order the engine settled them.
func (s *Source) Order() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.order...)
}

// Accepted returns every Settlement whose Dispatch returned nil.
func (s *Source) Accepted() []*Settlement {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Settlement(nil), s.all...)
}

// DoubleSettlements counts SettleFunc calls beyond the first for any message (0 is right).
func (s *Source) DoubleSettlements() int { return int(s.doubles.Load()) }

// Sink is an in-memory engine.Sink. By default every Send confirms at once; Fail decides
// otherwise.
type Sink struct {
	// Fail, when set, is called for every Send attempt with the 1-based attempt number for that
	// event id on this sink; a non-nil result fails the attempt. It may block on ctx.
	Fail func(ctx context.Context, attempt int, e *event.Event) error
	// NotReady makes Ready report false.
	NotReady atomic.Bool

	mu          sync.Mutex
	attempts    map[string]int
	confirmed   []*event.Event
	closeCtxErr error
	sends       atomic.Int64
	started     atomic.Int32
	closed      atomic.Int32
}

var (
	_ engine.Sink    = (*Sink)(nil)
	_ engine.Starter = (*Sink)(nil)
	_ engine.Readier = (*Sink)(nil)
)

// Start records the call.
func (s *Sink) Start(context.Context) error { s.started.Add(1); return nil }

// Close records the call and whether its context had already ended.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closeCtxErr = ctx.Err()
	s.mu.Unlock()
	s.closed.Add(1)
	return nil
}

// CloseContextErr reports ctx.Err() of the context the last Close was given: a sink must be
// given a live context to close its connection cleanly.
func (s *Sink) CloseContextErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeCtxErr
}

// Ready implements engine.Readier.
func (s *Sink) Ready() bool { return !s.NotReady.Load() }

// Starts reports how often the engine called Start.
func (s *Sink) Starts() int { return int(s.started.Load()) }

// Closes reports how often the engine called Close.
func (s *Sink) Closes() int { return int(s.closed.Load()) }

// Send records the attempt and confirms it unless Fail says otherwise. The stored event is a
// copy, so the engine may reuse e.
func (s *Sink) Send(ctx context.Context, e *event.Event) error {
	s.sends.Add(1)
	if s.Fail == nil {
		// Fast path for benchmarks: no per-id bookkeeping beyond the count.
		s.mu.Lock()
		s.confirmed = append(s.confirmed, e)
		s.mu.Unlock()
		return nil
	}
	s.mu.Lock()
	if s.attempts == nil {
		s.attempts = map[string]int{}
	}
	s.attempts[e.ID()]++
	n := s.attempts[e.ID()]
	s.mu.Unlock()
	if err := s.Fail(ctx, n, e); err != nil {
		return err
	}
	c := e.Clone()
	s.mu.Lock()
	s.confirmed = append(s.confirmed, &c)
	s.mu.Unlock()
	return nil
}

// Sends reports the number of Send calls.
func (s *Sink) Sends() int { return int(s.sends.Load()) }

// Attempts reports the number of Send calls for the event with the given id (only counted when
// Fail is set).
func (s *Sink) Attempts(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts[id]
}

// Confirmed returns the events this sink confirmed, in order.
func (s *Sink) Confirmed() []*event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*event.Event(nil), s.confirmed...)
}

// Reset forgets the confirmed events (benchmarks call it to bound memory).
func (s *Sink) Reset() {
	s.mu.Lock()
	s.confirmed = s.confirmed[:0]
	s.mu.Unlock()
}

// RuleFunc adapts a function to engine.Rule.
type RuleFunc func(ctx context.Context, e *event.Event) (engine.Decision, error)

var _ engine.Rule = RuleFunc(nil)

// Decide calls f.
func (f RuleFunc) Decide(ctx context.Context, e *event.Event) (engine.Decision, error) {
	return f(ctx, e)
}

// RouteTo returns a rule that routes every event to outputs.
func RouteTo(outputs ...string) RuleFunc {
	return func(context.Context, *event.Event) (engine.Decision, error) {
		return engine.Decision{Action: engine.ActionRoute, Outputs: outputs}, nil
	}
}

package testutil

import (
	"context"
	"testing"
	"time"

	"github.com/turnout-router/turnout/engine"
)

// Dispatched is one message a Source handed to a Dispatcher.
type Dispatched struct {
	M      *engine.Message
	Settle engine.SettleFunc
}

// Dispatcher is the engine's side of the Source contract for transport tests: it takes every
// message at once (no backpressure, up to 100000 waiting) and lets the test settle them.
type Dispatcher struct{ ch chan Dispatched }

// NewDispatcher returns an empty Dispatcher.
func NewDispatcher() *Dispatcher { return &Dispatcher{ch: make(chan Dispatched, 100000)} }

// Dispatch implements engine.Dispatcher.
func (d *Dispatcher) Dispatch(ctx context.Context, m *engine.Message, settle engine.SettleFunc) error {
	select {
	case d.ch <- Dispatched{m, settle}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Next waits for the next dispatched message, failing the test after within.
func (d *Dispatcher) Next(t testing.TB, within time.Duration) Dispatched {
	t.Helper()
	select {
	case x := <-d.ch:
		return x
	case <-time.After(within):
		t.Fatalf("no message dispatched within %v", within)
		return Dispatched{}
	}
}

// None checks that nothing is dispatched for the duration.
func (d *Dispatcher) None(t testing.TB, during time.Duration) {
	t.Helper()
	select {
	case x := <-d.ch:
		t.Fatalf("unexpected message dispatched: event %v, decode error %v", x.M.Event, x.M.DecodeErr)
	case <-time.After(during):
	}
}

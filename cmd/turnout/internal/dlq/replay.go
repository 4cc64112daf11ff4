package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/engine"
)

// InputName is the name of the engine input through which the entries of route are replayed.
// The colon keeps it apart from configured input names, which cannot hold one.
func InputName(route string) string { return "dlq-replay:" + route }

// Source returns the engine.Source that replays the route's entries: the engine starts it with
// the route's Dispatcher, which Replay hands the entries to, as an input would.
func (r *Route) Source() engine.Source { return source{r} }

type source struct{ r *Route }

// Start keeps the dispatcher for Replay.
func (s source) Start(_ context.Context, d engine.Dispatcher) error {
	s.r.dmu.Lock()
	s.r.d = d
	s.r.dmu.Unlock()
	return nil
}

// Close stops replays from dispatching.
func (s source) Close(context.Context) error {
	s.r.dmu.Lock()
	s.r.d = nil
	s.r.dmu.Unlock()
	return nil
}

// ErrNotRunning is returned by Replay when the route's engine input is not running.
var ErrNotRunning = errors.New("the route does not run: start turnout, or wait until it is ready")

// ErrNoEntry is returned by Replay when an id was given and no entry of the route has it.
var ErrNoEntry = errors.New("no such dead-letter entry")

// ReplayResult says what a replay did.
type ReplayResult struct {
	Route string `json:"route"`
	// Selected entries were handed to the route; Replayed of them were acknowledged by the engine
	// (delivered, dropped by the rule, or dead-lettered again, which writes a new entry) and
	// removed; Failed were not acknowledged and stay in the file.
	Selected int `json:"selected"`
	Replayed int `json:"replayed"`
	Failed   int `json:"failed"`
	// Errors are the reasons of the first failures.
	Errors []string `json:"errors,omitempty"`
}

// maxReplayErrors bounds ReplayResult.Errors.
const maxReplayErrors = 10

// Replay hands the route's entries (those whose event id is id, or all when id is "") to the
// route as a new delivery each, waits until the engine settled every one, and removes the ones it
// acknowledged. An entry that fails again is dead-lettered again as a new entry (or nacked and
// kept, if even that fails). Entries written after Replay began are not replayed. When ctx ends,
// no further entry is dispatched, but those already dispatched are waited for.
func (r *Route) Replay(ctx context.Context, id string) (ReplayResult, error) {
	res := ReplayResult{Route: r.name}
	r.replaying.Lock()
	defer r.replaying.Unlock()
	r.dmu.Lock()
	d := r.d
	r.dmu.Unlock()
	if d == nil {
		return res, fmt.Errorf("replay route %s: %w", r.name, ErrNotRunning)
	}
	r.mu.Lock()
	all, _ := r.s.List(r.name) // lines that are not entries cannot be replayed; List reports them
	r.mu.Unlock()
	var selected []Entry
	for _, e := range all {
		if eid, _, _ := e.Summary(); id == "" || eid == id {
			selected = append(selected, e)
		}
	}
	if id != "" && len(selected) == 0 {
		return res, fmt.Errorf("replay route %s: id %q: %w", r.name, id, ErrNoEntry)
	}
	res.Selected = len(selected)

	var (
		mu    sync.Mutex
		acked []Entry
		wg    sync.WaitGroup
	)
	fail := func(e *Entry, err error) {
		mu.Lock()
		defer mu.Unlock()
		res.Failed++
		if len(res.Errors) < maxReplayErrors {
			res.Errors = append(res.Errors, e.Locator()+": "+err.Error())
		}
	}
	for i := range selected {
		e := &selected[i]
		m, err := message(e)
		if err != nil {
			fail(e, err)
			continue
		}
		wg.Add(1)
		err = d.Dispatch(ctx, m, func(err error) {
			defer wg.Done()
			if err != nil {
				fail(e, err)
				return
			}
			mu.Lock()
			acked = append(acked, *e)
			mu.Unlock()
		})
		if err != nil {
			wg.Done()
			// Not taken: this one and the rest stay.
			for j := i; j < len(selected); j++ {
				fail(&selected[j], fmt.Errorf("not replayed: %w", err))
			}
			break
		}
	}
	wg.Wait()
	n, err := r.remove(acked)
	res.Replayed = n
	r.s.m.replayed.WithLabelValues(r.name).Add(float64(n))
	if err != nil {
		return res, fmt.Errorf("replay route %s: %d entries acknowledged, %d removed: %w", r.name, len(acked), n, err)
	}
	return res, nil
}

// message turns an entry back into the input message it was: the event without the engine's
// error extensions, or, for a malformed one, the bytes that were received (decoded again, in
// case they are an event in the CloudEvents JSON format that a fixed sender or decoder now
// reads).
func message(e *Entry) (*engine.Message, error) {
	ev, err := e.Decode()
	if err != nil {
		return nil, err
	}
	origin, _ := ev.Extensions()[engine.ExtOrigin].(string)
	if e.Kind == KindMalformed {
		raw := ev.Data()
		m := &engine.Message{Raw: raw, Origin: origin}
		orig := event.New()
		if err := json.Unmarshal(raw, &orig); err != nil {
			m.DecodeErr = fmt.Errorf("replayed malformed message: %w", err)
		} else {
			m.Event = &orig
		}
		return m, nil
	}
	for _, x := range []string{engine.ExtError, engine.ExtErrorRoute, engine.ExtErrorInput, engine.ExtErrorOutput, engine.ExtErrorKind} {
		ev.SetExtension(x, nil) // nil removes it
	}
	return &engine.Message{Event: ev, Origin: origin}, nil
}

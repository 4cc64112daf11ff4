package engine_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/engine/enginetest"
	"github.com/turnout-router/turnout/internal/testutil"
)

// gate is a Sink.Fail that blocks every Send until the gate opens (or the send's context ends),
// counting the sends outstanding.
type gate struct {
	open        chan struct{}
	outstanding atomic.Int32
	max         atomic.Int32
}

func newGate() *gate { return &gate{open: make(chan struct{})} }

func (g *gate) fail(ctx context.Context, _ int, _ *event.Event) error {
	n := g.outstanding.Add(1)
	defer g.outstanding.Add(-1)
	for {
		m := g.max.Load()
		if n <= m || g.max.CompareAndSwap(m, n) {
			break
		}
	}
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestBestEffortAcksAtOnce(t *testing.T) {
	g := newGate()
	a := &enginetest.Sink{Fail: g.fail}
	v := setup(t, engine.RouteConfig{Mode: engine.BestEffort, MaxInFlight: 2}, enginetest.RouteTo("a"), map[string]*enginetest.Sink{"a": a}, nil, nil)
	st, err := v.src.Send(context.Background(), enginetest.NewEvent("e1", nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(t, st); err != nil {
		t.Fatalf("best-effort settled with %v, want ack", err)
	}
	eventually(t, "the send to start", func() bool { return g.outstanding.Load() == 1 })
	if len(a.Confirmed()) != 0 {
		t.Fatal("output confirmed before the gate opened")
	}
	// The slot stays held while processing runs.
	if got := testutil.Metric(t, v.reg, "turnout_events_in_flight", nil); got != 1 {
		t.Errorf("in_flight = %v while the send runs, want 1", got)
	}
	close(g.open)
	eventually(t, "the output to confirm", func() bool { return len(a.Confirmed()) == 1 })
}

func TestBackpressure(t *testing.T) {
	const max = 3
	g := newGate()
	a := &enginetest.Sink{Fail: g.fail}
	v := setup(t, engine.RouteConfig{MaxInFlight: max}, enginetest.RouteTo("a"), map[string]*enginetest.Sink{"a": a}, nil, nil)

	var dispatched atomic.Int32
	done := make(chan error, 1)
	go func() {
		for i := range 10 {
			if _, err := v.src.Send(context.Background(), enginetest.NewEvent(fmt.Sprint(i), nil)); err != nil {
				done <- err
				return
			}
			dispatched.Add(1)
		}
		done <- nil
	}()
	eventually(t, "MaxInFlight sends", func() bool { return g.outstanding.Load() == max })
	time.Sleep(20 * time.Millisecond) // give a wrong engine the chance to take a fourth message
	if got := dispatched.Load(); got != max {
		t.Fatalf("%d Dispatch calls returned while %d messages were unsettled, want %d", got, max, max)
	}
	if got := testutil.Metric(t, v.reg, "turnout_events_in_flight", nil); got != max {
		t.Errorf("in_flight = %v, want %d", got, max)
	}

	// A blocked Dispatch returns ctx.Err() when its context ends, and the message is not taken.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := v.src.Send(ctx, enginetest.NewEvent("late", nil)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("blocked Dispatch returned %v, want context.DeadlineExceeded", err)
	}

	close(g.open)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, st := range v.src.Accepted() {
		if err := wait(t, st); err != nil {
			t.Errorf("message %d: %v", st.Seq, err)
		}
	}
	if got := g.max.Load(); got > max {
		t.Errorf("%d sends outstanding at once, want at most %d", got, max)
	}
	if got := len(v.src.Accepted()); got != 10 {
		t.Errorf("%d messages accepted, want 10", got)
	}
}

// TestSettlementOrder completes deliveries in reverse order: an ordered source must still see
// its settlements in Dispatch order, an unordered one in completion order (which shows the test
// can tell the difference).
func TestSettlementOrder(t *testing.T) {
	for _, ordered := range []bool{true, false} {
		t.Run(fmt.Sprintf("ordered=%v", ordered), func(t *testing.T) {
			const n = 20
			var mu sync.Mutex
			release := map[string]chan struct{}{}
			for i := range n {
				release[fmt.Sprint(i)] = make(chan struct{})
			}
			a := &enginetest.Sink{Fail: func(ctx context.Context, _ int, e *event.Event) error {
				mu.Lock()
				ch := release[e.ID()]
				mu.Unlock()
				<-ch
				return nil
			}}
			src := &enginetest.Source{Ordered: ordered}
			v := setup(t, engine.RouteConfig{MaxInFlight: n}, enginetest.RouteTo("a"), map[string]*enginetest.Sink{"a": a}, nil, src)
			for i := range n {
				if _, err := src.Send(context.Background(), enginetest.NewEvent(fmt.Sprint(i), nil)); err != nil {
					t.Fatal(err)
				}
			}
			for i := n - 1; i >= 0; i-- {
				close(release[fmt.Sprint(i)])
				eventually(t, "confirmation", func() bool { return len(a.Confirmed()) == n-i })
				if !ordered {
					eventually(t, "settlement", func() bool { return len(src.Order()) == n-i })
				}
			}
			for _, st := range src.Accepted() {
				if err := wait(t, st); err != nil {
					t.Errorf("message %d: %v", st.Seq, err)
				}
			}
			order := src.Order()
			want := make([]int, n)
			for i := range want {
				want[i] = i
				if !ordered {
					want[i] = n - 1 - i
				}
			}
			if !slices.Equal(order, want) {
				t.Errorf("settlement order %v, want %v", order, want)
			}
			_ = v
		})
	}
}

func TestShutdownDrainsThenNacks(t *testing.T) {
	quick := newGate() // released during the drain
	stuck := newGate() // never released: cancelled at the deadline
	a := &enginetest.Sink{Fail: quick.fail}
	b := &enginetest.Sink{Fail: stuck.fail}
	src := &enginetest.Source{}
	rule := enginetest.RuleFunc(func(_ context.Context, e *event.Event) (engine.Decision, error) {
		return engine.Decision{Action: engine.ActionRoute, Outputs: []string{e.Type()}}, nil
	})
	dl := &enginetest.Sink{}
	v := setup(t, engine.RouteConfig{}, rule, map[string]*enginetest.Sink{"a": a, "b": b}, dl, src)

	ea, eb := enginetest.NewEvent("1", nil), enginetest.NewEvent("2", nil)
	ea.SetType("a")
	eb.SetType("b")
	sa, err := src.Send(context.Background(), ea)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := src.Send(context.Background(), eb)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "both sends to start", func() bool { return quick.outstanding.Load() == 1 && stuck.outstanding.Load() == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- v.e.Shutdown(ctx) }()

	eventually(t, "the source to be closed", func() bool { return src.Closes() == 1 })
	if _, err := src.Send(context.Background(), enginetest.NewEvent("3", nil)); !errors.Is(err, engine.ErrClosed) {
		t.Errorf("Dispatch during shutdown returned %v, want ErrClosed", err)
	}
	if a.Closes() != 0 {
		t.Error("an output was closed before the drain ended")
	}
	close(quick.open)
	if err := wait(t, sa); err != nil {
		t.Errorf("message delivered during the drain settled with %v, want ack", err)
	}
	serr := <-errc
	if serr == nil || !strings.Contains(serr.Error(), "drain") {
		t.Errorf("Shutdown returned %v, want a drain error", serr)
	}
	err, ok := sb.Settled()
	if !ok {
		t.Fatal("stuck message not settled when Shutdown returned")
	}
	if err == nil {
		t.Error("stuck message acked, want nack")
	}
	if dl.Sends() != 0 {
		t.Error("a delivery cancelled by shutdown was dead-lettered")
	}
	if got := testutil.Metric(t, v.reg, "turnout_events_nacked_total", map[string]string{"reason": "shutdown"}); got != 1 {
		t.Errorf("nacked_total{shutdown} = %v, want 1", got)
	}
	for name, s := range map[string]*enginetest.Sink{"a": a, "b": b, "dlq": dl} {
		if s.Closes() != 1 {
			t.Errorf("output %s closed %d times, want 1", name, s.Closes())
		}
		if err := s.CloseContextErr(); err != nil {
			t.Errorf("output %s closed with an ended context (%v): it cannot close its connection cleanly", name, err)
		}
	}
	if src.DoubleSettlements() != 0 {
		t.Errorf("%d double settlements", src.DoubleSettlements())
	}
	if again := v.e.Shutdown(context.Background()); again == nil || src.Closes() != 1 {
		t.Errorf("second Shutdown returned %v and closed the source %d times; want the first result, 1 close", again, src.Closes())
	}
}

func TestShutdownCleanDrain(t *testing.T) {
	g := newGate()
	v := setup(t, engine.RouteConfig{}, enginetest.RouteTo("a"), map[string]*enginetest.Sink{"a": {Fail: g.fail}}, nil, nil)
	st, err := v.src.Send(context.Background(), enginetest.NewEvent("1", nil))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the send", func() bool { return g.outstanding.Load() == 1 })
	go func() { time.Sleep(20 * time.Millisecond); close(g.open) }()
	if err := v.e.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err, ok := st.Settled(); !ok || err != nil {
		t.Fatalf("in-flight message: settled=%v err=%v, want acked before Shutdown returned", ok, err)
	}
}

func TestReady(t *testing.T) {
	src := &enginetest.Source{}
	a, dl := &enginetest.Sink{}, &enginetest.Sink{}
	e := engine.New(engine.Options{})
	err := e.AddRoute(engine.Route{Config: engine.RouteConfig{Name: "r", DefaultOutputs: []string{"a"}},
		Inputs: map[string]engine.Source{"in": src}, Outputs: map[string]engine.Sink{"a": a}, DeadLetter: dl})
	if err != nil {
		t.Fatal(err)
	}
	if e.Ready() {
		t.Error("ready before Start")
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		set  func(bool)
	}{
		{"input", src.NotReady.Store},
		{"output", a.NotReady.Store},
		{"dead-letter", dl.NotReady.Store},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if !e.Ready() {
				t.Fatal("not ready with every part ready")
			}
			s.set(true)
			if e.Ready() {
				t.Errorf("ready with %s not ready", s.name)
			}
			s.set(false)
		})
	}
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e.Ready() {
		t.Error("ready after Shutdown")
	}
}

func TestSharedSinkStartedAndClosedOnce(t *testing.T) {
	shared := &enginetest.Sink{}
	s1, s2 := &enginetest.Source{}, &enginetest.Source{}
	e := engine.New(engine.Options{})
	for i, src := range []*enginetest.Source{s1, s2} {
		err := e.AddRoute(engine.Route{Config: engine.RouteConfig{Name: fmt.Sprint("r", i), DefaultOutputs: []string{"out"}},
			Inputs: map[string]engine.Source{fmt.Sprint("in", i): src}, Outputs: map[string]engine.Sink{"out": shared}, DeadLetter: shared})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if shared.Starts() != 1 || s1.Starts() != 1 || s2.Starts() != 1 {
		t.Errorf("starts: sink %d, sources %d %d; want 1 each", shared.Starts(), s1.Starts(), s2.Starts())
	}
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if shared.Closes() != 1 || s1.Closes() != 1 || s2.Closes() != 1 {
		t.Errorf("closes: sink %d, sources %d %d; want 1 each", shared.Closes(), s1.Closes(), s2.Closes())
	}
}

func TestAddRouteValidation(t *testing.T) {
	srcA, srcB := &enginetest.Source{}, &enginetest.Source{}
	out := &enginetest.Sink{}
	first := engine.Route{Config: engine.RouteConfig{Name: "first", DefaultOutputs: []string{"o"}},
		Inputs: map[string]engine.Source{"shared-in": srcA}, Outputs: map[string]engine.Sink{"o": out}}
	ok := func(mut func(*engine.Route)) engine.Route {
		r := engine.Route{Config: engine.RouteConfig{Name: "second", DefaultOutputs: []string{"o"}},
			Inputs: map[string]engine.Source{"in2": srcB}, Outputs: map[string]engine.Sink{"o": out}}
		mut(&r)
		return r
	}
	cases := []struct {
		name  string
		route engine.Route
		want  []string // substrings of the error; nil means valid
	}{
		{"valid", ok(func(*engine.Route) {}), nil},
		{"duplicate route name", ok(func(r *engine.Route) { r.Config.Name = "first" }), []string{"first", "duplicate"}},
		{"empty name", ok(func(r *engine.Route) { r.Config.Name = "" }), []string{"name"}},
		{"input used by two routes", ok(func(r *engine.Route) { r.Inputs = map[string]engine.Source{"shared-in": srcB} }), []string{"second", "shared-in", "first"}},
		{"same source under another name", ok(func(r *engine.Route) { r.Inputs = map[string]engine.Source{"other": srcA} }), []string{"second", "other", "shared-in"}},
		{"default output unknown", ok(func(r *engine.Route) { r.Config.DefaultOutputs = []string{"nope"} }), []string{"second", "nope"}},
		{"no rule no defaults", ok(func(r *engine.Route) { r.Config.DefaultOutputs = nil }), []string{"second", "default outputs"}},
		{"no inputs", ok(func(r *engine.Route) { r.Inputs = nil }), []string{"second", "no inputs"}},
		{"nil output", ok(func(r *engine.Route) { r.Outputs["bad"] = nil }), []string{"second", "bad"}},
		{"unknown mode", ok(func(r *engine.Route) { r.Config.Mode = "exactly-once" }), []string{"second", "exactly-once"}},
		{"unknown policy", ok(func(r *engine.Route) { r.Config.OnRuleError = "ignore" }), []string{"second", "ignore"}},
		{"backoff inverted", ok(func(r *engine.Route) {
			r.Config.Retry = engine.RetryPolicy{InitialBackoff: time.Second, MaxBackoff: time.Millisecond}
		}), []string{"second", "max_backoff"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := engine.New(engine.Options{})
			if err := e.AddRoute(first); err != nil {
				t.Fatalf("first route: %v", err)
			}
			err := e.AddRoute(c.route)
			if c.want == nil {
				if err != nil {
					t.Fatalf("AddRoute: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("AddRoute accepted an invalid route")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	t.Run("after start", func(t *testing.T) {
		e := engine.New(engine.Options{})
		if err := e.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer e.Shutdown(context.Background())
		if err := e.AddRoute(first); err == nil {
			t.Error("AddRoute after Start accepted")
		}
	})
}

func TestShutdownWakesBlockedDispatch(t *testing.T) {
	g := newGate()
	v := setup(t, engine.RouteConfig{MaxInFlight: 1}, enginetest.RouteTo("a"), map[string]*enginetest.Sink{"a": {Fail: g.fail}}, nil, nil)
	first, err := v.src.Send(context.Background(), enginetest.NewEvent("1", nil))
	if err != nil {
		t.Fatal(err)
	}
	blocked := make(chan error, 1)
	go func() {
		_, err := v.src.Send(context.Background(), enginetest.NewEvent("2", nil))
		blocked <- err
	}()
	eventually(t, "the send", func() bool { return g.outstanding.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_ = v.e.Shutdown(ctx)
	if err := <-blocked; !errors.Is(err, engine.ErrClosed) {
		t.Errorf("Dispatch blocked by backpressure returned %v at shutdown, want ErrClosed", err)
	}
	if err, ok := first.Settled(); !ok || err == nil {
		t.Errorf("in-flight message: settled=%v err=%v, want a nack after the drain deadline", ok, err)
	}
	if got := len(v.src.Accepted()); got != 1 {
		t.Errorf("%d messages accepted, want 1", got)
	}
}

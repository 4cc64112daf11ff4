package engine_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/engine/enginetest"
	"github.com/turnout-router/turnout/internal/testutil"
)

// extVersion is the extension a versionRule stamps on every event it decides.
const extVersion = "ruleversion"

// versionRule is one fake rule version: it routes every event to "a", stamped with its id, and
// checks the switch's promise: no call runs on it once it is closed, and it is closed at most
// once.
type versionRule struct {
	t        testing.TB
	id       string
	closeErr error
	// block, when set, holds every call until it is closed (entered is signalled first).
	block   chan struct{}
	entered chan struct{}

	running atomic.Int64 // calls in progress
	calls   atomic.Int64
	closes  atomic.Int64
	bad     atomic.Int64 // calls on a closed version, or closes during a call
}

func newVersionRule(t testing.TB, id string) *versionRule {
	return &versionRule{t: t, id: id, entered: make(chan struct{}, 1000)}
}

func (r *versionRule) Version() string { return r.id }

func (r *versionRule) Decide(_ context.Context, e *event.Event) (engine.Decision, error) {
	r.running.Add(1)
	defer r.running.Add(-1)
	if r.closes.Load() != 0 {
		r.bad.Add(1)
		r.t.Errorf("version %s: Decide after Close", r.id)
	}
	r.calls.Add(1)
	if r.block != nil {
		r.entered <- struct{}{}
		<-r.block
	}
	if rand.IntN(4) == 0 {
		time.Sleep(time.Duration(rand.IntN(50)) * time.Microsecond) // keep calls in flight across swaps
	}
	out := e.Clone()
	out.SetExtension(extVersion, r.id)
	return engine.Decision{Action: engine.ActionRoute, Outputs: []string{"a"}, Event: &out}, nil
}

func (r *versionRule) Close(context.Context) error {
	if r.running.Load() != 0 {
		r.bad.Add(1)
		r.t.Errorf("version %s: Close while %d calls run", r.id, r.running.Load())
	}
	if r.closes.Add(1) != 1 {
		r.bad.Add(1)
		r.t.Errorf("version %s: closed twice", r.id)
	}
	return r.closeErr
}

// versions records every fake version a test made.
type versions struct {
	t   testing.TB
	mu  sync.Mutex
	n   int
	all []*versionRule
}

func (vs *versions) make() (*versionRule, *engine.RuleVersion) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	vs.n++
	r := newVersionRule(vs.t, fmt.Sprintf("v%d", vs.n))
	vs.all = append(vs.all, r)
	return r, engine.NewRuleVersion(r, engine.RuleVersionOptions{})
}

func waitDone(t testing.TB, v *engine.RuleVersion) {
	t.Helper()
	select {
	case <-v.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("version %s not closed within 10s", v.ID())
	}
}

// TestRuleSwitchHammer streams events through a real engine route whose rule is a RuleSwitch
// while several goroutines swap in new versions and roll back to ones they hold, many times.
// Every event must arrive, decided by exactly one version; the per-version counts must add up;
// no version may be closed while one of its calls runs, and every replaced version must be
// closed once released and drained.
func TestRuleSwitchHammer(t *testing.T) {
	const (
		events   = 6000
		senders  = 2
		swappers = 3
	)
	vs := &versions{t: t}
	_, first := vs.make()
	reg := prometheus.NewRegistry()
	sw, err := engine.NewRuleSwitch("r", first, reg)
	if err != nil {
		t.Fatal(err)
	}
	sink := &enginetest.Sink{}
	env := setup(t, engine.RouteConfig{MaxInFlight: 64}, sw, map[string]*enginetest.Sink{"a": sink}, nil, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stop := make(chan struct{})
	var swaps atomic.Int64
	var held [swappers][]*engine.RuleVersion
	var swg sync.WaitGroup
	for i := range swappers {
		until(&swg, stop, func() bool {
			var next *engine.RuleVersion
			if h := held[i]; len(h) > 0 && rand.IntN(2) == 0 {
				k := rand.IntN(len(h)) // roll back to a version this goroutine holds
				next = h[k]
				held[i] = append(h[:k], h[k+1:]...)
			} else {
				_, next = vs.make()
			}
			prev, err := sw.Swap(next)
			if err != nil {
				t.Errorf("swap to %s: %v", next.ID(), err)
				return false
			}
			swaps.Add(1)
			if len(held[i]) < 4 && rand.IntN(2) == 0 {
				held[i] = append(held[i], prev)
			} else if err := prev.Release(ctx); err != nil {
				t.Errorf("release %s: %v", prev.ID(), err)
			}
			time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
			return true
		})
	}

	var sent sync.WaitGroup
	sts := make([][]*enginetest.Settlement, senders)
	for i := range senders {
		sent.Add(1)
		go func() {
			defer sent.Done()
			for j := range events / senders {
				st, err := env.src.Send(ctx, enginetest.NewEvent(fmt.Sprintf("e%d-%d", i, j), nil))
				if err != nil {
					t.Errorf("send: %v", err)
					return
				}
				sts[i] = append(sts[i], st)
			}
		}()
	}
	sent.Wait()
	for _, s := range sts {
		for _, st := range s {
			if err := wait(t, st); err != nil {
				t.Errorf("event %s nacked: %v", st.Message().Event.ID(), err)
			}
		}
	}
	close(stop)
	swg.Wait()
	t.Logf("%d swaps, %d versions", swaps.Load(), len(vs.all))
	if swaps.Load() < 50 {
		t.Errorf("only %d swaps during the stream; the test did not exercise swapping", swaps.Load())
	}

	// Every event arrived once, decided by one version; the counts add up.
	seen := map[string]string{}
	stamped := map[string]int64{}
	for _, e := range sink.Confirmed() {
		ver, _ := e.Extensions()[extVersion].(string)
		if ver == "" {
			t.Errorf("event %s arrived without a version stamp", e.ID())
		}
		if other, dup := seen[e.ID()]; dup {
			t.Errorf("event %s arrived twice (versions %s and %s)", e.ID(), other, ver)
		}
		seen[e.ID()] = ver
		stamped[ver]++
	}
	if len(seen) != events {
		t.Errorf("%d distinct events arrived, want %d", len(seen), events)
	}
	var total int64
	for _, r := range vs.all {
		total += r.calls.Load()
		if r.calls.Load() != stamped[r.id] {
			t.Errorf("version %s: %d calls, %d events stamped", r.id, r.calls.Load(), stamped[r.id])
		}
	}
	if total != events {
		t.Errorf("versions decided %d events in all, want %d", total, events)
	}
	if len(stamped) < 10 {
		t.Errorf("only %d versions decided events; the swaps did not interleave with the stream", len(stamped))
	}

	// Give up every reference: the held versions and the switch's. Every version is then closed
	// exactly once, and never during a call.
	active := sw.Active()
	if got := testutil.Metric(t, reg, "turnout_rule_active_version", map[string]string{"route": "r", "version": active}); got != 1 {
		t.Errorf("active version gauge for %s = %v, want 1", active, got)
	}
	if got := testutil.Metric(t, reg, "turnout_rule_swaps_total", map[string]string{"route": "r"}); got < 1 {
		t.Errorf("turnout_rule_swaps_total = %v, want > 0", got)
	}
	for i := range held {
		for _, v := range held[i] {
			if err := v.Release(ctx); err != nil {
				t.Errorf("release %s: %v", v.ID(), err)
			}
		}
	}
	if err := env.e.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := sw.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, r := range vs.all {
		if r.closes.Load() != 1 || r.bad.Load() != 0 {
			t.Errorf("version %s: closed %d times, %d violations", r.id, r.closes.Load(), r.bad.Load())
		}
	}
}

// TestRuleSwitchLifecycle covers the edges of a version's life in a switch.
func TestRuleSwitchLifecycle(t *testing.T) {
	ctx := context.Background()
	ev := func() *event.Event { return enginetest.NewEvent("x", nil) }
	decidedBy := func(t *testing.T, sw *engine.RuleSwitch) string {
		t.Helper()
		d, err := sw.Decide(ctx, ev())
		if err != nil {
			t.Fatalf("Decide: %v", err)
		}
		s, _ := d.Event.Extensions()[extVersion].(string)
		return s
	}
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, vs *versions, reg *prometheus.Registry)
	}{
		{"swap to the same version changes nothing", func(t *testing.T, vs *versions, reg *prometheus.Registry) {
			r, v := vs.make()
			sw, _ := engine.NewRuleSwitch("r", v, reg)
			if err := v.Retain(); err != nil { // the caller keeps a handle beside the switch's
				t.Fatal(err)
			}
			prev, err := sw.Swap(v)
			if err != nil || prev != v {
				t.Fatalf("Swap(active) = %v, %v; want the same version back", prev, err)
			}
			if got := testutil.Metric(t, reg, "turnout_rule_swaps_total", map[string]string{"route": "r"}); got != 0 {
				t.Errorf("swaps = %v, want 0", got)
			}
			if decidedBy(t, sw) != r.id {
				t.Errorf("not decided by %s", r.id)
			}
			if err := prev.Release(ctx); err != nil {
				t.Fatal(err)
			}
			if r.closes.Load() != 0 {
				t.Fatal("version closed while the switch holds it")
			}
			if err := sw.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if r.closes.Load() != 1 {
				t.Errorf("closed %d times, want 1", r.closes.Load())
			}
		}},
		{"swap and roll back", func(t *testing.T, vs *versions, reg *prometheus.Registry) {
			r1, v1 := vs.make()
			r2, v2 := vs.make()
			sw, _ := engine.NewRuleSwitch("r", v1, reg)
			old, err := sw.Swap(v2)
			if err != nil || old != v1 {
				t.Fatalf("Swap = %v, %v", old, err)
			}
			if decidedBy(t, sw) != r2.id || sw.Active() != r2.id {
				t.Fatalf("not decided by %s after swap", r2.id)
			}
			if g := testutil.Metric(t, reg, "turnout_rule_active_version", map[string]string{"route": "r", "version": r2.id}); g != 1 {
				t.Errorf("gauge for %s = %v, want 1", r2.id, g)
			}
			if n := testutil.Metric(t, reg, "turnout_rule_active_version", map[string]string{"route": "r", "version": r1.id}); n != 0 {
				t.Errorf("gauge for replaced %s = %v, want 0", r1.id, n)
			}
			if r1.closes.Load() != 0 {
				t.Fatal("replaced version closed while the caller holds it")
			}
			back, err := sw.Swap(old) // roll back
			if err != nil || back != v2 {
				t.Fatalf("rollback = %v, %v", back, err)
			}
			if decidedBy(t, sw) != r1.id {
				t.Fatalf("not decided by %s after rollback", r1.id)
			}
			if err := back.Release(ctx); err != nil {
				t.Fatal(err)
			}
			if r2.closes.Load() != 1 {
				t.Errorf("released idle version closed %d times, want 1", r2.closes.Load())
			}
			if err := back.Release(ctx); !errors.Is(err, engine.ErrVersionRetired) {
				t.Errorf("second Release = %v, want ErrVersionRetired", err)
			}
			if _, err := sw.Swap(back); !errors.Is(err, engine.ErrVersionRetired) {
				t.Errorf("Swap to a released version = %v, want ErrVersionRetired", err)
			}
			if got := testutil.Metric(t, reg, "turnout_rule_swaps_total", map[string]string{"route": "r"}); got != 2 {
				t.Errorf("swaps = %v, want 2", got)
			}
			_ = sw.Close(ctx)
		}},
		{"close of the switch closes the current version", func(t *testing.T, vs *versions, reg *prometheus.Registry) {
			r, v := vs.make()
			sw, _ := engine.NewRuleSwitch("r", v, reg)
			if err := sw.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if r.closes.Load() != 1 {
				t.Errorf("closed %d times, want 1", r.closes.Load())
			}
			waitDone(t, v)
			var re *engine.RuleError
			if _, err := sw.Decide(ctx, ev()); !errors.As(err, &re) || re.Kind != "closed" || !errors.Is(err, engine.ErrSwitchClosed) {
				t.Errorf("Decide after Close = %v, want a RuleError of kind closed", err)
			}
			if err := sw.Close(ctx); err != nil {
				t.Errorf("second Close = %v", err)
			}
			if sw.Active() != "" {
				t.Errorf("Active after Close = %q", sw.Active())
			}
		}},
		{"swap after close fails and the caller keeps its version", func(t *testing.T, vs *versions, reg *prometheus.Registry) {
			_, v1 := vs.make()
			r2, v2 := vs.make()
			sw, _ := engine.NewRuleSwitch("r", v1, reg)
			_ = sw.Close(ctx)
			if _, err := sw.Swap(v2); !errors.Is(err, engine.ErrSwitchClosed) {
				t.Fatalf("Swap after Close = %v, want ErrSwitchClosed", err)
			}
			if r2.closes.Load() != 0 {
				t.Fatal("a failed Swap closed the caller's version")
			}
			if err := v2.Release(ctx); err != nil || r2.closes.Load() != 1 {
				t.Errorf("Release = %v, closes %d", err, r2.closes.Load())
			}
		}},
		{"a version whose Close fails", func(t *testing.T, vs *versions, reg *prometheus.Registry) {
			r1, v1 := vs.make()
			r1.closeErr = errors.New("runtime busy")
			_, v2 := vs.make()
			sw, _ := engine.NewRuleSwitch("r", v1, reg)
			prev, _ := sw.Swap(v2)
			if err := prev.Release(ctx); err == nil || !errors.Is(err, r1.closeErr) {
				t.Errorf("Release = %v, want the Close error", err)
			}
			waitDone(t, prev)
			if !errors.Is(prev.Err(), r1.closeErr) {
				t.Errorf("Err = %v", prev.Err())
			}
			if decidedBy(t, sw) != "v2" {
				t.Error("the switch stopped working after a failed close")
			}
			// The same through the switch's Close.
			r3, v3 := vs.make()
			r3.closeErr = errors.New("disk gone")
			prev, _ = sw.Swap(v3)
			_ = prev.Release(ctx)
			if err := sw.Close(ctx); !errors.Is(err, r3.closeErr) {
				t.Errorf("Close = %v, want the version's Close error", err)
			}
		}},
		{"calls in flight finish on the old version, which closes once drained", func(t *testing.T, vs *versions, reg *prometheus.Registry) {
			r1, v1 := vs.make()
			r1.block = make(chan struct{})
			r2, v2 := vs.make()
			sw, _ := engine.NewRuleSwitch("r", v1, reg)
			res := make(chan string, 1)
			go func() {
				d, err := sw.Decide(ctx, ev())
				if err != nil {
					res <- err.Error()
					return
				}
				s, _ := d.Event.Extensions()[extVersion].(string)
				res <- s
			}()
			<-r1.entered
			prev, err := sw.Swap(v2) // must not wait for the blocked call
			if err != nil {
				t.Fatal(err)
			}
			if decidedBy(t, sw) != r2.id {
				t.Fatal("a new call did not take the new version")
			}
			released := make(chan error, 1)
			go func() { released <- prev.Release(ctx) }()
			select {
			case err := <-released:
				t.Fatalf("Release returned (%v) while a call runs on the version", err)
			case <-time.After(20 * time.Millisecond):
			}
			if r1.closes.Load() != 0 {
				t.Fatal("closed while a call runs")
			}
			close(r1.block)
			if got := <-res; got != r1.id {
				t.Errorf("call in flight decided by %q, want %s", got, r1.id)
			}
			if err := <-released; err != nil {
				t.Errorf("Release = %v", err)
			}
			if r1.closes.Load() != 1 {
				t.Errorf("old version closed %d times after draining, want 1", r1.closes.Load())
			}
			_ = sw.Close(ctx)
		}},
		{"release gives up waiting, the last call closes the version", func(t *testing.T, vs *versions, reg *prometheus.Registry) {
			r1, v1 := vs.make()
			r1.block = make(chan struct{})
			_, v2 := vs.make()
			sw, _ := engine.NewRuleSwitch("r", v1, reg)
			done := make(chan struct{})
			go func() { defer close(done); _, _ = sw.Decide(ctx, ev()) }()
			<-r1.entered
			prev, _ := sw.Swap(v2)
			short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
			defer cancel()
			if err := prev.Release(short); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Release = %v, want a deadline error", err)
			}
			close(r1.block)
			<-done
			waitDone(t, prev)
			if r1.closes.Load() != 1 {
				t.Errorf("closed %d times, want 1", r1.closes.Load())
			}
			_ = sw.Close(ctx)
		}},
		{"swap during engine shutdown", func(t *testing.T, vs *versions, reg *prometheus.Registry) {
			r1, v1 := vs.make()
			r1.block = make(chan struct{})
			r2, v2 := vs.make()
			sw, _ := engine.NewRuleSwitch("r", v1, reg)
			sink := &enginetest.Sink{}
			env := setup(t, engine.RouteConfig{}, sw, map[string]*enginetest.Sink{"a": sink}, nil, nil)
			st, err := env.src.Send(ctx, ev())
			if err != nil {
				t.Fatal(err)
			}
			<-r1.entered
			shut := make(chan error, 1)
			go func() { shut <- env.e.Shutdown(ctx) }()
			prev, err := sw.Swap(v2)
			if err != nil {
				t.Fatalf("Swap during shutdown: %v", err)
			}
			close(r1.block)
			if err := wait(t, st); err != nil {
				t.Errorf("event in flight during the swap nacked: %v", err)
			}
			if err := <-shut; err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			if got := sink.Confirmed(); len(got) != 1 || got[0].Extensions()[extVersion] != r1.id {
				t.Errorf("sink got %d events, want the one decided by %s", len(got), r1.id)
			}
			if err := prev.Release(ctx); err != nil || r1.closes.Load() != 1 {
				t.Errorf("Release = %v, closes %d", err, r1.closes.Load())
			}
			if err := sw.Close(ctx); err != nil || r2.closes.Load() != 1 {
				t.Errorf("Close = %v, closes %d", err, r2.closes.Load())
			}
		}},
		{"retain keeps a version alive past the switch", func(t *testing.T, vs *versions, reg *prometheus.Registry) {
			r, v := vs.make()
			sw, _ := engine.NewRuleSwitch("r", v, reg)
			if err := v.Retain(); err != nil {
				t.Fatal(err)
			}
			if err := sw.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if r.closes.Load() != 0 {
				t.Fatal("closed while a caller holds it")
			}
			if err := v.Release(ctx); err != nil || r.closes.Load() != 1 {
				t.Errorf("Release = %v, closes %d", err, r.closes.Load())
			}
			if err := v.Retain(); !errors.Is(err, engine.ErrVersionRetired) {
				t.Errorf("Retain after the last Release = %v, want ErrVersionRetired", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, &versions{t: t}, prometheus.NewRegistry())
		})
	}
}

// TestRuleSwitchPanic checks that a panicking version still gives up its call reference, so it
// can close once replaced.
func TestRuleSwitchPanic(t *testing.T) {
	closed := make(chan struct{})
	panicky := struct {
		enginetest.RuleFunc
		closer
	}{enginetest.RuleFunc(func(context.Context, *event.Event) (engine.Decision, error) { panic("boom") }), closer(closed)}
	v := engine.NewRuleVersion(panicky, engine.RuleVersionOptions{ID: "p"})
	sw, err := engine.NewRuleSwitch("r", v, nil)
	if err != nil {
		t.Fatal(err)
	}
	env := setup(t, engine.RouteConfig{OnRuleError: engine.FailNack}, sw, map[string]*enginetest.Sink{"a": {}}, nil, nil)
	st, err := env.src.Send(context.Background(), enginetest.NewEvent("x", nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := wait(t, st); err == nil {
		t.Fatal("event decided by a panicking rule was acked")
	}
	if err := sw.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closed:
	default:
		t.Fatal("panicking version not closed: its call reference leaked")
	}
}

// until calls step on a new goroutine, over and over, until stop is closed or step returns
// false; wg tracks the goroutine.
func until(wg *sync.WaitGroup, stop <-chan struct{}, step func() bool) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if !step() {
				return
			}
		}
	}()
}

// closer closes its channel on Close.
type closer chan struct{}

func (c closer) Close(context.Context) error { close(c); return nil }

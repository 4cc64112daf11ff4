package hostabi

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/testutil"
)

// TestRuleFailures checks that each kind of rule failure is reported with its kind, that the
// failed instance is discarded, and that the rule keeps serving afterwards.
func TestRuleFailures(t *testing.T) {
	h := newTestHost(t)
	misbehave := buildRule(t, "hostabi/testdata/misbehave")
	garbage := tinyRule(1, i64const(1)) // one byte at address 0: action 1 with nothing after it
	badAction := tinyRule(1, nil)
	badAction.data = append([]byte{9}, dropDecision[1:]...)
	outside := tinyRule(1, i64const(0x7fff0000<<32|16))
	tests := []struct {
		name    string
		wasm    []byte
		opts    RuleOptions
		typ     string
		kind    string
		inError string
	}{
		{"go panic is a trap", misbehave, RuleOptions{}, "trap", "trap", "misbehave: asked to trap"},
		{"endless loop hits the timeout", misbehave, RuleOptions{Timeout: 200 * time.Millisecond}, "loop", "timeout", "call exceeded 200ms"},
		{"go allocation hits the memory cap", misbehave, RuleOptions{MemoryLimitPages: 256}, "grow", "memory", "memory cap of 256 pages"},
		{"invalid extension name is a decode error", misbehave, RuleOptions{}, "bad-mutation", "decode", `mutation 0 (op 3) "Not_Valid!"`},
		{"memory.grow loop hits the cap", tinyRule(1, cat(growUntilFull, opUnreachable)).bytes(), RuleOptions{MemoryLimitPages: 16}, "", "memory", "memory cap of 16 pages"},
		{"unreachable is a trap", tinyRule(1, opUnreachable).bytes(), RuleOptions{}, "", "trap", "unreachable"},
		{"wasm loop hits the timeout", tinyRule(1, cat(loopForever, opUnreachable)).bytes(), RuleOptions{Timeout: 100 * time.Millisecond}, "", "timeout", "exceeded"},
		{"truncated decision", garbage.bytes(), RuleOptions{}, "", "decode", "truncated"},
		{"unknown action", badAction.bytes(), RuleOptions{}, "", "decode", "unknown action"},
		{"decision outside memory", outside.bytes(), RuleOptions{}, "", "decode", "outside memory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Name = "failing"
			tt.opts.PoolSize = 1
			r := h.load(t, tt.wasm, tt.opts)
			start := time.Now()
			_, err := r.Decide(context.Background(), newEvent(tt.typ))
			took := time.Since(start)
			var re *engine.RuleError
			if !errors.As(err, &re) {
				t.Fatalf("Decide error = %v, want *engine.RuleError", err)
			}
			if re.Kind == "timeout" && took < tt.opts.Timeout {
				t.Errorf("the call was stopped after %v, before its timeout of %v", took, tt.opts.Timeout)
			}
			if re.Kind != tt.kind {
				t.Errorf("kind = %q, want %q (error: %v)", re.Kind, tt.kind, err)
			}
			if !strings.Contains(err.Error(), tt.inError) {
				t.Errorf("error %q does not contain %q", err, tt.inError)
			}
			if g := r.gauge(); g != 0 {
				t.Errorf("instances = %v after the failure, want 0 (the instance is discarded)", g)
			}
			labels := map[string]string{"rule": "failing", "version": r.Version(), "kind": tt.kind}
			if n := testutil.Metric(t, h.reg, "turnout_rule_errors_total", labels); n != 1 {
				t.Errorf("turnout_rule_errors_total{kind=%q} = %v, want 1", tt.kind, n)
			}
			// The rule keeps serving with a fresh instance.
			okType := "ok"
			d, err := r.Decide(context.Background(), newEvent(okType))
			if tt.typ == "" { // tiny modules fail on every call: the point is a fresh instance
				if err == nil {
					t.Fatalf("tiny failing module succeeded on the second call: %+v", d)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decide after the failure: %v", err)
			}
			if d.Action != engine.ActionRoute || !reflect.DeepEqual(d.Outputs, []string{"ok"}) {
				t.Errorf("decision after the failure = %v %v, want route [ok]", d.Action, d.Outputs)
			}
			if g := r.gauge(); g != 1 {
				t.Errorf("instances = %v, want 1", g)
			}
		})
	}
}

func TestDecisions(t *testing.T) {
	h := newTestHost(t)
	r := h.load(t, buildRule(t, "hostabi/testdata/misbehave"), RuleOptions{Name: "m", Config: []byte(`{"outputs":["a","b"]}`)})
	t.Run("route uses the configured outputs", func(t *testing.T) {
		d, err := r.Decide(context.Background(), newEvent("other"))
		if err != nil || d.Action != engine.ActionRoute || !reflect.DeepEqual(d.Outputs, []string{"a", "b"}) || d.Event != nil {
			t.Fatalf("Decide = %+v, %v; want route [a b] with the event unchanged", d, err)
		}
	})
	t.Run("fail carries the reason", func(t *testing.T) {
		d, err := r.Decide(context.Background(), newEvent("fail"))
		if err != nil || d.Action != engine.ActionFail || d.Reason != "asked to fail" {
			t.Fatalf("Decide = %+v, %v; want fail with reason", d, err)
		}
	})
	t.Run("drop", func(t *testing.T) {
		d, err := r.Decide(context.Background(), newEvent("drop"))
		if err != nil || d.Action != engine.ActionDrop {
			t.Fatalf("Decide = %+v, %v; want drop", d, err)
		}
	})
	t.Run("mutations apply to a copy", func(t *testing.T) {
		in := newEvent("mutate")
		in.SetSubject("original")
		if err := in.SetData("application/json", []byte(`{"x":1}`)); err != nil {
			t.Fatal(err)
		}
		d, err := r.Decide(context.Background(), in)
		if err != nil || d.Event == nil {
			t.Fatalf("Decide = %+v, %v; want a mutated event", d, err)
		}
		out := d.Event
		if got := out.Extensions()["seen"]; got != "yes" {
			t.Errorf("extension seen = %v, want yes", got)
		}
		if out.Subject() != "mutated" || string(out.Data()) != `{"mutated":true}` || out.DataContentType() != "application/json" {
			t.Errorf("mutated event subject=%q data=%s contenttype=%q", out.Subject(), out.Data(), out.DataContentType())
		}
		if in.Subject() != "original" || string(in.Data()) != `{"x":1}` || len(in.Extensions()) != 0 {
			t.Errorf("input event was modified: %v", in)
		}
	})
}

func TestLogRateLimited(t *testing.T) {
	h := newTestHost(t)
	r := h.load(t, buildRule(t, "hostabi/testdata/misbehave"), RuleOptions{Name: "chatty", PoolSize: 1})
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r.logLimit.mu.Lock()
	r.logLimit.now = func() time.Time { return clock }
	r.logLimit.mu.Unlock()
	if _, err := r.Decide(context.Background(), newEvent("log")); err != nil {
		t.Fatal(err)
	}
	lines := func() []string {
		var out []string
		for _, l := range strings.Split(h.logs.String(), "\n") {
			if strings.Contains(l, "misbehave log line") {
				out = append(out, l)
			}
		}
		return out
	}
	first := lines()
	if len(first) != 20 {
		t.Fatalf("%d lines logged for 100 written in one burst, want the burst of 20", len(first))
	}
	want := fmt.Sprintf("level=WARN msg=\"misbehave log line from id-1\" rule=chatty version=%s", r.Version())
	if !strings.Contains(first[0], want) {
		t.Errorf("log line %q\ndoes not contain %q", first[0], want)
	}
	// One second later the bucket holds 10 tokens; the first line reports the 80 suppressed.
	r.logLimit.mu.Lock()
	clock = clock.Add(time.Second)
	r.logLimit.mu.Unlock()
	if _, err := r.Decide(context.Background(), newEvent("log")); err != nil {
		t.Fatal(err)
	}
	all := lines()
	if len(all) != 30 {
		t.Fatalf("%d lines after the refill, want 20 + 10", len(all))
	}
	if !strings.Contains(all[20], "suppressed_lines=80") {
		t.Errorf("first line after the refill %q does not report suppressed_lines=80", all[20])
	}
}

// TestHammer runs many concurrent calls (run with -race) and checks every decision and the pool
// bound.
func TestHammer(t *testing.T) {
	h := newTestHost(t)
	const pool = 3
	r := h.load(t, buildRule(t, "hostabi/testdata/misbehave"), RuleOptions{Name: "hammer", PoolSize: pool})
	var wg sync.WaitGroup
	var maxLive atomic.Int64
	types := []string{"other", "fail", "drop", "mutate", "trap"}
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 60 {
				typ := types[(g+i)%len(types)]
				e := newEvent(typ)
				e.SetID(fmt.Sprintf("g%d-%d", g, i))
				d, err := r.Decide(context.Background(), e)
				if l := int64(len(r.slots)); l > maxLive.Load() {
					maxLive.Store(l)
				}
				switch typ {
				case "other":
					if err != nil || d.Action != engine.ActionRoute {
						t.Errorf("%s: %+v %v", typ, d, err)
					}
				case "fail":
					if err != nil || d.Reason != "asked to fail" {
						t.Errorf("%s: %+v %v", typ, d, err)
					}
				case "drop":
					if err != nil || d.Action != engine.ActionDrop {
						t.Errorf("%s: %+v %v", typ, d, err)
					}
				case "mutate":
					if err != nil || d.Event == nil || d.Event.ID() != e.ID() {
						t.Errorf("%s: %+v %v", typ, d, err)
					}
				case "trap":
					var re *engine.RuleError
					if !errors.As(err, &re) || re.Kind != "trap" {
						t.Errorf("%s: %v, want a trap", typ, err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if maxLive.Load() > pool {
		t.Errorf("%d live instances seen, pool size is %d", maxLive.Load(), pool)
	}
	if g := r.gauge(); g > pool || g < 0 {
		t.Errorf("instances gauge = %v, want 0..%d", g, pool)
	}
	if n := testutil.Metric(t, h.reg, "turnout_rule_calls_total", map[string]string{"rule": "hammer"}); n != 8*60 {
		t.Errorf("turnout_rule_calls_total = %v, want %d", n, 8*60)
	}
	// One call in sampleEvery, chosen at random, is timed: about 60 of the 480 (the bounds are
	// five and a half standard deviations away).
	if n := testutil.Metric(t, h.reg, "turnout_rule_duration_seconds", map[string]string{"rule": "hammer"}); n < 20 || n > 100 {
		t.Errorf("turnout_rule_duration_seconds count = %v, want about %d (one call in %d)", n, 8*60/sampleEvery, sampleEvery)
	}
}

// TestPoolBound checks that a call waits when PoolSize instances are busy and gives up when its
// context ends, without making an extra instance.
func TestPoolBound(t *testing.T) {
	h := newTestHost(t)
	r := h.load(t, buildRule(t, "hostabi/testdata/misbehave"), RuleOptions{Name: "bound", PoolSize: 2, Timeout: 3 * time.Second})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := r.Decide(context.Background(), newEvent("loop"))
			var re *engine.RuleError
			if !errors.As(err, &re) || re.Kind != "timeout" {
				t.Errorf("looping call: %v, want a timeout", err)
			}
		}()
	}
	// Wait until both instances are busy.
	for deadline := time.Now().Add(20 * time.Second); len(r.slots) < 2 || len(r.idle) > 0 || r.hot.Load() != nil; {
		if time.Now().After(deadline) {
			t.Fatal("the two looping calls never held both instances")
		}
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := r.Decide(ctx, newEvent("other"))
	var re *engine.RuleError
	if !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &re) {
		t.Errorf("third call while the pool is busy: %v, want the context's deadline (not a rule error)", err)
	}
	if len(r.slots) != 2 {
		t.Errorf("%d live instances, want the bound 2", len(r.slots))
	}
	wg.Wait()
	if d, err := r.Decide(context.Background(), newEvent("other")); err != nil || d.Action != engine.ActionRoute {
		t.Errorf("call after the loops ended: %+v %v", d, err)
	}
}

// TestPoolGrowsWhenCallsWait checks that a call finding every instance busy waits for one to be
// released rather than making another, and makes another (up to PoolSize) only when the busy one
// is not back within growAfter, which Load sets to how long making the first instance took.
func TestPoolGrowsWhenCallsWait(t *testing.T) {
	tests := []struct {
		name      string
		growAfter time.Duration
		hold      time.Duration // how long the only instance stays busy
		instances float64       // live instances after the call
	}{
		{"instance back before growAfter: reused", 2 * time.Second, 50 * time.Millisecond, 1},
		{"instance busy past growAfter: another made", 10 * time.Millisecond, 500 * time.Millisecond, 2},
	}
	h := newTestHost(t)
	wasm := buildRule(t, "filters/rules/attrroute")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.load(t, wasm, RuleOptions{Name: "grow", PoolSize: 4,
				Config: []byte(`{"filters":[{"attribute":"type","prefix":"care.","outputs":["out"]}]}`)})
			if r.growAfter < minGrowAfter || r.growAfter > 10*time.Second {
				t.Errorf("growAfter %v after Load, want the time the first instance took, at least %v", r.growAfter, minGrowAfter)
			}
			r.growAfter = tt.growAfter
			busy, err := r.acquire(context.Background()) // the instance Load made, now busy
			if err != nil {
				t.Fatal(err)
			}
			released := make(chan struct{})
			time.AfterFunc(tt.hold, func() { r.release(busy); close(released) })
			d, err := r.Decide(context.Background(), newEvent("care.alarm.fall"))
			if err != nil || d.Action != engine.ActionRoute {
				t.Fatalf("Decide: %+v %v", d, err)
			}
			<-released
			if g := r.gauge(); g != tt.instances || float64(len(r.slots)) != tt.instances {
				t.Errorf("%v live instances (gauge %v), want %v", len(r.slots), g, tt.instances)
			}
		})
	}
}

// TestPoolHandoff hammers a pool of one instance from many goroutines: a call that returns its
// instance while others wait must hand it to one of them (the idle slot it would otherwise take
// is invisible to waiters), so every call gets the instance and none waits until its context ends.
func TestPoolHandoff(t *testing.T) {
	h := newTestHost(t)
	r := h.load(t, tinyRule(1, nil).bytes(), RuleOptions{Name: "handoff", PoolSize: 1, Timeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a stranded instance: calls wait this long, then fail
	defer cancel()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				if _, err := r.Decide(ctx, newEvent("x")); err != nil {
					if failed.Add(1) == 1 {
						t.Errorf("Decide: %v", err)
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	if g := r.gauge(); g != 1 {
		t.Errorf("instances = %v, want the one the pool allows", g)
	}
}

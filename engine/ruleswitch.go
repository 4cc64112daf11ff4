package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrSwitchClosed is returned by RuleSwitch.Swap after Close, and (wrapped in a *RuleError of
// kind "closed") by Decide after Close.
var ErrSwitchClosed = errors.New("rule switch closed")

// ErrVersionRetired is returned when a caller uses a RuleVersion it holds no reference on: its
// last reference was released, so it is draining or closed and cannot be activated again.
var ErrVersionRetired = errors.New("rule version retired")

// RuleVersion is one loaded version of a rule, shared by reference: the caller that loaded it,
// every RuleSwitch it is active in, and every Decide call running on it each hold a reference.
// The rule is closed (its Close(ctx) error method called, when it has one) exactly once, when
// the last reference is gone: never while a call runs on it, and never while an owner still
// holds it to activate it again.
//
// Two kinds of references are counted, in one atomic word: owner references (the handle
// NewRuleVersion returns, Retain, a switch's hold on its active version) and call references
// (one per Decide running through a RuleSwitch). A call can only start while an owner holds the
// version; once the owners are gone the version drains and no call starts on it again.
type RuleVersion struct {
	rule Rule
	id   string
	log  *slog.Logger
	// state holds the owner references in the high 32 bits and the running calls in the low 32.
	// It reaches 0 once, after which it never changes: whoever brings it to 0 closes the rule.
	state atomic.Uint64
	done  chan struct{} // closed once the rule is closed; err is set before
	err   error
}

const ownerRef = 1 << 32

// RuleVersionOptions configure NewRuleVersion.
type RuleVersionOptions struct {
	// ID names the version in metrics and logs; empty uses the rule's Version() string when it
	// has one (hostabi rules return their content hash), else "unversioned".
	ID string
	// Logger receives a warning when closing the rule fails on a goroutine no caller waits on
	// (the last call on a retired version closes it); nil discards it.
	Logger *slog.Logger
}

// NewRuleVersion wraps rule and returns it holding one owner reference, which the caller owns:
// it hands it to NewRuleSwitch or Swap, or gives it up with Release.
func NewRuleVersion(rule Rule, o RuleVersionOptions) *RuleVersion {
	id := o.ID
	if id == "" {
		if vr, ok := rule.(interface{ Version() string }); ok {
			id = vr.Version()
		}
	}
	if id == "" {
		id = "unversioned"
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v := &RuleVersion{rule: rule, id: id, log: log, done: make(chan struct{})}
	v.state.Store(ownerRef)
	return v
}

// ID returns the version's identity, as it appears in metrics.
func (v *RuleVersion) ID() string { return v.id }

// Rule returns the wrapped rule. Calling it directly bypasses the reference count: the caller
// must hold a reference for as long as it uses it.
func (v *RuleVersion) Rule() Rule { return v.rule }

// Retain adds an owner reference, to be given up with Release (or handed to Swap). It fails
// with ErrVersionRetired once the last owner reference was released. Safe on any goroutine.
func (v *RuleVersion) Retain() error {
	for {
		s := v.state.Load()
		if s < ownerRef {
			return fmt.Errorf("retain rule version %s: %w", v.id, ErrVersionRetired)
		}
		if v.state.CompareAndSwap(s, s+ownerRef) {
			return nil
		}
	}
}

// Release gives up one owner reference. When it was the last one, the version retires: no new
// call starts on it, Release waits for the calls still running on it to finish, then closes the
// rule and returns Close's error. If ctx ends first Release returns ctx.Err() and the last call
// closes the rule when it finishes (Done and Err tell when, and how). Releasing more references
// than were held returns ErrVersionRetired. Safe on any goroutine.
func (v *RuleVersion) Release(ctx context.Context) error {
	for {
		s := v.state.Load()
		if s < ownerRef {
			return fmt.Errorf("release rule version %s: %w", v.id, ErrVersionRetired)
		}
		n := s - ownerRef
		if !v.state.CompareAndSwap(s, n) {
			continue
		}
		switch {
		case n == 0:
			v.close(ctx)
			return v.err
		case n >= ownerRef:
			return nil // other owners remain
		}
		select { // retired with calls running: the last one closes the rule
		case <-v.done:
			return v.err
		case <-ctx.Done():
			return fmt.Errorf("release rule version %s: calls still running: %w", v.id, ctx.Err())
		}
	}
}

// Done is closed once the rule was closed, after the last reference was released.
func (v *RuleVersion) Done() <-chan struct{} { return v.done }

// Err returns the error the rule's Close returned; it is meaningful once Done is closed.
func (v *RuleVersion) Err() error {
	select {
	case <-v.done:
		return v.err
	default:
		return nil
	}
}

// enter takes a call reference; it fails once the version retired. Lock-free.
func (v *RuleVersion) enter() bool {
	for {
		s := v.state.Load()
		if s < ownerRef {
			return false
		}
		if v.state.CompareAndSwap(s, s+1) {
			return true
		}
	}
}

// exit drops a call reference. The last call on a retired version closes the rule, on a
// goroutine of its own so that the event it decided is not held up by the close.
func (v *RuleVersion) exit() {
	if v.state.Add(^uint64(0)) == 0 {
		go func() {
			v.close(context.Background())
			if v.err != nil {
				v.log.Warn("close retired rule version", "version", v.id, "err", v.err)
			}
		}()
	}
}

// close closes the rule; it runs once, on whichever goroutine brought state to 0.
func (v *RuleVersion) close(ctx context.Context) {
	if rc, ok := v.rule.(interface{ Close(context.Context) error }); ok {
		if err := rc.Close(ctx); err != nil {
			v.err = fmt.Errorf("close rule version %s: %w", v.id, err)
		}
	}
	close(v.done)
}

// decide runs one call on v, holding a call reference for its duration (released even if the
// rule panics, which the engine turns into a rule failure).
func (v *RuleVersion) decide(ctx context.Context, e *event.Event) (Decision, error) {
	defer v.exit()
	return v.rule.Decide(ctx, e)
}

// RuleSwitch is a Rule that runs a route's active RuleVersion and lets it be replaced while the
// route runs (hot swap): each Decide takes a call reference on the version active when it
// starts, decides, and drops it; Swap replaces the active version atomically. Decide never waits
// for a Swap, and Swap never waits for a Decide: no lock is held across a call.
//
// Lifecycle of a version:
//
//   - Provision: the caller loads a rule and wraps it with NewRuleVersion, which returns one
//     owner reference (Retain adds more).
//   - Use: NewRuleSwitch or Swap takes the caller's reference: the switch now owns it, and new
//     Decide calls run on that version from the moment Swap stores it.
//   - Drain: Swap hands the switch's reference on the previous version back to the caller, as
//     its return value. Calls that started on the previous version finish on it; calls that
//     start after Swap returned run on the new one. The caller keeps the handle to roll back
//     (Swap it in again) or gives it up with Release.
//   - Cleanup: when the last owner reference is released and the last call on the version has
//     returned, the rule is closed, exactly once. A version the caller still holds is never
//     closed, so rolling back to it is always possible.
//
// Close retires the switch: it releases the switch's reference on the active version (closing
// it unless the caller holds another reference) and makes Swap fail.
//
// Metrics, on the Registerer given to NewRuleSwitch:
//
//	turnout_rule_active_version{route,version}  1 for the route's active version (the series of
//	                                             a replaced version is deleted)
//	turnout_rule_swaps_total{route}             swaps that changed the active version
//
// Per-version calls, errors and durations are the rule's own metrics (hostabi counts them).
type RuleSwitch struct {
	route string
	cur   atomic.Pointer[RuleVersion] // nil once closed

	// mu serialises Swap and Close, so the metrics follow the order of the swaps. Decide never
	// takes it.
	mu     sync.Mutex
	closed bool
	active *prometheus.GaugeVec
	swaps  prometheus.Counter
}

var _ Rule = (*RuleSwitch)(nil)

// NewRuleSwitch returns the switch of route, running initial, whose owner reference it takes.
// reg receives the metrics; nil uses a private registry. Errors come from registering them.
func NewRuleSwitch(route string, initial *RuleVersion, reg prometheus.Registerer) (*RuleSwitch, error) {
	if initial == nil {
		return nil, fmt.Errorf("rule switch %s: no initial version", route)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	var err error
	active := register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "turnout_rule_active_version",
		Help: "1 for the rule version active on a route."}, []string{"route", "version"}), &err)
	swaps := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turnout_rule_swaps_total",
		Help: "Swaps that changed a route's active rule version."}, []string{"route"}), &err)
	if err != nil {
		return nil, fmt.Errorf("rule switch %s metrics: %w", route, err)
	}
	s := &RuleSwitch{route: route, active: active, swaps: swaps.WithLabelValues(route)}
	s.cur.Store(initial)
	active.WithLabelValues(route, initial.id).Set(1)
	return s, nil
}

// Decide runs the active version's Decide, holding a call reference on it for the duration of
// the call. Lock-free: a concurrent Swap neither blocks it nor is blocked by it. After Close it
// fails with a *RuleError of kind "closed".
func (s *RuleSwitch) Decide(ctx context.Context, e *event.Event) (Decision, error) {
	for {
		v := s.cur.Load()
		if v == nil {
			return Decision{}, &RuleError{Kind: "closed", Err: fmt.Errorf("route %s: %w", s.route, ErrSwitchClosed)}
		}
		// enter fails only if v retired between the Load and now, which means it is no longer
		// active (the switch releases a version only after replacing it): load again.
		if v.enter() {
			return v.decide(ctx, e)
		}
	}
}

// Active returns the identity of the active version ("" once closed).
func (s *RuleSwitch) Active() string {
	if v := s.cur.Load(); v != nil {
		return v.id
	}
	return ""
}

// Swap makes next the active version and returns the previous one. It takes the caller's owner
// reference on next and hands the caller the switch's owner reference on the previous version:
// keep it to roll back (Swap it in again), or Release it to let it drain and close. Swapping in
// the active version changes nothing and hands the caller's reference back (prev == next).
// On error nothing changed and the caller keeps its reference on next: ErrSwitchClosed after
// Close, ErrVersionRetired if next has no owner left. Safe on any goroutine; concurrent swaps
// are serialised, and none waits for a Decide.
func (s *RuleSwitch) Swap(next *RuleVersion) (prev *RuleVersion, err error) {
	if next == nil {
		return nil, fmt.Errorf("rule switch %s: swap to no version", s.route)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("rule switch %s: swap to %s: %w", s.route, next.id, ErrSwitchClosed)
	}
	if next.state.Load() < ownerRef {
		return nil, fmt.Errorf("rule switch %s: swap to %s: %w", s.route, next.id, ErrVersionRetired)
	}
	prev = s.cur.Swap(next)
	if prev == next {
		return prev, nil
	}
	if prev.id != next.id {
		s.active.DeleteLabelValues(s.route, prev.id)
	}
	s.active.WithLabelValues(s.route, next.id).Set(1)
	s.swaps.Inc()
	return prev, nil
}

// Close retires the switch: Decide and Swap fail from now on, and the switch releases its
// reference on the active version, as Release does (waiting, until ctx ends, for its calls to
// finish and returning its Close error when that was the last reference). The engine must have
// stopped calling Decide. A second Close returns nil.
func (s *RuleSwitch) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	v := s.cur.Swap(nil)
	s.active.DeleteLabelValues(s.route, v.id)
	s.mu.Unlock()
	return v.Release(ctx)
}

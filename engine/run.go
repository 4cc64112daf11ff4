package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configure an Engine.
type Options struct {
	// Logger receives the engine's logs; nil discards them.
	Logger *slog.Logger
	// Registerer receives the engine's metrics; nil uses a fresh private registry (never the
	// global one).
	Registerer prometheus.Registerer
	// Tracer observes each delivery's stages (receive, rule, deliver, dead-letter) for
	// distributed tracing; nil traces nothing.
	Tracer Tracer
}

// Engine runs routes: it starts their sinks and sources, processes every dispatched message and
// settles it exactly once (the package invariant), and drains on Shutdown.
//
// AddRoute, Start and Shutdown are called by the owner (the CLI) from one goroutine, in that
// order; Ready may be called from any goroutine at any time.
type Engine struct {
	log     *slog.Logger
	tracer  Tracer
	metrics *metrics
	metErr  error

	// mu guards the lifecycle fields below. Dispatch takes it for reading to register an
	// in-flight message with wg, so that Shutdown's wg.Wait never races a wg.Add.
	mu       sync.RWMutex
	routes   []*route
	names    map[string]bool // route names
	inputs   map[string]string
	sources  map[Source]string // only comparable dynamic types
	started  bool
	closed   bool
	closing  chan struct{} // closed by Shutdown: wakes Dispatch calls blocked on backpressure
	wg       sync.WaitGroup
	ctx      context.Context // processing context, cancelled when the drain deadline passes
	cancel   context.CancelFunc
	shutOnce sync.Once
	shutErr  error
}

// New returns an engine with no routes.
func New(o Options) *Engine {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := o.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg)
	ctx, cancel := context.WithCancel(context.Background())
	return &Engine{
		log: log, tracer: o.Tracer, metrics: m, metErr: err,
		names: map[string]bool{}, inputs: map[string]string{}, sources: map[Source]string{},
		closing: make(chan struct{}), ctx: ctx, cancel: cancel,
	}
}

// AddRoute validates r and adds it. It must be called before Start. Errors name the route and
// the offending input or output.
func (e *Engine) AddRoute(r Route) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.metErr != nil {
		return fmt.Errorf("engine metrics: %w", e.metErr)
	}
	if e.started || e.closed {
		return fmt.Errorf("route %q: AddRoute after Start", r.Config.Name)
	}
	cfg := r.Config.Defaults()
	name := cfg.Name
	if name == "" {
		return errors.New("route: empty name")
	}
	if e.names[name] {
		return fmt.Errorf("route %q: duplicate route name", name)
	}
	if err := validateConfig(cfg); err != nil {
		return fmt.Errorf("route %q: %w", name, err)
	}
	if len(r.Inputs) == 0 {
		return fmt.Errorf("route %q: no inputs", name)
	}
	for in, src := range r.Inputs {
		if src == nil {
			return fmt.Errorf("route %q: input %q is nil", name, in)
		}
		if other, dup := e.inputs[in]; dup {
			return fmt.Errorf("route %q: input %q is already used by route %q", name, in, other)
		}
		if isComparable(src) {
			if other, dup := e.sources[src]; dup {
				return fmt.Errorf("route %q: input %q is the same source as input %q", name, in, other)
			}
		}
	}
	for out, s := range r.Outputs {
		if s == nil {
			return fmt.Errorf("route %q: output %q is nil", name, out)
		}
	}
	if r.Rule == nil && len(cfg.DefaultOutputs) == 0 {
		return fmt.Errorf("route %q: no rule and no default outputs", name)
	}
	for _, out := range cfg.DefaultOutputs {
		if _, ok := r.Outputs[out]; !ok {
			return fmt.Errorf("route %q: default output %q is not an output of the route", name, out)
		}
	}
	rt := newRoute(e, r, cfg)
	// Commit only after every check passed.
	seen := map[Source]string{}
	for in, src := range r.Inputs {
		if isComparable(src) {
			if other, dup := seen[src]; dup {
				return fmt.Errorf("route %q: input %q is the same source as input %q", name, in, other)
			}
			seen[src] = in
		}
	}
	for src, in := range seen {
		e.sources[src] = in
	}
	for in := range r.Inputs {
		e.inputs[in] = name
	}
	e.names[name] = true
	e.routes = append(e.routes, rt)
	return nil
}

func validateConfig(c RouteConfig) error {
	switch c.Mode {
	case AtLeastOnce, BestEffort:
	default:
		return fmt.Errorf("unknown mode %q (want %q or %q)", c.Mode, AtLeastOnce, BestEffort)
	}
	switch c.OnRuleError {
	case FailDeadLetter, FailNack, FailDrop:
	default:
		return fmt.Errorf("unknown on_rule_error %q (want %q, %q or %q)", c.OnRuleError, FailDeadLetter, FailNack, FailDrop)
	}
	if c.Retry.MaxBackoff < c.Retry.InitialBackoff {
		return fmt.Errorf("retry: max_backoff %v is less than initial_backoff %v", c.Retry.MaxBackoff, c.Retry.InitialBackoff)
	}
	return nil
}

// isComparable reports whether v can be a map key (a Source or Sink of a non-comparable dynamic
// type is treated as distinct from every other).
func isComparable(v any) bool { return reflect.TypeOf(v).Comparable() }

// sinks returns every sink of every route (outputs and dead-letter outputs), each once.
// e.mu must be held.
func (e *Engine) sinks() []Sink {
	var out []Sink
	seen := map[Sink]bool{}
	add := func(s Sink) {
		if s == nil {
			return
		}
		if isComparable(s) {
			if seen[s] {
				return
			}
			seen[s] = true
		}
		out = append(out, s)
	}
	for _, r := range e.routes {
		for _, o := range r.outputList {
			add(o.sink)
		}
		if r.dl != nil {
			add(r.dl.sink)
		}
	}
	return out
}

// Start starts every sink implementing Starter (each once, even when several routes share it),
// then every source with its route's Dispatcher. Processing runs under a context derived from
// ctx (its values, not its cancellation) and cancelled by Shutdown when the drain deadline
// passes. On error the caller calls Shutdown, which closes everything.
func (e *Engine) Start(ctx context.Context) error {
	e.mu.Lock()
	if e.started || e.closed {
		e.mu.Unlock()
		return errors.New("engine: Start called twice or after Shutdown")
	}
	e.started = true
	e.ctx, e.cancel = context.WithCancel(context.WithoutCancel(ctx))
	sinks := e.sinks()
	routes := e.routes
	e.mu.Unlock()

	for _, s := range sinks {
		if st, ok := s.(Starter); ok {
			if err := st.Start(ctx); err != nil {
				return fmt.Errorf("start output %s: %w", e.sinkName(s), err)
			}
		}
	}
	for _, r := range routes {
		for _, in := range r.inputs {
			if err := in.src.Start(ctx, in); err != nil {
				return fmt.Errorf("route %s: start input %s: %w", r.name, in.name, err)
			}
		}
	}
	e.log.Info("engine started", "routes", len(routes), "outputs", len(sinks))
	return nil
}

// sinkName names s for errors: the first output name it has in any route.
func (e *Engine) sinkName(s Sink) string {
	for _, r := range e.routes {
		for _, o := range r.outputList {
			if o.sink == s {
				return o.name
			}
		}
		if r.dl != nil && r.dl.sink == s {
			return r.dl.name
		}
	}
	return "?"
}

// Shutdown stops taking input (Dispatch returns ErrClosed; sources are closed, concurrently
// with the drain), lets in-flight deliveries finish until ctx is done, then cancels the rest,
// which settle with a nack (reason shutdown), and finally closes every sink. When Shutdown
// returns, every message Dispatch accepted has been settled exactly once. It relies on Sink.Send
// and Rule.Decide returning once their context ends. A second call returns the first call's
// result. The error reports a drain cut short by ctx and any Close failure.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.shutOnce.Do(func() { e.shutErr = e.shutdown(ctx) })
	return e.shutErr
}

// sinkCloseTimeout bounds closing the sinks after a drain that used up its deadline.
const sinkCloseTimeout = 5 * time.Second

func (e *Engine) shutdown(ctx context.Context) error {
	e.mu.Lock()
	e.closed = true
	close(e.closing)
	routes := e.routes
	sinks := e.sinks()
	e.mu.Unlock()

	// Sources close concurrently with each other and with the drain: a Source's Close may wait
	// for its own in-flight messages to be settled (an HTTP server waiting for its handlers).
	var (
		errs    []error
		errMu   sync.Mutex
		closers sync.WaitGroup
	)
	for _, r := range routes {
		for _, in := range r.inputs {
			closers.Go(func() {
				if err := in.src.Close(ctx); err != nil {
					errMu.Lock()
					errs = append(errs, fmt.Errorf("route %s: close input %s: %w", r.name, in.name, err))
					errMu.Unlock()
				}
			})
		}
	}

	drained := make(chan struct{})
	go func() { e.wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-ctx.Done():
		e.log.Warn("drain deadline passed: cancelling in-flight deliveries, they will be nacked")
		e.cancel()
		// Sink.Send and Rule.Decide must return once their context ends; say so loudly if one
		// does not, as its messages cannot be settled until it does.
		for waiting := true; waiting; {
			select {
			case <-drained:
				waiting = false
			case <-time.After(5 * time.Second):
				e.log.Error("deliveries still running after cancellation: an output or rule ignores its context",
					"in_flight", e.inFlight(routes))
			}
		}
		errMu.Lock()
		errs = append(errs, fmt.Errorf("engine drain: in-flight deliveries cancelled and nacked: %w", ctx.Err()))
		errMu.Unlock()
	}
	e.cancel()
	closers.Wait()

	// Every delivery has returned, so the sinks hold nothing unconfirmed; still, a drain that
	// used up ctx must not deny them the moment they need to close their connections cleanly.
	closeCtx := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		closeCtx, cancel = context.WithTimeout(context.WithoutCancel(ctx), sinkCloseTimeout)
		defer cancel()
	}
	for _, s := range sinks {
		if err := s.Close(closeCtx); err != nil {
			errs = append(errs, fmt.Errorf("close output %s: %w", e.sinkName(s), err))
		}
	}
	e.log.Info("engine stopped")
	return errors.Join(errs...)
}

// inFlight counts the deliveries holding a slot.
func (e *Engine) inFlight(routes []*route) int {
	n := 0
	for _, r := range routes {
		for _, in := range r.inputs {
			n += len(in.sem)
		}
	}
	return n
}

// Ready reports whether the engine is running (started, not shut down) and every source and
// sink implementing Readier is ready. Safe for concurrent use.
func (e *Engine) Ready() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if !e.started || e.closed {
		return false
	}
	for _, r := range e.routes {
		for _, in := range r.inputs {
			if rd, ok := in.src.(Readier); ok && !rd.Ready() {
				return false
			}
		}
	}
	for _, s := range e.sinks() {
		if rd, ok := s.(Readier); ok && !rd.Ready() {
			return false
		}
	}
	return true
}

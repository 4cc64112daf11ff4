// Package hostabi runs turnout rules: WebAssembly modules speaking rule ABI v1 (ABI.md in this
// directory) on the wazero runtime. A *Rule implements engine.Rule.
//
// Invariant: a rule instance serves one call at a time and is never shared; an instance that
// trapped, timed out, hit its memory cap or returned an undecodable decision is discarded, never
// reused, and a fresh one is made on demand. A rule never has more than RuleOptions.PoolSize live
// instances. A module is compiled once per version (in memory, and on disk when a cache directory
// is set) and shared by the rules loaded from it with the same runtime settings; instances are
// initialised once, with their rule's configuration, before their first call.
package hostabi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tetratelabs/wazero"
)

// Options configure a Host.
type Options struct {
	// CacheDir, when non-empty, keeps compiled modules on disk so a restart does not recompile.
	CacheDir string
	// Logger receives rule logs and host events; nil discards them.
	Logger *slog.Logger
	// Registerer receives the turnout_rule_* metrics; nil registers them on a private registry.
	Registerer prometheus.Registerer
}

// Host loads rules. It is safe for concurrent use. Close it after closing every Rule it loaded.
type Host struct {
	cache  wazero.CompilationCache
	logger *slog.Logger
	m      *metrics

	mu      sync.Mutex
	modules map[moduleKey]*module // shared by the Rules holding them (module.go)
}

type metrics struct {
	calls     *prometheus.CounterVec
	errors    *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	instances *prometheus.GaugeVec
}

// NewHost makes a host. It fails when the compilation cache directory cannot be used or the
// metrics cannot be registered. Called once at start-up; ctx is not retained.
func NewHost(_ context.Context, o Options) (*Host, error) {
	h := &Host{logger: o.Logger, modules: map[moduleKey]*module{}}
	if h.logger == nil {
		h.logger = slog.New(slog.DiscardHandler)
	}
	if o.CacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(o.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("hostabi compilation cache %s: %w", o.CacheDir, err)
		}
		h.cache = c
	} else {
		h.cache = wazero.NewCompilationCache()
	}
	reg := o.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	var err error
	h.m = &metrics{}
	labels := []string{"rule", "version"}
	if h.m.calls, err = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "turnout_rule_calls_total", Help: "Rule decisions requested.",
	}, labels)); err != nil {
		return nil, err
	}
	if h.m.errors, err = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "turnout_rule_errors_total", Help: "Rule calls that failed, by kind (trap, timeout, memory, decode, init).",
	}, append(labels, "kind"))); err != nil {
		return nil, err
	}
	if h.m.duration, err = register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "turnout_rule_duration_seconds",
		Help:    "Time a rule call took, including event encoding and decision decoding; observed for one call in 8, chosen at random (count calls with turnout_rule_calls_total).",
		Buckets: []float64{1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2, 0.1, 1},
	}, labels)); err != nil {
		return nil, err
	}
	if h.m.instances, err = register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "turnout_rule_instances", Help: "Live rule instances (idle and busy).",
	}, labels)); err != nil {
		return nil, err
	}
	return h, nil
}

// register registers c, or returns the identical collector already registered (two hosts on one
// registry share the metric families).
func register[T prometheus.Collector](reg prometheus.Registerer, c T) (T, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if ex, ok := are.ExistingCollector.(T); ok {
				return ex, nil
			}
		}
		return c, fmt.Errorf("hostabi register metrics: %w", err)
	}
	return c, nil
}

// Close closes the runtimes of rules still open and releases the compilation cache (the on-disk
// cache stays for the next start).
func (h *Host) Close(ctx context.Context) error {
	h.mu.Lock()
	open := h.modules
	h.modules = map[moduleKey]*module{}
	h.mu.Unlock()
	for _, m := range open {
		_ = m.rt.Close(ctx)
	}
	if err := h.cache.Close(ctx); err != nil {
		return fmt.Errorf("hostabi close compilation cache: %w", err)
	}
	return nil
}

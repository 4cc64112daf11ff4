package hostabi

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/turnout-router/turnout/hostabi/internal/guard"
)

// module is a compiled rule module in a wazero runtime of its own, with the WASI and "turnout"
// host modules instantiated in it. The Host shares one module between every Rule it loaded from
// the same bytes with the same memory cap and CPU guard (the runtime's settings): several routes
// running the same stock rule with their own configurations decode and compile it once. wazero
// keeps the decoded module (a Go guest's code and data, about 3.5 MiB for a 2 MB module) for as
// long as the compiled module lives, so a copy per route cost 70 MiB for 20 routes.
//
// The host functions are shared too; they find the calling rule through the instance that calls
// them (rules). A module lives while a Rule holds it (refs, guarded by Host.mu) and its runtime is
// closed with the last one.
type module struct {
	key      moduleKey
	rt       wazero.Runtime
	compiled wazero.CompiledModule
	refs     int      // Rules holding the module; Host.mu
	rules    sync.Map // api.Module (a live guest instance) -> *Rule
}

// moduleKey is what makes two loads share a module: the bytes and the runtime's settings.
type moduleKey struct {
	sum   [sha256.Size]byte
	limit uint32 // memory cap, pages
	guard bool   // the CPU guard is on: the module is compiled instrumented (internal/guard)
}

// module returns the shared module for key, compiling wasm into a new runtime when no Rule holds
// one, and takes a reference the caller gives back with releaseModule. Its error is the
// compiler's, unwrapped, for Load to classify, or a *LoadError (init_failed) when the host
// modules cannot be instantiated.
func (h *Host) module(ctx context.Context, key moduleKey, wasm []byte) (*module, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if m, ok := h.modules[key]; ok {
		m.refs++
		return m, nil
	}
	if key.guard {
		// The CPU guard: checks of an interrupt flag at every function entry and loop head,
		// which the rule's watchdog raises when a call overruns (watchdog.go). It replaces
		// wazero's close-on-context-done, whose goroutine and timer per call cost 7 µs.
		var err error
		if wasm, err = guard.Instrument(wasm); err != nil {
			return nil, err
		}
	}
	cfg := wazero.NewRuntimeConfigCompiler().
		WithCompilationCache(h.cache).
		WithMemoryLimitPages(key.limit)
	m := &module{key: key, rt: wazero.NewRuntimeWithConfig(ctx, cfg)}
	var err error
	if m.compiled, err = m.rt.CompileModule(ctx, wasm); err != nil {
		_ = m.rt.Close(context.Background())
		return nil, err
	}
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, m.rt); err != nil {
		_ = m.rt.Close(context.Background())
		return nil, &LoadError{Code: CodeInitFailed, Detail: fmt.Sprintf("instantiate WASI: %v", err)}
	}
	if err := m.instantiateHostModule(ctx); err != nil {
		_ = m.rt.Close(context.Background())
		return nil, &LoadError{Code: CodeInitFailed, Detail: fmt.Sprintf("instantiate host module: %v", err)}
	}
	m.refs = 1
	h.modules[key] = m
	return m, nil
}

// releaseModule gives back a reference taken by module, closing the runtime with the last one.
func (h *Host) releaseModule(ctx context.Context, m *module) error {
	h.mu.Lock()
	m.refs--
	last := m.refs == 0
	if last {
		delete(h.modules, m.key)
	}
	h.mu.Unlock()
	if !last {
		return nil
	}
	return m.rt.Close(ctx)
}

// instantiateHostModule provides the "turnout" import module (ABI.md, "Host functions") to every
// instance in the runtime; each call is served for the rule whose instance made it.
func (m *module) instantiateHostModule(ctx context.Context) error {
	b := m.rt.NewHostModuleBuilder("turnout")
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, caller api.Module, stack []uint64) {
			if r := m.ruleOf(caller); r != nil {
				r.hostLog(ctx, caller, stack)
			}
		}), []api.ValueType{i32, i32, i32}, nil).
		WithParameterNames("level", "ptr", "len").Export("log")
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(func(_ context.Context, caller api.Module, stack []uint64) {
			var now int64
			if r := m.ruleOf(caller); r != nil && r.allowClock {
				now = time.Now().UnixNano()
			}
			stack[0] = uint64(now)
		}), nil, []api.ValueType{i64}).Export("now_unix_nano")
	_, err := b.Instantiate(ctx)
	return err
}

// ruleOf returns the rule whose instance caller is, or nil for an instance already closed.
func (m *module) ruleOf(caller api.Module) *Rule {
	if r, ok := m.rules.Load(caller); ok {
		return r.(*Rule)
	}
	return nil
}

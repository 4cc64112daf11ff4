package hostabi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/hostabi/internal/guard"
	"github.com/turnout-router/turnout/hostabi/wire"
)

// DefaultMemoryLimitPages is the per-instance memory cap when RuleOptions leaves it 0 (32 MiB).
const DefaultMemoryLimitPages = 512

// RuleOptions configure one loaded rule.
type RuleOptions struct {
	// Name labels the rule in logs and metrics.
	Name string
	// Config is handed to the rule's turnout_init export once per instance (JSON by convention).
	Config []byte
	// MemoryLimitPages caps each instance's linear memory, in 64 KiB pages; 0 means
	// DefaultMemoryLimitPages. A module whose declared minimum exceeds it is refused.
	MemoryLimitPages uint32
	// Timeout bounds one call; 0 disables the guard. The guard makes every call slower (the
	// runtime checks the context at every loop back-edge), so it is opt-in.
	Timeout time.Duration
	// PoolSize is the maximum number of live instances; 0 means runtime.GOMAXPROCS(0).
	PoolSize int
	// AllowClock grants the rule the real clock: turnout.now_unix_nano and WASI clock_time_get
	// return real time. Without it the import turnout.now_unix_nano is refused and the WASI
	// clocks are deterministic fakes, so a rule's decisions depend only on its input.
	AllowClock bool
}

// Rule is a loaded rule module. It implements engine.Rule and is safe for concurrent use: every
// Decide call takes its own instance from a bounded pool.
type Rule struct {
	name, version string
	config        []byte
	limit         uint32
	timeout       time.Duration
	allowClock    bool
	logger        *slog.Logger
	host          *Host
	mod           *module // shared with the Host's other rules of the same bytes and settings
	compiled      wazero.CompiledModule
	hasInit       bool
	hasInitialize bool
	abiVersion    int32
	hot           atomic.Pointer[instance] // the last released instance: acquire tries it first
	idle          chan *instance           // the other idle instances
	waiting       atomic.Int32             // calls in acquire past the hot slot
	slots         chan struct{}            // one token per live instance
	growAfter     time.Duration            // how long a call waits for a busy instance before making one (minGrowAfter)
	logLimit      tokenBucket

	calls     prometheus.Counter
	errs      map[string]prometheus.Counter
	duration  prometheus.Observer
	instances prometheus.Gauge

	mu        sync.Mutex
	live      map[*instance]struct{} // every live instance, idle or busy; mu
	closed    bool                   // mu
	stopWatch chan struct{}          // closed to stop the watchdog; nil without a timeout
}

var _ engine.Rule = (*Rule)(nil)

// Name returns the rule's name as given in RuleOptions.
func (r *Rule) Name() string { return r.name }

// Version returns the first 12 hex digits of the module's SHA-256: the version in logs and metrics.
func (r *Rule) Version() string { return r.version }

// ABIVersion returns the rule ABI version the module reports (turnout_abi_version).
func (r *Rule) ABIVersion() int { return int(r.abiVersion) }

// Exports returns the names of the module's exports (functions and memories), sorted.
func (r *Rule) Exports() []string {
	var names []string
	for n := range r.compiled.ExportedFunctions() {
		names = append(names, n)
	}
	for n := range r.compiled.ExportedMemories() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// The imports a module may declare. WASI functions are the subset Go's wasip1 port needs;
// with no preopened directories, arguments, environment or sockets, they reach nothing outside
// the instance.
var allowedImports = map[string]map[string]bool{
	"turnout": {"log": true, "now_unix_nano": true},
	wasi_snapshot_preview1.ModuleName: {
		"args_get": true, "args_sizes_get": true, "environ_get": true, "environ_sizes_get": true,
		"clock_time_get": true, "clock_res_get": true, "random_get": true, "proc_exit": true,
		"sched_yield": true, "poll_oneoff": true, "fd_write": true, "fd_read": true, "fd_close": true,
		"fd_seek": true, "fd_fdstat_get": true, "fd_fdstat_set_flags": true,
		"fd_prestat_get": true, "fd_prestat_dir_name": true,
	},
}

type sig struct {
	params, results []api.ValueType
}

func (s sig) String() string { return sigString(s.params, s.results) }

func sigString(p, r []api.ValueType) string {
	name := func(ts []api.ValueType) string {
		var b []string
		for _, t := range ts {
			b = append(b, api.ValueTypeName(t))
		}
		return "(" + strings.Join(b, ", ") + ")"
	}
	return name(p) + " -> " + name(r)
}

var (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
	// requiredExports are the functions every rule exports (ABI.md, "Exports").
	requiredExports = map[string]sig{
		"turnout_abi_version": {nil, []api.ValueType{i32}},
		"turnout_buffer":      {[]api.ValueType{i32}, []api.ValueType{i32}},
		"turnout_decide":      {[]api.ValueType{i32}, []api.ValueType{i64}},
	}
	optionalExports = map[string]sig{
		"turnout_init": {[]api.ValueType{i32}, []api.ValueType{i64}},
		"_initialize":  {nil, nil},
	}
)

// Load validates, compiles and instantiates a rule module and initialises one instance with
// o.Config, so a bad module or configuration is refused here, with an error naming the problem:
// not WebAssembly, a compile failure, a memory minimum above the cap, an import outside the
// allowed set, a missing or mistyped export, an ABI version this host does not speak, or the
// rule's init refusing its configuration. Every such error wraps a *LoadError whose Code names
// the failure (CodeNotWasm ... CodeInitFailed); the message is "hostabi load rule NAME (version
// V): DETAIL". Called at configuration time, from any goroutine.
func (h *Host) Load(ctx context.Context, wasm []byte, o RuleOptions) (*Rule, error) {
	sum := sha256.Sum256(wasm)
	r := &Rule{
		name:       o.Name,
		version:    hex.EncodeToString(sum[:])[:12],
		config:     bytes.Clone(o.Config),
		limit:      o.MemoryLimitPages,
		timeout:    o.Timeout,
		allowClock: o.AllowClock,
		host:       h,
		live:       map[*instance]struct{}{},
	}
	if r.name == "" {
		r.name = "rule"
	}
	if r.limit == 0 {
		r.limit = DefaultMemoryLimitPages
	}
	pool := o.PoolSize
	if pool <= 0 {
		pool = runtime.GOMAXPROCS(0)
	}
	fail := func(code, format string, args ...any) error {
		return r.loadError(&LoadError{Code: code, Detail: fmt.Sprintf(format, args...)})
	}
	if len(wasm) < 8 || string(wasm[:4]) != "\x00asm" {
		return nil, fail(CodeNotWasm, "not a WebAssembly module (no \\0asm magic)")
	}
	if v := wasm[4:8]; !bytes.Equal(v, []byte{1, 0, 0, 0}) {
		return nil, fail(CodeNotWasm, "not a WebAssembly core module (binary version % x, want 01 00 00 00)", v)
	}
	r.logger = h.logger.With("rule", r.name, "version", r.version)
	r.logLimit = tokenBucket{rate: 10, burst: 20, tokens: 20, now: time.Now}

	m, err := h.module(ctx, moduleKey{sum: sum, limit: r.limit, guard: r.timeout > 0}, wasm)
	if err != nil {
		var le *LoadError
		switch {
		case errors.As(err, &le):
			return nil, r.loadError(le)
		case strings.Contains(err.Error(), "over limit of"):
			return nil, fail(CodeMemoryMinAboveCap, "memory minimum above the cap of %d pages: %v", r.limit, err)
		}
		return nil, fail(CodeCompile, "compile: %v", err)
	}
	r.mod, r.compiled = m, m.compiled
	ok := false
	defer func() {
		if !ok {
			r.closeInstances()
			_ = h.releaseModule(context.Background(), m)
		}
	}()
	if err := checkImports(r.compiled, o.AllowClock); err != nil {
		return nil, fail(CodeImportNotAllowed, "%v", err)
	}
	if err := r.checkExports(r.compiled); err != nil {
		return nil, fail(CodeExportMissing, "%v", err)
	}
	if !r.hasInit && len(bytes.TrimSpace(o.Config)) > 0 {
		return nil, fail(CodeInitFailed, "a configuration was given but the module exports no turnout_init")
	}

	r.idle = make(chan *instance, pool)
	r.slots = make(chan struct{}, pool)
	r.slots <- struct{}{}
	made := time.Now()
	inst, err := r.newInstance(ctx)
	if err != nil {
		return nil, r.loadError(err)
	}
	r.growAfter = max(minGrowAfter, time.Since(made))
	// Metric series exist only for rules that loaded.
	labels := prometheus.Labels{"rule": r.name, "version": r.version}
	r.calls = h.m.calls.With(labels)
	r.duration = h.m.duration.With(labels)
	r.instances = h.m.instances.With(labels)
	r.errs = map[string]prometheus.Counter{}
	for _, k := range []string{"trap", "timeout", "memory", "decode", "init"} {
		r.errs[k] = h.m.errors.WithLabelValues(r.name, r.version, k)
	}
	r.abiVersion = inst.abi
	r.instances.Inc()
	r.hot.Store(inst)
	if r.timeout > 0 {
		r.stopWatch = make(chan struct{})
		go r.watch(r.stopWatch)
	}
	ok = true
	r.logger.Debug("rule loaded", "pool", pool, "memory_limit_pages", r.limit, "timeout", r.timeout, "grow_after", r.growAfter)
	return r, nil
}

// loadError wraps a refusal with the rule's name and version; err is (or wraps) a *LoadError.
func (r *Rule) loadError(err error) error {
	return fmt.Errorf("hostabi load rule %s (version %s): %w", r.name, r.version, err)
}

func checkImports(c wazero.CompiledModule, allowClock bool) error {
	var bad []string
	for _, f := range c.ImportedFunctions() {
		mod, name, _ := f.Import()
		switch {
		case !allowedImports[mod][name]:
			bad = append(bad, mod+"."+name)
		case mod == "turnout" && name == "now_unix_nano" && !allowClock:
			bad = append(bad, mod+"."+name+" (the clock is not granted to this rule)")
		}
	}
	for _, m := range c.ImportedMemories() {
		mod, name, _ := m.Import()
		bad = append(bad, mod+"."+name+" (memory)")
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("imports outside the allowed set (the \"turnout\" host module and WASI without filesystem, network or environment): %s", strings.Join(bad, ", "))
	}
	return nil
}

func (r *Rule) checkExports(c wazero.CompiledModule) error {
	fns := c.ExportedFunctions()
	var problems []string
	check := func(name string, want sig, required bool) bool {
		f, ok := fns[name]
		if !ok {
			if required {
				problems = append(problems, "missing export "+name+" "+want.String())
			}
			return false
		}
		if got := sigString(f.ParamTypes(), f.ResultTypes()); got != want.String() {
			problems = append(problems, fmt.Sprintf("export %s has type %s, want %s", name, got, want))
			return false
		}
		return true
	}
	names := make([]string, 0, len(requiredExports))
	for n := range requiredExports {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		check(n, requiredExports[n], true)
	}
	r.hasInit = check("turnout_init", optionalExports["turnout_init"], false)
	r.hasInitialize = check("_initialize", optionalExports["_initialize"], false)
	if _, ok := c.ExportedMemories()["memory"]; !ok {
		problems = append(problems, "missing export memory (the module's linear memory)")
	}
	if len(problems) > 0 {
		if _, ok := fns["turnout_abi_version"]; !ok {
			problems = append([]string{"no ABI marker (turnout_abi_version): not a turnout rule"}, problems...)
		}
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// maxLogLine bounds one rule log line; longer lines are truncated.
const maxLogLine = 4096

// hostLog implements turnout.log(level i32, ptr i32, len i32). It runs on the calling
// goroutine, inside a Decide or init call.
func (r *Rule) hostLog(ctx context.Context, m api.Module, stack []uint64) {
	level, ptr, n := int32(stack[0]), uint32(stack[1]), uint32(stack[2])
	truncated := false
	if n > maxLogLine {
		n, truncated = maxLogLine, true
	}
	b, ok := m.Memory().Read(ptr, n)
	if !ok {
		return
	}
	allowed, suppressed := r.logLimit.take()
	if !allowed {
		return
	}
	attrs := make([]slog.Attr, 0, 2)
	if suppressed > 0 {
		attrs = append(attrs, slog.Int64("suppressed_lines", suppressed))
	}
	if truncated {
		attrs = append(attrs, slog.Bool("truncated", true))
	}
	r.logger.LogAttrs(ctx, slog.Level(level), string(b), attrs...)
}

// tokenBucket rate-limits rule log lines and counts the ones it refused.
type tokenBucket struct {
	mu          sync.Mutex
	rate, burst float64
	tokens      float64
	last        time.Time
	suppressed  int64
	now         func() time.Time // time.Now; tests substitute a fake clock
}

// take reports whether a line may be logged now and, if so, how many lines were suppressed since
// the last logged one.
func (b *tokenBucket) take() (bool, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	if !b.last.IsZero() {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		b.suppressed++
		return false, 0
	}
	b.tokens--
	s := b.suppressed
	b.suppressed = 0
	return true, s
}

// newInstance instantiates and initialises one instance. The caller holds a slot token. Its
// errors are *LoadError: abi_version_unknown, or init_failed for everything else.
func (r *Rule) newInstance(ctx context.Context) (*instance, error) {
	out := &capture{}
	mc := wazero.NewModuleConfig().WithName("").WithStartFunctions().
		WithStdout(out).WithStderr(out).WithRandSource(rand.Reader)
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return nil, &LoadError{Code: CodeInitFailed, Detail: "the rule is closed"}
	}
	mod, err := r.mod.rt.InstantiateModule(ctx, r.compiled, mc)
	if err != nil {
		return nil, &LoadError{Code: CodeInitFailed, Detail: fmt.Sprintf("instantiate: %v%s", err, out.suffix())}
	}
	r.mod.rules.Store(mod, r) // before _initialize and init, which may log
	inst := &instance{
		mod:      mod,
		mem:      mod.ExportedMemory("memory"),
		fnBuffer: mod.ExportedFunction("turnout_buffer"),
		fnDecide: mod.ExportedFunction("turnout_decide"),
		out:      out,
		outputs:  map[string][]string{},
		sample:   mrand.Uint32() | 1,
	}
	fail := func(code, format string, args ...any) (*instance, error) {
		r.mod.rules.Delete(mod)
		_ = mod.Close(context.Background())
		return nil, &LoadError{Code: code, Detail: fmt.Sprintf(format+"%s", append(args, out.suffix())...)}
	}
	var stopInit func() bool
	if r.timeout > 0 {
		g, ok := mod.ExportedGlobal(guard.Export).(api.MutableGlobal)
		if !ok {
			return fail(CodeInitFailed, "the instrumented module lacks its interrupt global %s", guard.Export)
		}
		inst.interrupt = g
		// Starting is not timed (a Go guest's runtime takes milliseconds), but ctx ending stops
		// it, as a cancelled Load or shutdown expects.
		stopInit = context.AfterFunc(ctx, func() { g.Set(1) })
		defer stopInit()
	}
	if r.hasInitialize {
		if _, err := mod.ExportedFunction("_initialize").Call(ctx); err != nil {
			return fail(CodeInitFailed, "_initialize: %v", err)
		}
	}
	res, err := mod.ExportedFunction("turnout_abi_version").Call(ctx)
	if err != nil {
		return fail(CodeInitFailed, "turnout_abi_version: %v", err)
	}
	v := int32(res[0])
	inst.abi = v
	switch {
	case v > wire.Version:
		return fail(CodeABIVersionUnknown, "module speaks rule ABI v%d, newer than this host's v%d: upgrade turnout or build the rule against an older SDK", v, wire.Version)
	case v < 1:
		return fail(CodeABIVersionUnknown, "module reports rule ABI version %d; this host speaks v%d", v, wire.Version)
	}
	if r.hasInit {
		if err := inst.write(ctx, r.config); err != nil {
			return fail(CodeInitFailed, "init: %v", err)
		}
		res, err := mod.ExportedFunction("turnout_init").Call(ctx, uint64(len(r.config)))
		if err != nil {
			return fail(CodeInitFailed, "init: %v", err)
		}
		if res[0] != 0 {
			msg, ok := inst.mem.Read(uint32(res[0]>>32), uint32(res[0]))
			if !ok {
				return fail(CodeInitFailed, "init failed (its message is outside memory)")
			}
			return fail(CodeInitFailed, "init refused the configuration: %s", msg)
		}
	}
	if stopInit != nil && !stopInit() {
		// ctx ended while the instance started: its flag is raised, it cannot serve.
		return fail(CodeInitFailed, "interrupted while starting: %v", ctx.Err())
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed { // closed while this instance was being made
		r.mod.rules.Delete(mod)
		_ = mod.Close(context.Background())
		return nil, &LoadError{Code: CodeInitFailed, Detail: "the rule is closed"}
	}
	r.live[inst] = struct{}{}
	return inst, nil
}

// capture keeps the first bytes an instance wrote to stdout/stderr (a Go guest's panic message).
type capture struct{ b []byte }

const captureMax = 2048

func (c *capture) Write(p []byte) (int, error) {
	if room := captureMax - len(c.b); room > 0 {
		c.b = append(c.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// suffix returns the start of the captured output (a panic message's first lines) for an error.
func (c *capture) suffix() string {
	s := strings.TrimSpace(string(c.b))
	if s == "" {
		return ""
	}
	lines := strings.SplitN(s, "\n", 4)
	if len(lines) > 3 {
		lines = lines[:3]
	}
	s = strings.Join(lines, " | ")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return " (module output: " + s + ")"
}

// minGrowAfter is the shortest time a call waits for a busy instance before it makes another
// one. The wait is as long as making the rule's first instance took (Rule.growAfter), and at least
// this: a call of a typical rule takes microseconds, while a Go guest's instance takes 7-40 ms to
// make and keeps >= 3.4 MiB for good. So the pool grows when calls really queue, not whenever two
// events happen to overlap (which at 100 events/s made every route keep PoolSize instances), and
// a call never waits longer for a busy instance than it would for a new one.
const minGrowAfter = time.Millisecond

// acquire takes an idle instance, or waits up to r.growAfter for one to be released, then makes
// one while fewer than PoolSize are live, or waits on.
//
// The hot slot holds an instance released while no call waited, so an uncontended call takes
// and returns its instance with two atomic operations instead of two channel operations. An idle
// instance is in the hot slot or in idle, never both. A waiting call watches idle only, so the
// slot must not strand an instance while a call waits: a waiter counts itself in r.waiting
// before it looks at the slot a last time, and release counts the waiters after it filled the
// slot and moves the instance to idle if there are any. With sequentially consistent atomics
// one of the two sees the other.
func (r *Rule) acquire(ctx context.Context) (*instance, error) {
	if inst := r.hot.Swap(nil); inst != nil {
		return inst, nil
	}
	r.waiting.Add(1)
	defer r.waiting.Add(-1)
	if inst := r.hot.Swap(nil); inst != nil {
		return inst, nil
	}
	select {
	case inst := <-r.idle:
		return inst, nil
	default:
	}
	if len(r.slots) > 0 { // some instance is live and busy: it is likely back soon
		t := time.NewTimer(r.growAfter)
		select {
		case inst := <-r.idle:
			t.Stop()
			return inst, nil
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("rule %s: waiting for an instance: %w", r.name, ctx.Err())
		}
	}
	select {
	case inst := <-r.idle:
		return inst, nil
	case r.slots <- struct{}{}:
		r.instances.Inc()
		inst, err := r.newInstance(ctx)
		if err != nil {
			<-r.slots
			r.instances.Dec()
			r.errs["init"].Inc()
			return nil, &engine.RuleError{Kind: "init", Err: fmt.Errorf("rule %s: new instance: %w", r.name, err)}
		}
		return inst, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("rule %s: waiting for an instance: %w", r.name, ctx.Err())
	}
}

// release returns inst to the idle instances: to the hot slot when it is free, else to idle.
func (r *Rule) release(inst *instance) {
	if !r.hot.CompareAndSwap(nil, inst) {
		r.idle <- inst
		return
	}
	if r.waiting.Load() > 0 {
		if inst := r.hot.Swap(nil); inst != nil {
			r.idle <- inst
		}
	}
}

// discard closes a failed instance and frees its slot.
func (r *Rule) discard(inst *instance) {
	r.mu.Lock()
	delete(r.live, inst)
	r.mu.Unlock()
	r.mod.rules.Delete(inst.mod)
	_ = inst.mod.Close(context.Background())
	<-r.slots
	r.instances.Dec()
}

// Decide runs the rule on e; see engine.Rule. It takes one instance for the call (waiting while
// PoolSize instances are busy) and returns it afterwards, or discards it on a rule failure, which
// it reports as *engine.RuleError of kind trap, timeout, memory, decode or init. The returned
// Decision.Outputs slice is shared between calls: callers must not modify it. Mutations are
// applied to a clone of e, returned as Decision.Event; e itself is never modified.
func (r *Rule) Decide(ctx context.Context, e *event.Event) (engine.Decision, error) {
	r.calls.Inc()
	inst, err := r.acquire(ctx)
	if err != nil {
		return engine.Decision{}, err
	}
	// The duration of one call in sampleEvery is observed: reading the clock at both ends costs
	// about a tenth of a call of a small rule (docs/RATIONALE.md, "The CPU guard").
	var start time.Duration
	sampled := inst.sampled()
	if sampled {
		start = time.Since(epoch)
	}
	if r.timeout > 0 {
		inst.calls++
		inst.call.Store(inst.calls)
	}
	d, err := inst.decide(ctx, e)
	if r.timeout > 0 && inst.call.Swap(0) == interrupted {
		// The watchdog raised the flag: the instance traps at its next check, so it is not
		// used again, even when the call returned before it saw the flag.
		inst.timedOut = true
		if err == nil {
			r.discard(inst)
			r.observe(sampled, start)
			return d, nil
		}
	}
	if err != nil {
		re := r.classify(ctx, inst, err)
		r.discard(inst)
		r.errs[re.Kind].Inc()
		r.observe(sampled, start)
		return engine.Decision{}, re
	}
	r.release(inst)
	r.observe(sampled, start)
	return d, nil
}

// sampleEvery is how many calls there are for one whose duration is observed, on average.
const sampleEvery = 8

// sampled reports whether the instance's current call is one whose duration is observed: one in
// sampleEvery at random (a xorshift generator per instance), so that no period in the events
// lines up with the sampling.
func (inst *instance) sampled() bool {
	x := inst.sample
	x ^= x << 13
	x ^= x >> 17
	x ^= x << 5
	inst.sample = x
	return x%sampleEvery == 0
}

// observe records the duration of a sampled call that started at start (since epoch).
func (r *Rule) observe(sampled bool, start time.Duration) {
	if sampled {
		r.duration.Observe((time.Since(epoch) - start).Seconds())
	}
}

// classify turns a failed call into a RuleError.
func (r *Rule) classify(ctx context.Context, inst *instance, err error) *engine.RuleError {
	var de *decodeError
	if errors.As(err, &de) {
		return &engine.RuleError{Kind: "decode", Err: fmt.Errorf("rule %s: %w", r.name, err)}
	}
	if inst.timedOut {
		return &engine.RuleError{Kind: "timeout", Err: fmt.Errorf("rule %s: call exceeded %v: %w", r.name, r.timeout, context.DeadlineExceeded)}
	}
	// A memory-cap hit surfaces as a trap (or a Go guest's "out of memory" exit) with the memory
	// at, or within one 4 MiB growth step of, the cap.
	growthStep := min(64, r.limit/8)
	if bytes.Contains(inst.out.b, []byte("out of memory")) ||
		(inst.mem != nil && inst.mem.Size()/65536+growthStep > r.limit) {
		return &engine.RuleError{Kind: "memory", Err: fmt.Errorf("rule %s: memory cap of %d pages: %w%s", r.name, r.limit, err, inst.out.suffix())}
	}
	return &engine.RuleError{Kind: "trap", Err: fmt.Errorf("rule %s: %w%s", r.name, err, inst.out.suffix())}
}

// Close closes every instance of the rule, and the runtime when no other rule shares its module.
// Call it once the engine stopped calling Decide; a call still running fails, and a later one
// fails with an init error. Closing again does nothing.
func (r *Rule) Close(ctx context.Context) error {
	if !r.closeInstances() {
		return nil
	}
	r.instances.Set(0)
	if err := r.host.releaseModule(ctx, r.mod); err != nil {
		return fmt.Errorf("hostabi close rule %s: %w", r.name, err)
	}
	return nil
}

// closeInstances marks the rule closed and closes its live instances. It reports whether the rule
// was open.
func (r *Rule) closeInstances() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.closed = true
	if r.stopWatch != nil {
		close(r.stopWatch)
	}
	for inst := range r.live {
		r.mod.rules.Delete(inst.mod)
		_ = inst.mod.Close(context.Background())
	}
	clear(r.live)
	return true
}

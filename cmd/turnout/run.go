package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/turnout-router/turnout/cmd/turnout/internal/admin"
	"github.com/turnout-router/turnout/cmd/turnout/internal/config"
	"github.com/turnout-router/turnout/cmd/turnout/internal/dlq"
	"github.com/turnout-router/turnout/cmd/turnout/internal/rulestore"
	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/hostabi"
	"github.com/turnout-router/turnout/internal/tracing"
	"github.com/turnout-router/turnout/transports/mqtt"

	// Transports register their input and output types in init.
	_ "github.com/turnout-router/turnout/transports/amqp"
	_ "github.com/turnout-router/turnout/transports/file"
	_ "github.com/turnout-router/turnout/transports/http"
	_ "github.com/turnout-router/turnout/transports/kafka"
	_ "github.com/turnout-router/turnout/transports/nats"
)

// closeTimeout bounds each Close after the engine has drained.
const closeTimeout = 5 * time.Second

// cmdRun runs the router until ctx ends (SIGINT or SIGTERM in main).
func cmdRun(ctx context.Context, args []string, _, stderr io.Writer) int {
	path, code, ok := configFlag("run", args, stderr)
	if !ok {
		return code
	}
	cfg, err := config.Load(path, config.Options{})
	if err != nil {
		printErrors(stderr, err)
		fmt.Fprintf(stderr, "turnout: %s is not valid; nothing was started (turnout validate -c %s lists the problems)\n", path, path)
		return 1
	}
	logger := newLogger(stderr, cfg.Log)
	_, restoreMemoryLimit := applyMemoryLimit(cfg.MemoryLimit, os.Getenv, logger)
	defer restoreMemoryLimit()
	if err := serve(ctx, cfg, logger); err != nil {
		if ctx.Err() != nil {
			// A signal while starting cancels what was being built (a rule's init, a
			// connection): that is the reason, not the configuration.
			logger.Warn("turnout stopped while starting: interrupted by a signal; nothing was delivered", "err", err)
			return 1
		}
		var es config.Errors
		if errors.As(err, &es) {
			printErrors(stderr, es)
			logger.Error("turnout failed to start: the configuration was rejected", "errors", len(es))
			return 1
		}
		logger.Error("turnout failed to start", "err", err)
		return 1
	}
	return 0
}

func printErrors(w io.Writer, err error) {
	var es config.Errors
	if errors.As(err, &es) {
		es.Sort()
		for _, e := range es {
			fmt.Fprintln(w, e.Error())
		}
		return
	}
	fmt.Fprintln(w, err)
}

func newLogger(w io.Writer, c config.LogConfig) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // checked by config.Load
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// closer is one shutdown step, run in reverse order of start.
type closer struct {
	what string
	fn   func(ctx context.Context) error
}

// serve starts every part of cfg, waits for ctx to end, then shuts down: engine drain first,
// then the rules, the rule host, the broker and the admin server. It returns an error only when
// startup failed.
func serve(ctx context.Context, cfg *config.Config, logger *slog.Logger) (err error) {
	var closers []closer
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			c := closers[i]
			cctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
			if cerr := c.fn(cctx); cerr != nil {
				logger.Warn("shutdown step failed", "step", c.what, "err", cerr)
			}
			cancel()
		}
		if err == nil {
			logger.Info("turnout stopped")
		}
	}()

	// First: a second turnout on the same data directory stops here, before it binds a port or
	// touches a file of the one that runs.
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	closers = append(closers, closer{"data directory lock", func(context.Context) error { return lock.Close() }})

	reg := admin.NewRegistry(version)
	cacheDir := filepath.Join(cfg.DataDir, "cache", "wasm")
	if err := os.MkdirAll(cacheDir, 0o750); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	deps := engine.Deps{Logger: logger, Registerer: reg, DataDir: cfg.DataDir}

	var (
		eng   atomic.Pointer[engine.Engine]
		parts atomic.Pointer[config.Built]
		adm   *admin.Server
	)
	ready := func() (bool, []string) { return readiness(eng.Load(), parts.Load()) }
	reg.MustRegister(admin.ReadyGauge(ready))
	if addr := cfg.Admin.Addr(); addr != "" {
		adm = admin.New(admin.Options{
			Listen:         addr,
			Gatherer:       reg,
			Pprof:          cfg.Admin.Pprof,
			Logger:         logger.With("component", "admin"),
			Ready:          ready,
			TLSCertFile:    cfg.Admin.TLS.CertFile,
			TLSKeyFile:     cfg.Admin.TLS.KeyFile,
			Token:          cfg.Admin.Token,
			RulesReadOpen:  cfg.Admin.RulesReadOpen,
			MaxUploadBytes: cfg.Admin.UploadLimit(),

			ReadHeaderTimeout: cfg.Admin.ReadHeaderTimeout,
			ReadTimeout:       cfg.Admin.ReadTimeout,
			IdleTimeout:       cfg.Admin.IdleTimeout,
			MaxHeaderBytes:    cfg.Admin.MaxHeaderBytes,
			AuthFailureBurst:  cfg.Admin.AuthFailureBurst,
			AuthFailureWindow: cfg.Admin.AuthFailureWindow,
		})
		if err := adm.Start(); err != nil {
			return err
		}
		closers = append(closers, closer{"admin server", adm.Shutdown})
		logger.Info("admin server listening", "addr", adm.Addr(), "tls", cfg.Admin.TLS.CertFile != "", "rules_api_writes", len(cfg.Admin.Token) > 0)
	}

	if cfg.Broker != nil {
		var bc mqtt.BrokerConfig
		if err := cfg.Decoder(cfg.Broker, "broker")(&bc); err != nil {
			return err
		}
		if bc.Enabled {
			br, err := mqtt.NewBroker(bc, deps)
			if err != nil {
				return fmt.Errorf("embedded broker: %w", err)
			}
			if err := br.Start(ctx); err != nil {
				return fmt.Errorf("start embedded broker: %w", err)
			}
			closers = append(closers, closer{"embedded broker", br.Close})
		}
	}

	host, err := hostabi.NewHost(ctx, hostabi.Options{CacheDir: cacheDir, Logger: logger.With("component", "rules"), Registerer: reg})
	if err != nil {
		return fmt.Errorf("start rule host: %w", err)
	}
	closers = append(closers, closer{"rule host", host.Close})
	validator, err := hostabi.NewHost(ctx, hostabi.Options{CacheDir: cacheDir, Logger: logger.With("component", "rules-validation"), Registerer: prometheus.NewRegistry()})
	if err != nil {
		return fmt.Errorf("start rule validation host: %w", err)
	}
	closers = append(closers, closer{"rule validation host", validator.Close})

	store, err := rulestore.Open(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("open the rule store: %w", err)
	}
	built, err := config.Build(ctx, cfg, config.BuildOptions{Deps: deps, LoadRule: storedRuleLoader(host, store, logger.With("component", "rules"))})
	if err != nil {
		closers = append(closers, closer{"configured parts", built.CloseAll})
		return err
	}
	closers = append(closers, closer{"rules", built.CloseRules})
	if len(built.Unused) > 0 {
		logger.Warn("outputs not used by any route", "outputs", built.Unused)
		if err := built.CloseOutputs(ctx, built.Unused); err != nil {
			logger.Warn("close unused outputs", "err", err)
		}
	}

	deadLetters, err := lastResortDeadLetters(cfg, built, reg, logger)
	if err != nil {
		closers = append(closers, closer{"configured parts", built.CloseAll})
		return err
	}

	tracer, stopTracing, err := tracing.New(ctx, cfg.Tracing, version, logger.With("component", "tracing"))
	if err != nil {
		closers = append(closers, closer{"configured parts", built.CloseAll})
		return err
	}
	// Registered before the engine's steps, so it runs after the drain and flushes its spans.
	closers = append(closers, closer{"tracing", stopTracing})
	e := engine.New(engine.Options{Logger: logger.With("component", "engine"), Registerer: reg, Tracer: tracer})
	for _, r := range built.Routes {
		if err := e.AddRoute(r); err != nil {
			closers = append(closers, closer{"configured parts", built.CloseAll})
			return fmt.Errorf("route %s: %w", r.Config.Name, err)
		}
	}
	// The engine owns the inputs and outputs from here: Start starts them and Shutdown closes
	// them. Sources keep running on a context of their own; ctx ending is only the signal.
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	if err := e.Start(runCtx); err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		if serr := e.Shutdown(sctx); serr != nil {
			logger.Warn("engine shutdown after failed start", "err", serr)
		}
		return fmt.Errorf("start engine: %w", err)
	}
	eng.Store(e)
	parts.Store(built)
	if adm != nil {
		adm.SetRules(newRuleService(store, host, validator, cfg, built.Switches, logger.With("component", "rules")))
		adm.SetDeadLetters(deadLetters)
	}
	logger.Info("turnout running", "version", version, "inputs", len(built.Inputs), "outputs", len(built.Outputs), "routes", len(built.Routes))
	releaseStartupMemory()

	<-ctx.Done()
	if adm != nil {
		adm.SetRules(nil) // no change while the routes drain and the rules close
		adm.SetDeadLetters(nil)
	}
	logger.Info("shutting down: draining in-flight messages", "drain_timeout", cfg.DrainTimeout)
	dctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	if err := e.Shutdown(dctx); err != nil {
		// Whatever did not drain was nacked, to be redelivered: not a startup failure.
		logger.Warn("engine shutdown", "err", err)
	}
	return nil
}

// readiness backs /readyz: ready once the engine runs and is ready, listing the inputs and
// outputs that report themselves not ready (engine.Readier).
func readiness(e *engine.Engine, b *config.Built) (bool, []string) {
	if e == nil || b == nil {
		return false, []string{"starting"}
	}
	var notReady []string
	for name, s := range b.Inputs {
		if r, ok := s.(engine.Readier); ok && !r.Ready() {
			notReady = append(notReady, "input "+name)
		}
	}
	for name, s := range b.Outputs {
		if r, ok := s.(engine.Readier); ok && !r.Ready() {
			notReady = append(notReady, "output "+name)
		}
	}
	sort.Strings(notReady)
	if !e.Ready() {
		notReady = append([]string{"engine"}, notReady...)
	}
	return len(notReady) == 0, notReady
}

// checkBroker decodes the broker block and builds (without starting) the broker, so that
// validate reports its configuration errors: the decoding errors and the broker's own.
func checkBroker(cfg *config.Config, deps engine.Deps) config.Errors {
	if cfg.Broker == nil {
		return nil
	}
	var errs config.Errors
	var bc mqtt.BrokerConfig
	if err := cfg.Decoder(cfg.Broker, "broker")(&bc); err != nil {
		if !errors.As(err, &errs) {
			errs = config.Errors{{File: cfg.Path, Line: cfg.Broker.Line, Key: "broker", Msg: err.Error()}}
		}
	}
	if !bc.Enabled {
		return errs
	}
	br, err := mqtt.NewBroker(bc, deps)
	if err != nil {
		// The broker names the key ("broker.max_queued: ...", "broker.users[1].password: ..."):
		// point at its line.
		e := &config.Error{File: cfg.Path, Line: cfg.Broker.Line, Key: "broker", Msg: err.Error()}
		if k, msg, ok := strings.Cut(err.Error(), ": "); ok && strings.HasPrefix(k, "broker.") && !strings.ContainsAny(k, " \t") {
			e.Key, e.Msg = k, msg
			e.Line = keyPathLine(cfg.Broker, strings.TrimPrefix(k, "broker."))
		}
		return append(errs, e)
	}
	if err := br.Close(context.Background()); err != nil {
		errs = append(errs, &config.Error{File: cfg.Path, Line: cfg.Broker.Line, Key: "broker", Msg: err.Error()})
	}
	return errs
}

// keyPathLine returns the line of the key path under the mapping n ("tls.cert_file",
// "users[1].password"), or of the deepest part of it that the file has (the list item of a
// missing password, the block itself).
func keyPathLine(n *yaml.Node, path string) int {
	line := n.Line
	for _, part := range strings.Split(path, ".") {
		name, idx := part, -1
		if i := strings.IndexByte(part, '['); i > 0 && strings.HasSuffix(part, "]") {
			var err error
			if idx, err = strconv.Atoi(part[i+1 : len(part)-1]); err != nil {
				return line
			}
			name = part[:i]
		}
		var val *yaml.Node
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == name {
					line, val = n.Content[i].Line, n.Content[i+1]
				}
			}
		}
		if val == nil {
			return line
		}
		n = val
		if idx >= 0 {
			if n.Kind != yaml.SequenceNode || idx >= len(n.Content) {
				return line
			}
			n = n.Content[idx]
			line = n.Line
		}
	}
	return line
}

// deadLetterFileOutput names a route's dead-letter file in the engine's per-output metrics and
// logs.
const deadLetterFileOutput = "dead-letter-file"

// lastResortDeadLetters gives every built route its dead-letter file (package dlq): as its
// dead-letter output when the configuration names none, so that an event it cannot deliver is
// written there and acknowledged rather than redelivered for ever; and as an extra input through
// which the file's entries are replayed. It warns, naming the file, for each route that writes
// to one. It returns the replay service of the admin API.
func lastResortDeadLetters(cfg *config.Config, built *config.Built, reg prometheus.Registerer, logger *slog.Logger) (deadLetterService, error) {
	store, err := dlq.New(cfg.DataDir, dlq.Options{Registerer: reg})
	if err != nil {
		return nil, err
	}
	svc := deadLetterService{}
	for i := range built.Routes {
		r := &built.Routes[i]
		name := r.Config.Name
		dr := store.Route(name)
		svc[name] = dr
		if r.DeadLetter == nil {
			r.DeadLetter, r.DeadLetterName = dr.Sink(), deadLetterFileOutput
			logger.Warn("route has no dead_letter output: events it cannot deliver (malformed, failed by its rule, refused by an output after the retry policy) go to its dead-letter file; turnout dlq list shows them",
				"route", name, "file", dr.Path())
		}
		r.Inputs[dlq.InputName(name)] = dr.Source()
	}
	return svc, nil
}

// deadLetterService is the admin API's replay service over the routes' dead-letter files.
type deadLetterService map[string]*dlq.Route

// Replay implements admin.DeadLetterService.
func (s deadLetterService) Replay(ctx context.Context, route, id string) (admin.ReplayResult, error) {
	r, ok := s[route]
	if !ok {
		return admin.ReplayResult{}, fmt.Errorf("route %q: %w", route, admin.ErrRouteNotFound)
	}
	res, err := r.Replay(ctx, id)
	switch {
	case errors.Is(err, dlq.ErrNoEntry):
		err = fmt.Errorf("%w: %w", admin.ErrEntryNotFound, err)
	case errors.Is(err, dlq.ErrNotRunning):
		err = &admin.APIError{Status: http.StatusServiceUnavailable, Code: admin.CodeUnavailable, Detail: err.Error()}
	}
	return res, err
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/cmd/turnout/internal/config"
	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/hostabi"
)

// configFlag parses the flags of run and validate; it returns the configuration path, or an
// exit code when parsing ended the command.
func configFlag(name string, args []string, stderr io.Writer) (string, int, bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var path string
	fs.StringVar(&path, "c", "turnout.yaml", "configuration file")
	fs.StringVar(&path, "config", "turnout.yaml", "configuration file (same as -c)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", 0, false
		}
		return "", 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "turnout %s: unexpected argument %q\n", name, fs.Arg(0))
		return "", 2, false
	}
	return path, 0, true
}

// cmdValidate checks a configuration as run would, through the same factories and the rule
// host, without connecting or starting anything. Every problem is printed as
// FILE:LINE: key: message.
func cmdValidate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	path, code, ok := configFlag("validate", args, stderr)
	if !ok {
		return code
	}
	cfg, errs := check(ctx, path)
	if len(errs) > 0 {
		errs.Sort()
		for _, e := range errs {
			fmt.Fprintln(stderr, e.Error())
		}
		fmt.Fprintf(stderr, "%d error(s)\n", len(errs))
		return 1
	}
	fmt.Fprintf(stdout, "ok: %d inputs, %d outputs, %d routes\n", len(cfg.Inputs), len(cfg.Outputs), len(cfg.Routes))
	return 0
}

// check loads, builds and closes the configuration at path, collecting every error.
func check(ctx context.Context, path string) (*config.Config, config.Errors) {
	var all config.Errors
	collect := func(err error) {
		if err == nil {
			return
		}
		var es config.Errors
		var e *config.Error
		switch {
		case errors.As(err, &es):
			all = append(all, es...)
		case errors.As(err, &e):
			all = append(all, e)
		default:
			all = append(all, &config.Error{File: path, Msg: err.Error()})
		}
	}
	cfg, err := config.Load(path, config.Options{})
	collect(err)
	if cfg == nil {
		return nil, all
	}
	discard := slog.New(slog.DiscardHandler)
	deps := engine.Deps{Logger: discard, Registerer: prometheus.NewRegistry(), DataDir: cfg.DataDir}
	all = append(all, checkBroker(cfg, deps)...)

	// No compilation cache: validation must not write below data_dir.
	host, err := hostabi.NewHost(ctx, hostabi.Options{Logger: discard, Registerer: prometheus.NewRegistry()})
	if err != nil {
		collect(fmt.Errorf("start rule host: %w", err))
		return cfg, all
	}
	built, err := config.Build(ctx, cfg, config.BuildOptions{Deps: deps, LoadRule: ruleLoader(host)})
	collect(err)
	if err == nil {
		// The engine's own checks of each route, as run would meet them; nothing is started.
		e := engine.New(engine.Options{Logger: discard, Registerer: prometheus.NewRegistry()})
		for _, r := range built.Routes {
			if err := e.AddRoute(r); err != nil {
				line := 0
				for _, cr := range cfg.Routes {
					if cr.Name == r.Config.Name {
						line = cr.Line
					}
				}
				all = append(all, &config.Error{File: path, Line: line, Key: "routes." + r.Config.Name, Msg: err.Error()})
			}
		}
	}
	if err := built.CloseAll(ctx); err != nil {
		collect(err)
	}
	if err := host.Close(ctx); err != nil {
		collect(fmt.Errorf("close rule host: %w", err))
	}
	return cfg, all
}

// ruleLoader loads route rules through the rule host.
func ruleLoader(host *hostabi.Host) config.RuleLoader {
	return func(ctx context.Context, r *config.Route, wasm []byte) (engine.Rule, error) {
		rule, err := host.Load(ctx, wasm, ruleOptions(r, nil))
		if err != nil {
			return nil, err
		}
		return rule, nil
	}
}

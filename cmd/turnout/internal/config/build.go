package config

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/spool"
)

// RuleLoader compiles and initialises the rule of route r from its Wasm bytes. Build calls it
// once per route with a rule, on the caller's goroutine. Build wraps the returned rule in the
// route's engine.RuleSwitch, which closes it (when it has a Close(context.Context) error method)
// once it is no longer active nor in use, at the latest in Built.CloseRules. An error means the
// rule is unusable (does not compile, its init rejected the config).
type RuleLoader func(ctx context.Context, r *Route, wasm []byte) (engine.Rule, error)

// BuildOptions are what Build hands to the modules it builds.
type BuildOptions struct {
	// Deps is handed to every factory (which labels its logs with its own name); DataDir is set
	// to the configuration's data directory when empty.
	Deps engine.Deps
	// LoadRule loads the rules; nil means routes with a rule fail to build.
	LoadRule RuleLoader
}

// Built holds the constructed, not yet started, parts of a configuration.
type Built struct {
	// Inputs and Outputs are every module that was built, by name.
	Inputs  map[string]engine.Source
	Outputs map[string]engine.Sink
	// Routes are ready for engine.AddRoute, in file order.
	Routes []engine.Route
	// Rules are the loaded rules, each behind its route's switch, for CloseRules.
	Rules []engine.Rule
	// Switches holds the rule switch of every route with a rule, by route name: swapping a new
	// engine.RuleVersion into it changes the route's rule while the route runs.
	Switches map[string]*engine.RuleSwitch
	// Unused are outputs no route refers to; they are built (so their configuration is
	// checked) but never started.
	Unused []string
}

type ruleCloser interface {
	Close(ctx context.Context) error
}

// Build constructs the inputs, outputs and rules of a Config returned by Load through their
// factories and opts.LoadRule, and wires the routes. It connects nothing. Entries that Load
// already found invalid are skipped. It returns the parts it could build and Errors for every
// factory or rule that failed; the caller closes what was built (CloseAll) when it gives up.
func Build(ctx context.Context, cfg *Config, opts BuildOptions) (*Built, error) {
	c := &collector{file: cfg.Path}
	b := &Built{Inputs: map[string]engine.Source{}, Outputs: map[string]engine.Sink{}, Switches: map[string]*engine.RuleSwitch{}}
	deps := opts.Deps
	if deps.DataDir == "" {
		deps.DataDir = cfg.DataDir
	}
	for _, m := range cfg.Inputs {
		if m.input == nil {
			continue
		}
		key := m.key("inputs")
		src, err := m.input(m.Name, cfg.Decoder(m.Node, key), deps)
		if err != nil {
			addModuleError(c, m, key, err)
			continue
		}
		if src == nil {
			c.add(m.Line, key, "input factory for type %q returned no input", m.Type)
			continue
		}
		b.Inputs[m.Name] = src
	}
	spoolDirs := map[string]string{} // spool directory -> output
	for _, m := range cfg.Outputs {
		if m.output == nil {
			continue
		}
		key := m.key("outputs")
		sink, err := m.output(m.Name, cfg.Decoder(m.Node, key), deps)
		if err != nil {
			addModuleError(c, m, key, err)
			continue
		}
		if sink == nil {
			c.add(m.Line, key, "output factory for type %q returned no output", m.Type)
			continue
		}
		if m.Spool != nil {
			if sink = spooled(c, cfg, m, key, sink, deps, spoolDirs); sink == nil {
				continue
			}
		}
		b.Outputs[m.Name] = sink
		if !m.Used {
			b.Unused = append(b.Unused, m.Name)
		}
	}
	for _, r := range cfg.Routes {
		var rule engine.Rule
		if r.Rule != nil && r.Rule.Path != "" {
			key := "routes." + r.Name + ".rule"
			wasm, err := os.ReadFile(r.Rule.Path)
			switch {
			case err != nil:
				c.add(r.Rule.Line, key+".file", "%v", err)
			case opts.LoadRule == nil:
				c.add(r.Rule.Line, key, "rules cannot be loaded here")
			default:
				rule, err = opts.LoadRule(ctx, r, wasm)
				if err == nil {
					rule, err = newSwitch(ctx, r.Name, rule, deps)
				}
				if err != nil {
					c.add(r.Rule.Line, key, "load %s: %v", r.Rule.Path, err)
					rule = nil
				} else {
					b.Rules = append(b.Rules, rule)
					b.Switches[r.Name] = rule.(*engine.RuleSwitch)
				}
			}
		}
		if !r.valid || (r.Rule != nil && rule == nil) {
			continue
		}
		er := engine.Route{Config: r.Config, Inputs: map[string]engine.Source{}, Outputs: map[string]engine.Sink{}, Rule: rule}
		complete := true
		for _, in := range r.Spec.Inputs {
			src, ok := b.Inputs[in.Name]
			complete = complete && ok
			er.Inputs[in.Name] = src
		}
		for _, name := range r.Outputs {
			sink, ok := b.Outputs[name]
			complete = complete && ok
			er.Outputs[name] = sink
		}
		if dl := r.Spec.DeadLetter; dl != nil {
			sink, ok := b.Outputs[dl.Name]
			complete = complete && ok
			er.DeadLetter, er.DeadLetterName = sink, dl.Name
		}
		if complete {
			b.Routes = append(b.Routes, er)
		}
	}
	return b, c.errs.errOrNil()
}

// spooled wraps the output m's sink in the spool its spool block describes, or reports the
// block's errors (each at its key's line), closes sink and returns nil. dirs holds the spool
// directories already taken, so that two outputs never share one.
func spooled(c *collector, cfg *Config, m *Module, key string, sink engine.Sink, deps engine.Deps, dirs map[string]string) engine.Sink {
	skey := key + ".spool"
	var sc spool.Config
	// The spool's own checks run on a block with decoding errors too, so that every problem is
	// reported at once, except for the keys whose value did not decode.
	var decodeErrs Errors
	_ = errors.As(cfg.Decoder(m.Spool, skey)(&sc), &decodeErrs)
	c.errs = append(c.errs, decodeErrs...)
	reported := map[string]bool{}
	for _, e := range decodeErrs {
		reported[e.Key] = true
	}
	sp, err := spool.New(m.Name, sc, sink, deps)
	if err == nil && len(decodeErrs) == 0 {
		if other, taken := dirs[sp.Dir()]; !taken {
			dirs[sp.Dir()] = m.Name
			return sp
		} else {
			err = &spool.KeyError{Key: "dir", Msg: fmt.Sprintf("%s is already the spool of output %q; each output needs its own", sp.Dir(), other)}
		}
	}
	for _, e := range unjoin(err) {
		var ke *spool.KeyError
		switch {
		case e == nil:
		case errors.As(e, &ke):
			if k := skey + "." + ke.Key; !reported[k] {
				c.add(valueLine(m.Spool, ke.Key), k, "%s", ke.Msg)
			}
		default:
			c.add(m.Spool.Line, skey, "%v", e)
		}
	}
	if sp != nil {
		_ = sp.Close(context.Background()) // closes sink too
	} else {
		_ = sink.Close(context.Background())
	}
	return nil
}

// unjoin returns the errors err joins (errors.Join), or err alone.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// newSwitch puts the loaded rule of route behind the route's switch, which owns it from here; if
// the switch cannot be made, the rule is closed.
func newSwitch(ctx context.Context, route string, rule engine.Rule, deps engine.Deps) (engine.Rule, error) {
	o := engine.RuleVersionOptions{}
	if deps.Logger != nil {
		o.Logger = deps.Logger.With("route", route)
	}
	v := engine.NewRuleVersion(rule, o)
	sw, err := engine.NewRuleSwitch(route, v, deps.Registerer)
	if err != nil {
		return nil, errors.Join(err, v.Release(ctx))
	}
	return sw, nil
}

// addModuleError locates a factory error: errors from the module's Decoder already carry their
// key and line; any other error is reported at the module's name (the key, inputs.<name>, names
// the module; the message is the factory's).
func addModuleError(c *collector, m *Module, key string, err error) {
	var es Errors
	if errors.As(err, &es) {
		c.errs = append(c.errs, es...)
		return
	}
	c.add(m.Line, key, "%v", err)
}

// CloseRules closes every rule that has a Close method (the route switches, which close their
// active versions), returning the errors joined. The engine must have stopped calling them.
func (b *Built) CloseRules(ctx context.Context) error {
	var errs []error
	for _, r := range b.Rules {
		if rc, ok := r.(ruleCloser); ok {
			if err := rc.Close(ctx); err != nil {
				errs = append(errs, fmt.Errorf("close rule: %w", err))
			}
		}
	}
	b.Rules = nil
	return errors.Join(errs...)
}

// CloseOutputs closes the named outputs (all of them when names is nil).
func (b *Built) CloseOutputs(ctx context.Context, names []string) error {
	var errs []error
	if names == nil {
		for n := range b.Outputs {
			names = append(names, n)
		}
	}
	for _, n := range names {
		if s, ok := b.Outputs[n]; ok {
			if err := s.Close(ctx); err != nil {
				errs = append(errs, fmt.Errorf("close output %s: %w", n, err))
			}
			delete(b.Outputs, n)
		}
	}
	return errors.Join(errs...)
}

// CloseAll closes every input, output and rule that was built; for parts that were never handed
// to an engine (validation, or a failed start).
func (b *Built) CloseAll(ctx context.Context) error {
	var errs []error
	for n, s := range b.Inputs {
		if err := s.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("close input %s: %w", n, err))
		}
	}
	b.Inputs = map[string]engine.Source{}
	errs = append(errs, b.CloseOutputs(ctx, nil), b.CloseRules(ctx))
	return errors.Join(errs...)
}

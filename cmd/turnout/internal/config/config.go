// Package config loads, checks and builds a turnout configuration file.
//
// Its job is to turn a YAML file into the parts the engine runs: it substitutes environment
// variables, decodes every block strictly, validates the references between inputs, outputs and
// routes, and builds the transports through their registered factories and the rules through an
// injected loader.
//
// Invariant: every problem is reported, not only the first, each with the line of the original
// file and the dotted path of the key (Errors), and nothing is connected or started here: Build
// only constructs, so `turnout validate` and `turnout run` share one code path.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/tracing"
)

// Defaults of the keys that engine.RouteConfig.Defaults does not cover.
const (
	DefaultDataDir      = "./data"
	DefaultLogLevel     = "info"
	DefaultLogFormat    = "text"
	DefaultAdminListen  = "127.0.0.1:9090"
	DefaultDrainTimeout = 10 * time.Second
	DefaultRuleTimeout  = time.Second
	// MaxMemoryLimitPages is the 32-bit Wasm address space in 64 KiB pages (4 GiB).
	MaxMemoryLimitPages = 65536
)

// Options adjusts Load and Parse.
type Options struct {
	// LookupEnv resolves ${NAME}; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
}

// Config is a checked configuration. Load returns it, possibly partial, together with the
// errors found, so that Build can still check the parts that are valid.
type Config struct {
	// Path is the file as given to Load; Dir is its directory, which relative rule file paths
	// are resolved against.
	Path, Dir string
	// DataDir is data_dir made absolute (relative to the working directory).
	DataDir string
	Log     LogConfig
	Admin   AdminConfig
	// Broker is the broker block (nil when absent), decoded by the caller with Decoder into the
	// broker's own configuration type.
	Broker       *yaml.Node
	DrainTimeout time.Duration
	// Tracing is the tracing block (OpenTelemetry spans over OTLP/HTTP); off when its endpoint is
	// empty.
	Tracing tracing.Config
	// MemoryLimit is memory_limit in bytes, the Go runtime's soft memory limit; 0 when absent.
	MemoryLimit int64
	// Inputs, Outputs and Routes are in file order.
	Inputs  []*Module
	Outputs []*Module
	Routes  []*Route

	c *collector
}

// LogConfig is the log block.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// AdminConfig is the admin block.
type AdminConfig struct {
	// Listen is host:port of the admin HTTP server; empty disables it.
	Listen *string `yaml:"listen"`
	// Pprof serves Go's profiling endpoints under /debug/pprof/ on the admin listener.
	Pprof bool `yaml:"pprof"`
	// TokenFile and TokenEnv name where the rules API's bearer token is (admin.go: Token).
	TokenFile string `yaml:"token_file"`
	TokenEnv  string `yaml:"token_env"`
	// RulesReadOpen lets reads of the rules API through without the token.
	RulesReadOpen bool `yaml:"rules_read_open"`
	// MaxUploadBytes caps a rule upload; nil means DefaultMaxUploadBytes.
	MaxUploadBytes *int64   `yaml:"max_upload_bytes"`
	TLS            AdminTLS `yaml:"tls"`
	// Limits against slow clients and token guessing (admin.Options); 0 or absent means the
	// admin package's default.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	MaxHeaderBytes    int           `yaml:"max_header_bytes"`
	AuthFailureBurst  int           `yaml:"auth_failure_burst"`
	AuthFailureWindow time.Duration `yaml:"auth_failure_window"`

	// Token is the bearer token read from TokenFile or TokenEnv by Parse; empty when none is
	// configured (the rules API is then read-only).
	Token []byte `yaml:"-"`
}

// Addr returns the admin listen address with its default applied.
func (a AdminConfig) Addr() string {
	if a.Listen == nil {
		return DefaultAdminListen
	}
	return *a.Listen
}

// ShutdownConfig is the shutdown block.
type ShutdownConfig struct {
	DrainTimeout *time.Duration `yaml:"drain_timeout"`
}

// file is the top level of the YAML document. inputs, outputs and routes are walked by hand to
// keep their file order and per-entry lines.
type file struct {
	DataDir  string         `yaml:"data_dir"`
	Log      LogConfig      `yaml:"log"`
	Admin    AdminConfig    `yaml:"admin"`
	Broker   yaml.Node      `yaml:"broker"`
	Shutdown ShutdownConfig `yaml:"shutdown"`
	Tracing  tracing.Config `yaml:"tracing"`
	Inputs   yaml.Node      `yaml:"inputs"`
	Outputs  yaml.Node      `yaml:"outputs"`
	Routes   yaml.Node      `yaml:"routes"`

	// MemoryLimit is decoded and checked by checkMemoryLimit (memory.go).
	MemoryLimit yaml.Node `yaml:"memory_limit"`
}

// Module is one input or output block.
type Module struct {
	Name string
	Type string
	// Line is the line of the module's name.
	Line int
	// Node is the module's block without its type key (and an output's spool key): the part
	// its factory decodes.
	Node *yaml.Node
	// Spool is an output's spool block (store-and-forward in front of it); nil when absent.
	Spool *yaml.Node
	// Used says whether a route refers to the module.
	Used bool

	input  engine.InputFactory
	output engine.OutputFactory
}

// key returns the module's dotted path, e.g. inputs.devices.
func (m *Module) key(kind string) string { return kind + "." + m.Name }

// Ref is a name in the configuration that refers to another entry, with its position.
type Ref struct {
	Name string
	Line int
}

// UnmarshalYAML implements yaml.Unmarshaler; it is called by yaml.v3 during decoding.
func (r *Ref) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		what := describe(n)
		if n.Kind == yaml.ScalarNode {
			what = n.ShortTag() + " " + what
		}
		return fmt.Errorf("line %d: expected a name, got %s", n.Line, what)
	}
	r.Name, r.Line = n.Value, n.Line
	return nil
}

// RouteSpec is a route block as written.
type RouteSpec struct {
	Inputs         []Ref `yaml:"inputs"`
	Outputs        []Ref `yaml:"outputs"`
	DefaultOutputs []Ref `yaml:"default_outputs"`
	DeadLetter     *Ref  `yaml:"dead_letter"`
	// RouteConfig carries mode, max_in_flight, retry and on_rule_error.
	engine.RouteConfig `yaml:",inline"`
	Rule               *RuleSpec `yaml:"rule"`
}

// RuleSpec is a route's rule block as written.
type RuleSpec struct {
	File             *Ref           `yaml:"file"`
	Config           yaml.Node      `yaml:"config"`
	Timeout          *time.Duration `yaml:"timeout"`
	MemoryLimitPages uint32         `yaml:"memory_limit_pages"`
	PoolSize         int            `yaml:"pool_size"`
	AllowClock       bool           `yaml:"allow_clock"`
}

// Route is one checked route.
type Route struct {
	Name string
	Line int
	Spec RouteSpec
	// Config is the engine configuration with defaults applied and DefaultOutputs set.
	Config engine.RouteConfig
	// Outputs are the names the rule may choose (plus the default outputs).
	Outputs []string
	// Rule is nil when the route has no rule.
	Rule *Rule
	// valid is false when the route has errors; Build skips it.
	valid bool
}

// Rule is a route's checked rule.
type Rule struct {
	// Path is the Wasm file, resolved against the configuration's directory; empty when it is
	// missing or not a file (already reported).
	Path string
	// Line is the line of the file key.
	Line int
	// ConfigJSON is the rule's config block as JSON ("null" when absent).
	ConfigJSON       []byte
	Timeout          time.Duration
	MemoryLimitPages uint32
	PoolSize         int
	AllowClock       bool
}

// Load reads and checks the file at path. It returns a non-nil Config whenever the file could be
// read and parsed as YAML, and Errors listing every problem found.
func Load(path string, opts Options) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Errors{{File: path, Msg: fmt.Sprintf("read configuration: %v", err)}}
	}
	return Parse(path, data, opts)
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// Parse checks data as the contents of the file at path (which is used in messages and to
// resolve relative paths, and is not read). See Load.
func Parse(path string, data []byte, opts Options) (*Config, error) {
	c := &collector{file: path}
	lookup := opts.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	text := expandEnv(c, string(data), lookup)

	var doc yaml.Node
	dec := yaml.NewDecoder(strings.NewReader(text))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		addYAMLError(c, nil, "", err)
		return nil, c.errs.errOrNil()
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		c.add(extra.Line, "", "a configuration file holds a single YAML document")
	} else if !errors.Is(err, io.EOF) {
		addYAMLError(c, nil, "", err)
	}

	cfg := &Config{Path: path, Dir: filepath.Dir(path), c: c}
	var f file
	root := &doc
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		root = doc.Content[0]
	}
	if doc.Kind == 0 || isNull(root) {
		c.add(0, "", "the configuration is empty")
		return cfg, c.errs.errOrNil()
	}
	if !decodeStrict(c, root, "", &f) && root.Kind != yaml.MappingNode {
		return cfg, c.errs.errOrNil()
	}
	// After other errors, go on checking the blocks that decoded: every problem is reported.

	cfg.DataDir = f.DataDir
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	// Relative to the working directory, like the paths in transport blocks.
	if abs, err := filepath.Abs(cfg.DataDir); err == nil {
		cfg.DataDir = abs
	}
	cfg.Log = f.Log
	if cfg.Log.Level == "" {
		cfg.Log.Level = DefaultLogLevel
	}
	if cfg.Log.Format == "" {
		cfg.Log.Format = DefaultLogFormat
	}
	switch cfg.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		c.add(valueLine(root, "log", "level"), "log.level", "unknown level %q (known: debug, info, warn, error)", cfg.Log.Level)
	}
	switch cfg.Log.Format {
	case "text", "json":
	default:
		c.add(valueLine(root, "log", "format"), "log.format", "unknown format %q (known: text, json)", cfg.Log.Format)
	}
	cfg.Admin = f.Admin
	if a := cfg.Admin.Addr(); a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			c.add(valueLine(root, "admin", "listen"), "admin.listen", "invalid address %q: want host:port", a)
		}
	}
	checkAdmin(c, root, &cfg.Admin, lookup)
	if f.Broker.Kind != 0 && !isNull(&f.Broker) {
		b := f.Broker
		cfg.Broker = &b
	}
	cfg.DrainTimeout = DefaultDrainTimeout
	if d := f.Shutdown.DrainTimeout; d != nil {
		cfg.DrainTimeout = *d
		if *d < 0 {
			c.add(valueLine(root, "shutdown", "drain_timeout"), "shutdown.drain_timeout", "must not be negative")
		}
	}
	cfg.MemoryLimit = checkMemoryLimit(c, &f.MemoryLimit)
	cfg.Tracing = f.Tracing
	for _, p := range f.Tracing.Check() {
		c.add(valueLine(root, "tracing", p.Key), "tracing."+p.Key, "%s", p.Msg)
	}

	cfg.Inputs = cfg.modules(&f.Inputs, "inputs")
	cfg.Outputs = cfg.modules(&f.Outputs, "outputs")
	if cfg.routes(&f.Routes, root) {
		for _, m := range cfg.Inputs {
			if !m.Used {
				c.add(m.Line, "inputs."+m.Name, "not used by any route (its messages would never be read)")
			}
		}
	}
	return cfg, c.errs.errOrNil()
}

// valueLine returns the line of the value at the given key path under the mapping n, or of the
// deepest key found.
func valueLine(n *yaml.Node, keys ...string) int {
	if n == nil {
		return 0
	}
	line := n.Line
	for _, k := range keys {
		if n.Kind != yaml.MappingNode {
			return line
		}
		found := false
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				n, line, found = n.Content[i+1], n.Content[i+1].Line, true
				break
			}
		}
		if !found {
			return line
		}
	}
	return line
}

// KeyLine returns the line of key in the mapping n, or n's line when key is absent.
func KeyLine(n *yaml.Node, key string) int { return keyLine(n, key) }

func keyLine(n *yaml.Node, key string) int {
	if n == nil {
		return 0
	}
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				return n.Content[i].Line
			}
		}
	}
	return n.Line
}

// child returns the value of key in the mapping n, or nil.
func child(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// modules checks an inputs or outputs block: a mapping from name to a block with a type key.
func (cfg *Config) modules(n *yaml.Node, kind string) []*Module {
	c := cfg.c
	if n.Kind == 0 || isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		c.add(n.Line, kind, "expected a mapping from name to %s block, got %s", strings.TrimSuffix(kind, "s"), describe(n))
		return nil
	}
	var out []*Module
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := join(kind, k.Value)
		if first, dup := seen[k.Value]; dup {
			c.add(k.Line, key, "duplicate name (first defined at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		if !namePattern.MatchString(k.Value) {
			c.add(k.Line, key, "invalid name %q: use letters, digits, '_', '.' and '-', starting with a letter or digit", k.Value)
			continue
		}
		if v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		m := &Module{Name: k.Value, Line: k.Line}
		if v.Kind != yaml.MappingNode {
			// Keep the name known, so that routes referring to it do not report it missing.
			c.add(v.Line, key, "expected a mapping with a type key, got %s", describe(v))
			out = append(out, m)
			continue
		}
		body := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: v.Line, Column: v.Column, Style: v.Style}
		typeLine := 0
		for j := 0; j+1 < len(v.Content); j += 2 {
			if v.Content[j].Value == "spool" && kind == "outputs" {
				if !isNull(v.Content[j+1]) {
					m.Spool = v.Content[j+1]
				}
				continue
			}
			if v.Content[j].Value == "type" {
				typeLine = v.Content[j+1].Line
				if t := v.Content[j+1]; t.Kind != yaml.ScalarNode || t.ShortTag() != "!!str" || t.Value == "" {
					c.add(t.Line, key+".type", "expected a type name, got %s", describe(t))
				} else {
					m.Type = t.Value
				}
				continue
			}
			body.Content = append(body.Content, v.Content[j], v.Content[j+1])
		}
		m.Node = body
		out = append(out, m)
		if typeLine == 0 {
			c.add(k.Line, key+".type", "missing (every %s needs a type)", strings.TrimSuffix(kind, "s"))
			continue
		}
		if m.Type == "" {
			continue
		}
		var err error
		if kind == "inputs" {
			m.input, err = engine.LookupInput(m.Type)
		} else {
			m.output, err = engine.LookupOutput(m.Type)
		}
		if err != nil {
			c.add(typeLine, key+".type", "%v", err)
		}
	}
	return out
}

func findModule(ms []*Module, name string) *Module {
	for _, m := range ms {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// routes checks the routes block and the references between routes, inputs and outputs. It
// reports whether the block had the right shape, so that unused inputs can be told apart from
// inputs whose routes could not be read.
func (cfg *Config) routes(n *yaml.Node, root *yaml.Node) bool {
	c := cfg.c
	if n.Kind == 0 || isNull(n) || (n.Kind == yaml.MappingNode && len(n.Content) == 0) {
		c.add(keyLine(root, "routes"), "routes", "at least one route is required")
		return true
	}
	if n.Kind != yaml.MappingNode {
		c.add(n.Line, "routes", "expected a mapping from route name to route block, got %s", describe(n))
		return false
	}
	inputOwner := map[string]*Route{}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := join("routes", k.Value)
		if first, dup := seen[k.Value]; dup {
			c.add(k.Line, key, "duplicate name (first defined at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		if !namePattern.MatchString(k.Value) {
			c.add(k.Line, key, "invalid name %q: use letters, digits, '_', '.' and '-', starting with a letter or digit", k.Value)
			continue
		}
		r := &Route{Name: k.Value, Line: k.Line}
		before := len(c.errs)
		decoded := decodeStrict(c, v, key, &r.Spec)
		if !decoded {
			// The inputs this route names are not unused, even if the route is broken.
			if seq := child(v, "inputs"); seq != nil && seq.Kind == yaml.SequenceNode {
				for _, e := range seq.Content {
					if m := findModule(cfg.Inputs, e.Value); m != nil {
						m.Used = true
					}
				}
			}
		}
		if v.Kind != yaml.MappingNode {
			continue
		}
		cfg.checkRoute(r, v, key, inputOwner, decoded)
		r.valid = len(c.errs) == before
		cfg.Routes = append(cfg.Routes, r)
	}
	return true
}

// checkRoute checks one route. decoded is false when the route block had errors already; then
// the "required" checks are skipped, as a key may be missing only because it did not decode.
func (cfg *Config) checkRoute(r *Route, n *yaml.Node, key string, inputOwner map[string]*Route, decoded bool) {
	c := cfg.c
	s := &r.Spec
	if len(s.Inputs) == 0 && decoded {
		c.add(valueLine(n, "inputs"), key+".inputs", "at least one input is required")
	}
	for i, in := range s.Inputs {
		ikey := fmt.Sprintf("%s.inputs[%d]", key, i)
		m := findModule(cfg.Inputs, in.Name)
		if m == nil {
			c.add(in.Line, ikey, "unknown input %q%s", in.Name, known(cfg.Inputs))
			continue
		}
		if other, taken := inputOwner[in.Name]; taken {
			if other == r {
				c.add(in.Line, ikey, "input %q is listed twice", in.Name)
			} else {
				c.add(in.Line, ikey, "input %q is already used by route %q (line %d); an input feeds exactly one route", in.Name, other.Name, other.Line)
			}
			continue
		}
		inputOwner[in.Name] = r
		m.Used = true
	}

	outs := map[string]bool{}
	addOutput := func(ref Ref, k string) bool {
		m := findModule(cfg.Outputs, ref.Name)
		if m == nil {
			c.add(ref.Line, k, "unknown output %q%s", ref.Name, known(cfg.Outputs))
			return false
		}
		m.Used = true
		if !outs[ref.Name] {
			outs[ref.Name] = true
			r.Outputs = append(r.Outputs, ref.Name)
		}
		return true
	}
	listed := map[string]bool{}
	for i, o := range s.Outputs {
		k := fmt.Sprintf("%s.outputs[%d]", key, i)
		if listed[o.Name] {
			c.add(o.Line, k, "output %q is listed twice", o.Name)
			continue
		}
		listed[o.Name] = true
		addOutput(o, k)
	}
	var defaults []string
	if s.Rule != nil && len(s.DefaultOutputs) > 0 {
		c.add(s.DefaultOutputs[0].Line, key+".default_outputs", "only used by a route without a rule; the rule chooses the outputs of this route")
	}
	for i, o := range s.DefaultOutputs {
		k := fmt.Sprintf("%s.default_outputs[%d]", key, i)
		if addOutput(o, k) {
			defaults = append(defaults, o.Name)
		}
	}
	if s.Rule == nil && len(s.DefaultOutputs) == 0 {
		// Without a rule every event goes to all the listed outputs.
		defaults = append(defaults, r.Outputs...)
	}
	if len(s.Outputs) == 0 && len(s.DefaultOutputs) == 0 && decoded {
		c.add(n.Line, key+".outputs", "at least one output is required")
	}
	if s.DeadLetter != nil {
		if m := findModule(cfg.Outputs, s.DeadLetter.Name); m == nil {
			c.add(s.DeadLetter.Line, key+".dead_letter", "unknown output %q%s", s.DeadLetter.Name, known(cfg.Outputs))
		} else {
			m.Used = true
		}
	}

	rc := s.RouteConfig
	switch rc.Mode {
	case "", engine.AtLeastOnce, engine.BestEffort:
	default:
		c.add(valueLine(n, "mode"), key+".mode", "unknown mode %q (known: %s, %s)", rc.Mode, engine.AtLeastOnce, engine.BestEffort)
	}
	switch rc.OnRuleError {
	case "", engine.FailDeadLetter, engine.FailNack, engine.FailDrop:
	default:
		c.add(valueLine(n, "on_rule_error"), key+".on_rule_error", "unknown policy %q (known: %s, %s, %s)", rc.OnRuleError, engine.FailDeadLetter, engine.FailNack, engine.FailDrop)
	}
	if rc.MaxInFlight < 0 {
		c.add(valueLine(n, "max_in_flight"), key+".max_in_flight", "must not be negative")
	}
	rp := rc.Retry
	if rp.MaxAttempts < 0 {
		c.add(valueLine(n, "retry", "max_attempts"), key+".retry.max_attempts", "must not be negative")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"initial_backoff", rp.InitialBackoff}, {"max_backoff", rp.MaxBackoff}, {"timeout", rp.Timeout}} {
		if d.v < 0 {
			c.add(valueLine(n, "retry", d.name), key+".retry."+d.name, "must not be negative")
		}
	}
	rc.Name = r.Name
	rc.DefaultOutputs = defaults
	r.Config = rc.Defaults()
	if d := r.Config.Retry; d.InitialBackoff > d.MaxBackoff && rp.InitialBackoff >= 0 && rp.MaxBackoff >= 0 {
		c.add(valueLine(n, "retry", "initial_backoff"), key+".retry.initial_backoff", "%v is longer than max_backoff %v", d.InitialBackoff, d.MaxBackoff)
	}

	if s.Rule != nil {
		r.Rule = cfg.checkRule(s.Rule, child(n, "rule"), keyLine(n, "rule"), key+".rule")
	}
}

func (cfg *Config) checkRule(s *RuleSpec, n *yaml.Node, line int, key string) *Rule {
	c := cfg.c
	r := &Rule{Timeout: DefaultRuleTimeout, MemoryLimitPages: s.MemoryLimitPages, PoolSize: s.PoolSize, AllowClock: s.AllowClock, Line: line}
	if s.File == nil || s.File.Name == "" {
		c.add(line, key+".file", "missing (the rule's .wasm file)")
	} else {
		r.Line = s.File.Line
		r.Path = s.File.Name
		if !filepath.IsAbs(r.Path) {
			r.Path = filepath.Join(cfg.Dir, r.Path)
		}
		if st, err := os.Stat(r.Path); err != nil {
			c.add(s.File.Line, key+".file", "%v", err)
			r.Path = "" // reported; Build does not try it again
		} else if st.IsDir() {
			c.add(s.File.Line, key+".file", "%s is a directory, not a .wasm file", r.Path)
			r.Path = ""
		}
	}
	if s.Timeout != nil {
		r.Timeout = *s.Timeout
		if r.Timeout < 0 {
			c.add(valueLine(n, "timeout"), key+".timeout", "must not be negative (0 disables the guard)")
		}
	}
	if s.MemoryLimitPages > MaxMemoryLimitPages {
		c.add(valueLine(n, "memory_limit_pages"), key+".memory_limit_pages", "%d is above the Wasm maximum of %d pages (4 GiB)", s.MemoryLimitPages, MaxMemoryLimitPages)
	}
	if s.PoolSize < 0 {
		c.add(valueLine(n, "pool_size"), key+".pool_size", "must not be negative (0 picks the default)")
	}
	js, err := nodeJSON(&s.Config)
	if err != nil {
		c.add(s.Config.Line, key+".config", "cannot be handed to the rule as JSON: %v", err)
	}
	r.ConfigJSON = js
	return r
}

// nodeJSON converts a YAML block into JSON. An absent block is JSON null.
func nodeJSON(n *yaml.Node) ([]byte, error) {
	if n.Kind == 0 {
		return []byte("null"), nil
	}
	var v any
	if err := safeDecode(n, &v); err != nil {
		return nil, err
	}
	v, err := jsonable(v)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// jsonable makes the result of decoding YAML into any encodable as JSON: maps get string keys.
func jsonable(v any) (any, error) {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			j, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			t[k] = j
		}
		return t, nil
	case map[any]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			switch k.(type) {
			case string, int, int64, uint64, float64, bool:
			default:
				return nil, fmt.Errorf("key %v is not a scalar", k)
			}
			j, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			out[fmt.Sprint(k)] = j
		}
		return out, nil
	case []any:
		for i, e := range t {
			j, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			t[i] = j
		}
		return t, nil
	case float64:
		if math.IsInf(t, 0) || math.IsNaN(t) {
			return nil, fmt.Errorf("%v has no JSON form", t)
		}
		return t, nil
	case time.Time:
		return t.Format(time.RFC3339Nano), nil
	case []byte:
		return t, nil
	}
	return v, nil
}

func known(ms []*Module) string {
	if len(ms) == 0 {
		return " (none are defined)"
	}
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.Name
	}
	return " (defined: " + strings.Join(names, ", ") + ")"
}

// Decoder returns an engine.Decoder for the block n whose dotted path is key: the decoder that
// modules receive. Its errors are Errors located in this configuration's file.
func (cfg *Config) Decoder(n *yaml.Node, key string) engine.Decoder {
	return func(v any) error {
		c := &collector{file: cfg.Path}
		decodeStrict(c, n, key, v)
		return c.errs.errOrNil()
	}
}

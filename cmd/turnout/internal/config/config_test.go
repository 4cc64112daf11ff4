package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/tracing"
)

// fakeConf is the configuration of the test-only module types: enough keys to exercise strict
// decoding (a string, a duration, a nested block) and a way to make the factory fail.
type fakeConf struct {
	Addr string        `yaml:"addr"`
	Wait time.Duration `yaml:"wait"`
	Fail string        `yaml:"fail"`
	TLS  struct {
		CAFile string `yaml:"ca_file"`
	} `yaml:"tls"`
}

type fakeModule struct {
	name   string
	conf   fakeConf
	closed bool
}

func (f *fakeModule) Start(context.Context, engine.Dispatcher) error { return nil }
func (f *fakeModule) Send(context.Context, *event.Event) error       { return nil }
func (f *fakeModule) Close(context.Context) error                    { f.closed = true; return nil }

var (
	_ engine.Source = (*fakeModule)(nil)
	_ engine.Sink   = (*fakeModule)(nil)
)

func fakeBuild(name string, decode engine.Decoder) (*fakeModule, error) {
	m := &fakeModule{name: name}
	if err := decode(&m.conf); err != nil {
		return nil, fmt.Errorf("fake %s: %w", name, err)
	}
	if m.conf.Fail != "" {
		return nil, errors.New(m.conf.Fail)
	}
	return m, nil
}

func init() {
	engine.RegisterInput("test-in", func(name string, decode engine.Decoder, _ engine.Deps) (engine.Source, error) {
		return fakeBuild(name, decode)
	})
	engine.RegisterOutput("test-out", func(name string, decode engine.Decoder, _ engine.Deps) (engine.Sink, error) {
		return fakeBuild(name, decode)
	})
}

// doc strips the leading newline of a raw string literal so that its first line is line 1.
func doc(s string) []byte { return []byte(strings.TrimPrefix(s, "\n")) }

func noEnv(string) (string, bool) { return "", false }

const validDoc = `
inputs:
  in:
    type: test-in
    addr: a
outputs:
  out:
    type: test-out
routes:
  r:
    inputs: [in]
    outputs: [out]
`

func TestParseValid(t *testing.T) {
	dir := t.TempDir()
	cfg, err := Parse(filepath.Join(dir, "turnout.yaml"), doc(validDoc), Options{LookupEnv: noEnv})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.DataDir, filepath.Join(wd, "data"); got != want {
		t.Errorf("DataDir = %q, want %q (relative to the working directory)", got, want)
	}
	if cfg.Admin.Addr() != DefaultAdminListen || cfg.DrainTimeout != DefaultDrainTimeout || cfg.Log.Level != "info" || cfg.Log.Format != "text" {
		t.Errorf("defaults not applied: admin %q drain %v log %+v", cfg.Admin.Addr(), cfg.DrainTimeout, cfg.Log)
	}
	if len(cfg.Routes) != 1 {
		t.Fatalf("routes = %d, want 1", len(cfg.Routes))
	}
	rc := cfg.Routes[0].Config
	if rc.Name != "r" || rc.Mode != engine.AtLeastOnce || rc.MaxInFlight != 256 || rc.OnRuleError != engine.FailDeadLetter {
		t.Errorf("route config = %+v, want engine defaults", rc)
	}
	if fmt.Sprint(rc.DefaultOutputs) != "[out]" {
		t.Errorf("DefaultOutputs = %v, want [out] (a route without rule sends to all its outputs)", rc.DefaultOutputs)
	}

	b, err := Build(context.Background(), cfg, BuildOptions{})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if len(b.Routes) != 1 || b.Routes[0].Inputs["in"] == nil || b.Routes[0].Outputs["out"] == nil {
		t.Fatalf("built routes = %+v", b.Routes)
	}
	if got := b.Inputs["in"].(*fakeModule).conf.Addr; got != "a" {
		t.Errorf("input addr = %q, want a (the factory decodes its own block)", got)
	}
	if err := b.CloseAll(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestParseFullRoute(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rule.wasm"), []byte("\x00asm"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(filepath.Join(dir, "t.yaml"), doc(`
data_dir: /var/lib/turnout
log: { level: debug, format: json }
admin: { listen: "" }
shutdown: { drain_timeout: 0 }
inputs:
  in: { type: test-in }
outputs:
  a: { type: test-out }
  dl: { type: test-out }
routes:
  r:
    inputs: [in]
    outputs: [a]
    dead_letter: dl
    mode: best-effort
    max_in_flight: 8
    retry: { max_attempts: 3, initial_backoff: 50ms, max_backoff: 2s, timeout: 1s }
    on_rule_error: nack
    rule:
      file: rule.wasm
      config: { levels: [1, 2], name: x, nested: { on: true } }
      timeout: 0
      memory_limit_pages: 512
      pool_size: 4
`), Options{LookupEnv: noEnv})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if cfg.DataDir != "/var/lib/turnout" || cfg.Admin.Addr() != "" || cfg.DrainTimeout != 0 || cfg.Log.Format != "json" {
		t.Errorf("top level = %q %q %v %+v", cfg.DataDir, cfg.Admin.Addr(), cfg.DrainTimeout, cfg.Log)
	}
	r := cfg.Routes[0]
	want := engine.RetryPolicy{MaxAttempts: 3, InitialBackoff: 50 * time.Millisecond, MaxBackoff: 2 * time.Second, Timeout: time.Second}
	if r.Config.Retry != want || r.Config.Mode != engine.BestEffort || r.Config.MaxInFlight != 8 || r.Config.OnRuleError != engine.FailNack {
		t.Errorf("route config = %+v", r.Config)
	}
	if len(r.Config.DefaultOutputs) != 0 {
		t.Errorf("DefaultOutputs = %v, want none for a route with a rule", r.Config.DefaultOutputs)
	}
	if r.Rule == nil || r.Rule.Path != filepath.Join(dir, "rule.wasm") || r.Rule.Timeout != 0 || r.Rule.MemoryLimitPages != 512 || r.Rule.PoolSize != 4 {
		t.Fatalf("rule = %+v", r.Rule)
	}
	if got := string(r.Rule.ConfigJSON); got != `{"levels":[1,2],"name":"x","nested":{"on":true}}` {
		t.Errorf("rule config JSON = %s", got)
	}

	var loaded []string
	b, err := Build(context.Background(), cfg, BuildOptions{LoadRule: func(_ context.Context, r *Route, wasm []byte) (engine.Rule, error) {
		loaded = append(loaded, fmt.Sprintf("%s:%q", r.Name, wasm))
		return nil, errors.New("init rejected the config: levels must be strings")
	}})
	if fmt.Sprint(loaded) != `[r:"\x00asm"]` {
		t.Errorf("LoadRule calls = %v", loaded)
	}
	if err == nil || err.Error() != fmt.Sprintf("%s:20: routes.r.rule: load %s: init rejected the config: levels must be strings", filepath.Join(dir, "t.yaml"), filepath.Join(dir, "rule.wasm")) {
		t.Errorf("Build error = %v", err)
	}
	if len(b.Routes) != 0 {
		t.Errorf("a route whose rule failed was built")
	}
}

func TestParseErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		doc  string
		env  map[string]string
		// want lists every expected error as "LINE: key: message-prefix", in order.
		want []string
	}{
		{"unknown top-level key", `
inptus: {}
inputs: { in: { type: test-in } }
outputs: { out: { type: test-out } }
routes: { r: { inputs: [in], outputs: [out] } }
`, nil, []string{"1: inptus: unknown key (known keys: admin, broker, data_dir, inputs, log, memory_limit, outputs, routes, shutdown, tracing)"}},
		{"unknown route and retry keys", `
inputs: { in: { type: test-in } }
outputs: { out: { type: test-out } }
routes:
  r:
    inputs: [in]
    outptus: [out]
    retry:
      max_atempts: 3
`, nil, []string{"6: routes.r.outptus: unknown key", "8: routes.r.retry.max_atempts: unknown key"}},
		{"unknown input and output", `
inputs: { in: { type: test-in } }
outputs: { out: { type: test-out } }
routes:
  r:
    inputs: [in, nope]
    outputs:
      - out
      - gone
    dead_letter: missing
`, nil, []string{`5: routes.r.inputs[1]: unknown input "nope" (defined: in)`, `8: routes.r.outputs[1]: unknown output "gone" (defined: out)`, `9: routes.r.dead_letter: unknown output "missing"`}},
		{"input used by two routes", `
inputs: { in: { type: test-in } }
outputs: { out: { type: test-out } }
routes:
  a: { inputs: [in], outputs: [out] }
  b:
    inputs: [in]
    outputs: [out]
`, nil, []string{`6: routes.b.inputs[0]: input "in" is already used by route "a" (line 4)`}},
		{"missing rule file", `
inputs: { in: { type: test-in } }
outputs: { out: { type: test-out } }
routes:
  r:
    inputs: [in]
    outputs: [out]
    rule:
      file: rules/none.wasm
`, nil, []string{"8: routes.r.rule.file: stat " + filepath.Join(dir, "rules/none.wasm") + ": no such file"}},
		{"bad durations", `
shutdown: { drain_timeout: 10x }
inputs: { in: { type: test-in } }
outputs: { out: { type: test-out } }
routes:
  r:
    inputs: [in]
    outputs: [out]
    retry:
      timeout: 5
      max_backoff: [1s]
`, nil, []string{`1: shutdown.drain_timeout: invalid duration "10x"`, `9: routes.r.retry.timeout: duration "5" needs a unit`, `10: routes.r.retry.max_backoff: expected a duration such as 500ms or 10s, got a list`}},
		{"unknown type lists known types", `
inputs:
  in:
    type: kafka
outputs: { out: { type: test-out } }
routes: { r: { inputs: [in], outputs: [out] } }
`, nil, []string{`3: inputs.in.type: unknown input type "kafka" (known: [`}},
		{"missing type", `
inputs:
  in: { addr: x }
outputs: { out: { type: test-out } }
routes: { r: { inputs: [in], outputs: [out] } }
`, nil, []string{`2: inputs.in.type: missing`}},
		{"unset environment variables", `
inputs:
  in: { type: test-in, addr: "${ADDR}" }
outputs:
  out: { type: test-out, addr: "${HOST:-localhost}:${PORT}" }
routes: { r: { inputs: [in], outputs: [out] } }
`, nil, []string{"2: environment variable ADDR is not set", "4: environment variable PORT is not set"}},
		{"bad enums and numbers", `
log: { level: loud, format: xml }
admin: { listen: "9090" }
inputs: { in: { type: test-in } }
outputs: { out: { type: test-out } }
routes:
  r:
    inputs: [in]
    outputs: [out]
    mode: exactly-once
    max_in_flight: many
    on_rule_error: retry
`, nil, []string{`1: log.level: unknown level "loud"`, `1: log.format: unknown format "xml"`, `2: admin.listen: invalid address "9090"`, `9: routes.r.mode: unknown mode "exactly-once"`, `10: routes.r.max_in_flight: invalid value "many": expected an integer`, `11: routes.r.on_rule_error: unknown policy "retry"`}},
		{"duplicate keys", `
inputs:
  in: { type: test-in }
  in: { type: test-in }
outputs: { out: { type: test-out } }
routes:
  r:
    inputs: [in]
    outputs: [out]
    outputs: [out]
`, nil, []string{"3: inputs.in: duplicate name (first defined at line 2)", "9: routes.r.outputs: duplicate key (first defined at line 8)"}},
		{"unused input and missing routes", `
inputs: { in: { type: test-in } }
outputs: { out: { type: test-out } }
`, nil, []string{"1: routes: at least one route is required", "1: inputs.in: not used by any route"}},
		{"yaml syntax error", `
inputs:
  in: { type: test-in
outputs: {}
`, nil, []string{"2: did not find expected ',' or '}'"}},
		{"wrong shapes", `
inputs: [in]
outputs: { out: test-out }
routes: { r: { inputs: in, outputs: [out] } }
`, nil, []string{"1: inputs: expected a mapping from name to input block, got a list", "2: outputs.out: expected a mapping with a type key", "3: routes.r.inputs: expected a list, got \"in\""}},
		{"initial backoff longer than the default max backoff", `
inputs: { in: { type: test-in } }
outputs: { out: { type: test-out } }
routes:
  r:
    inputs: [in]
    outputs: [out]
    retry: { initial_backoff: 20s }
`, nil, []string{"7: routes.r.retry.initial_backoff: 20s is longer than max_backoff 10s"}},
		{"default outputs with a rule and rule limits", `
inputs: { in: { type: test-in } }
outputs: { out: { type: test-out } }
routes:
  r:
    inputs: [in]
    outputs: [out]
    default_outputs: [out]
    rule:
      memory_limit_pages: 70000
      pool_size: -1
`, nil, []string{"7: routes.r.default_outputs: only used by a route without a rule", "8: routes.r.rule.file: missing", "9: routes.r.rule.memory_limit_pages: 70000 is above", "10: routes.r.rule.pool_size: must not be negative"}},
		{"bad tracing block", `
inputs: { in: { type: test-in } }
outputs: { out: { type: test-out } }
routes: { r: { inputs: [in], outputs: [out] } }
tracing:
  otlp_endpoint: "grpc://user:pw@collector:4317"
  sample_ratio: 1.5
  timeout: -1s
`, nil, []string{`5: tracing.otlp_endpoint: scheme "grpc": want http or https`, "6: tracing.sample_ratio: 1.5 is not between 0 and 1", "7: tracing.timeout: must not be negative"}},
		{"tracing keys without an endpoint", `
inputs: { in: { type: test-in } }
outputs: { out: { type: test-out } }
routes: { r: { inputs: [in], outputs: [out] } }
tracing:
  headers: { x-api-key: "${KEY}" }
`, map[string]string{"KEY": "k"}, []string{"5: tracing.otlp_endpoint: is required when any other tracing key is set"}},
	}
	if !tracing.Available {
		cases = append(cases, struct {
			name string
			doc  string
			env  map[string]string
			want []string
		}{"tracing in a build without otel", `
inputs: { in: { type: test-in } }
outputs: { out: { type: test-out } }
routes: { r: { inputs: [in], outputs: [out] } }
tracing: { otlp_endpoint: "http://collector:4318" }
`, nil, []string{"4: tracing.otlp_endpoint: this turnout was built without OpenTelemetry support: build it with -tags otel"}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "t.yaml")
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			_, err := Parse(path, doc(tc.doc), Options{LookupEnv: lookup})
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("Parse error = %v, want Errors", err)
			}
			if len(es) != len(tc.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(es), len(tc.want), err)
			}
			for i, w := range tc.want {
				if got := es[i].Error(); !strings.HasPrefix(got, path+":"+w) {
					t.Errorf("error %d = %q\nwant prefix %q", i, got, path+":"+w)
				}
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	cases := []struct {
		name string
		doc  string
		want []string
	}{
		{"factory error names the input and its line", `
inputs:
  in:
    type: test-in
    fail: cannot reach the broker
outputs: { out: { type: test-out } }
routes: { r: { inputs: [in], outputs: [out] } }
`, []string{`2: inputs.in: cannot reach the broker`}},
		{"module decoder reports unknown keys and bad values at their own lines", `
inputs:
  in:
    type: test-in
    adr: x
    tls:
      ca: /etc/ca.pem
outputs:
  out: { type: test-out, wait: soon }
routes: { r: { inputs: [in], outputs: [out] } }
`, []string{"4: inputs.in.adr: unknown key (known keys: addr, fail, tls, wait)", "6: inputs.in.tls.ca: unknown key (known keys: ca_file)", `8: outputs.out.wait: invalid duration "soon"`}},
		{"spool block errors at their own lines", `
inputs: { in: { type: test-in } }
outputs:
  out:
    type: test-out
    spool:
      max_bytes: 0
      when_full: drop
      fsyncs: always
  other:
    type: test-out
    spool: { dir: /proc/sys/turnout, max_bytes: ten }
routes: { r: { inputs: [in], outputs: [out, other] } }
`, []string{
			"6: outputs.out.spool.dir: missing",
			"6: outputs.out.spool.max_bytes: 0B is below the minimum",
			`7: outputs.out.spool.when_full: unknown value "drop"`,
			"8: outputs.out.spool.fsyncs: unknown key",
			`11: outputs.other.spool.max_bytes: "ten" is not a size`,
			`11: outputs.other.spool.dir: cannot create /proc/sys/turnout: /proc/sys is not writable`,
		}},
		{"two outputs on one spool directory", `
inputs: { in: { type: test-in } }
outputs:
  a: { type: test-out, spool: { dir: spool/x } }
  b: { type: test-out, spool: { dir: spool/x } }
routes: { r: { inputs: [in], outputs: [a, b] } }
`, []string{`4: outputs.b.spool.dir: `}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "t.yaml")
			cfg, err := Parse(path, doc(tc.doc), Options{LookupEnv: noEnv})
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			b, err := Build(context.Background(), cfg, BuildOptions{})
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("Build error = %v, want Errors", err)
			}
			if len(es) != len(tc.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(es), len(tc.want), err)
			}
			for i, w := range tc.want {
				if got := es[i].Error(); !strings.HasPrefix(got, path+":"+w) {
					t.Errorf("error %d = %q\nwant prefix %q", i, got, path+":"+w)
				}
			}
			if len(b.Routes) != 0 {
				t.Errorf("built %d routes from a configuration with errors", len(b.Routes))
			}
			for name, s := range b.Outputs {
				_ = b.CloseAll(context.Background())
				if fm, ok := s.(*fakeModule); ok && !fm.closed {
					t.Errorf("output %s not closed by CloseAll", name)
				}
			}
		})
	}
}

func TestExpandEnv(t *testing.T) {
	env := map[string]string{"HOST": "broker", "EMPTY": "", "PORT": "1883"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cases := []struct {
		name, in, want string
		errs           []string
	}{
		{"plain", "a: ${HOST}:${PORT}\n", "a: broker:1883\n", nil},
		{"default when unset", "a: ${NOPE:-x y}\n", "a: x y\n", nil},
		{"default when empty", "a: ${EMPTY:-d}\n", "a: d\n", nil},
		{"empty without default", "a: '${EMPTY}'\n", "a: ''\n", nil},
		{"empty default", "a: '${NOPE:-}'\n", "a: ''\n", nil},
		{"escaped", "a: $${HOST}\n", "a: ${HOST}\n", nil},
		{"bare dollar untouched", "a: $HOST $ 5$\n", "a: $HOST $ 5$\n", nil},
		{"comment line untouched", "  # ${NOPE}\na: 1\n", "  # ${NOPE}\na: 1\n", nil},
		{"unset names variable and line", "a: 1\nb: ${NOPE}\nc: ${ALSO}\n", "a: 1\nb: \nc: \n", []string{"f:2: environment variable NOPE is not set", "f:3: environment variable ALSO is not set"}},
		{"invalid name", "a: ${1X}\n", "a: \n", []string{"f:1: invalid environment variable reference ${1X}"}},
		{"unterminated", "a: ${HOST\n", "a: ${HOST\n", []string{"f:1: unterminated ${"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &collector{file: "f"}
			if got := expandEnv(c, tc.in, lookup); got != tc.want {
				t.Errorf("expandEnv = %q, want %q", got, tc.want)
			}
			if len(c.errs) != len(tc.errs) {
				t.Fatalf("errors = %v, want %v", c.errs, tc.errs)
			}
			for i, w := range tc.errs {
				if !strings.HasPrefix(c.errs[i].Error(), w) {
					t.Errorf("error %d = %q, want prefix %q", i, c.errs[i].Error(), w)
				}
			}
		})
	}
}

func TestEnvInConfig(t *testing.T) {
	env := map[string]string{"IN_TYPE": "test-in", "ADDR": "10.0.0.1:1883"}
	cfg, err := Parse("t.yaml", doc(`
inputs:
  in: { type: "${IN_TYPE}", addr: "${ADDR}" }
outputs:
  out: { type: test-out, addr: "${OUT:-stdout}" }
routes: { r: { inputs: [in], outputs: [out] } }
`), Options{LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	b, err := Build(context.Background(), cfg, BuildOptions{})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	if got := b.Inputs["in"].(*fakeModule).conf.Addr; got != "10.0.0.1:1883" {
		t.Errorf("input addr = %q", got)
	}
	if got := b.Outputs["out"].(*fakeModule).conf.Addr; got != "stdout" {
		t.Errorf("output addr = %q", got)
	}
}

// FuzzLoadConfig parses and builds arbitrary documents, seeded with the example and deployment
// configurations. A refusal is a non-empty Errors whose every entry names the file, says what
// is wrong and gives a line inside the document; a document that passes is refused once an
// unknown key is added (the strict decoding), with that key named unless the addition broke
// the YAML itself.
func FuzzLoadConfig(f *testing.F) {
	f.Add([]byte(validDoc))
	f.Add(doc(`
inputs: { in: &a { type: test-in, addr: x }, in2: *a }
outputs: { out: { type: test-out, <<: { wait: 1s } } }
routes: { r: { inputs: [in, in2], outputs: [out], retry: { timeout: 0 }, rule: { file: x, config: [1, {a: b}] } } }
`))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("${X:-routes}: ${Y}\n---\nx: 1\n"))
	f.Add([]byte("routes: { r: { rule: { config: { ? [1]: 2, .inf: .nan } } } }"))
	f.Add([]byte("memory_limit: 1.5GiB\n" + strings.TrimPrefix(validDoc, "\n")))
	f.Add([]byte("memory_limit: { a: 200 }\nmemory_limit: -0x10\n"))
	examples, _ := filepath.Glob("../../../../examples/*/turnout.yaml")
	deploy, _ := filepath.Glob("../../../../deploy/*/turnout.yaml")
	if len(examples) == 0 {
		f.Fatal("no example configurations found")
	}
	for _, p := range append(examples, deploy...) {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		// The same with the modules this test registers, so that Build gets further.
		for _, typ := range []string{"http", "mqtt", "amqp", "nats", "kafka", "file", "log"} {
			b = bytes.ReplaceAll(b, []byte("type: "+typ+"\n"), []byte("type: test-in\n"))
		}
		f.Add(b)
	}
	dir := f.TempDir()
	path := filepath.Join(dir, "f.yaml")
	opts := Options{LookupEnv: func(k string) (string, bool) { return "v", k == "X" }}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(path, data, opts)
		if err != nil {
			checkErrors(t, err, path, data)
		}
		if err == nil {
			// Strict: an unknown key is refused, wherever the document goes on.
			unknown := append([]byte("zz_unknown_key: 1\n"), data...)
			if _, err := Parse(path, unknown, opts); err == nil {
				t.Fatalf("an unknown key was accepted:\n%s", unknown)
			} else {
				var es Errors
				errors.As(err, &es)
				syntax := false
				for _, e := range es {
					syntax = syntax || e.Key == ""
				}
				if !syntax && !strings.Contains(err.Error(), "zz_unknown_key") {
					t.Fatalf("an unknown key was refused without being named: %v", err)
				}
			}
		}
		if cfg == nil {
			return
		}
		b, err := Build(context.Background(), cfg, BuildOptions{})
		if err != nil {
			checkErrors(t, err, path, data)
		}
		if b != nil {
			_ = b.CloseAll(context.Background())
		}
	})
}

// checkErrors fails t unless err is a non-empty Errors whose every entry names path, has a
// message and a line within data (or none; or the one after the last, where yaml.v3 places an
// unexpected end of the document that has no final newline).
func checkErrors(t *testing.T, err error, path string, data []byte) {
	t.Helper()
	var es Errors
	if !errors.As(err, &es) || len(es) == 0 {
		t.Fatalf("error is not a non-empty Errors: %v", err)
	}
	// Lines as YAML counts them: a CR alone breaks a line too.
	lines := bytes.Count(data, []byte("\n")) + bytes.Count(data, []byte("\r")) - bytes.Count(data, []byte("\r\n")) + 1
	for _, e := range es {
		if e.File != path || strings.TrimSpace(e.Msg) == "" || e.Line < 0 || e.Line > lines+1 {
			t.Fatalf("error %q (line %d of %d) does not name the file, say what is wrong or give a line in it", e, e.Line, lines)
		}
	}
}

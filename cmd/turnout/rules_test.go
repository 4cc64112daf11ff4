package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/turnout-router/turnout/cmd/turnout/internal/ruletest"
	"github.com/turnout-router/turnout/internal/rulebuild"
)

// ruleFile builds the rule package pkgDir (relative to the module root) and writes the module
// to a temporary .wasm file, as a rule author's build would.
func ruleFile(t *testing.T, pkgDir string) string {
	t.Helper()
	wasm, err := rulebuild.Build(pkgDir)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), filepath.Base(pkgDir)+".wasm")
	if err := os.WriteFile(path, wasm, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestRulesTestStockRules runs `turnout rules test` over the stock rules' testdata: every
// expectation there must hold.
func TestRulesTestStockRules(t *testing.T) {
	root, err := rulebuild.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	attrroute := ruleFile(t, "filters/rules/attrroute")
	passthrough := ruleFile(t, "filters/rules/passthrough")
	td := func(p string) string { return filepath.Join(root, "filters/rules", p) }
	cases := []struct {
		name, rule, config, events string
		summary                    string
	}{
		{"attrroute first match", attrroute, td("attrroute/testdata/first-match/config.json"), td("attrroute/testdata/first-match/events"), "5 event(s): 5 passed, 0 failed, 0 without expectation"},
		{"attrroute all matches", attrroute, td("attrroute/testdata/all-matches/config.json"), td("attrroute/testdata/all-matches/events.json"), "4 event(s): 4 passed, 0 failed, 0 without expectation"},
		{"passthrough", passthrough, td("passthrough/testdata/config.json"), td("passthrough/testdata/events.json"), "2 event(s): 2 passed, 0 failed, 0 without expectation"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(context.Background(), "rules", "test", c.rule, "--config", c.config, "--events", c.events)
			if code != 0 {
				t.Fatalf("exit %d, want 0\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
			}
			if !strings.Contains(stdout, c.summary) {
				t.Errorf("stdout does not end with %q:\n%s", c.summary, stdout)
			}
			if strings.Contains(stdout, "FAIL") {
				t.Errorf("a sample failed:\n%s", stdout)
			}
		})
	}
}

func TestRulesTestResults(t *testing.T) {
	attrroute := ruleFile(t, "filters/rules/attrroute")
	misbehave := ruleFile(t, "hostabi/testdata/misbehave")
	first := `{"filters":[{"attribute":"type","prefix":"care.alarm.","outputs":["urgent"]}],"default":["archive"]}`
	alarm := `{"specversion":"1.0","id":"a-1","source":"/s","type":"care.alarm.fall"`
	dir := writeFiles(t, map[string]string{
		"wrong.json":          alarm + `,"expect":{"action":"route","outputs":["north"]}}`,
		"dropped.json":        alarm + `}`,
		"dropped.expect.json": `{"action":"drop"}`,
		"plain.json":          `{"specversion":"1.0","id":"p-1","source":"/s","type":"other"}`,
	})
	mis := writeFiles(t, map[string]string{
		"events.json": `[
			{"specversion":"1.0","id":"m-1","source":"/s","type":"trap","expect":{"action":"error","error":"trap"}},
			{"specversion":"1.0","id":"m-2","source":"/s","type":"mutate","subject":"old","time":"2026-01-02T03:04:05Z",
			 "expect":{"action":"route","outputs":["ok"],"changes":{"seen":"yes","subject":"changed"}}},
			{"specversion":"1.0","id":"m-3","source":"/s","type":"fail","expect":{"action":"fail","reason":"asked to fail"}}
		]`,
	})
	t.Run("mismatches exit 1", func(t *testing.T) {
		code, stdout, stderr := runCLI(context.Background(), "rules", "test", "--events", dir, attrroute, "--config", first)
		if code != 1 {
			t.Fatalf("exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		for _, want := range []string{
			"FAIL " + filepath.Join(dir, "dropped.json") + ": route [urgent]\n       action: got route, want drop\n",
			"---- " + filepath.Join(dir, "plain.json") + ": route [archive]\n",
			"FAIL " + filepath.Join(dir, "wrong.json") + ": route [urgent]\n       outputs: got [urgent], want [north]\n",
			"3 event(s): 0 passed, 2 failed, 1 without expectation\n",
		} {
			if !strings.Contains(stdout, want) {
				t.Errorf("stdout lacks %q:\n%s", want, stdout)
			}
		}
	})
	t.Run("errors failures and changes as expected", func(t *testing.T) {
		code, stdout, stderr := runCLI(context.Background(), "rules", "test", misbehave, "--events", filepath.Join(mis, "events.json"))
		if code != 1 {
			// the mutate sample also changes data, which the expectation does not list
			t.Fatalf("exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
		for _, want := range []string{
			"PASS " + filepath.Join(mis, "events.json") + "[0]: error trap: ",
			"FAIL " + filepath.Join(mis, "events.json") + "[1]: route [ok]; changes ",
			`       changes: got data="`,
			`PASS ` + filepath.Join(mis, "events.json") + `[2]: fail "asked to fail"`,
		} {
			if !strings.Contains(stdout, want) {
				t.Errorf("stdout lacks %q:\n%s", want, stdout)
			}
		}
	})
	t.Run("json output", func(t *testing.T) {
		code, stdout, _ := runCLI(context.Background(), "rules", "test", misbehave, "--events", filepath.Join(mis, "events.json"), "--json")
		if code != 1 {
			t.Fatalf("exit %d, want 1", code)
		}
		var res []ruletest.Result
		if err := json.Unmarshal([]byte(stdout), &res); err != nil {
			t.Fatalf("stdout is not a JSON result array: %v\n%s", err, stdout)
		}
		if len(res) != 3 || res[0].Decision.Error != "trap" || !res[0].Passed() || res[1].Passed() || res[1].Decision.Changes["seen"] == nil {
			t.Errorf("results = %+v", res)
		}
	})
}

func TestRulesTestRefuses(t *testing.T) {
	attrroute := ruleFile(t, "filters/rules/attrroute")
	ev := `{"specversion":"1.0","id":"a-1","source":"/s","type":"t"}`
	dir := writeFiles(t, map[string]string{
		"ok.json":           ev,
		"notjson.json":      `{"specversion":`,
		"noid.json":         `{"specversion":"1.0","source":"/s","type":"t"}`,
		"badexpect.json":    `{"specversion":"1.0","id":"a-1","source":"/s","type":"t","expect":{"action":"route","outputz":[]}}`,
		"both.json":         `{"specversion":"1.0","id":"a-1","source":"/s","type":"t","expect":{"action":"drop"}}`,
		"both.expect.json":  `{"action":"drop"}`,
		"count.json":        "[" + ev + "," + ev + "]",
		"count.expect.json": `[{"action":"drop"}]`,
		"bad.wasm":          "\x00asm\x01\x00\x00\x00garbage",
		"text.wasm":         "hello",
	})
	p := func(n string) string { return filepath.Join(dir, n) }
	cfg := `{"filters":[{"attribute":"type","exact":"t","outputs":["x"]}]}`
	cases := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no arguments", nil, 2, "want one rule file, got 0 arguments"},
		{"two rule files", []string{attrroute, attrroute, "--events", p("ok.json")}, 2, "want one rule file, got 2 arguments"},
		{"no events", []string{attrroute}, 2, "--events is required"},
		{"unknown flag", []string{attrroute, "--event", p("ok.json")}, 2, "flag provided but not defined: -event"},
		{"missing rule file", []string{p("nope.wasm"), "--events", p("ok.json")}, 1, p("nope.wasm")},
		{"missing events", []string{attrroute, "--events", p("nope.json")}, 1, p("nope.json")},
		{"events not JSON", []string{attrroute, "--events", p("notjson.json")}, 1, p("notjson.json") + ": not JSON"},
		{"event without id", []string{attrroute, "--events", p("noid.json")}, 1, p("noid.json") + ": invalid CloudEvent"},
		{"unknown expectation member", []string{attrroute, "--events", p("badexpect.json")}, 1, p("badexpect.json") + `: expect: not an expectation object: json: unknown field "outputz"`},
		{"expect member and file", []string{attrroute, "--events", p("both.json")}, 1, `has an "expect" member and ` + p("both.expect.json") + " exists"},
		{"expectation count", []string{attrroute, "--events", p("count.json")}, 1, p("count.expect.json") + ": 1 expectation(s) for 2 event(s)"},
		{"not wasm", []string{p("text.wasm"), "--events", p("ok.json")}, 1, "not a WebAssembly module (no \\0asm magic) [not_wasm]"},
		{"does not compile", []string{p("bad.wasm"), "--events", p("ok.json")}, 1, "[compile]"},
		{"config refused", []string{attrroute, "--config", `{"filter":[]}`, "--events", p("ok.json")}, 1, `unknown key "filter" [init_failed]`},
		{"inline config not JSON", []string{attrroute, "--config", `{"filters"`, "--events", p("ok.json")}, 1, "--config: the inline configuration is not valid JSON"},
		{"config file missing", []string{attrroute, "--config", p("nope.json"), "--events", p("ok.json")}, 1, "--config: open " + p("nope.json")},
		{"good run", []string{attrroute, "--config", cfg, "--events", p("ok.json")}, 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(context.Background(), append([]string{"rules", "test"}, c.args...)...)
			if code != c.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, c.code, stdout, stderr)
			}
			if !strings.Contains(stderr, c.stderr) {
				t.Errorf("stderr lacks %q:\n%s", c.stderr, stderr)
			}
		})
	}
}

func TestRulesDispatch(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"no subcommand", []string{"rules"}, 2, "", "usage: turnout rules <command>"},
		{"unknown subcommand", []string{"rules", "tset"}, 2, "", `turnout rules: unknown command "tset"`},
		{"help", []string{"rules", "help"}, 0, "test FILE --events DIR|FILE", ""},
		{"test help", []string{"rules", "test", "-h"}, 0, "", "-events string"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(context.Background(), c.args...)
			if code != c.code || !strings.Contains(stdout, c.stdout) || !strings.Contains(stderr, c.stderr) {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, c.code, stdout, stderr)
			}
		})
	}
}

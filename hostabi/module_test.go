package hostabi

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/turnout-router/turnout/engine"
)

func routeTo(out string) []byte {
	return fmt.Appendf(nil, `{"filters":[{"attribute":"type","prefix":"care.","outputs":[%q]}]}`, out)
}

// TestRulesShareModule checks that rules loaded from the same bytes with the same runtime
// settings share one compiled module, that each still decides with its own configuration, and
// that the module lives until the last of them is closed.
func TestRulesShareModule(t *testing.T) {
	h := newTestHost(t)
	wasm := buildRule(t, "filters/rules/attrroute")
	rules := map[string]*Rule{}
	for _, o := range []RuleOptions{
		{Name: "a", Config: routeTo("to-a"), Timeout: time.Second},
		{Name: "b", Config: routeTo("to-b"), Timeout: time.Second},
		{Name: "other-cap", Config: routeTo("to-other-cap"), Timeout: time.Second, MemoryLimitPages: 256},
		{Name: "no-guard", Config: routeTo("to-no-guard")},
	} {
		rules[o.Name] = h.load(t, wasm, o)
	}
	if rules["a"].mod != rules["b"].mod {
		t.Error("rules a and b (same bytes, cap and guard) have modules of their own, want one shared")
	}
	for _, other := range []string{"other-cap", "no-guard"} {
		if rules[other].mod == rules["a"].mod {
			t.Errorf("rule %s shares rule a's module: a runtime setting differs, want its own", other)
		}
	}
	if n := len(h.modules); n != 3 {
		t.Errorf("%d modules held by the host, want 3", n)
	}
	decide := func(name string) (engine.Decision, error) {
		return rules[name].Decide(context.Background(), newEvent("care.alarm.fall"))
	}
	for name := range rules {
		d, err := decide(name)
		if err != nil || len(d.Outputs) != 1 || d.Outputs[0] != "to-"+name {
			t.Errorf("rule %s decided %+v %v, want its own output to-%s", name, d, err, name)
		}
	}

	shared := rules["a"].mod
	if err := rules["a"].Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d, err := decide("b"); err != nil || d.Outputs[0] != "to-b" {
		t.Errorf("rule b after rule a closed: %+v %v, want to-b", d, err)
	}
	if _, err := decide("a"); err == nil {
		t.Error("rule a decided after Close, want an error")
	}
	if h.modules[shared.key] != shared || shared.refs != 1 {
		t.Errorf("after closing a: module held %v with %d references, want held with 1 (rule b)", h.modules[shared.key] == shared, shared.refs)
	}
	if err := rules["b"].Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := rules["b"].Close(context.Background()); err != nil {
		t.Errorf("second Close: %v, want nothing done", err)
	}
	if _, held := h.modules[shared.key]; held {
		t.Error("the module is still held after its last rule closed")
	}
}

// TestSharedModuleLogs checks that a rule log line from a shared module carries the name of the
// rule whose instance wrote it.
func TestSharedModuleLogs(t *testing.T) {
	h := newTestHost(t)
	wasm := buildRule(t, "hostabi/testdata/misbehave")
	quiet := h.load(t, wasm, RuleOptions{Name: "quiet", PoolSize: 1})
	chatty := h.load(t, wasm, RuleOptions{Name: "chatty", PoolSize: 1})
	if quiet.mod != chatty.mod {
		t.Fatal("the two rules do not share their module")
	}
	if _, err := chatty.Decide(context.Background(), newEvent("log")); err != nil {
		t.Fatal(err)
	}
	var chattyLines int
	for _, l := range strings.Split(h.logs.String(), "\n") {
		if !strings.Contains(l, "misbehave log line") {
			continue
		}
		if !strings.Contains(l, " rule=chatty ") {
			t.Fatalf("log line written by rule chatty's instance names another rule: %s", l)
		}
		chattyLines++
	}
	if chattyLines == 0 {
		t.Errorf("no log line of rule chatty in:\n%s", h.logs.String())
	}
}

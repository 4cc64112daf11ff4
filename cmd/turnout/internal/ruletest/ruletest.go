// Package ruletest runs a rule over sample CloudEvents and compares each decision with the
// decision the sample expects: the engine of `turnout rules test` and of the self-test a rule
// version may carry when it is uploaded.
//
// Samples are structured-mode JSON CloudEvents [CE-JSON §3]: a file holds one event or a JSON
// array of events. An event object may carry an "expect" member (an Expectation), removed before
// the event is decoded; a file NAME.json may instead have its expectations in NAME.expect.json
// beside it (one expectation, or an array matching the events one to one).
//
// Invariant: decoding never trusts its input (every error names the file and the element), and
// running a sample never changes it: the decision is compared, never applied.
package ruletest

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"

	"github.com/turnout-router/turnout/engine"
)

// Actions a Decision reports. ActionError means the rule call failed (Decision.Error is the
// *engine.RuleError kind: trap, timeout, memory, decode, init).
const (
	ActionDrop  = "drop"
	ActionRoute = "route"
	ActionFail  = "fail"
	ActionError = "error"
)

// Sample is one event to run, with the decision it must produce (nil: none expected, the
// decision is only reported).
type Sample struct {
	// Name identifies the sample in reports: FILE, or FILE[i] for an array element.
	Name   string       `json:"name"`
	Event  *event.Event `json:"event"`
	Expect *Expectation `json:"expect,omitempty"`
}

// Decision is what a rule did with one event, in a form a person and a JSON API can read.
type Decision struct {
	Action  string   `json:"action"`
	Outputs []string `json:"outputs,omitempty"`
	Reason  string   `json:"reason,omitempty"`
	// Changes are the attributes, extensions and data the rule changed: name -> new value, null
	// when removed. Data is "data" (UTF-8) or "data_base64".
	Changes map[string]*string `json:"changes,omitempty"`
	Error   string             `json:"error,omitempty"`
	Detail  string             `json:"detail,omitempty"`
}

// Expectation is the decision a sample must produce. Action is required; every other member
// is checked only when present: Outputs as a set ([] = none), Reason exactly, Changes exactly
// ({} = no change), Error as the rule error kind.
type Expectation struct {
	Action  string             `json:"action"`
	Outputs []string           `json:"outputs,omitempty"`
	Reason  *string            `json:"reason,omitempty"`
	Changes map[string]*string `json:"changes,omitempty"`
	Error   string             `json:"error,omitempty"`
}

// Mismatch is one way a decision differs from its expectation.
type Mismatch struct {
	Field string `json:"field"`
	Got   string `json:"got"`
	Want  string `json:"want"`
}

func (m Mismatch) String() string { return fmt.Sprintf("%s: got %s, want %s", m.Field, m.Got, m.Want) }

// Result is one sample's outcome. Checked is false for a sample without expectation.
type Result struct {
	Sample     string     `json:"sample"`
	Decision   Decision   `json:"decision"`
	Checked    bool       `json:"checked"`
	Mismatches []Mismatch `json:"mismatches,omitempty"`
}

// Passed reports whether the decision met its expectation (true when there was none).
func (r Result) Passed() bool { return len(r.Mismatches) == 0 }

// Decider is the part of engine.Rule a run needs.
type Decider interface {
	Decide(ctx context.Context, e *event.Event) (engine.Decision, error)
}

// Run decides every sample in order, on the calling goroutine, and compares each decision with
// its expectation. A failing rule call is a result (action "error"), not an error.
func Run(ctx context.Context, rule Decider, samples []Sample) []Result {
	out := make([]Result, 0, len(samples))
	for _, s := range samples {
		d := Decide(ctx, rule, s.Event)
		r := Result{Sample: s.Name, Decision: d}
		if s.Expect != nil {
			r.Checked = true
			r.Mismatches = Compare(d, *s.Expect)
		}
		out = append(out, r)
	}
	return out
}

// Decide runs rule on e and describes the decision.
func Decide(ctx context.Context, rule Decider, e *event.Event) Decision {
	d, err := rule.Decide(ctx, e)
	if err != nil {
		kind := "call"
		var re *engine.RuleError
		if errors.As(err, &re) {
			kind = re.Kind
		}
		return Decision{Action: ActionError, Error: kind, Detail: err.Error()}
	}
	out := Decision{Action: d.Action.String(), Reason: d.Reason}
	if d.Action == engine.ActionRoute {
		out.Outputs = slices.Clone(d.Outputs)
	}
	if d.Event != nil && d.Action != engine.ActionDrop {
		out.Changes = Changes(e, d.Event)
	}
	return out
}

// Changes lists what differs from in to out: name -> new value, nil when removed.
func Changes(in, out *event.Event) map[string]*string {
	a, b := snapshot(in), snapshot(out)
	ch := map[string]*string{}
	for k, v := range b {
		if old, ok := a[k]; !ok || old != v {
			ch[k] = &v
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			ch[k] = nil
		}
	}
	if len(ch) == 0 {
		return nil
	}
	return ch
}

// snapshot returns every present attribute, extension and the data in canonical string form.
func snapshot(e *event.Event) map[string]string {
	m := map[string]string{"id": e.ID(), "source": e.Source(), "specversion": e.SpecVersion(), "type": e.Type()}
	opt := map[string]string{"datacontenttype": e.DataContentType(), "dataschema": e.DataSchema(), "subject": e.Subject()}
	if t := e.Time(); !t.IsZero() {
		opt["time"] = types.FormatTime(t)
	}
	for k, v := range opt {
		if v != "" {
			m[k] = v
		}
	}
	for k, v := range e.Extensions() {
		s, err := types.Format(v)
		if err != nil {
			s = fmt.Sprint(v)
		}
		m[k] = s
	}
	if data := e.Data(); data != nil {
		if utf8.Valid(data) {
			m["data"] = string(data)
		} else {
			m["data_base64"] = base64.StdEncoding.EncodeToString(data)
		}
	}
	return m
}

// Compare lists how d differs from want; nil when it meets it.
func Compare(d Decision, want Expectation) []Mismatch {
	var ms []Mismatch
	add := func(field, got, want string) { ms = append(ms, Mismatch{field, got, want}) }
	if d.Action != want.Action {
		got := d.Action
		if d.Action == ActionError {
			got += " (" + d.Error + ": " + d.Detail + ")"
		}
		add("action", got, want.Action)
		return ms
	}
	if want.Outputs != nil && !sameSet(d.Outputs, want.Outputs) {
		add("outputs", listString(d.Outputs), listString(want.Outputs))
	}
	if want.Reason != nil && d.Reason != *want.Reason {
		add("reason", fmt.Sprintf("%q", d.Reason), fmt.Sprintf("%q", *want.Reason))
	}
	if want.Changes != nil && !sameChanges(d.Changes, want.Changes) {
		add("changes", ChangesString(d.Changes), ChangesString(want.Changes))
	}
	if want.Error != "" && d.Error != want.Error {
		add("error", d.Error, want.Error)
	}
	return ms
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(slices.Compact(x), slices.Compact(y))
}

func sameChanges(a, b map[string]*string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || (v == nil) != (w == nil) || (v != nil && *v != *w) {
			return false
		}
	}
	return true
}

func listString(l []string) string { return "[" + strings.Join(l, ", ") + "]" }

// ChangesString renders changes in name order: `subject="x" time=(removed)`, or "none".
func ChangesString(ch map[string]*string) string {
	if len(ch) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(ch))
	for k := range ch {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		if v := ch[k]; v == nil {
			parts = append(parts, k+"=(removed)")
		} else {
			parts = append(parts, fmt.Sprintf("%s=%q", k, *v))
		}
	}
	return strings.Join(parts, " ")
}

// String renders the decision on one line: "route [a, b]", "drop", `fail "reason"`,
// "error trap: detail", followed by the changes, if any.
func (d Decision) String() string {
	var s string
	switch d.Action {
	case ActionRoute:
		s = "route " + listString(d.Outputs)
	case ActionFail:
		s = fmt.Sprintf("fail %q", d.Reason)
	case ActionError:
		s = "error " + d.Error + ": " + d.Detail
	default:
		s = d.Action
	}
	if len(d.Changes) > 0 {
		s += "; changes " + ChangesString(d.Changes)
	}
	return s
}

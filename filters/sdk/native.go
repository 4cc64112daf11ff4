//go:build !wasip1

package sdk

import (
	"fmt"
	"sort"

	"github.com/turnout-router/turnout/hostabi/wire"
)

// This file is the native build: it lets a rule author test a rule with go test, running the
// handler registered by the rule's init through the same encoding the host uses. It is not safe
// for concurrent use (neither is a rule instance).

// Fields describe a test event. SpecVersion defaults to "1.0"; empty optional attributes are
// absent; Data nil means the event has no data.
type Fields struct {
	ID, Source, SpecVersion, Type        string
	DataContentType, DataSchema, Subject string
	Time                                 string // RFC 3339
	Extensions                           map[string]string
	Data                                 []byte
}

// Mutation is one change a rule asked for.
type Mutation struct {
	Op    string // "set-attribute", "remove-attribute", "set-extension", "remove-extension", "set-data"
	Name  string
	Value string
}

// Result is a decoded decision.
type Result struct {
	Action    string // "drop", "route", "fail"
	Outputs   []string
	Reason    string
	Mutations []Mutation
	Logs      []string // "LEVEL message" lines the handler logged
}

var logs []string

func hostLog(level int, msg string) { logs = append(logs, fmt.Sprintf("%d %s", level, msg)) }

// Init calls the rule's OnInit function with config, as the host does once per instance.
func Init(config []byte) error { return initRule(config) }

var w wire.EventWriter

// Run encodes f, runs the registered handler on it and decodes its decision.
func Run(f Fields) (Result, error) {
	if f.SpecVersion == "" {
		f.SpecVersion = "1.0"
	}
	w.Reset()
	for i, v := range [wire.NumAttrs]string{f.ID, f.Source, f.SpecVersion, f.Type, f.DataContentType, f.DataSchema, f.Subject, f.Time} {
		if v == "" && i != wire.AttrID && i != wire.AttrSource && i != wire.AttrType {
			w.AttrAbsent()
		} else {
			w.Attr(v)
		}
	}
	w.Extensions()
	names := make([]string, 0, len(f.Extensions))
	for n := range f.Extensions {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		w.Extension(n, f.Extensions[n])
	}
	w.Data(f.Data, f.Data != nil)
	logs = nil
	out := decide(w.Buf)
	var d wire.DecisionView
	if err := d.Parse(out); err != nil {
		return Result{}, fmt.Errorf("sdk: decode decision: %w", err)
	}
	r := Result{Action: [...]string{"", "drop", "route", "fail"}[d.Action], Reason: string(d.Reason()), Logs: logs}
	for i := range d.NumOutputs() {
		r.Outputs = append(r.Outputs, string(d.Output(i)))
	}
	ops := [...]string{"", "set-attribute", "remove-attribute", "set-extension", "remove-extension", "set-data"}
	for i := range d.NumMutations() {
		m := d.Mutation(i)
		r.Mutations = append(r.Mutations, Mutation{ops[m.Op], string(m.Name), string(m.Value)})
	}
	return r, nil
}

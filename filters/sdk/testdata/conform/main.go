// Command conform is the ABI conformance rule, in Go: every rule SDK (Go, AssemblyScript, Rust)
// has a build of the same rule, and the conformance suite (hostabi/conformance_test.go) runs each
// through the real host and compares every decision with one golden file. Its behaviour, by the
// event's type, is specified in hostabi/ABI.md, "Conformance rule"; a change here changes the
// specification and every SDK's copy.
package main

import (
	"errors"
	"sort"
	"strconv"
	"strings"

	"github.com/turnout-router/turnout/filters/sdk"
)

func main() {}

var tag string

func configure(raw []byte) error {
	if len(raw) == 0 {
		return nil
	}
	var refuse *string
	seen := false
	err := sdk.JSONEach(raw, func(key, v []byte) error {
		if key == nil || seen {
			return errors.New("want an object with one key")
		}
		seen = true
		s, ok := sdk.JSONString(v)
		if !ok {
			return errors.New(string(key) + ": want a string")
		}
		switch string(key) {
		case "tag":
			tag = s
		case "refuse":
			refuse = &s
		default:
			return errors.New("unknown key " + strconv.Quote(string(key)))
		}
		return nil
	})
	if err != nil {
		return errors.New("conform config: " + err.Error())
	}
	if refuse != nil {
		return errors.New(*refuse)
	}
	return nil
}

var sink int

func decide(e *sdk.Event) sdk.Decision {
	switch e.Type() {
	case "conform.drop":
		return sdk.Drop()
	case "conform.route":
		return sdk.Route("a")
	case "conform.fanout":
		return sdk.Route("a", "b", "c")
	case "conform.fail":
		return sdk.Fail("failed: " + e.Subject())
	case "conform.echo":
		e.SetExtension("seen", e.ID())
		e.SetExtension("next", strconv.Itoa(e.NumExtensions()))
		if e.HasData() {
			e.SetExtension("datalen", strconv.Itoa(len(e.Data())))
		} else {
			e.SetExtension("datalen", "none")
		}
		e.SetExtension("tag", tag)
		return sdk.Route("a")
	case "conform.attrs":
		all := []string{e.ID(), e.Source(), e.SpecVersion(), e.Type(), e.DataContentType(), e.DataSchema(), e.Subject(), e.Time()}
		e.SetExtension("all", strings.Join(all, "|"))
		exts := make([]string, 0, e.NumExtensions())
		for i := range e.NumExtensions() {
			name, value := e.Ext(i)
			exts = append(exts, name+"="+value)
		}
		sort.Strings(exts)
		e.SetExtension("exts", strings.Join(exts, ";"))
		return sdk.Route("a")
	case "conform.mutate":
		for _, kv := range [][2]string{{"id", "new-id"}, {"source", "/new"}, {"type", "conform.mutated"},
			{"subject", "ß-subject ✓"}, {"time", "2026-01-02T03:04:05Z"}, {"datacontenttype", "text/plain"},
			{"dataschema", "https://example.org/s"}} {
			e.SetAttribute(kv[0], kv[1])
		}
		e.RemoveExtension("x")
		e.SetExtension("added", "ü")
		e.SetData(append([]byte("mutated: "), e.Data()...))
		return sdk.Route("a")
	case "conform.remove":
		for _, a := range []string{"subject", "time", "datacontenttype", "dataschema"} {
			e.RemoveAttribute(a)
		}
		return sdk.Route("a")
	case "conform.log":
		sdk.Log(sdk.LevelInfo, "conform log: "+e.ID())
		return sdk.Drop()
	case "conform.trap":
		panic("conform: trap requested")
	case "conform.loop":
		for {
			sink++
		}
	case "conform.badoutput":
		return sdk.Route("nope")
	}
	return sdk.Route("default")
}

func init() {
	sdk.OnInit(configure)
	sdk.Handle(decide)
}

// Command misbehave is a test rule for package hostabi: the event type selects a behaviour,
// good or bad, so one module exercises every failure path of the host.
//
//	trap        panic (the Go runtime exits the instance)
//	loop        spin forever (only the call timeout ends it)
//	grow        allocate until the memory cap is hit
//	bad-mutation ask for an extension with an invalid name (undecodable decision)
//	log         log 100 lines, then route to "ok"
//	mutate      set extension seen=yes, subject, data; route to "ok"
//	fail        fail with reason "asked to fail"
//	drop        drop
//	anything else: route to the outputs named by the config's "outputs" (default "ok")
package main

import (
	"errors"
	"strconv"

	"github.com/turnout-router/turnout/filters/sdk"
)

func main() {}

var (
	sink  [][]byte
	route = sdk.Route("ok")
	spin  int
)

func init() {
	sdk.OnInit(func(config []byte) error {
		if len(config) == 0 {
			return nil
		}
		// No encoding/json: it would double the module and its compile time in every test.
		var outs []string
		for i := 0; ; i++ {
			v, ok := sdk.JSONField(config, "outputs."+strconv.Itoa(i))
			if !ok {
				break
			}
			outs = append(outs, string(v))
		}
		if len(outs) == 0 {
			return errors.New("misbehave: config needs outputs")
		}
		route = sdk.Route(outs...)
		return nil
	})
	sdk.Handle(func(e *sdk.Event) sdk.Decision {
		switch e.Type() {
		case "trap":
			panic("misbehave: asked to trap")
		case "loop":
			for {
				spin++
			}
		case "grow":
			for {
				sink = append(sink, make([]byte, 1<<20))
			}
		case "bad-mutation":
			e.SetExtension("Not_Valid!", "x")
			return route
		case "log":
			for range 100 {
				sdk.Log(sdk.LevelWarn, "misbehave log line from "+e.ID())
			}
			return route
		case "mutate":
			e.SetExtension("seen", "yes")
			e.SetAttribute("subject", "mutated")
			e.SetData([]byte(`{"mutated":true}`))
			return route
		case "fail":
			return sdk.Fail("asked to fail")
		case "drop":
			return sdk.Drop()
		}
		return route
	})
}

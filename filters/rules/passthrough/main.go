// Command passthrough is a stock turnout rule: it routes every event, unchanged, to the outputs
// named in its configuration: {"outputs": ["a", "b"]}.
//
// Invariant: every event goes to exactly the configured outputs; none is dropped or failed.
package main

import (
	"errors"
	"strconv"

	"github.com/turnout-router/turnout/filters/sdk"
)

func main() {}

var route sdk.Decision

func parse(raw []byte) error {
	var outputs []string
	err := sdk.JSONEach(raw, func(key, v []byte) error {
		if string(key) != "outputs" {
			return errors.New("unknown key " + strconv.Quote(string(key)))
		}
		o, err := sdk.JSONStrings(v)
		outputs = o
		return err
	})
	if err != nil {
		return errors.New("passthrough config: " + err.Error())
	}
	if len(outputs) == 0 {
		return errors.New("passthrough config: outputs: at least one output is required")
	}
	route = sdk.Route(outputs...)
	return nil
}

func init() {
	sdk.OnInit(parse)
	sdk.Handle(func(*sdk.Event) sdk.Decision { return route })
}

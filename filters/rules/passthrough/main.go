// Command passthrough is a stock turnout rule: it routes every event, unchanged, to the outputs
// named in its configuration: {"outputs": ["a", "b"]}.
//
// Invariant: every event goes to exactly the configured outputs; none is dropped or failed.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/turnout-router/turnout/filters/sdk"
)

func main() {}

var route sdk.Decision

func parse(raw []byte) error {
	var c struct {
		Outputs []string `json:"outputs"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return fmt.Errorf("passthrough config: %w", err)
	}
	if len(c.Outputs) == 0 {
		return errors.New("passthrough config: outputs: at least one output is required")
	}
	route = sdk.Route(c.Outputs...)
	return nil
}

func init() {
	sdk.OnInit(parse)
	sdk.Handle(func(*sdk.Event) sdk.Decision { return route })
}

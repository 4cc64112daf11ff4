package mqtt

import "github.com/turnout-router/turnout/engine"

// init makes the "mqtt" input and output types available to configurations.
func init() {
	engine.RegisterInput("mqtt", NewInput)
	engine.RegisterOutput("mqtt", NewOutput)
}

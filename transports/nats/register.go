package nats

import "github.com/turnout-router/turnout/engine"

// init makes the "nats" input and output types available to configurations.
func init() {
	engine.RegisterInput("nats", NewInput)
	engine.RegisterOutput("nats", NewOutput)
}

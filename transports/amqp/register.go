package amqp

import "github.com/turnout-router/turnout/engine"

// init makes the "amqp" input and output types available to configurations.
func init() {
	engine.RegisterInput("amqp", NewInput)
	engine.RegisterOutput("amqp", NewOutput)
}

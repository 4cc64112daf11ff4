package kafka

import "github.com/turnout-router/turnout/engine"

// init makes the "kafka" input and output types available to configurations.
func init() {
	engine.RegisterInput("kafka", NewInput)
	engine.RegisterOutput("kafka", NewOutput)
}

package engine

import "time"

// Mode is a route's delivery guarantee.
type Mode string

const (
	// AtLeastOnce acks an input message only once its fate is settled (the package invariant).
	AtLeastOnce Mode = "at-least-once"
	// BestEffort acks on receipt; events can be lost on a crash or a failing output.
	BestEffort Mode = "best-effort"
)

// FailurePolicy says what happens to an event whose rule failed (trap, timeout, ActionFail).
type FailurePolicy string

const (
	// FailDeadLetter sends the event to the route's dead-letter output (the default).
	FailDeadLetter FailurePolicy = "dead-letter"
	// FailNack rejects the input message so the source redelivers it.
	FailNack FailurePolicy = "nack"
	// FailDrop acknowledges the event and counts it.
	FailDrop FailurePolicy = "drop"
)

// RetryPolicy governs redelivery of one event to one output.
type RetryPolicy struct {
	// MaxAttempts is the number of Send calls per output before giving up (>= 1).
	MaxAttempts int `yaml:"max_attempts"`
	// InitialBackoff is the wait before the second attempt; it doubles up to MaxBackoff, with
	// full jitter.
	InitialBackoff time.Duration `yaml:"initial_backoff"`
	MaxBackoff     time.Duration `yaml:"max_backoff"`
	// Timeout bounds one Send call.
	Timeout time.Duration `yaml:"timeout"`
}

// RouteConfig is a route's behaviour, as configured. Inputs, outputs and the rule are wired
// separately (RouteSpec), by name.
type RouteConfig struct {
	Name string `yaml:"-"`
	// Mode defaults to AtLeastOnce.
	Mode Mode `yaml:"mode"`
	// MaxInFlight bounds unsettled messages per input (default 256).
	MaxInFlight int `yaml:"max_in_flight"`
	// Retry applies to every output of the route.
	Retry RetryPolicy `yaml:"retry"`
	// OnRuleError applies when the rule fails or decides ActionFail (default FailDeadLetter).
	OnRuleError FailurePolicy `yaml:"on_rule_error"`
	// DefaultOutputs receive the event when the route has no rule.
	DefaultOutputs []string `yaml:"-"`
}

// Defaults returns c with every zero field set to its default.
func (c RouteConfig) Defaults() RouteConfig {
	if c.Mode == "" {
		c.Mode = AtLeastOnce
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 256
	}
	if c.Retry.MaxAttempts <= 0 {
		c.Retry.MaxAttempts = 5
	}
	if c.Retry.InitialBackoff <= 0 {
		c.Retry.InitialBackoff = 100 * time.Millisecond
	}
	if c.Retry.MaxBackoff <= 0 {
		c.Retry.MaxBackoff = 10 * time.Second
	}
	if c.Retry.Timeout <= 0 {
		c.Retry.Timeout = 30 * time.Second
	}
	if c.OnRuleError == "" {
		c.OnRuleError = FailDeadLetter
	}
	return c
}

// Route wires a configuration to its parts.
type Route struct {
	Config RouteConfig
	// Inputs feed the route; each Source belongs to exactly one route. The key is the input's
	// configured name.
	Inputs map[string]Source
	// Outputs are the outputs the rule may choose, by name. A Sink may serve several routes.
	Outputs map[string]Sink
	// DeadLetter receives events that could not be delivered or that the rule failed; nil means
	// such events are nacked.
	DeadLetter Sink
	// DeadLetterName names DeadLetter in metrics and logs.
	DeadLetterName string
	// Rule decides each event; nil routes every event to Config.DefaultOutputs.
	Rule Rule
}

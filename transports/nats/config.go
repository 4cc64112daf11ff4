package nats

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/turnout-router/turnout/transports/internal/reconnect"
	"github.com/turnout-router/turnout/transports/internal/redact"
	"github.com/turnout-router/turnout/transports/internal/tlsconf"
)

// ConnectionConfig holds the settings every NATS client of turnout (input or output) has.
type ConnectionConfig struct {
	// URL is the server, nats://host:4222 or tls://host:4222; several may be given separated
	// by commas. Required unless URLs is set.
	URL string `yaml:"url"`
	// URLs lists servers of one cluster; the client picks one and fails over to the others.
	URLs []string `yaml:"urls"`
	// Username and Password authenticate with user and password.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// Token authenticates with a token (not together with username).
	Token string `yaml:"token"`
	// TLS configures the client side of TLS; setting it turns TLS on.
	TLS tlsconf.Config `yaml:"tls"`
	// Settings: connect_timeout also bounds every JetStream API call.
	reconnect.Settings `yaml:",inline"`
}

// InputConfig configures a NATS JetStream input (type: nats under inputs).
type InputConfig struct {
	ConnectionConfig `yaml:",inline"`
	// Stream is the JetStream stream to read. Required.
	Stream string `yaml:"stream"`
	// Consumer is the durable consumer's name; turnout creates it or updates it to this
	// configuration. Instances sharing it share the load. Required.
	Consumer string `yaml:"consumer"`
	// Subject filters the stream's subjects (default: all of them).
	Subject string `yaml:"subject"`
	// MaxAckPending bounds the messages delivered and not yet acknowledged (default 256).
	MaxAckPending int `yaml:"max_ack_pending"`
	// PullBatch is the most messages one pull request asks for: the client buffers up to that
	// many ahead of the engine and asks for more when half are taken (default half of
	// max_ack_pending, at most 1024; at most max_ack_pending). Buffered messages are not yet
	// marked in progress, so a batch the engine cannot take within ack_wait is redelivered.
	PullBatch int `yaml:"pull_batch"`
	// AckWait is how long JetStream waits for an acknowledgement before it redelivers
	// (default 30s). Messages held longer than a third of it are marked in progress.
	AckWait time.Duration `yaml:"ack_wait"`
	// NakMinDelay is the redelivery delay after the first transient failure; it doubles with
	// each further delivery up to NakMaxDelay (defaults 1s and 60s).
	NakMinDelay time.Duration `yaml:"nak_min_delay"`
	NakMaxDelay time.Duration `yaml:"nak_max_delay"`
}

// OutputConfig configures a NATS JetStream output (type: nats under outputs).
type OutputConfig struct {
	ConnectionConfig `yaml:",inline"`
	// Subject is the subject events are published on; a stream must capture it. Required.
	Subject string `yaml:"subject"`
	// Stream, when set, is the stream the publish acknowledgement must come from.
	Stream string `yaml:"stream"`
	// Mode is the binding mode: "binary" (default) or "structured".
	Mode string `yaml:"mode"`
	// AckTimeout bounds the wait for one publish acknowledgement (default 5s); a publish not
	// acknowledged by then is retried by the engine.
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// MaxPending is the most publishes awaiting their acknowledgement at once (default 256);
	// further Sends wait for room.
	MaxPending int `yaml:"max_pending"`
}

const (
	defaultMaxAckPending = 256
	maxDefaultPullBatch  = 1024
	maxMaxAckPending     = 1 << 20
	defaultAckWait       = 30 * time.Second
	defaultNakMinDelay   = time.Second
	defaultNakMaxDelay   = time.Minute
	defaultAckTimeout    = 5 * time.Second
	defaultMaxPending    = 256
	maxMaxPending        = 1 << 16

	modeBinary     = "binary"
	modeStructured = "structured"
)

// validate checks c and fills in defaults. Errors name the key.
func (c *ConnectionConfig) validate() error {
	servers := c.servers()
	if len(servers) == 0 {
		return errors.New("url: required (nats://host:4222)")
	}
	for _, s := range servers {
		u, err := redact.Parse(s)
		if err != nil {
			return fmt.Errorf("url: %w", err)
		}
		switch u.Scheme {
		case "nats", "tls":
		default:
			return fmt.Errorf("url: scheme %q not supported (use nats:// or tls://)", u.Scheme)
		}
		if u.Hostname() == "" {
			return fmt.Errorf("url: %q has no host", u.Redacted())
		}
	}
	if c.Password != "" && c.Username == "" {
		return errors.New("password: set username too")
	}
	if c.Token != "" && c.Username != "" {
		return errors.New("token: set either token or username, not both")
	}
	if err := c.ValidateReconnect(); err != nil {
		return err
	}
	if _, err := c.TLS.Client(); err != nil {
		return err
	}
	return nil
}

// servers returns every configured server URL.
func (c *ConnectionConfig) servers() []string {
	var out []string
	for _, s := range append(strings.Split(c.URL, ","), c.URLs...) {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// options returns the nats.go connection options. The client retries the first connection and
// reconnects forever, waiting the doubling backoff between rounds. It expects a validated c.
func (c *ConnectionConfig) options(name string) ([]nats.Option, error) {
	minB, maxB := c.ReconnectMinBackoff, c.ReconnectMaxBackoff
	opts := []nats.Option{
		nats.Name("turnout " + name),
		nats.Timeout(c.ConnectTimeout),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		// Keep trying after repeated authentication errors: credentials fixed on the server
		// must not need a restart of turnout.
		nats.IgnoreAuthErrorAbort(),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			d := minB
			for i := 1; i < attempts && d < maxB; i++ {
				d *= 2
			}
			return min(d, maxB)
		}),
	}
	if c.Username != "" {
		opts = append(opts, nats.UserInfo(c.Username, c.Password))
	}
	if c.Token != "" {
		opts = append(opts, nats.Token(c.Token))
	}
	tc, err := c.TLS.Client()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, nats.Secure(tc))
	}
	return opts, nil
}

func (c *InputConfig) validate() error {
	if err := c.ConnectionConfig.validate(); err != nil {
		return err
	}
	if c.Stream == "" {
		return errors.New("stream: required (the JetStream stream to read)")
	}
	if c.Consumer == "" {
		return errors.New("consumer: required (the durable consumer's name)")
	}
	if strings.ContainsAny(c.Consumer, ".*> \t") {
		return fmt.Errorf("consumer: %q may not contain '.', '*', '>' or whitespace", c.Consumer)
	}
	switch {
	case c.MaxAckPending == 0:
		c.MaxAckPending = defaultMaxAckPending
	case c.MaxAckPending < 0 || c.MaxAckPending > maxMaxAckPending:
		return fmt.Errorf("max_ack_pending: %d is outside 1..%d", c.MaxAckPending, maxMaxAckPending)
	}
	switch {
	case c.PullBatch == 0:
		c.PullBatch = max(1, min(c.MaxAckPending/2, maxDefaultPullBatch))
	case c.PullBatch < 0 || c.PullBatch > c.MaxAckPending:
		return fmt.Errorf("pull_batch: %d is outside 1..max_ack_pending (%d)", c.PullBatch, c.MaxAckPending)
	}
	if c.AckWait == 0 {
		c.AckWait = defaultAckWait
	}
	if c.AckWait < time.Second {
		return fmt.Errorf("ack_wait: %v is below 1s", c.AckWait)
	}
	if c.NakMinDelay == 0 {
		c.NakMinDelay = defaultNakMinDelay
	}
	if c.NakMaxDelay == 0 {
		c.NakMaxDelay = defaultNakMaxDelay
	}
	if c.NakMinDelay < 0 {
		return fmt.Errorf("nak_min_delay: %v is negative", c.NakMinDelay)
	}
	if c.NakMaxDelay < c.NakMinDelay {
		return fmt.Errorf("nak_max_delay: %v is below nak_min_delay %v", c.NakMaxDelay, c.NakMinDelay)
	}
	return nil
}

func (c *OutputConfig) validate() error {
	if err := c.ConnectionConfig.validate(); err != nil {
		return err
	}
	if c.Subject == "" || strings.ContainsAny(c.Subject, "*> \t") {
		return fmt.Errorf("subject: %q: a subject without wildcards is required", c.Subject)
	}
	switch c.Mode {
	case "":
		c.Mode = modeBinary
	case modeBinary, modeStructured:
	default:
		return fmt.Errorf("mode: %q not supported (use binary or structured)", c.Mode)
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = defaultAckTimeout
	}
	if c.AckTimeout < 0 {
		return fmt.Errorf("ack_timeout: %v is negative", c.AckTimeout)
	}
	if c.MaxPending == 0 {
		c.MaxPending = defaultMaxPending
	}
	if c.MaxPending < 1 || c.MaxPending > maxMaxPending {
		return fmt.Errorf("max_pending: %d is out of range (1 to %d)", c.MaxPending, maxMaxPending)
	}
	return nil
}

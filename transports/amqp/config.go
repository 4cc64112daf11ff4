package amqp

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"

	"github.com/Azure/go-amqp"

	"github.com/turnout-router/turnout/transports/internal/reconnect"
	"github.com/turnout-router/turnout/transports/internal/redact"
	"github.com/turnout-router/turnout/transports/internal/tlsconf"
)

// ConnectionConfig holds the settings every AMQP client of turnout (input or output) has.
type ConnectionConfig struct {
	// URL is the broker: amqp://host[:5672] or amqps://host[:5671] (TLS). User information in
	// the URL (amqp://user:pass@host) selects SASL PLAIN with those credentials. Required.
	URL string `yaml:"url"`
	// Username overrides the user of the URL.
	Username string `yaml:"username"`
	// Password overrides the password of the URL.
	Password string `yaml:"password"`
	// SASL is the mechanism: "plain" or "anonymous" (default: plain when a username is set,
	// anonymous otherwise) [AMQP 1.0 §5.3].
	SASL string `yaml:"sasl"`
	// TLS configures amqps:// brokers.
	TLS tlsconf.Config `yaml:"tls"`
	// Settings: connect_timeout also bounds every settlement sent to the broker.
	reconnect.Settings `yaml:",inline"`
}

// InputConfig configures an AMQP input (type: amqp under inputs).
type InputConfig struct {
	ConnectionConfig `yaml:",inline"`
	// Address is the source address to receive from, e.g. /queue/NAME on RabbitMQ. Required.
	Address string `yaml:"address"`
	// Credit is the largest number of deliveries the input holds unsettled, from the broker's
	// transfer to the engine's settlement (default 256). Link credit is issued by hand, in
	// batches, within that bound.
	Credit int `yaml:"credit"`
	// Durable asks for a durable source terminus [AMQP 1.0 §3.5.3] (default true); RabbitMQ
	// then declares /queue/NAME as a durable queue.
	Durable *bool `yaml:"durable"`
}

// OutputConfig configures an AMQP output (type: amqp under outputs).
type OutputConfig struct {
	ConnectionConfig `yaml:",inline"`
	// Address is the target address, e.g. /queue/NAME or /exchange/X/KEY on RabbitMQ. Required.
	Address string `yaml:"address"`
	// Mode is the CloudEvents AMQP binding mode: "binary" (default) or "structured".
	Mode string `yaml:"mode"`
	// MaxInFlight bounds the deliveries sent and not yet settled by the broker on the link
	// (default 256). Sends beyond it wait in turnout, where they cost nothing, rather than at
	// the broker: RabbitMQ 3.10 spends about a third more CPU per message with thousands
	// unsettled on one link (docs/benchmarks.md).
	MaxInFlight int `yaml:"max_in_flight"`
}

const (
	defaultCredit      = 256
	defaultMaxInFlight = 256
	maxCredit          = 1 << 20

	modeBinary     = "binary"
	modeStructured = "structured"
)

// validate checks c and fills in defaults. Errors name the key.
func (c *ConnectionConfig) validate() error {
	if c.URL == "" {
		return errors.New("url: required (amqp://host:5672 or amqps://host:5671)")
	}
	u, err := redact.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("url: %w", err)
	}
	switch u.Scheme {
	case "amqp", "amqps":
	default:
		return fmt.Errorf("url: scheme %q not supported (use amqp:// or amqps://)", u.Scheme)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("url: %q has no host", redact.URL(c.URL))
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		return fmt.Errorf("url: %q: no path or query expected (the address is a key of its own)", redact.URL(c.URL))
	}
	if !c.TLS.IsZero() && u.Scheme != "amqps" {
		return errors.New("tls: set, but url is not amqps://")
	}
	if c.Password != "" && c.username() == "" {
		return errors.New("password: set username too")
	}
	switch c.SASL {
	case "":
		c.SASL = "anonymous"
		if c.username() != "" {
			c.SASL = "plain"
		}
	case "plain":
		if c.username() == "" {
			return errors.New("sasl: plain needs a username (in username or in the url)")
		}
	case "anonymous":
	default:
		return fmt.Errorf("sasl: %q not supported (use plain or anonymous)", c.SASL)
	}
	if err := c.ValidateReconnect(); err != nil {
		return err
	}
	if _, err := c.TLS.Client(); err != nil {
		return err
	}
	return nil
}

// username is the configured user: the username key, else the URL's.
func (c *ConnectionConfig) username() string {
	if c.Username != "" {
		return c.Username
	}
	if u, err := url.Parse(c.URL); err == nil && u.User != nil {
		return u.User.Username()
	}
	return ""
}

// password is the configured password: the password key when username or password is set,
// else the URL's.
func (c *ConnectionConfig) password() string {
	if c.Username != "" || c.Password != "" {
		return c.Password
	}
	if u, err := url.Parse(c.URL); err == nil && u.User != nil {
		p, _ := u.User.Password()
		return p
	}
	return ""
}

// dialTarget returns the URL without user information (the credentials go to SASL explicitly)
// and the go-amqp connection options. It expects a validated c.
func (c *ConnectionConfig) dialTarget() (string, *amqp.ConnOptions, error) {
	u, err := url.Parse(c.URL)
	if err != nil {
		return "", nil, fmt.Errorf("url: %w", err)
	}
	u.User = nil
	var tc *tls.Config
	if u.Scheme == "amqps" {
		if tc, err = c.TLS.Client(); err != nil {
			return "", nil, err
		}
	}
	opts := &amqp.ConnOptions{TLSConfig: tc}
	switch c.SASL {
	case "plain":
		opts.SASLType = amqp.SASLTypePlain(c.username(), c.password())
	default:
		opts.SASLType = amqp.SASLTypeAnonymous()
	}
	return u.String(), opts, nil
}

func (c *InputConfig) validate() error {
	if err := c.ConnectionConfig.validate(); err != nil {
		return err
	}
	if c.Address == "" {
		return errors.New("address: required (the source, e.g. /queue/NAME)")
	}
	if c.Credit == 0 {
		c.Credit = defaultCredit
	}
	if c.Credit < 0 || c.Credit > maxCredit {
		return fmt.Errorf("credit: %d is outside 1..%d", c.Credit, maxCredit)
	}
	if c.Durable == nil {
		t := true
		c.Durable = &t
	}
	return nil
}

func (c *OutputConfig) validate() error {
	if err := c.ConnectionConfig.validate(); err != nil {
		return err
	}
	if c.Address == "" {
		return errors.New("address: required (the target, e.g. /queue/NAME or /exchange/X/KEY)")
	}
	switch c.Mode {
	case "":
		c.Mode = modeBinary
	case modeBinary, modeStructured:
	default:
		return fmt.Errorf("mode: %q not supported (use binary or structured)", c.Mode)
	}
	switch {
	case c.MaxInFlight == 0:
		c.MaxInFlight = defaultMaxInFlight
	case c.MaxInFlight < 0 || c.MaxInFlight > maxCredit:
		return fmt.Errorf("max_in_flight: %d out of range 1..%d", c.MaxInFlight, maxCredit)
	}
	return nil
}

package mqtt

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/turnout-router/turnout/transports/internal/reconnect"
	"github.com/turnout-router/turnout/transports/internal/redact"
	"github.com/turnout-router/turnout/transports/internal/tlsconf"
)

// ConnectionConfig holds the settings every MQTT client of turnout (input or output) has.
type ConnectionConfig struct {
	// Brokers lists the broker URLs, tried in order on every (re)connect: tcp://host:port for
	// plain TCP (mqtt:// is accepted too), ssl://host:port for TLS (tls:// and mqtts:// too).
	// Required.
	Brokers []string `yaml:"brokers"`
	// ClientID is the MQTT client identifier. Required for inputs, and it must stay the same
	// across restarts: the broker keys the persistent session, and so the messages queued for
	// turnout, by it. Two clients with the same id take the session from each other. Optional
	// for outputs (default "turnout-<output name>-<random>").
	ClientID string `yaml:"client_id"`
	// Username for the CONNECT packet (optional).
	Username string `yaml:"username"`
	// Password for the CONNECT packet (optional; requires username).
	Password string `yaml:"password"`
	// TLS configures ssl:// brokers.
	TLS TLSConfig `yaml:"tls"`
	// KeepAlive is the MQTT keep-alive interval (default 30s, minimum 1s).
	KeepAlive time.Duration `yaml:"keepalive"`
	// Settings: connect_timeout also bounds a network write and a ping. The reconnect wait
	// also doubles on each connection that lasted less than 10s, and an input drops its
	// connection when the engine rejects a message and resumes the session after
	// reconnect_min_backoff (doubling while rejections follow each other with no message
	// acknowledged in between).
	reconnect.Settings `yaml:",inline"`
}

// TLSConfig is the client side of TLS for ssl:// brokers (the shared "tls" block).
type TLSConfig = tlsconf.Config

// InputConfig configures an MQTT input (type: mqtt under inputs).
type InputConfig struct {
	ConnectionConfig `yaml:",inline"`
	// Topics lists the topic filters to subscribe to, with QoS 1 ('+' and '#' wildcards
	// allowed). Required.
	Topics []string `yaml:"topics"`
	// ReceiveBuffer is how many received messages wait for the engine before the MQTT client
	// stops reading from the network (default 1024). The engine's max_in_flight bounds the
	// messages it holds; this buffer sits in front of it. While it is full the client reads
	// nothing, not even the broker's keep-alive answers, so a stall longer than keepalive plus
	// connect_timeout ends the connection and the broker redelivers the unacknowledged messages
	// (duplicates, never losses).
	ReceiveBuffer int `yaml:"receive_buffer"`
}

// OutputConfig configures an MQTT output (type: mqtt under outputs). Exactly one of topic and
// topic_template is required. Publications use QoS 1 and retain=0.
type OutputConfig struct {
	ConnectionConfig `yaml:",inline"`
	// Topic is the fixed topic every event is published to (no wildcards).
	Topic string `yaml:"topic"`
	// TopicTemplate builds the topic from event attributes, e.g. "alarms/{type}/{source}"; see
	// the package documentation for the syntax.
	TopicTemplate string `yaml:"topic_template"`
}

const (
	defaultKeepAlive     = 30 * time.Second
	defaultReceiveBuffer = 1024
	maxTopicLen          = 65535 // [MQTT-1.5.3]: UTF-8 strings are at most 65535 bytes
)

// validate checks c and fills in defaults. needID says whether client_id is required.
func (c *ConnectionConfig) validate(needID bool) error {
	if len(c.Brokers) == 0 {
		return errors.New("brokers: at least one broker URL is required")
	}
	for i, b := range c.Brokers {
		u, err := redact.Parse(b)
		if err != nil {
			return fmt.Errorf("brokers[%d]: %w", i, err)
		}
		switch u.Scheme {
		case "tcp", "mqtt", "ssl", "tls", "mqtts":
		default:
			return fmt.Errorf("brokers[%d]: scheme %q not supported (use tcp:// or ssl://)", i, u.Scheme)
		}
		if u.Host == "" || u.Port() == "" {
			return fmt.Errorf("brokers[%d]: %q needs host:port", i, redact.URL(b))
		}
	}
	if needID && c.ClientID == "" {
		return errors.New("client_id: required for an input (the persistent session is keyed by it)")
	}
	if len(c.ClientID) > 65535 || !utf8.ValidString(c.ClientID) {
		return errors.New("client_id: must be valid UTF-8 of at most 65535 bytes")
	}
	if c.Password != "" && c.Username == "" {
		return errors.New("password: set username too ([MQTT-3.1.2-22])")
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = defaultKeepAlive
	}
	if c.KeepAlive < time.Second {
		return fmt.Errorf("keepalive: %v is below 1s", c.KeepAlive)
	}
	if err := c.ValidateReconnect(); err != nil {
		return err
	}
	if _, err := c.TLS.Client(); err != nil {
		return err
	}
	return nil
}

// clientOptions builds the paho options common to inputs and outputs. Reconnection is driven by
// turnout (session.run), not by paho, so that the backoff is configurable and an input can
// force a reconnect to get rejected messages redelivered.
func (c *ConnectionConfig) clientOptions(clientID string) (*paho.ClientOptions, error) {
	tc, err := c.TLS.Client() // nil when no setting is given: paho uses the system defaults
	if err != nil {
		return nil, err
	}
	o := paho.NewClientOptions()
	for _, b := range c.Brokers {
		u, _ := url.Parse(b)
		switch u.Scheme {
		case "mqtt":
			u.Scheme = "tcp"
		case "mqtts", "tls":
			u.Scheme = "ssl"
		}
		o.AddBroker(u.String())
	}
	o.SetClientID(clientID)
	o.SetUsername(c.Username)
	o.SetPassword(c.Password)
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	o.SetProtocolVersion(4) // MQTT 3.1.1
	o.SetKeepAlive(c.KeepAlive)
	o.SetPingTimeout(c.ConnectTimeout)
	o.SetConnectTimeout(c.ConnectTimeout)
	o.SetWriteTimeout(c.ConnectTimeout)
	o.SetAutoReconnect(false)
	o.SetConnectRetry(false)
	return o, nil
}

// randomClientID returns "turnout-<name>-<8 hex digits>".
func randomClientID(name string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "turnout-" + name + "-" + hex.EncodeToString(b[:])
}

// validTopicFilter checks a subscription filter ([MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-4.7.3-1]).
func validTopicFilter(f string) error {
	if f == "" {
		return errors.New("empty topic filter ([MQTT-4.7.3-1])")
	}
	if len(f) > maxTopicLen || !utf8.ValidString(f) || strings.ContainsRune(f, 0) {
		return errors.New("topic filter must be valid UTF-8 without U+0000, at most 65535 bytes")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return fmt.Errorf("'#' must be a whole last level in %q ([MQTT-4.7.1-2])", f)
		}
		if strings.Contains(l, "+") && l != "+" {
			return fmt.Errorf("'+' must be a whole level in %q ([MQTT-4.7.1-3])", f)
		}
	}
	return nil
}

func (c *InputConfig) validate() error {
	if err := c.ConnectionConfig.validate(true); err != nil {
		return err
	}
	if len(c.Topics) == 0 {
		return errors.New("topics: at least one topic filter is required")
	}
	seen := map[string]bool{}
	for i, t := range c.Topics {
		if err := validTopicFilter(t); err != nil {
			return fmt.Errorf("topics[%d]: %w", i, err)
		}
		if seen[t] {
			return fmt.Errorf("topics[%d]: %q listed twice", i, t)
		}
		seen[t] = true
	}
	if c.ReceiveBuffer == 0 {
		c.ReceiveBuffer = defaultReceiveBuffer
	}
	if c.ReceiveBuffer < 0 {
		return fmt.Errorf("receive_buffer: %d is negative", c.ReceiveBuffer)
	}
	return nil
}

// validate checks c and returns the topic builder.
func (c *OutputConfig) validate() (*topicTemplate, error) {
	if err := c.ConnectionConfig.validate(false); err != nil {
		return nil, err
	}
	switch {
	case c.Topic != "" && c.TopicTemplate != "":
		return nil, errors.New("topic and topic_template: set only one")
	case c.Topic != "":
		if err := validTopicName(c.Topic); err != nil {
			return nil, fmt.Errorf("topic: %w", err)
		}
		return &topicTemplate{parts: []templatePart{{literal: c.Topic}}}, nil
	case c.TopicTemplate != "":
		t, err := parseTopicTemplate(c.TopicTemplate)
		if err != nil {
			return nil, fmt.Errorf("topic_template: %w", err)
		}
		return t, nil
	}
	return nil, errors.New("topic or topic_template: one is required")
}

// validTopicName checks a topic to publish to ([MQTT-3.3.2-2], [MQTT-4.7.3-1]).
func validTopicName(t string) error {
	if t == "" {
		return errors.New("empty topic ([MQTT-4.7.3-1])")
	}
	if len(t) > maxTopicLen || !utf8.ValidString(t) || strings.ContainsRune(t, 0) {
		return errors.New("topic must be valid UTF-8 without U+0000, at most 65535 bytes")
	}
	if strings.ContainsAny(t, "+#") {
		return fmt.Errorf("wildcards not allowed in a topic name %q ([MQTT-3.3.2-2])", t)
	}
	return nil
}

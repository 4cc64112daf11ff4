package kafka

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/turnout-router/turnout/transports/internal/reconnect"
	"github.com/turnout-router/turnout/transports/internal/tlsconf"
)

// ConnectionConfig holds the settings every Kafka client of turnout (input or output) has.
type ConnectionConfig struct {
	// Brokers lists seed brokers as host:port; the client learns the rest of the cluster from
	// them. Required.
	Brokers []string `yaml:"brokers"`
	// ClientID is the client.id the brokers see in their logs and quotas (default "turnout").
	ClientID string `yaml:"client_id"`
	// TLS configures the client side of TLS; setting any of it turns TLS on.
	TLS tlsconf.Config `yaml:"tls"`
	// TLSEnabled turns TLS on with the system's CA pool when no tls setting is needed.
	TLSEnabled bool `yaml:"tls_enabled"`
	// SASL authenticates the client.
	SASL SASLConfig `yaml:"sasl"`
	// Settings are connect_timeout (one connection attempt to a broker), reconnect_min_backoff
	// and reconnect_max_backoff (the wait before retrying a failed request or connection).
	reconnect.Settings `yaml:",inline"`
}

// SASLConfig is the "sasl" block: a mechanism and its credentials.
type SASLConfig struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty means no SASL.
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	Password  string `yaml:"password"`
}

// InputConfig configures a Kafka input (type: kafka under inputs): one member of a consumer
// group.
type InputConfig struct {
	ConnectionConfig `yaml:",inline"`
	// Group is the consumer group; instances sharing it share the topics' partitions. Required.
	Group string `yaml:"group"`
	// Topics are the topics to read. Required.
	Topics []string `yaml:"topics"`
	// MaxInFlight bounds the records dispatched to the engine and not yet settled, a record
	// waiting for its retry included (default 256). 1 keeps the order of every partition.
	MaxInFlight int `yaml:"max_in_flight"`
	// StartOffset is where a group without a committed offset starts reading a partition:
	// "earliest" (default) or "latest".
	StartOffset string `yaml:"start_offset"`
	// SessionTimeout is how long the group waits for a member that stopped heartbeating (a
	// crashed turnout) before it gives the member's partitions to the others (default 45s; the
	// brokers bound it by group.min/max.session.timeout.ms, 6s to 30m by default).
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// InstanceID makes the member static [KIP-345]: it must differ per instance and stay the
	// same across its restarts (e.g. ${TURNOUT_INSTANCE}). A static member that restarts within
	// session_timeout gets its partitions back at once, without a rebalance; a static member
	// that stops does not leave the group, so its partitions wait for its return or for
	// session_timeout. Empty (default): a dynamic member.
	InstanceID string `yaml:"instance_id"`
	// FetchMaxWait is how long a broker may hold a fetch request when it has no new records
	// (default 500ms).
	FetchMaxWait time.Duration `yaml:"fetch_max_wait"`
	// CommitInterval is how often settled offsets are committed (default 1s); they are also
	// committed when partitions are revoked and on Close.
	CommitInterval time.Duration `yaml:"commit_interval"`
	// RetryMinDelay is the wait before a record the engine failed transiently is dispatched
	// again; it doubles with each further failure up to RetryMaxDelay (defaults 1s and 60s).
	RetryMinDelay time.Duration `yaml:"retry_min_delay"`
	RetryMaxDelay time.Duration `yaml:"retry_max_delay"`
}

// OutputConfig configures a Kafka output (type: kafka under outputs).
type OutputConfig struct {
	ConnectionConfig `yaml:",inline"`
	// Topic is the topic events are produced to. Required.
	Topic string `yaml:"topic"`
	// Mode is the binding mode: "binary" (default) or "structured".
	Mode string `yaml:"mode"`
	// Key is what becomes the record key: "none" (default: no key, the producer spreads the
	// records over the partitions) or "partitionkey" (the event's partitionkey extension; no key
	// without it).
	Key string `yaml:"key"`
	// AckTimeout bounds the wait for one record's acknowledgement (default 10s); a record not
	// acknowledged by then is retried by the engine.
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// Linger is how long a partition's batch waits for more records before it is sent
	// (default 0: send at once; concurrent sends still share requests).
	Linger time.Duration `yaml:"linger"`
	// Compression compresses batches: "none" (default), "gzip", "snappy", "lz4" or "zstd".
	Compression string `yaml:"compression"`
}

const (
	defaultClientID       = "turnout"
	defaultMaxInFlight    = 256
	maxMaxInFlight        = 1 << 20
	defaultCommitInterval = time.Second
	defaultFetchMaxWait   = 500 * time.Millisecond
	defaultSessionTimeout = 45 * time.Second
	defaultRetryMinDelay  = time.Second
	defaultRetryMaxDelay  = time.Minute
	defaultAckTimeout     = 10 * time.Second

	modeBinary     = "binary"
	modeStructured = "structured"
	keyPartition   = "partitionkey"
	keyNone        = "none"
)

// validate checks c and fills in defaults. Errors name the key.
func (c *ConnectionConfig) validate() error {
	if len(c.Brokers) == 0 {
		return errors.New("brokers: required (a list of host:port)")
	}
	for i, b := range c.Brokers {
		host, port, err := net.SplitHostPort(strings.TrimSpace(b))
		if err != nil {
			return fmt.Errorf("brokers[%d]: %q is not host:port: %w", i, b, err)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 || host == "" {
			return fmt.Errorf("brokers[%d]: %q needs a host and a port in 1..65535", i, b)
		}
	}
	if c.ClientID == "" {
		c.ClientID = defaultClientID
	}
	switch c.SASL.Mechanism {
	case "":
		if c.SASL.Username != "" || c.SASL.Password != "" {
			return errors.New("sasl.mechanism: required with sasl.username (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
		}
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if c.SASL.Username == "" {
			return fmt.Errorf("sasl.username: required with sasl.mechanism %s", c.SASL.Mechanism)
		}
	default:
		return fmt.Errorf("sasl.mechanism: %q not supported (use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", c.SASL.Mechanism)
	}
	if err := c.ValidateReconnect(); err != nil {
		return err
	}
	if _, err := c.TLS.Client(); err != nil {
		return err
	}
	return nil
}

// options returns the franz-go client options every client shares. It expects a validated c.
func (c *ConnectionConfig) options() ([]kgo.Opt, error) {
	seeds := make([]string, len(c.Brokers))
	for i, b := range c.Brokers {
		seeds[i] = strings.TrimSpace(b)
	}
	minB, maxB := c.ReconnectMinBackoff, c.ReconnectMaxBackoff
	opts := []kgo.Opt{
		kgo.SeedBrokers(seeds...),
		kgo.ClientID(c.ClientID),
		kgo.RetryBackoffFn(func(tries int) time.Duration { return doubling(minB, maxB, tries) }),
	}
	tc, err := c.TLS.Client()
	if err != nil {
		return nil, err
	}
	if tc == nil && c.TLSEnabled {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	dialer := &net.Dialer{Timeout: c.ConnectTimeout}
	if tc != nil {
		// tls.Dialer verifies the broker's certificate against the host it dials when
		// server_name is not set.
		opts = append(opts, kgo.Dialer((&tls.Dialer{NetDialer: dialer, Config: tc}).DialContext))
	} else {
		opts = append(opts, kgo.Dialer(dialer.DialContext))
	}
	switch c.SASL.Mechanism {
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: c.SASL.Username, Pass: c.SASL.Password}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: c.SASL.Username, Pass: c.SASL.Password}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: c.SASL.Username, Pass: c.SASL.Password}.AsSha512Mechanism()))
	}
	return opts, nil
}

func (c *InputConfig) validate() error {
	if err := c.ConnectionConfig.validate(); err != nil {
		return err
	}
	if strings.TrimSpace(c.Group) == "" {
		return errors.New("group: required (the consumer group)")
	}
	if len(c.Topics) == 0 {
		return errors.New("topics: required (a list of topics to read)")
	}
	for i, tp := range c.Topics {
		if err := validTopic(tp); err != nil {
			return fmt.Errorf("topics[%d]: %w", i, err)
		}
	}
	switch {
	case c.MaxInFlight == 0:
		c.MaxInFlight = defaultMaxInFlight
	case c.MaxInFlight < 0 || c.MaxInFlight > maxMaxInFlight:
		return fmt.Errorf("max_in_flight: %d is outside 1..%d", c.MaxInFlight, maxMaxInFlight)
	}
	switch c.StartOffset {
	case "":
		c.StartOffset = "earliest"
	case "earliest", "latest":
	default:
		return fmt.Errorf("start_offset: %q not supported (use earliest or latest)", c.StartOffset)
	}
	if c.InstanceID != "" {
		// Kafka takes the same characters and length as for a topic name.
		if err := validTopic(c.InstanceID); err != nil {
			return fmt.Errorf("instance_id: %q is not a valid group instance id (at most 249 ASCII letters, digits, '.', '_' and '-')", c.InstanceID)
		}
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = defaultSessionTimeout
	}
	if c.SessionTimeout < time.Second {
		return fmt.Errorf("session_timeout: %v is below 1s", c.SessionTimeout)
	}
	if c.FetchMaxWait == 0 {
		c.FetchMaxWait = defaultFetchMaxWait
	}
	if c.FetchMaxWait < 10*time.Millisecond {
		return fmt.Errorf("fetch_max_wait: %v is below 10ms", c.FetchMaxWait)
	}
	if c.CommitInterval == 0 {
		c.CommitInterval = defaultCommitInterval
	}
	if c.CommitInterval < 10*time.Millisecond {
		return fmt.Errorf("commit_interval: %v is below 10ms", c.CommitInterval)
	}
	if c.RetryMinDelay == 0 {
		c.RetryMinDelay = defaultRetryMinDelay
	}
	if c.RetryMaxDelay == 0 {
		c.RetryMaxDelay = defaultRetryMaxDelay
	}
	if c.RetryMinDelay < 0 {
		return fmt.Errorf("retry_min_delay: %v is negative", c.RetryMinDelay)
	}
	if c.RetryMaxDelay < c.RetryMinDelay {
		return fmt.Errorf("retry_max_delay: %v is below retry_min_delay %v", c.RetryMaxDelay, c.RetryMinDelay)
	}
	return nil
}

func (c *OutputConfig) validate() error {
	if err := c.ConnectionConfig.validate(); err != nil {
		return err
	}
	if err := validTopic(c.Topic); err != nil {
		return fmt.Errorf("topic: %w", err)
	}
	switch c.Mode {
	case "":
		c.Mode = modeBinary
	case modeBinary, modeStructured:
	default:
		return fmt.Errorf("mode: %q not supported (use binary or structured)", c.Mode)
	}
	switch c.Key {
	case "":
		c.Key = keyNone
	case keyPartition, keyNone:
	default:
		return fmt.Errorf("key: %q not supported (use partitionkey or none)", c.Key)
	}
	if c.AckTimeout == 0 {
		c.AckTimeout = defaultAckTimeout
	}
	if c.AckTimeout < 0 {
		return fmt.Errorf("ack_timeout: %v is negative", c.AckTimeout)
	}
	if c.Linger < 0 {
		return fmt.Errorf("linger: %v is negative", c.Linger)
	}
	if _, err := compression(c.Compression); err != nil {
		return fmt.Errorf("compression: %w", err)
	}
	return nil
}

// compression maps the compression key to franz-go's codec.
func compression(name string) (kgo.CompressionCodec, error) {
	switch name {
	case "", "none":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("%q not supported (use none, gzip, snappy, lz4 or zstd)", name)
}

// validTopic checks Kafka's rule for topic names: 1 to 249 characters of ASCII letters,
// digits, '.', '_' and '-', and not "." or "..".
func validTopic(name string) error {
	if name == "" {
		return errors.New("required (a topic name)")
	}
	if len(name) > 249 || name == "." || name == ".." {
		return fmt.Errorf("%q is not a valid topic name", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("%q: a topic name consists of ASCII letters, digits, '.', '_' and '-'", name)
		}
	}
	return nil
}

// doubling is the wait before the n-th attempt (n >= 1): lo, doubled per earlier attempt, at
// most hi.
func doubling(lo, hi time.Duration, n int) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

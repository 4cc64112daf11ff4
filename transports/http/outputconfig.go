package httpin

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/turnout-router/turnout/transports/internal/redact"
	"github.com/turnout-router/turnout/transports/internal/tlsconf"
)

// OutputConfig is the configuration of one HTTP webhook output (the output's block in turnout's
// configuration file, type "http"). Zero values take the defaults below.
//
//	outputs:
//	  hook:
//	    type: http
//	    url: https://receiver.example/events  # required; http:// or https://
//	    mode: binary            # binary (default) | structured | batch
//	    batch_size: 100         # batch mode: events per request at most (default 100)
//	    batch_linger: 10ms      # batch mode: how long a batch waits for more events (default 10ms)
//	    timeout: 30s            # per request, handshake included (default 30s)
//	    max_idle_conns: 64      # idle connections kept to the receiver (default 64)
//	    handshake: true         # CloudEvents web hook validation before the first delivery (default true)
//	    origin: turnout.example # WebHook-Request-Origin (default: the host name)
//	    token: s3cret           # "Authorization: Bearer s3cret" ...
//	    token_file: /run/secrets/hook-token  # ... or the token from this file (trimmed) ...
//	    token_env: HOOK_TOKEN   # ... or from this environment variable ...
//	    authorization: "Basic dXNlcjpwdw=="  # ... or this whole Authorization header value
//	    tls: { ca_file: "", cert_file: "", key_file: "", server_name: "", insecure_skip_verify: false }
type OutputConfig struct {
	URL                 string         `yaml:"url"`
	Mode                string         `yaml:"mode"`
	BatchSize           int            `yaml:"batch_size"`
	BatchLinger         time.Duration  `yaml:"batch_linger"`
	Timeout             time.Duration  `yaml:"timeout"`
	MaxIdleConns        int            `yaml:"max_idle_conns"`
	Handshake           *bool          `yaml:"handshake"`
	Origin              string         `yaml:"origin"`
	Token               string         `yaml:"token"`
	TokenFile           string         `yaml:"token_file"`
	TokenEnv            string         `yaml:"token_env"`
	Authorization       string         `yaml:"authorization"`
	TLS                 tlsconf.Config `yaml:"tls"`
	authorizationHeader string         // resolved by withDefaults
}

// Output modes ([CE-HTTP-3.1], [CE-HTTP-3.2], [CE-HTTP-3.3]).
const (
	ModeBinary     = "binary"
	ModeStructured = "structured"
	ModeBatch      = "batch"
)

// Defaults for OutputConfig.
const (
	DefaultOutputTimeout = 30 * time.Second
	DefaultMaxIdleConns  = 64
	DefaultBatchSize     = 100
	DefaultBatchLinger   = 10 * time.Millisecond
)

// withDefaults validates c, fills in the defaults and resolves the Authorization header. Errors
// name the key.
func (c OutputConfig) withDefaults() (OutputConfig, error) {
	if c.URL == "" {
		return c, errors.New("url: required (http:// or https://)")
	}
	u, err := redact.Parse(c.URL)
	if err != nil {
		return c, fmt.Errorf("url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, fmt.Errorf("url: %q is not an http:// or https:// URL", redact.URL(c.URL))
	}
	switch c.Mode {
	case "":
		c.Mode = ModeBinary
	case ModeBinary, ModeStructured, ModeBatch:
	default:
		return c, fmt.Errorf("mode: %q is not binary, structured or batch", c.Mode)
	}
	for _, err := range []error{
		orDefault("timeout", &c.Timeout, DefaultOutputTimeout),
		orDefault("max_idle_conns", &c.MaxIdleConns, DefaultMaxIdleConns),
		orDefault("batch_size", &c.BatchSize, DefaultBatchSize),
		orDefault("batch_linger", &c.BatchLinger, DefaultBatchLinger),
	} {
		if err != nil {
			return c, err
		}
	}
	if c.Handshake == nil {
		on := true
		c.Handshake = &on
	}
	if c.Origin == "" {
		if c.Origin, err = os.Hostname(); err != nil || c.Origin == "" {
			c.Origin = "turnout"
		}
	}
	set := 0
	for _, v := range []string{c.Token, c.TokenFile, c.TokenEnv, c.Authorization} {
		if v != "" {
			set++
		}
	}
	if set > 1 {
		return c, errors.New("token, token_file, token_env, authorization: set at most one")
	}
	switch {
	case c.Token != "":
		c.authorizationHeader = "Bearer " + c.Token
	case c.TokenFile != "":
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return c, fmt.Errorf("token_file: %w", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return c, fmt.Errorf("token_file: %s is empty", c.TokenFile)
		}
		c.authorizationHeader = "Bearer " + t
	case c.TokenEnv != "":
		t := os.Getenv(c.TokenEnv)
		if t == "" {
			return c, fmt.Errorf("token_env: environment variable %s is empty or unset", c.TokenEnv)
		}
		c.authorizationHeader = "Bearer " + t
	case c.Authorization != "":
		c.authorizationHeader = c.Authorization
	}
	if strings.ContainsAny(c.authorizationHeader, "\r\n") {
		return c, errors.New("token, authorization: the value holds a line break")
	}
	if u.Scheme == "http" && !c.TLS.IsZero() {
		return c, fmt.Errorf("tls: set, but url %q is not https://", redact.URL(c.URL))
	}
	return c, nil
}

// orDefault sets *v to def when it is zero; a negative *v is an error naming key.
func orDefault[T int | time.Duration](key string, v *T, def T) error {
	switch {
	case *v < 0:
		return fmt.Errorf("%s: %v is negative", key, *v)
	case *v == 0:
		*v = def
	}
	return nil
}

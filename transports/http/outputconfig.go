package httpin

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/turnout-router/turnout/transports/internal/tlsconf"
)

// OutputConfig is the configuration of one HTTP webhook output (the output's block in turnout's
// configuration file, type "http"). Zero values take the defaults below.
//
//	outputs:
//	  hook:
//	    type: http
//	    url: https://receiver.example/events  # required; http:// or https://
//	    mode: binary            # binary (default) | structured
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

// Output modes ([CE-HTTP-3.1], [CE-HTTP-3.2]).
const (
	ModeBinary     = "binary"
	ModeStructured = "structured"
)

// Defaults for OutputConfig.
const (
	DefaultOutputTimeout = 30 * time.Second
	DefaultMaxIdleConns  = 64
)

// withDefaults validates c, fills in the defaults and resolves the Authorization header. Errors
// name the key.
func (c OutputConfig) withDefaults() (OutputConfig, error) {
	if c.URL == "" {
		return c, errors.New("url: required (http:// or https://)")
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return c, fmt.Errorf("url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, fmt.Errorf("url: %q is not an http:// or https:// URL", c.URL)
	}
	switch c.Mode {
	case "":
		c.Mode = ModeBinary
	case ModeBinary, ModeStructured:
	default:
		return c, fmt.Errorf("mode: %q is not binary or structured", c.Mode)
	}
	switch {
	case c.Timeout < 0:
		return c, fmt.Errorf("timeout: %v is negative", c.Timeout)
	case c.Timeout == 0:
		c.Timeout = DefaultOutputTimeout
	}
	switch {
	case c.MaxIdleConns < 0:
		return c, fmt.Errorf("max_idle_conns: %d is negative", c.MaxIdleConns)
	case c.MaxIdleConns == 0:
		c.MaxIdleConns = DefaultMaxIdleConns
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
		return c, fmt.Errorf("tls: set, but url %q is not https://", c.URL)
	}
	return c, nil
}

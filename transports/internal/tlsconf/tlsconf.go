// Package tlsconf is the client side of TLS that every broker transport configures the same way
// (the "tls" block: ca_file, cert_file, key_file, server_name, insecure_skip_verify).
//
// Invariant: a Config that validates builds a *tls.Config with TLS 1.2 or later and with
// certificate verification on unless insecure_skip_verify says otherwise.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Config is the "tls" block of a client transport's configuration.
type Config struct {
	// CAFile is a PEM file of CA certificates that verify the broker (default: the system
	// pool).
	CAFile string `yaml:"ca_file"`
	// CertFile is the PEM client certificate for mutual TLS (requires key_file).
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key of cert_file.
	KeyFile string `yaml:"key_file"`
	// ServerName is the name the broker's certificate must carry (default: the host of the
	// broker's URL).
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify disables verification of the broker's certificate. For tests only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// IsZero reports whether no TLS setting is given.
func (c Config) IsZero() bool { return c == Config{} }

// Client builds the client TLS configuration, reading the files; nil when no setting is given
// (the transport then uses the system defaults for TLS URLs). Errors name the key, relative to
// the "tls" block ("tls.ca_file: ...").
func (c Config) Client() (*tls.Config, error) {
	if c.IsZero() {
		return nil, nil
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("tls.cert_file and tls.key_file: set both or neither")
	}
	cfg := &tls.Config{ //nolint:gosec // InsecureSkipVerify is opt-in and documented
		MinVersion:         tls.VersionTLS12,
		ServerName:         c.ServerName,
		InsecureSkipVerify: c.InsecureSkipVerify,
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file: %s holds no PEM certificate", c.CAFile)
		}
		cfg.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file/tls.key_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Package tlsconf is the client side of TLS that every broker transport configures the same way
// (the "tls" block: ca_file, cert_file, key_file, server_name, insecure_skip_verify), and the
// server side of a listener turnout serves itself (Server: cert_file, key_file, client_ca_file).
//
// Invariant: a Config that validates builds a *tls.Config with TLS 1.2 or later and with
// certificate verification on unless insecure_skip_verify says otherwise; a Server that
// validates builds one with TLS 1.2 or later that, when it has a client CA, requires and
// verifies a client certificate from every connection.
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
		pool, err := certPool("tls.ca_file", c.CAFile)
		if err != nil {
			return nil, err
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

// Server is the TLS block of a listener that turnout serves (the embedded MQTT broker's).
type Server struct {
	// CertFile is the PEM certificate (chain) the listener presents.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key of cert_file.
	KeyFile string `yaml:"key_file"`
	// ClientCAFile, when set, is a PEM file of CA certificates; every client must then present
	// a certificate signed by one of them (mutual TLS).
	ClientCAFile string `yaml:"client_ca_file"`
}

// Config builds the listener's TLS configuration, reading the files. Errors name the key,
// relative to the "tls" block ("tls.key_file: ..."), so that a missing file and an unreadable
// key point at different keys.
func (s Server) Config() (*tls.Config, error) {
	if s.CertFile == "" {
		return nil, errors.New("tls.cert_file: required")
	}
	if s.KeyFile == "" {
		return nil, errors.New("tls.key_file: required")
	}
	certPEM, err := os.ReadFile(s.CertFile)
	if err != nil {
		return nil, fmt.Errorf("tls.cert_file: %w", err)
	}
	keyPEM, err := os.ReadFile(s.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls.key_file: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls.key_file: %s does not go with the certificate %s: %w", s.KeyFile, s.CertFile, err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if s.ClientCAFile != "" {
		pool, err := certPool("tls.client_ca_file", s.ClientCAFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// certPool reads the PEM CA certificates of file, the value of key.
func certPool(key, file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: %s holds no PEM certificate", key, file)
	}
	return pool, nil
}

package config

import (
	"bytes"
	"os"

	"gopkg.in/yaml.v3"
)

// DefaultMaxUploadBytes is admin.max_upload_bytes when absent: 16 MiB.
const DefaultMaxUploadBytes = 16 << 20

// MinTokenBytes is the shortest admin token accepted: a guessable token is no protection.
const MinTokenBytes = 16

// AdminTLS is the admin.tls block: the listener serves HTTPS only when it is set.
type AdminTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// UploadLimit returns admin.max_upload_bytes with its default applied.
func (a AdminConfig) UploadLimit() int64 {
	if a.MaxUploadBytes == nil {
		return DefaultMaxUploadBytes
	}
	return *a.MaxUploadBytes
}

// checkAdmin checks the security keys of the admin block and reads the token into a.Token.
// Relative paths are relative to the working directory, like the paths in transport blocks.
func checkAdmin(c *collector, root *yaml.Node, a *AdminConfig, lookup func(string) (string, bool)) {
	line := func(keys ...string) int { return valueLine(root, append([]string{"admin"}, keys...)...) }
	switch {
	case a.TokenFile != "" && a.TokenEnv != "":
		c.add(line("token_env"), "admin.token_env", "set either admin.token_file or admin.token_env, not both")
	case a.TokenFile != "":
		data, err := os.ReadFile(a.TokenFile)
		if err != nil {
			c.add(line("token_file"), "admin.token_file", "cannot read the token: %v", err)
			break
		}
		a.Token = checkToken(c, line("token_file"), "admin.token_file", "the file "+a.TokenFile, data)
	case a.TokenEnv != "":
		v, ok := lookup(a.TokenEnv)
		if !ok || v == "" {
			c.add(line("token_env"), "admin.token_env", "the environment variable %s is not set or empty: export it with the token, or remove admin.token_env to make the rules API read-only", a.TokenEnv)
			break
		}
		a.Token = checkToken(c, line("token_env"), "admin.token_env", "the environment variable "+a.TokenEnv, []byte(v))
	}
	if a.RulesReadOpen && a.Token == nil && a.TokenFile == "" && a.TokenEnv == "" {
		c.add(line("rules_read_open"), "admin.rules_read_open", "has no effect without a token: without admin.token_file or admin.token_env the rules API is read-only and its reads are open")
	}
	if m := a.MaxUploadBytes; m != nil && *m <= 0 && !reported(c, "admin.max_upload_bytes") {
		c.add(line("max_upload_bytes"), "admin.max_upload_bytes", "must be positive (default %d, 16 MiB)", DefaultMaxUploadBytes)
	}
	for _, l := range []struct {
		key string
		neg bool
	}{
		{"read_header_timeout", a.ReadHeaderTimeout < 0}, {"read_timeout", a.ReadTimeout < 0},
		{"idle_timeout", a.IdleTimeout < 0}, {"max_header_bytes", a.MaxHeaderBytes < 0},
		{"auth_failure_burst", a.AuthFailureBurst < 0}, {"auth_failure_window", a.AuthFailureWindow < 0},
	} {
		if l.neg {
			c.add(line(l.key), "admin."+l.key, "must not be negative (0 or absent: the default)")
		}
	}
	t := a.TLS
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		c.add(line("tls"), "admin.tls", "set both cert_file and key_file, or neither")
	case t.CertFile != "":
		for _, f := range []struct{ key, path string }{{"cert_file", t.CertFile}, {"key_file", t.KeyFile}} {
			if _, err := os.Stat(f.path); err != nil {
				c.add(line("tls", f.key), "admin.tls."+f.key, "%v", err)
			}
		}
	}
}

// checkToken trims the token's surrounding white space (a file usually ends with a newline) and
// checks its length; it returns nil when it is refused.
func checkToken(c *collector, line int, key, where string, raw []byte) []byte {
	tok := bytes.TrimSpace(raw)
	if len(tok) < MinTokenBytes {
		c.add(line, key, "the token in %s is %d bytes long: use at least %d random characters (e.g. openssl rand -hex 32)", where, len(tok), MinTokenBytes)
		return nil
	}
	return tok
}

// reported says whether c already holds an error for key (the strict decoding's, whose value
// then decoded as zero).
func reported(c *collector, key string) bool {
	for _, e := range c.errs {
		if e.Key == key {
			return true
		}
	}
	return false
}

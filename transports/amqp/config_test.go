package amqp

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestConfigValidation(t *testing.T) {
	cases := []struct {
		name, yaml string
		output     bool
		err        string // "" for valid
		check      func(t *testing.T, c *ConnectionConfig, in *InputConfig, out *OutputConfig)
	}{
		{name: "input defaults", yaml: "url: amqp://127.0.0.1\naddress: /queue/a", check: func(t *testing.T, c *ConnectionConfig, in *InputConfig, _ *OutputConfig) {
			if in.Credit != 256 || !*in.Durable || c.ConnectTimeout != 10*time.Second ||
				c.ReconnectMinBackoff != 500*time.Millisecond || c.ReconnectMaxBackoff != 30*time.Second || c.SASL != "anonymous" {
				t.Errorf("defaults: %+v", in)
			}
		}},
		{name: "userinfo selects plain", yaml: "url: amqp://u:p@127.0.0.1:5672\naddress: /queue/a", check: func(t *testing.T, c *ConnectionConfig, _ *InputConfig, _ *OutputConfig) {
			if c.SASL != "plain" || c.username() != "u" || c.password() != "p" {
				t.Errorf("sasl %q user %q pass %q", c.SASL, c.username(), c.password())
			}
			addr, opts, err := c.dialTarget()
			if err != nil || addr != "amqp://127.0.0.1:5672" || opts.SASLType == nil {
				t.Errorf("dial target %q %v: the credentials must go to SASL, not the URL", addr, err)
			}
		}},
		{name: "username overrides userinfo", yaml: "url: amqp://u:p@h\nusername: v\npassword: q\naddress: /queue/a", check: func(t *testing.T, c *ConnectionConfig, _ *InputConfig, _ *OutputConfig) {
			if c.username() != "v" || c.password() != "q" {
				t.Errorf("user %q pass %q", c.username(), c.password())
			}
		}},
		{name: "anonymous despite userinfo", yaml: "url: amqp://u:p@h\nsasl: anonymous\naddress: /queue/a"},
		{name: "durable off", yaml: "url: amqp://h\naddress: /queue/a\ndurable: false", check: func(t *testing.T, _ *ConnectionConfig, in *InputConfig, _ *OutputConfig) {
			if *in.Durable {
				t.Error("durable: false ignored")
			}
		}},
		{name: "output defaults to binary", output: true, yaml: "url: amqps://h\naddress: /exchange/x/k", check: func(t *testing.T, _ *ConnectionConfig, _ *InputConfig, out *OutputConfig) {
			if out.Mode != "binary" {
				t.Errorf("mode %q", out.Mode)
			}
		}},
		{name: "structured output", output: true, yaml: "url: amqp://h\naddress: /queue/a\nmode: structured"},
		{name: "missing url", yaml: "address: /queue/a", err: "url: required"},
		{name: "bad scheme", yaml: "url: http://h\naddress: /queue/a", err: `url: scheme "http" not supported`},
		{name: "no host", yaml: "url: amqp://\naddress: /queue/a", err: "has no host"},
		{name: "path in url", yaml: "url: amqp://h/queue/a\naddress: /queue/a", err: "no path or query"},
		{name: "password in error is redacted", yaml: "url: amqp://u:secret@h/x\naddress: /queue/a", err: "u:xxxxx@h"},
		{name: "missing address", yaml: "url: amqp://h", err: "address: required"},
		{name: "bad sasl", yaml: "url: amqp://h\naddress: /queue/a\nsasl: external", err: `sasl: "external" not supported`},
		{name: "plain without user", yaml: "url: amqp://h\naddress: /queue/a\nsasl: plain", err: "sasl: plain needs a username"},
		{name: "password without user", yaml: "url: amqp://h\naddress: /queue/a\npassword: x", err: "password: set username too"},
		{name: "tls on amqp://", yaml: "url: amqp://h\naddress: /queue/a\ntls: {insecure_skip_verify: true}", err: "tls: set, but url is not amqps://"},
		{name: "tls files checked", yaml: "url: amqps://h\naddress: /queue/a\ntls: {ca_file: /nonexistent.pem}", err: "tls.ca_file"},
		{name: "tls key without cert", yaml: "url: amqps://h\naddress: /queue/a\ntls: {key_file: k.pem}", err: "tls.cert_file and tls.key_file"},
		{name: "negative credit", yaml: "url: amqp://h\naddress: /queue/a\ncredit: -1", err: "credit: -1 is outside"},
		{name: "backoffs", yaml: "url: amqp://h\naddress: /queue/a\nreconnect_min_backoff: 2s\nreconnect_max_backoff: 1s", err: "reconnect_max_backoff: 1s is below"},
		{name: "negative timeout", yaml: "url: amqp://h\naddress: /queue/a\nconnect_timeout: -1s", err: "connect_timeout: -1s is negative"},
		{name: "output max_in_flight default", output: true, yaml: "url: amqp://h\naddress: /queue/a", check: func(t *testing.T, _ *ConnectionConfig, _ *InputConfig, out *OutputConfig) {
			if out.MaxInFlight != 256 {
				t.Errorf("max_in_flight %d, want 256", out.MaxInFlight)
			}
		}},
		{name: "negative max_in_flight", output: true, yaml: "url: amqp://h\naddress: /queue/a\nmax_in_flight: -1", err: "max_in_flight: -1 out of range"},
		{name: "bad mode", output: true, yaml: "url: amqp://h\naddress: /queue/a\nmode: batch", err: `mode: "batch" not supported`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var (
				in  InputConfig
				out OutputConfig
				err error
				c   *ConnectionConfig
			)
			dec := func(v any) {
				d := yaml.NewDecoder(strings.NewReader(tc.yaml))
				d.KnownFields(true)
				if err := d.Decode(v); err != nil {
					t.Fatalf("yaml: %v", err)
				}
			}
			if tc.output {
				dec(&out)
				err, c = out.validate(), &out.ConnectionConfig
			} else {
				dec(&in)
				err, c = in.validate(), &in.ConnectionConfig
			}
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("validate: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("validate = %v, want an error containing %q", err, tc.err)
			case tc.err == "" && tc.check != nil:
				tc.check(t, c, &in, &out)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

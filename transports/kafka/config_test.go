package kafka

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestConfigValidation(t *testing.T) {
	conn := ConnectionConfig{Brokers: []string{"127.0.0.1:9092"}}
	in := func(mod func(*InputConfig)) func() error {
		return func() error {
			c := InputConfig{ConnectionConfig: conn, Group: "g", Topics: []string{"events"}}
			mod(&c)
			return c.validate()
		}
	}
	out := func(mod func(*OutputConfig)) func() error {
		return func() error {
			c := OutputConfig{ConnectionConfig: conn, Topic: "events"}
			mod(&c)
			return c.validate()
		}
	}
	cases := []struct {
		name    string
		check   func() error
		wantErr string
	}{
		{"input defaults", in(func(*InputConfig) {}), ""},
		{"several brokers", in(func(c *InputConfig) { c.Brokers = []string{"a:9092", " b.example:9093"} }), ""},
		{"no brokers", in(func(c *InputConfig) { c.Brokers = nil }), "brokers: required"},
		{"broker without port", in(func(c *InputConfig) { c.Brokers = []string{"a:9092", "b"} }), "brokers[1]:"},
		{"broker port zero", in(func(c *InputConfig) { c.Brokers = []string{"a:0"} }), "brokers[0]:"},
		{"sasl plain", in(func(c *InputConfig) { c.SASL = SASLConfig{Mechanism: "PLAIN", Username: "u", Password: "p"} }), ""},
		{"sasl scram-512", in(func(c *InputConfig) { c.SASL = SASLConfig{Mechanism: "SCRAM-SHA-512", Username: "u", Password: "p"} }), ""},
		{"sasl unknown", in(func(c *InputConfig) { c.SASL = SASLConfig{Mechanism: "GSSAPI", Username: "u"} }), "sasl.mechanism:"},
		{"sasl no user", in(func(c *InputConfig) { c.SASL = SASLConfig{Mechanism: "PLAIN"} }), "sasl.username:"},
		{"sasl user without mechanism", in(func(c *InputConfig) { c.SASL = SASLConfig{Username: "u"} }), "sasl.mechanism:"},
		{"bad ca file", in(func(c *InputConfig) { c.TLS.CAFile = "/nonexistent" }), "tls.ca_file"},
		{"backoff reversed", in(func(c *InputConfig) { c.ReconnectMinBackoff = time.Minute; c.ReconnectMaxBackoff = time.Second }), "reconnect_max_backoff"},
		{"no group", in(func(c *InputConfig) { c.Group = "" }), "group: required"},
		{"no topics", in(func(c *InputConfig) { c.Topics = nil }), "topics: required"},
		{"bad topic", in(func(c *InputConfig) { c.Topics = []string{"ok", "a b"} }), "topics[1]:"},
		{"negative max_in_flight", in(func(c *InputConfig) { c.MaxInFlight = -1 }), "max_in_flight"},
		{"bad start_offset", in(func(c *InputConfig) { c.StartOffset = "beginning" }), "start_offset"},
		{"instance_id", in(func(c *InputConfig) { c.InstanceID = "turnout-a.1" }), ""},
		{"instance_id with a space", in(func(c *InputConfig) { c.InstanceID = "turnout a" }), "instance_id:"},
		{"short session_timeout", in(func(c *InputConfig) { c.SessionTimeout = 500 * time.Millisecond }), "session_timeout"},
		{"short fetch_max_wait", in(func(c *InputConfig) { c.FetchMaxWait = time.Millisecond }), "fetch_max_wait"},
		{"short commit_interval", in(func(c *InputConfig) { c.CommitInterval = time.Millisecond }), "commit_interval"},
		{"retry delays reversed", in(func(c *InputConfig) { c.RetryMinDelay = time.Minute; c.RetryMaxDelay = time.Second }), "retry_max_delay"},
		{"negative retry_min_delay", in(func(c *InputConfig) { c.RetryMinDelay = -time.Second }), "retry_min_delay"},
		{"output defaults", out(func(*OutputConfig) {}), ""},
		{"output no topic", out(func(c *OutputConfig) { c.Topic = "" }), "topic: required"},
		{"output topic with slash", out(func(c *OutputConfig) { c.Topic = "a/b" }), "topic:"},
		{"output topic dot", out(func(c *OutputConfig) { c.Topic = "." }), "topic:"},
		{"output bad mode", out(func(c *OutputConfig) { c.Mode = "batch" }), "mode:"},
		{"output bad key", out(func(c *OutputConfig) { c.Key = "id" }), "key:"},
		{"output negative ack_timeout", out(func(c *OutputConfig) { c.AckTimeout = -time.Second }), "ack_timeout"},
		{"output negative linger", out(func(c *OutputConfig) { c.Linger = -time.Second }), "linger"},
		{"output zstd", out(func(c *OutputConfig) { c.Compression = "zstd" }), ""},
		{"output bad compression", out(func(c *OutputConfig) { c.Compression = "brotli" }), "compression:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.check()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	in := InputConfig{ConnectionConfig: ConnectionConfig{Brokers: []string{"h:9092"}}, Group: "g", Topics: []string{"t"}}
	if err := in.validate(); err != nil {
		t.Fatal(err)
	}
	if in.MaxInFlight != 256 || in.StartOffset != "earliest" || in.CommitInterval != time.Second || in.FetchMaxWait != 500*time.Millisecond || in.SessionTimeout != 45*time.Second ||
		in.RetryMinDelay != time.Second || in.RetryMaxDelay != time.Minute || in.ClientID != "turnout" {
		t.Errorf("input defaults: %+v", in)
	}
	out := OutputConfig{ConnectionConfig: ConnectionConfig{Brokers: []string{"h:9092"}}, Topic: "t"}
	if err := out.validate(); err != nil {
		t.Fatal(err)
	}
	if out.Mode != modeBinary || out.Key != keyNone || out.AckTimeout != 10*time.Second {
		t.Errorf("output defaults: %+v", out)
	}
}

func TestDoubling(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {7, 10 * time.Second}, {1000, 10 * time.Second}} {
		t.Run(fmt.Sprintf("attempt %d", tc.n), func(t *testing.T) {
			if got := doubling(time.Second, 10*time.Second, tc.n); got != tc.want {
				t.Errorf("attempt %d waits %v, want %v", tc.n, got, tc.want)
			}
		})
	}
}

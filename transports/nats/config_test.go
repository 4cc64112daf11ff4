package nats

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidation(t *testing.T) {
	in := func(mod func(*InputConfig)) func() error {
		return func() error {
			c := InputConfig{ConnectionConfig: ConnectionConfig{URL: "nats://127.0.0.1:4222"}, Stream: "S", Consumer: "c"}
			mod(&c)
			return c.validate()
		}
	}
	out := func(mod func(*OutputConfig)) func() error {
		return func() error {
			c := OutputConfig{ConnectionConfig: ConnectionConfig{URL: "nats://127.0.0.1:4222"}, Subject: "a.b"}
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
		{"several urls", in(func(c *InputConfig) { c.URL = "nats://a:4222, nats://b:4222"; c.URLs = []string{"tls://c:4222"} }), ""},
		{"no url", in(func(c *InputConfig) { c.URL = "" }), "url: required"},
		{"bad scheme", in(func(c *InputConfig) { c.URL = "http://a" }), "url: scheme"},
		{"password alone", in(func(c *InputConfig) { c.Password = "p" }), "password:"},
		{"token and user", in(func(c *InputConfig) { c.Username = "u"; c.Token = "t" }), "token:"},
		{"no stream", in(func(c *InputConfig) { c.Stream = "" }), "stream: required"},
		{"no consumer", in(func(c *InputConfig) { c.Consumer = "" }), "consumer: required"},
		{"consumer with dot", in(func(c *InputConfig) { c.Consumer = "a.b" }), "consumer:"},
		{"negative max_ack_pending", in(func(c *InputConfig) { c.MaxAckPending = -1 }), "max_ack_pending"},
		{"pull_batch above max_ack_pending", in(func(c *InputConfig) { c.MaxAckPending = 10; c.PullBatch = 11 }), "pull_batch: 11 is outside 1..max_ack_pending (10)"},
		{"negative pull_batch", in(func(c *InputConfig) { c.PullBatch = -1 }), "pull_batch"},
		{"short ack_wait", in(func(c *InputConfig) { c.AckWait = time.Millisecond }), "ack_wait"},
		{"nak delays reversed", in(func(c *InputConfig) { c.NakMinDelay = time.Minute; c.NakMaxDelay = time.Second }), "nak_max_delay"},
		{"backoff reversed", in(func(c *InputConfig) { c.ReconnectMinBackoff = time.Minute; c.ReconnectMaxBackoff = time.Second }), "reconnect_max_backoff"},
		{"bad ca file", in(func(c *InputConfig) { c.TLS.CAFile = "/nonexistent" }), "tls.ca_file"},
		{"output defaults", out(func(*OutputConfig) {}), ""},
		{"output wildcard subject", out(func(c *OutputConfig) { c.Subject = "a.*" }), "subject:"},
		{"output bad mode", out(func(c *OutputConfig) { c.Mode = "batch" }), "mode:"},
		{"output negative ack_timeout", out(func(c *OutputConfig) { c.AckTimeout = -time.Second }), "ack_timeout"},
		{"output negative max_pending", out(func(c *OutputConfig) { c.MaxPending = -1 }), "max_pending: -1 is out of range"},
		{"output huge max_pending", out(func(c *OutputConfig) { c.MaxPending = 1 << 20 }), "max_pending"},
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

func TestMaxPendingDefault(t *testing.T) {
	c := OutputConfig{ConnectionConfig: ConnectionConfig{URL: "nats://127.0.0.1:4222"}, Subject: "a.b"}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	if c.MaxPending != 256 {
		t.Errorf("max_pending defaults to %d, want 256", c.MaxPending)
	}
}

func TestPullBatchDefault(t *testing.T) {
	for _, tc := range []struct{ maxAckPending, want int }{{0, 128}, {1, 1}, {3, 1}, {256, 128}, {4096, 1024}} {
		c := InputConfig{ConnectionConfig: ConnectionConfig{URL: "nats://127.0.0.1:4222"}, Stream: "S", Consumer: "c", MaxAckPending: tc.maxAckPending}
		if err := c.validate(); err != nil {
			t.Fatal(err)
		}
		if c.PullBatch != tc.want {
			t.Errorf("max_ack_pending %d: pull_batch %d, want %d", tc.maxAckPending, c.PullBatch, tc.want)
		}
	}
}

func TestNakDelayDoubles(t *testing.T) {
	in := &Input{cfg: InputConfig{NakMinDelay: time.Second, NakMaxDelay: 5 * time.Second}}
	for delivered, want := range map[uint64]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 5 * time.Second, 100: 5 * time.Second} {
		if got := in.nakDelay(delivered); got != want {
			t.Errorf("nakDelay(%d) = %v, want %v", delivered, got, want)
		}
	}
}

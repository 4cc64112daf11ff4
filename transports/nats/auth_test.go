package nats

import (
	"testing"
	"time"

	"github.com/turnout-router/turnout/transports/nats/natstest"
)

func TestAuthentication(t *testing.T) {
	cases := []struct {
		name   string
		server []string
		set    func(*ConnectionConfig)
		ok     bool
	}{
		{"token", []string{"--auth", "s3cret"}, func(c *ConnectionConfig) { c.Token = "s3cret" }, true},
		{"wrong token", []string{"--auth", "s3cret"}, func(c *ConnectionConfig) { c.Token = "guess" }, false},
		{"user and password", []string{"--user", "turnout", "--pass", "pw"}, func(c *ConnectionConfig) { c.Username, c.Password = "turnout", "pw" }, true},
		{"wrong password", []string{"--user", "turnout", "--pass", "pw"}, func(c *ConnectionConfig) { c.Username, c.Password = "turnout", "no" }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := natstest.StartWithArgs(t, tc.server...)
			cfg := OutputConfig{ConnectionConfig: fastConn(srv.URL()), Subject: "auth.x", AckTimeout: time.Second}
			tc.set(&cfg.ConnectionConfig)
			o, err := newOutput("auth", cfg, testDeps())
			if err != nil {
				t.Fatal(err)
			}
			if err := o.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			defer o.Close(t.Context())
			if tc.ok {
				waitFor(t, "connected", o.Ready)
				return
			}
			time.Sleep(time.Second)
			if o.Ready() {
				t.Fatal("connected with wrong credentials")
			}
			if err := o.Send(t.Context(), fullEvent("1", nil, "", true)); err == nil {
				t.Fatal("Send succeeded without a connection")
			}
		})
	}
}

package reconnect

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	cases := []struct {
		name          string
		ct, min, max  time.Duration
		err           string
		wct, wmn, wmx time.Duration
	}{
		{"defaults", 0, 0, 0, "", DefaultConnectTimeout, DefaultMinBackoff, DefaultMaxBackoff},
		{"set", time.Second, time.Millisecond, time.Minute, "", time.Second, time.Millisecond, time.Minute},
		{"negative timeout", -time.Second, 0, 0, "connect_timeout: -1s is negative", 0, 0, 0},
		{"negative min", 0, -time.Second, 0, "reconnect_min_backoff: -1s is negative", 0, 0, 0},
		{"max below min", 0, time.Minute, time.Second, "reconnect_max_backoff: 1s is below reconnect_min_backoff 1m0s", 0, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := Settings{ConnectTimeout: tc.ct, ReconnectMinBackoff: tc.min, ReconnectMaxBackoff: tc.max}
			err := s.ValidateReconnect()
			ct, mn, mx := s.ConnectTimeout, s.ReconnectMinBackoff, s.ReconnectMaxBackoff
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Validate = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || ct != tc.wct || mn != tc.wmn || mx != tc.wmx {
				t.Errorf("Validate = %v, %v %v %v", err, ct, mn, mx)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	b := Settings{ReconnectMinBackoff: 100 * time.Millisecond, ReconnectMaxBackoff: 350 * time.Millisecond}.NewBackoff()
	var got []time.Duration
	for range 4 {
		got = append(got, b.Next())
	}
	b.Reset()
	got = append(got, b.Next())
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 350 * time.Millisecond, 350 * time.Millisecond, 100 * time.Millisecond}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("waits %v, want %v", got, want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Error("Sleep did not end with its context")
	}
	if !Sleep(context.Background(), time.Millisecond) {
		t.Error("Sleep did not complete")
	}
}

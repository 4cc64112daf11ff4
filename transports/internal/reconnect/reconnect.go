// Package reconnect holds what every broker client of turnout does the same way to stay
// connected: the connect_timeout, reconnect_min_backoff and reconnect_max_backoff settings
// (Settings, embedded in each transport's config) with their defaults and checks, a backoff that doubles from the minimum to the maximum, and a sleep
// that ends with its context.
//
// Invariant: a validated configuration has 0 < connect_timeout and 0 <= min <= max, so a Backoff
// built from it never waits longer than max.
package reconnect

import (
	"context"
	"fmt"
	"time"
)

// Defaults of the settings.
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultMinBackoff     = 500 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
)

// Fast are settings for tests against local servers: quick attempts and reconnects.
var Fast = Settings{ConnectTimeout: 5 * time.Second, ReconnectMinBackoff: 50 * time.Millisecond, ReconnectMaxBackoff: 500 * time.Millisecond}

// Settings are the connection settings every broker client has. A transport's connection
// config embeds them inline, so the keys sit beside the transport's own:
//
//	type ConnectionConfig struct {
//		URL                string `yaml:"url"`
//		reconnect.Settings `yaml:",inline"`
//	}
//
// What connect_timeout bounds besides the connection attempt (a write, an API call, a
// settlement) is documented by each transport.
type Settings struct {
	// ConnectTimeout bounds one connection attempt (default 10s).
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// ReconnectMinBackoff is the wait before reconnecting after a lost connection or a failed
	// attempt; it doubles per failed attempt up to ReconnectMaxBackoff and returns to the
	// minimum once a connection is established (default 500ms).
	ReconnectMinBackoff time.Duration `yaml:"reconnect_min_backoff"`
	// ReconnectMaxBackoff caps the reconnect wait (default 30s).
	ReconnectMaxBackoff time.Duration `yaml:"reconnect_max_backoff"`
}

// ValidateReconnect fills in the defaults of zero settings and checks them. Errors name the
// YAML key.
func (s *Settings) ValidateReconnect() error {
	if s.ConnectTimeout == 0 {
		s.ConnectTimeout = DefaultConnectTimeout
	}
	if s.ConnectTimeout < 0 {
		return fmt.Errorf("connect_timeout: %v is negative", s.ConnectTimeout)
	}
	if s.ReconnectMinBackoff == 0 {
		s.ReconnectMinBackoff = DefaultMinBackoff
	}
	if s.ReconnectMaxBackoff == 0 {
		s.ReconnectMaxBackoff = DefaultMaxBackoff
	}
	if s.ReconnectMinBackoff < 0 {
		return fmt.Errorf("reconnect_min_backoff: %v is negative", s.ReconnectMinBackoff)
	}
	if s.ReconnectMaxBackoff < s.ReconnectMinBackoff {
		return fmt.Errorf("reconnect_max_backoff: %v is below reconnect_min_backoff %v", s.ReconnectMaxBackoff, s.ReconnectMinBackoff)
	}
	return nil
}

// NewBackoff returns a Backoff at the minimum of validated settings.
func (s Settings) NewBackoff() *Backoff {
	return &Backoff{min: s.ReconnectMinBackoff, max: s.ReconnectMaxBackoff, cur: s.ReconnectMinBackoff}
}

// Backoff is the wait before a reconnect: it starts at the minimum, doubles after each failed
// attempt up to the maximum, and returns to the minimum after a success. Only its owner
// goroutine uses it.
type Backoff struct {
	min, max, cur time.Duration
}

// Next returns the wait before the next attempt and doubles the one after.
func (b *Backoff) Next() time.Duration {
	w := b.cur
	b.cur = min(2*b.cur, b.max)
	return w
}

// Reset is called after a successful connection.
func (b *Backoff) Reset() { b.cur = b.min }

// Sleep waits d or until ctx ends; it reports whether the wait was complete.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

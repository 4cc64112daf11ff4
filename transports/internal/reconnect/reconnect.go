// Package reconnect holds what every broker client of turnout does the same way to stay
// connected: the connect_timeout, reconnect_min_backoff and reconnect_max_backoff settings with
// their defaults and checks, a backoff that doubles from the minimum to the maximum, and a sleep
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

// Validate fills in the defaults of zero settings and checks them. Errors name the YAML key.
func Validate(connectTimeout, minBackoff, maxBackoff *time.Duration) error {
	if *connectTimeout == 0 {
		*connectTimeout = DefaultConnectTimeout
	}
	if *connectTimeout < 0 {
		return fmt.Errorf("connect_timeout: %v is negative", *connectTimeout)
	}
	if *minBackoff == 0 {
		*minBackoff = DefaultMinBackoff
	}
	if *maxBackoff == 0 {
		*maxBackoff = DefaultMaxBackoff
	}
	if *minBackoff < 0 {
		return fmt.Errorf("reconnect_min_backoff: %v is negative", *minBackoff)
	}
	if *maxBackoff < *minBackoff {
		return fmt.Errorf("reconnect_max_backoff: %v is below reconnect_min_backoff %v", *maxBackoff, *minBackoff)
	}
	return nil
}

// Backoff is the wait before a reconnect: it starts at the minimum, doubles after each failed
// attempt up to the maximum, and returns to the minimum after a success. Only its owner
// goroutine uses it.
type Backoff struct {
	min, max, cur time.Duration
}

// NewBackoff returns a Backoff at its minimum.
func NewBackoff(minBackoff, maxBackoff time.Duration) *Backoff {
	return &Backoff{min: minBackoff, max: maxBackoff, cur: minBackoff}
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

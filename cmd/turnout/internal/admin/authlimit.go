package admin

import (
	"math"
	"sync"
	"time"
)

// authLimiter counts failed authentications per remote address in token buckets: an address
// starts with burst tokens, each failure takes one, and they come back at burst per window.
// While an address has no token left its requests are refused without the token being checked,
// which makes guessing the token from one address take window/burst per guess.
//
// The map is bounded by maxClients: buckets that refilled are forgotten, and when every entry
// is still draining, the addresses not in the map share one overflow bucket, so that many
// addresses cannot grow the map nor reset the buckets of the others. Safe for concurrent use.
type authLimiter struct {
	burst      float64
	perToken   time.Duration // time for one token to come back
	maxClients int
	now        func() time.Time

	mu       sync.Mutex
	buckets  map[string]*authBucket
	overflow authBucket
}

type authBucket struct {
	tokens float64
	at     time.Time // when tokens was computed
}

// Defaults of the failed-authentication limit.
const (
	DefaultAuthFailureBurst  = 10
	DefaultAuthFailureWindow = time.Minute
	authLimiterMaxClients    = 4096
)

func newAuthLimiter(burst int, window time.Duration, maxClients int) *authLimiter {
	if burst <= 0 {
		burst = DefaultAuthFailureBurst
	}
	if window <= 0 {
		window = DefaultAuthFailureWindow
	}
	return &authLimiter{burst: float64(burst), perToken: window / time.Duration(burst), maxClients: maxClients,
		now: time.Now, buckets: map[string]*authBucket{}, overflow: authBucket{tokens: float64(burst)}}
}

// refill brings b's tokens up to now.
func (l *authLimiter) refill(b *authBucket, now time.Time) {
	if !b.at.IsZero() {
		b.tokens = math.Min(l.burst, b.tokens+float64(now.Sub(b.at))/float64(l.perToken))
	}
	b.at = now
}

// bucket returns addr's bucket, creating a full one when create is set; nil when addr has none
// and create is not set. Called with mu held.
func (l *authLimiter) bucket(addr string, now time.Time, create bool) *authBucket {
	if b := l.buckets[addr]; b != nil {
		return b
	}
	if len(l.buckets) >= l.maxClients {
		for a, b := range l.buckets {
			if l.refill(b, now); b.tokens >= l.burst {
				delete(l.buckets, a)
			}
		}
		if len(l.buckets) >= l.maxClients {
			return &l.overflow
		}
	}
	if !create {
		return nil
	}
	b := &authBucket{tokens: l.burst, at: now}
	l.buckets[addr] = b
	return b
}

// wait reports how long addr must wait before its token is checked again; 0 when it may try now.
func (l *authLimiter) wait(addr string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.bucket(addr, now, false)
	if b == nil {
		return 0
	}
	l.refill(b, now)
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - b.tokens) * float64(l.perToken))
}

// fail records a failed authentication from addr.
func (l *authLimiter) fail(addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.bucket(addr, now, true)
	l.refill(b, now)
	b.tokens = math.Max(0, b.tokens-1)
}

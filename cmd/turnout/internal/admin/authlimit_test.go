package admin

import (
	"fmt"
	"testing"
	"time"
)

// TestAuthLimiter: an address is refused after burst failures and gets a try back every
// window/burst; the map never holds more than maxClients addresses, the others sharing one
// bucket while every entry is draining, and refilled entries make room again.
func TestAuthLimiter(t *testing.T) {
	now := time.Unix(1e9, 0)
	l := newAuthLimiter(3, 3*time.Second, 4)
	l.now = func() time.Time { return now }
	for i := range 3 {
		if w := l.wait("a"); w != 0 {
			t.Fatalf("wait before failure %d = %v, want 0", i+1, w)
		}
		l.fail("a")
	}
	if w := l.wait("a"); w != time.Second {
		t.Errorf("wait after 3 failures = %v, want 1s", w)
	}
	if w := l.wait("b"); w != 0 {
		t.Errorf("another address waits %v, want 0", w)
	}
	now = now.Add(600 * time.Millisecond)
	if w := l.wait("a"); w != 400*time.Millisecond {
		t.Errorf("wait 600ms later = %v, want 400ms", w)
	}
	now = now.Add(400 * time.Millisecond)
	if w := l.wait("a"); w != 0 {
		t.Errorf("wait once a try came back = %v, want 0", w)
	}

	// Fill the map: a, b, c, d draining; e and f share the overflow bucket.
	for _, addr := range []string{"b", "c", "d"} {
		l.fail(addr)
	}
	for i := range 3 {
		l.fail(fmt.Sprint("e", i))
	}
	if len(l.buckets) != 4 {
		t.Fatalf("%d addresses in the map, want at most 4", len(l.buckets))
	}
	if w := l.wait("f"); w == 0 {
		t.Errorf("a new address while the overflow bucket is empty waits 0, want the shared wait")
	}
	if w := l.wait("b"); w != 0 {
		t.Errorf("an address in the map with tries left waits %v, want 0", w)
	}
	now = now.Add(10 * time.Second) // every bucket refilled
	if w := l.wait("f"); w != 0 {
		t.Errorf("after the refill a new address waits %v, want 0", w)
	}
	l.fail("f")
	if _, ok := l.buckets["f"]; !ok || len(l.buckets) > 4 {
		t.Errorf("after the refill the map holds %d addresses (f: %v), want f in a map of at most 4", len(l.buckets), ok)
	}
}

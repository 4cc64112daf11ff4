package hostabi

import (
	"math"
	"time"
)

// The CPU guard. A rule loaded with a timeout is compiled instrumented (internal/guard): every
// loop head, and the entry of every function that may call itself, checks an interrupt flag, a
// global of the instance. Each call stores its number in the instance (one atomic store) and
// clears it after (one atomic swap), and reads no clock; one watchdog goroutine per rule looks at
// the live instances every tick, notes when it first saw each call running, and raises the flag
// of an instance whose call it has seen running for the timeout; the guest then traps at its
// next check, and Decide reports a timeout and discards the instance. This replaces the
// goroutine and timer per call of wazero's close-on-context-done (docs/RATIONALE.md, "The CPU
// guard").
//
// A call is never stopped before its timeout: it started before the watchdog first saw it. It is
// stopped by its timeout plus two ticks (a twentieth of the timeout, between 1 ms and 50 ms):
// one before the watchdog first sees it, one between the watchdog's looks. A watchdog that was
// not scheduled for a while stops calls later, never earlier.

// interrupted is the call number of an instance whose flag the watchdog raised.
const interrupted = math.MaxUint64

// epoch is the origin of the times the host measures: the monotonic clock at the process start.
var epoch = time.Now()

// watchTick returns the watchdog's period for a timeout.
func watchTick(timeout time.Duration) time.Duration {
	return min(max(timeout/20, time.Millisecond), 50*time.Millisecond)
}

// watch runs the rule's watchdog until stop is closed. It takes r.mu for each scan.
func (r *Rule) watch(stop <-chan struct{}) {
	t := time.NewTicker(watchTick(r.timeout))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := time.Since(epoch)
		r.mu.Lock()
		for inst := range r.live {
			c := inst.call.Load()
			switch {
			case c == 0 || c == interrupted:
			case c != inst.seenCall:
				inst.seenCall, inst.seenAt = c, now
			case now-inst.seenAt >= r.timeout && inst.call.CompareAndSwap(c, interrupted):
				inst.interrupt.Set(1)
			}
		}
		r.mu.Unlock()
	}
}

package hostabi

import (
	"time"
)

// The CPU guard. A rule loaded with a timeout is compiled instrumented (internal/guard): every
// function entry and loop head checks an interrupt flag, a global of the instance. Each call
// stores its deadline in the instance; one watchdog goroutine per rule looks at the live
// instances every tick and raises the flag of an instance whose call is past its deadline; the
// guest then traps at its next function entry or loop iteration, and Decide reports a timeout
// and discards the instance. A call costs two atomic stores, instead of the goroutine and timer
// per call of wazero's close-on-context-done (docs/RATIONALE.md, "The CPU guard").
//
// A call is stopped between its timeout and its timeout plus one tick (a tenth of the timeout,
// between 1 ms and 100 ms).

// interrupted is the deadline of an instance whose flag the watchdog raised.
const interrupted = -1

// epoch is the origin of deadlines: monotonic nanoseconds since the process started.
var epoch = time.Now()

// watchTick returns the watchdog's period for a timeout.
func watchTick(timeout time.Duration) time.Duration {
	return min(max(timeout/10, time.Millisecond), 100*time.Millisecond)
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
		now := int64(time.Since(epoch))
		r.mu.Lock()
		for inst := range r.live {
			if d := inst.deadline.Load(); d > 0 && now > d && inst.deadline.CompareAndSwap(d, interrupted) {
				inst.interrupt.Set(1)
			}
		}
		r.mu.Unlock()
	}
}

package testutil

import "time"

// Collect returns every message dispatched until nothing more arrives for quiet, or until
// within has passed, whichever comes first. Unlike Next it never fails the test: the caller
// asserts on what came (or did not come).
func (d *Dispatcher) Collect(quiet, within time.Duration) []Dispatched {
	var out []Dispatched
	deadline := time.After(within)
	for {
		select {
		case x := <-d.ch:
			out = append(out, x)
		case <-time.After(quiet):
			return out
		case <-deadline:
			return out
		}
	}
}

package transporttest

import (
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/internal/ce"
)

// The suite's set checks decide what "exactly the nacked ones come back" means.
func TestSetChecks(t *testing.T) {
	for _, c := range []struct {
		name            string
		have, want      []string
		all, overlapAny bool
	}{
		{"equal", []string{"a", "b"}, []string{"b", "a"}, true, true},
		{"duplicates", []string{"a", "a", "b"}, []string{"a", "b"}, true, true},
		{"missing", []string{"a"}, []string{"a", "b"}, false, true},
		{"disjoint", []string{"c"}, []string{"a"}, false, false},
		{"nothing wanted", []string{"c"}, nil, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := containsAll(c.have, c.want); got != c.all {
				t.Errorf("containsAll(%v, %v) = %v", c.have, c.want, got)
			}
			if got := overlaps(c.have, c.want); got != c.overlapAny {
				t.Errorf("overlaps(%v, %v) = %v", c.have, c.want, got)
			}
		})
	}
}

// The suite's events must be valid, and a copy of one must compare equal, or every round trip
// would fail for the suite's own reasons.
func TestEvents(t *testing.T) {
	for _, c := range []struct {
		name string
		make func(string) *event.Event
	}{
		{"event", Event},
		{"binary data", binaryEvent},
		{"64KiB", bigEvent},
		{"typed extensions", typedEvent},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := c.make("x")
			if err := e.Validate(); err != nil {
				t.Fatalf("invalid: %v", err)
			}
			if d := ce.Diff(e, c.make("x")); d != nil {
				t.Errorf("two copies differ: %v", d)
			}
		})
	}
	if n := len(bigEvent("x").Data()); n != 64<<10 {
		t.Errorf("64KiB event data: %d bytes, want %d", n, 64<<10)
	}
}

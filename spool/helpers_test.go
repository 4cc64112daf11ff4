package spool

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/engine/enginetest"
	"github.com/turnout-router/turnout/internal/bytesize"
	"github.com/turnout-router/turnout/internal/testutil"
)

// outputDown is the error of an output that is unreachable.
var outputDown = errors.New("output unreachable")

// switchSink is an output that can be taken down and brought back; while down every Send fails.
// It records the ids it confirmed, in order.
type switchSink struct {
	enginetest.Sink
	down atomic.Bool
}

func newSwitchSink() *switchSink {
	s := &switchSink{}
	s.Fail = func(ctx context.Context, _ int, e *event.Event) error {
		if s.down.Load() {
			return outputDown
		}
		return nil
	}
	return s
}

func (s *switchSink) ids() []string {
	var out []string
	for _, e := range s.Confirmed() {
		out = append(out, e.ID())
	}
	return out
}

// testSpool is a started spool on dir with its registry; Close runs at cleanup (a second Close
// is a no-op, so tests may close it earlier).
type testSpool struct {
	*Spool
	reg *prometheus.Registry
}

func open(t testing.TB, dir string, cfg Config, sink engine.Sink) *testSpool {
	t.Helper()
	s, err := tryOpen(t, dir, cfg, sink)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tryOpen(t testing.TB, dir string, cfg Config, sink engine.Sink) (*testSpool, error) {
	t.Helper()
	s, err := build(t, dir, cfg, sink)
	if err != nil {
		return nil, err
	}
	if err := s.Start(context.Background()); err != nil {
		return nil, err
	}
	return s, nil
}

// build makes a spool on dir that is not started yet.
func build(t testing.TB, dir string, cfg Config, sink engine.Sink) (*testSpool, error) {
	t.Helper()
	reg := prometheus.NewRegistry()
	if cfg.Dir == "" {
		cfg.Dir = dir
	}
	s, err := New("uplink", cfg, sink, engine.Deps{Registerer: reg, DataDir: t.TempDir()})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return &testSpool{s, reg}, nil
}

func (s *testSpool) metric(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	return testutil.Metric(t, s.reg, name, labels)
}

// noDamage fails if the spool counted damaged bytes: in every test but the ones that damage the
// log on purpose, the log must read back whole.
func noDamage(t testing.TB, s *testSpool) {
	t.Helper()
	if v := s.metric(t, "turnout_spool_discarded_bytes_total", nil); v != 0 {
		t.Errorf("turnout_spool_discarded_bytes_total = %v in a log nobody damaged", v)
	}
}

func size(n int64) *bytesize.Size { v := bytesize.Size(n); return &v }

// testEvent is event number i: binary data of a size that varies with i, and an extension.
func testEvent(i int) *event.Event {
	e := enginetest.NewEvent(fmt.Sprintf("ev-%06d", i), nil)
	e.SetType("care.alarm.fall")
	e.SetExtension("resident", fmt.Sprintf("room-%d", i%40))
	data := make([]byte, 50+i%200)
	for j := range data {
		data[j] = byte(i + j)
	}
	_ = e.SetData("application/octet-stream", data)
	return e
}

func sendAll(t testing.TB, s *testSpool, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := s.Send(context.Background(), testEvent(i)); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
}

// eventNumber returns i for the id of testEvent(i).
func eventNumber(id string) (int, bool) {
	digits, ok := strings.CutPrefix(id, "ev-")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(digits)
	return i, err == nil && i >= 0
}

// idSet counts ids.
type idSet struct {
	mu sync.Mutex
	n  map[string]int
}

func (s *idSet) add(id string) {
	s.mu.Lock()
	if s.n == nil {
		s.n = map[string]int{}
	}
	s.n[id]++
	s.mu.Unlock()
}

// countSink confirms every event at once and only counts them.
type countSink struct{ n *atomic.Int64 }

func (c *countSink) Send(context.Context, *event.Event) error { c.n.Add(1); return nil }
func (c *countSink) Close(context.Context) error              { return nil }

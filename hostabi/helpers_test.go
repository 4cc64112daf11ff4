package hostabi

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/turnout-router/turnout/internal/rulebuild"
)

// testCacheDir is shared by every test host so each module version compiles once per machine.
var testCacheDir = filepath.Join(os.TempDir(), "turnout-test-wazero-cache")

type testHost struct {
	*Host
	reg  *prometheus.Registry
	logs *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestHost(t testing.TB) *testHost {
	t.Helper()
	reg := prometheus.NewRegistry()
	logs := &syncBuffer{}
	h, err := NewHost(context.Background(), Options{
		CacheDir:   testCacheDir,
		Logger:     slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(context.Background()) })
	return &testHost{h, reg, logs}
}

func buildRule(t testing.TB, dir string) []byte {
	t.Helper()
	b, err := rulebuild.Build(dir)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (h *testHost) load(t testing.TB, wasm []byte, o RuleOptions) *Rule {
	t.Helper()
	r, err := h.Load(context.Background(), wasm, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	return r
}

func newEvent(typ string) *event.Event {
	e := event.New()
	e.SetID("id-1")
	e.SetSource("/sensors/kitchen")
	e.SetType(typ)
	return &e
}

func (r *Rule) gauge() float64 {
	var m dto.Metric
	if err := r.instances.Write(&m); err != nil {
		panic(err)
	}
	return m.GetGauge().GetValue()
}

// counter returns the value of the counter family name with the given labels, 0 when absent.
func (h *testHost) counter(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return 0
}

package hostabi

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/turnout-router/turnout/internal/rulebuild"
	"github.com/turnout-router/turnout/internal/testutil"
)

// testCacheDir is shared by every test host so each module version compiles once per machine.
var testCacheDir = filepath.Join(os.TempDir(), "turnout-test-wazero-cache")

type testHost struct {
	*Host
	reg  *prometheus.Registry
	logs *testutil.SyncBuffer
}

func newTestHost(t testing.TB) *testHost {
	t.Helper()
	reg := prometheus.NewRegistry()
	logs := &testutil.SyncBuffer{}
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

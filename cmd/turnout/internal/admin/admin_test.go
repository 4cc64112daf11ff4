package admin

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/internal/testutil"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestEndpoints(t *testing.T) {
	reg := NewRegistry("1.2.3")
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "turnout_test_events_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)

	var ready atomic.Bool
	s := New(Options{Gatherer: reg, Ready: func() (bool, []string) {
		if ready.Load() {
			return true, nil
		}
		return false, []string{"engine", "input devices"}
	}})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	t.Run("healthz", func(t *testing.T) {
		code, body := get(t, srv.URL+"/healthz")
		if code != 200 || body != "ok\n" {
			t.Errorf("GET /healthz = %d %q, want 200 ok", code, body)
		}
	})
	t.Run("readyz not ready names the parts", func(t *testing.T) {
		code, body := get(t, srv.URL+"/readyz")
		if code != http.StatusServiceUnavailable || body != "not ready: engine, input devices\n" {
			t.Errorf("GET /readyz = %d %q", code, body)
		}
	})
	t.Run("readyz ready", func(t *testing.T) {
		ready.Store(true)
		code, body := get(t, srv.URL+"/readyz")
		if code != 200 || body != "ready\n" {
			t.Errorf("GET /readyz = %d %q, want 200 ready", code, body)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		code, body := get(t, srv.URL+"/metrics")
		if code != 200 {
			t.Fatalf("GET /metrics = %d", code)
		}
		for _, want := range []string{
			`turnout_build_info{goversion="` + runtime.Version() + `",version="1.2.3"} 1`,
			"turnout_test_events_total 3",
			"go_goroutines ",
			"process_start_time_seconds ",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %q", want)
			}
		}
	})
	t.Run("metrics come from the injected registry only", func(t *testing.T) {
		g := prometheus.NewCounter(prometheus.CounterOpts{Name: "turnout_global_only_total", Help: "x"})
		prometheus.MustRegister(g)
		defer prometheus.Unregister(g)
		_, body := get(t, srv.URL+"/metrics")
		if strings.Contains(body, "turnout_global_only_total") {
			t.Error("/metrics shows a metric of the global registry")
		}
	})
	t.Run("unknown path", func(t *testing.T) {
		if code, _ := get(t, srv.URL+"/debug"); code != http.StatusNotFound {
			t.Errorf("GET /debug = %d, want 404", code)
		}
	})
	t.Run("no profiles unless configured", func(t *testing.T) {
		if code, _ := get(t, srv.URL+"/debug/pprof/"); code != http.StatusNotFound {
			t.Errorf("GET /debug/pprof/ = %d, want 404", code)
		}
	})
}

func TestPprof(t *testing.T) {
	s := New(Options{Gatherer: NewRegistry("dev"), Pprof: true})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	for path, want := range map[string]string{
		"/debug/pprof/":                     "goroutine",
		"/debug/pprof/goroutine?debug=1":    "goroutine profile: total",
		"/debug/pprof/profile?seconds=1":    "", // a binary CPU profile
		"/debug/pprof/heap?debug=1":         "heap profile",
		"/debug/pprof/cmdline":              "",
		"/debug/pprof/symbol":               "num_symbols",
		"/debug/pprof/trace?seconds=0.1":    "",
		"/debug/pprof/allocs?debug=1":       "heap profile",
		"/debug/pprof/threadcreate?debug=1": "threadcreate profile",
	} {
		t.Run(path, func(t *testing.T) {
			code, body := get(t, srv.URL+path)
			if code != http.StatusOK || !strings.Contains(body, want) || body == "" {
				t.Errorf("GET %s = %d, %d bytes, want 200 with %q", path, code, len(body), want)
			}
		})
	}
}

func TestServerLifecycle(t *testing.T) {
	s := New(Options{Listen: "127.0.0.1:0", Gatherer: prometheus.NewRegistry()})
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	code, _ := get(t, "http://"+s.Addr()+"/readyz")
	if code != http.StatusServiceUnavailable {
		t.Errorf("readyz without a Ready func = %d, want 503", code)
	}
	other := New(Options{Listen: s.Addr(), Gatherer: prometheus.NewRegistry()})
	if err := other.Start(); err == nil || !strings.Contains(err.Error(), "admin listen") {
		t.Errorf("second Start on a busy address = %v, want a listen error", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + s.Addr() + "/healthz"); err == nil {
		t.Error("server still answers after Shutdown")
	}
}

// TestReadyGauge: turnout_ready on /metrics says what /readyz answers at the time of the scrape.
func TestReadyGauge(t *testing.T) {
	var ready atomic.Bool
	readyFunc := func() (bool, []string) {
		if ready.Load() {
			return true, nil
		}
		return false, []string{"output cloud"}
	}
	reg := NewRegistry("dev")
	reg.MustRegister(ReadyGauge(readyFunc))
	srv := httptest.NewServer(New(Options{Gatherer: reg, Ready: readyFunc}).Handler())
	defer srv.Close()
	for _, state := range []struct {
		ready bool
		code  int
		gauge string
	}{{false, http.StatusServiceUnavailable, "turnout_ready 0\n"}, {true, http.StatusOK, "turnout_ready 1\n"}, {false, http.StatusServiceUnavailable, "turnout_ready 0\n"}} {
		ready.Store(state.ready)
		if code, _ := get(t, srv.URL+"/readyz"); code != state.code {
			t.Errorf("ready=%v: GET /readyz = %d, want %d", state.ready, code, state.code)
		}
		if _, body := get(t, srv.URL+"/metrics"); !strings.Contains(body, state.gauge) {
			t.Errorf("ready=%v: /metrics lacks %q", state.ready, state.gauge)
		}
	}

	never := prometheus.NewRegistry()
	never.MustRegister(ReadyGauge(nil))
	if v := testutil.Metric(t, never, "turnout_ready", nil); v != 0 {
		t.Errorf("turnout_ready without a ready func = %v, want 0 (like /readyz)", v)
	}
}

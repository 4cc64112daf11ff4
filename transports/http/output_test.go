package httpin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/ce"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/internal/tlsconf"
)

// newTestOutput builds an output for url; handshake is off unless edit turns it on.
func newTestOutput(t *testing.T, url string, edit func(*OutputConfig)) *Output {
	t.Helper()
	off := false
	c := OutputConfig{URL: url, Handshake: &off, Origin: "turnout.test"}
	if edit != nil {
		edit(&c)
	}
	o, err := NewOutput("hook", c, engine.Deps{Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("NewOutput: %v", err)
	}
	t.Cleanup(func() { _ = o.Close(context.Background()) })
	return o
}

func sampleEvent(t *testing.T) *event.Event {
	t.Helper()
	e := event.New()
	e.SetID("id 1/ü")
	e.SetSource("urn:turnout:test/a b")
	e.SetType("com.example.alarm")
	e.SetSubject(`Café "bed 2" 100% ✓ +`)
	e.SetDataSchema("https://schema.example/alarm?v=1")
	e.SetTime(time.Date(2026, 11, 24, 10, 0, 0, 123456789, time.UTC))
	e.SetExtension("patientid", "p/42 %41")
	e.SetExtension("note", "line\u00a0ünïcödé \"q\"")
	if err := e.SetData("application/octet-stream", []byte{0xff, 0x00, 0xfe, '\n', '%'}); err != nil {
		t.Fatal(err)
	}
	return &e
}

// server answers every POST with handle and counts the requests.
func server(t *testing.T, handle http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		handle(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestOutputStatusOutcomes(t *testing.T) {
	type outcome int
	const (
		confirmed outcome = iota
		retryable
		permanent
	)
	tests := []struct {
		name   string
		status int
		body   string
		want   outcome
	}{
		{"200 OK", 200, "", confirmed},
		{"201 Created", 201, "", confirmed},
		{"202 Accepted", 202, "", confirmed},
		{"204 No Content", 204, "", confirmed},
		{"203 is not a confirmation", 203, "", retryable},
		{"500", 500, "boom", retryable},
		{"502", 502, "", retryable},
		{"503", 503, "", retryable},
		{"504", 504, "", retryable},
		{"408", 408, "", retryable},
		{"429", 429, "", retryable},
		{"400 dead-letters", 400, "attribute id is bad", permanent},
		{"401", 401, "who are you", permanent},
		{"403", 403, "", permanent},
		{"404", 404, "", permanent},
		{"413", 413, "", permanent},
		{"415", 415, "", permanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			})
			o := newTestOutput(t, srv.URL, nil)
			err := o.Send(context.Background(), sampleEvent(t))
			switch tt.want {
			case confirmed:
				if err != nil {
					t.Fatalf("Send: %v, want nil", err)
				}
			case retryable:
				if err == nil || engine.IsPermanent(err) {
					t.Fatalf("Send: %v, want a retryable error", err)
				}
			case permanent:
				if err == nil || !engine.IsPermanent(err) {
					t.Fatalf("Send: %v, want a permanent error", err)
				}
				if !strings.Contains(err.Error(), http.StatusText(tt.status)) || !strings.Contains(err.Error(), tt.body) {
					t.Errorf("error %q does not name the status and the body", err)
				}
				if !o.Ready() {
					t.Error("Ready false after a plain 4xx")
				}
			}
		})
	}
}

func TestOutputErrorBodyExcerptIsBounded(t *testing.T) {
	srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(400)
		_, _ = io.WriteString(w, strings.Repeat("x", 100000))
	})
	err := newTestOutput(t, srv.URL, nil).Send(context.Background(), sampleEvent(t))
	if err == nil || len(err.Error()) > 1000 {
		t.Fatalf("error of %d bytes, want a bounded excerpt", len(err.Error()))
	}
}

func TestOutputGoneIsSticky(t *testing.T) {
	srv, n := server(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusGone) })
	o := newTestOutput(t, srv.URL, nil)
	for i := range 3 {
		err := o.Send(context.Background(), sampleEvent(t))
		if !engine.IsPermanent(err) || !strings.Contains(err.Error(), "Gone") {
			t.Fatalf("send %d: %v, want a permanent error naming 410 Gone", i, err)
		}
	}
	if n.Load() != 1 {
		t.Errorf("%d requests, want 1: delivery must stop after 410", n.Load())
	}
	if o.Ready() {
		t.Error("Ready after 410 Gone")
	}
}

func TestOutputRedirectNotFollowed(t *testing.T) {
	target, hits := server(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	for _, code := range []int{301, 302, 307, 308} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, target.URL, code) })
			err := newTestOutput(t, srv.URL, nil).Send(context.Background(), sampleEvent(t))
			if !engine.IsPermanent(err) || !strings.Contains(err.Error(), "redirect") {
				t.Fatalf("Send: %v, want a permanent error about the redirect", err)
			}
		})
	}
	if hits.Load() != 0 {
		t.Errorf("redirect target got %d requests", hits.Load())
	}
}

func TestOutputTimeoutAndConnectionErrors(t *testing.T) {
	release := make(chan struct{})
	slow, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	o := newTestOutput(t, slow.URL, func(c *OutputConfig) { c.Timeout = 100 * time.Millisecond })
	err := o.Send(context.Background(), sampleEvent(t))
	if err == nil || engine.IsPermanent(err) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send to a slow receiver: %v, want a retryable deadline error", err)
	}

	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	err = newTestOutput(t, dead.URL, nil).Send(context.Background(), sampleEvent(t))
	if err == nil || engine.IsPermanent(err) {
		t.Fatalf("Send to a closed port: %v, want a retryable error", err)
	}
}

func TestRetryAfterParsing(t *testing.T) {
	now := time.Date(2026, 11, 30, 5, 0, 0, 0, time.UTC)
	tests := []struct {
		name, v string
		want    time.Duration
		ok      bool
	}{
		{"seconds", "3", 3 * time.Second, true},
		{"http-date", now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{"date in the past", now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"empty", "", 0, false},
		{"garbage", "soon", 0, false},
		{"negative", "-1", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := retryAfter(tt.v, now)
			if got != tt.want || ok != tt.ok {
				t.Errorf("retryAfter(%q) = %v, %v; want %v, %v", tt.v, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestOutputHonoursRetryAfter(t *testing.T) {
	for _, tt := range []struct {
		name   string
		header func() string
		status int
	}{
		{"429 with seconds", func() string { return "2" }, 429},
		{"503 with HTTP-date", func() string { return time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat) }, 503},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var fail atomic.Bool
			fail.Store(true)
			srv, n := server(t, func(w http.ResponseWriter, r *http.Request) {
				if fail.Swap(false) {
					w.Header().Set("Retry-After", tt.header())
					w.WriteHeader(tt.status)
					return
				}
				w.WriteHeader(204)
			})
			o := newTestOutput(t, srv.URL, nil)
			err := o.Send(context.Background(), sampleEvent(t))
			var ra *RetryAfterError
			if !errors.As(err, &ra) || engine.IsPermanent(err) || ra.Wait < time.Second {
				t.Fatalf("Send: %v, want a retryable *RetryAfterError with the wait", err)
			}
			// A Send whose deadline ends before the pause fails at once, without a request.
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			err = o.Send(ctx, sampleEvent(t))
			if !errors.As(err, &ra) || time.Since(start) > time.Second {
				t.Fatalf("Send within the pause: %v after %v, want *RetryAfterError at once", err, time.Since(start))
			}
			if n.Load() != 1 {
				t.Fatalf("%d requests during the pause, want 1", n.Load())
			}
			// A Send with time to spare waits the pause out, then delivers.
			start = time.Now()
			if err := o.Send(context.Background(), sampleEvent(t)); err != nil {
				t.Fatalf("Send after the pause: %v", err)
			}
			if time.Since(start) < 500*time.Millisecond {
				t.Errorf("request sent %v after a Retry-After of %v", time.Since(start), ra.Wait)
			}
		})
	}
}

// TestOutputBinaryRoundTrip sends through the output into the HTTP input's decoder: every
// attribute and extension (percent-encoded on the way) and binary data come back unchanged.
// HTTP headers carry strings, so extensions are strings here.
func TestOutputRoundTripThroughInput(t *testing.T) {
	for _, mode := range []string{ModeBinary, ModeStructured} {
		t.Run(mode, func(t *testing.T) {
			fd := newFake()
			fx := newFixture(t, Config{}, fd)
			var raw http.Header
			var mu sync.Mutex
			proxy, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				raw = r.Header.Clone()
				mu.Unlock()
				fx.in.ServeHTTP(w, r)
			})
			o := newTestOutput(t, proxy.URL+fx.in.cfg.Path, func(c *OutputConfig) { c.Mode = mode })
			want := sampleEvent(t)
			if err := o.Send(context.Background(), want); err != nil {
				t.Fatalf("Send: %v", err)
			}
			got := fd.events()
			if len(got) != 1 {
				t.Fatalf("input got %d events", len(got))
			}
			if d := ce.Diff(want, got[0]); d != nil {
				t.Errorf("round trip differs:\n%s", strings.Join(d, "\n"))
			}
			mu.Lock()
			defer mu.Unlock()
			switch mode {
			case ModeBinary:
				if s := raw.Get("Ce-Subject"); s != "Caf%C3%A9%20%22bed%202%22%20100%25%20%E2%9C%93%20+" {
					t.Errorf("Ce-Subject = %q, want percent-encoded", s)
				}
				if ct := raw.Get("Content-Type"); ct != "application/octet-stream" {
					t.Errorf("Content-Type = %q", ct)
				}
			case ModeStructured:
				if ct := raw.Get("Content-Type"); !strings.HasPrefix(ct, "application/cloudevents+json") {
					t.Errorf("Content-Type = %q", ct)
				}
				if raw.Get("Ce-Id") != "" {
					t.Error("structured request carries ce- headers")
				}
			}
		})
	}
}

// TestOutputBatchMode sends concurrent events in batch mode through the HTTP input: every event
// arrives unchanged, in fewer requests than events, and a refused batch fails every Send in it.
func TestOutputBatchMode(t *testing.T) {
	fd := newFake()
	fx := newFixture(t, Config{}, fd)
	var requests atomic.Int64
	var contentType atomic.Value
	proxy, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		contentType.Store(r.Header.Get("Content-Type"))
		fx.in.ServeHTTP(w, r)
	})
	o := newTestOutput(t, proxy.URL+fx.in.cfg.Path, func(c *OutputConfig) {
		c.Mode, c.BatchSize, c.BatchLinger = ModeBatch, 4, 200*time.Millisecond
	})
	want := map[string]*event.Event{}
	var wg sync.WaitGroup
	for i := range 10 {
		e := sampleEvent(t)
		e.SetID(fmt.Sprintf("batch-%d", i))
		want[e.ID()] = e
		wg.Go(func() {
			if err := o.Send(context.Background(), e); err != nil {
				t.Errorf("Send %s: %v", e.ID(), err)
			}
		})
	}
	wg.Wait()
	got := fd.events()
	if len(got) != len(want) {
		t.Fatalf("input got %d events, want %d", len(got), len(want))
	}
	for _, g := range got {
		if d := ce.Diff(want[g.ID()], g); d != nil {
			t.Errorf("event %s differs:\n%s", g.ID(), strings.Join(d, "\n"))
		}
	}
	if n := requests.Load(); n >= 10 || n < 3 {
		t.Errorf("%d requests for 10 events in batches of at most 4", n)
	}
	if ct, _ := contentType.Load().(string); !strings.HasPrefix(ct, "application/cloudevents-batch+json") {
		t.Errorf("Content-Type %q", ct)
	}

	t.Run("refused batch", func(t *testing.T) {
		srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(422) })
		o := newTestOutput(t, srv.URL, func(c *OutputConfig) { c.Mode, c.BatchLinger = ModeBatch, 50*time.Millisecond })
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				if err := o.Send(context.Background(), sampleEvent(t)); !engine.IsPermanent(err) {
					t.Errorf("Send: %v, want permanent", err)
				}
			})
		}
		wg.Wait()
	})
	t.Run("close", func(t *testing.T) {
		o := newTestOutput(t, proxy.URL, func(c *OutputConfig) { c.Mode = ModeBatch })
		_ = o.Close(context.Background())
		_ = o.Close(context.Background())
	})
}

func TestOutputHandshakeAgainstInput(t *testing.T) {
	on := func(c *OutputConfig) { t := true; c.Handshake = &t }
	t.Run("allowed", func(t *testing.T) {
		fd := newFake()
		fx := newFixture(t, Config{AllowedOrigins: []string{"turnout.test"}}, fd)
		o := newTestOutput(t, fx.url, on)
		for range 2 {
			if err := o.Send(context.Background(), sampleEvent(t)); err != nil {
				t.Fatalf("Send: %v", err)
			}
		}
		if len(fd.events()) != 2 || !o.Ready() {
			t.Fatalf("%d events delivered, ready %v", len(fd.events()), o.Ready())
		}
	})
	t.Run("refused", func(t *testing.T) {
		fd := newFake()
		fx := newFixture(t, Config{AllowedOrigins: []string{"other.example"}}, fd)
		o := newTestOutput(t, fx.url, on)
		for range 2 {
			err := o.Send(context.Background(), sampleEvent(t))
			if err == nil || !strings.Contains(err.Error(), "handshake") {
				t.Fatalf("Send: %v, want a handshake refusal", err)
			}
		}
		if len(fd.events()) != 0 || o.Ready() {
			t.Fatalf("%d events delivered, ready %v; want none and not ready", len(fd.events()), o.Ready())
		}
	})
	t.Run("wrong origin echoed", func(t *testing.T) {
		srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("WebHook-Allowed-Origin", "someone.else")
			w.WriteHeader(200)
		})
		o := newTestOutput(t, srv.URL, on)
		if err := o.Send(context.Background(), sampleEvent(t)); err == nil || o.Ready() {
			t.Fatalf("Send: %v, ready %v; want refused", err, o.Ready())
		}
	})
	t.Run("allowed rate", func(t *testing.T) {
		fd := newFake()
		fx := newFixture(t, Config{AllowedRate: 600}, fd) // one request per 100ms
		o := newTestOutput(t, fx.url, on)
		start := time.Now()
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				if err := o.Send(context.Background(), sampleEvent(t)); err != nil {
					t.Errorf("Send: %v", err)
				}
			})
		}
		wg.Wait()
		if el := time.Since(start); el < 300*time.Millisecond {
			t.Errorf("4 requests at 600/min took %v, want at least 300ms", el)
		}
		if len(fd.events()) != 4 {
			t.Errorf("%d events delivered", len(fd.events()))
		}
	})
}

func TestOutputAuthorization(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TURNOUT_TEST_HOOK_TOKEN", "from-env")
	tests := []struct {
		name string
		edit func(*OutputConfig)
		want string
	}{
		{"token", func(c *OutputConfig) { c.Token = "s3cret" }, "Bearer s3cret"},
		{"token_file", func(c *OutputConfig) { c.TokenFile = tokenFile }, "Bearer from-file"},
		{"token_env", func(c *OutputConfig) { c.TokenEnv = "TURNOUT_TEST_HOOK_TOKEN" }, "Bearer from-env"},
		{"authorization", func(c *OutputConfig) { c.Authorization = "Basic dTpw" }, "Basic dTpw"},
		{"none", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got atomic.Value
			srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
				got.Store(r.Header.Get("Authorization"))
				w.WriteHeader(204)
			})
			if err := newTestOutput(t, srv.URL, tt.edit).Send(context.Background(), sampleEvent(t)); err != nil {
				t.Fatal(err)
			}
			if got.Load() != tt.want {
				t.Errorf("Authorization %q, want %q", got.Load(), tt.want)
			}
		})
	}
	t.Run("against the input's token", func(t *testing.T) {
		fx := newFixture(t, Config{Token: "s3cret"}, newFake())
		if err := newTestOutput(t, fx.url, func(c *OutputConfig) { c.Token = "s3cret" }).Send(context.Background(), sampleEvent(t)); err != nil {
			t.Errorf("with the token: %v", err)
		}
		if err := newTestOutput(t, fx.url, nil).Send(context.Background(), sampleEvent(t)); !engine.IsPermanent(err) {
			t.Errorf("without the token: %v, want permanent 401", err)
		}
	})
}

func TestOutputTLSWithClientCertificate(t *testing.T) {
	ca, cert, key := testutil.WriteCerts(t, t.TempDir(), "127.0.0.1")
	var peer atomic.Value
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) > 0 {
			peer.Store(r.TLS.PeerCertificates[0].Subject.String())
		}
		w.WriteHeader(204)
	}))
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	o := newTestOutput(t, srv.URL, func(c *OutputConfig) {
		c.TLS.CAFile, c.TLS.CertFile, c.TLS.KeyFile = ca, cert, key
	})
	if err := o.Send(context.Background(), sampleEvent(t)); err != nil {
		t.Fatalf("Send over TLS: %v", err)
	}
	pemBytes, _ := os.ReadFile(cert)
	blk, _ := pem.Decode(pemBytes)
	want, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if peer.Load() != want.Subject.String() {
		t.Errorf("client certificate %v, want %v", peer.Load(), want.Subject)
	}
	// Without the CA the receiver's certificate is not trusted: a retryable error.
	err = newTestOutput(t, srv.URL, nil).Send(context.Background(), sampleEvent(t))
	if err == nil || engine.IsPermanent(err) {
		t.Errorf("Send without the CA: %v, want a retryable TLS error", err)
	}
}

func TestOutputManyInFlight(t *testing.T) {
	var inFlight, peak atomic.Int64
	srv, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(20 * time.Millisecond)
		inFlight.Add(-1)
		w.WriteHeader(202)
	})
	o := newTestOutput(t, srv.URL, nil)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			if err := o.Send(context.Background(), sampleEvent(t)); err != nil {
				t.Errorf("Send: %v", err)
			}
		})
	}
	wg.Wait()
	if peak.Load() < 2 {
		t.Errorf("at most %d requests in flight, want several", peak.Load())
	}
}

func TestOutputConfigErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name string
		c    OutputConfig
		key  string
	}{
		{"no url", OutputConfig{}, "url"},
		{"bad scheme", OutputConfig{URL: "ftp://x"}, "url"},
		{"bad mode", OutputConfig{URL: "http://x", Mode: "bogus"}, "mode"},
		{"negative batch_size", OutputConfig{URL: "http://x", Mode: "batch", BatchSize: -1}, "batch_size"},
		{"two secrets", OutputConfig{URL: "http://x", Token: "a", Authorization: "b"}, "token"},
		{"empty env", OutputConfig{URL: "http://x", TokenEnv: "TURNOUT_TEST_UNSET_VAR"}, "token_env"},
		{"tls on http", OutputConfig{URL: "http://x", TLS: tlsconf.Config{CAFile: "ca.pem"}}, "tls"},
		{"negative timeout", OutputConfig{URL: "http://x", Timeout: -1}, "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewOutput("hook", tt.c, engine.Deps{Registerer: prometheus.NewRegistry()})
			if err == nil || !strings.Contains(err.Error(), tt.key) {
				t.Errorf("error %v, want one naming %s", err, tt.key)
			}
		})
	}
}

func TestOutputAndInputShareTheTypeName(t *testing.T) {
	if _, err := engine.LookupInput("http"); err != nil {
		t.Error(err)
	}
	f, err := engine.LookupOutput("http")
	if err != nil {
		t.Fatal(err)
	}
	s, err := f("hook", strictYAML("url: http://127.0.0.1:1/events\nmode: structured\nhandshake: false\n"), engine.Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close(context.Background())
	if _, err := f("hook", strictYAML("url: http://x\nbogus: 1\n"), engine.Deps{Registerer: prometheus.NewRegistry()}); err == nil {
		t.Error("unknown key accepted")
	}
}

func FuzzHeaderValue(f *testing.F) {
	for _, s := range []string{"", "plain", `Café "bed 2" 100%`, "%zz", "%C3", "a+b%20c", "\x7f\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// Decoding outside bytes never panics; what decodes re-encodes to a decodable value.
		if v, err := decodeHeaderValue(s); err == nil {
			if back, err := decodeHeaderValue(ce.PercentEncode(v)); err != nil || back != v {
				t.Fatalf("decode(encode(%q)) = %q, %v", v, back, err)
			}
		}
		enc := ce.PercentEncode(s)
		for i := 0; i < len(enc); i++ {
			if c := enc[i]; (c <= ' ' || c >= 0x7f || c == '"') && c != '%' {
				t.Fatalf("encode(%q) = %q holds byte %#x", s, enc, enc[i])
			}
		}
		if back, err := decodeHeaderValue(enc); err == nil && back != s {
			t.Fatalf("decode(encode(%q)) = %q", s, back)
		}
	})
}

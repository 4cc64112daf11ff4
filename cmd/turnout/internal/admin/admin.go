// Package admin serves turnout's operational HTTP endpoints: /metrics, /healthz and /readyz,
// Go's /debug/pprof/ profiles when configured, the rules API (rules.go) when given a
// RuleService, and the dead-letter replay endpoint (dlq.go) when given a DeadLetterService; it
// also holds their client (client.go).
//
// Invariants: metrics come only from the registry the process created for itself (NewRegistry),
// never from the prometheus global registry, so that what /metrics shows is exactly what
// turnout's modules registered on the Registerer they were given; /metrics, /healthz and /readyz
// are always open, while the rules API and the replay endpoint change nothing without the
// configured bearer token.
//
// Against slow and hostile clients: the listener bounds the time to send headers and requests
// and the size of headers and uploads (Options), a remote address that sent too many wrong
// tokens is refused before its token is checked (authLimiter), and every refused write is logged
// at warn level (audit, auth.go). A refused request changes nothing in the rule store.
package admin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns the process's registry with the Go and process collectors and the
// turnout_build_info{version,goversion} gauge (always 1) registered.
func NewRegistry(version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "turnout_build_info",
		Help: "Build information of the running turnout; the value is always 1.",
	}, []string{"version", "goversion"})
	info.WithLabelValues(version, runtime.Version()).Set(1)
	reg.MustRegister(info)
	return reg
}

// ReadyGauge returns the turnout_ready gauge: 1 while ready reports ready, 0 otherwise (nil
// ready: never). It asks ready at each scrape, so it says what GET /readyz would have answered
// then, for alerting on a process that stays not ready.
func ReadyGauge(ready ReadyFunc) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "turnout_ready",
		Help: "1 while turnout is ready (GET /readyz answers 200), 0 otherwise.",
	}, func() float64 {
		if ready == nil {
			return 0
		}
		if ok, _ := ready(); ok {
			return 1
		}
		return 0
	})
}

// ReadyFunc reports whether the process serves traffic and, when it does not, the parts that
// are not ready (e.g. "input devices"). It is called on an HTTP server goroutine for every
// /readyz request and must be safe for concurrent use.
type ReadyFunc func() (ready bool, notReady []string)

// Options configure a Server.
type Options struct {
	// Listen is the host:port to listen on.
	Listen string
	// Gatherer backs /metrics.
	Gatherer prometheus.Gatherer
	// Ready backs /readyz; nil means never ready.
	Ready  ReadyFunc
	Logger *slog.Logger
	// Pprof adds Go's profiling endpoints under /debug/pprof/ (CPU, heap, goroutines, ...).
	Pprof bool
	// TLSCertFile and TLSKeyFile, when set, make the listener serve HTTPS only.
	TLSCertFile, TLSKeyFile string

	// Rules backs the rules API under /rules; nil answers 503 until SetRules provides it.
	Rules RuleService
	// Token is the bearer token the rules API's writes (and reads, unless RulesReadOpen) need;
	// empty makes the rules API read-only.
	Token []byte
	// RulesReadOpen lets reads of the rules API through without the token.
	RulesReadOpen bool
	// MaxUploadBytes caps an upload's body; 0 means DefaultMaxUploadBytes.
	MaxUploadBytes int64

	// Limits against slow clients; 0 means the Default* constant of the same name. A client
	// that has not sent its headers within ReadHeaderTimeout, or its request within
	// ReadTimeout, is disconnected; header lines over MaxHeaderBytes get 431.
	ReadHeaderTimeout, ReadTimeout, IdleTimeout time.Duration
	MaxHeaderBytes                              int
	// AuthFailureBurst wrong or missing tokens from one address are allowed at once, then
	// AuthFailureBurst per AuthFailureWindow; beyond, the address is answered 429 with
	// Retry-After without its token being checked. 0 means the defaults (10 per minute).
	AuthFailureBurst  int
	AuthFailureWindow time.Duration
}

// Defaults of the slow-client limits. ReadTimeout leaves a 16 MiB upload (the default
// max_upload_bytes) 2 minutes, about 1.1 Mbit/s. There is no write timeout: CPU profiles and
// traces answer after the time they are asked to record.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 2 * time.Minute
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxHeaderBytes    = 64 << 10
)

// Server is the admin HTTP server.
type Server struct {
	opts      Options
	rules     atomic.Pointer[RuleService]
	dlq       atomic.Pointer[DeadLetterService]
	authLimit *authLimiter
	srv       *http.Server
	ln        net.Listener
	done      chan error
}

// New returns a server that is not listening yet.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, authLimit: newAuthLimiter(opts.AuthFailureBurst, opts.AuthFailureWindow, authLimiterMaxClients)}
	if opts.Rules != nil {
		s.rules.Store(&opts.Rules)
	}
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: orDefault(opts.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		ReadTimeout:       orDefault(opts.ReadTimeout, DefaultReadTimeout),
		IdleTimeout:       orDefault(opts.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    orDefault(opts.MaxHeaderBytes, DefaultMaxHeaderBytes),
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}
	return s
}

func orDefault[T time.Duration | int](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// Handler returns the server's routes; tests use it with httptest.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.opts.Gatherer, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.opts.Logger.Handler(), slog.LevelError),
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	if s.opts.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	s.rulesRoutes(mux)
	s.dlqRoutes(mux)
	return mux
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	ready, notReady := false, []string{"starting"}
	if s.opts.Ready != nil {
		ready, notReady = s.opts.Ready()
	}
	if ready {
		fmt.Fprintln(w, "ready")
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	if len(notReady) == 0 {
		fmt.Fprintln(w, "not ready")
		return
	}
	fmt.Fprintf(w, "not ready: %s\n", strings.Join(notReady, ", "))
}

// SetRules provides the rules API's service once the routes run; until then the API answers
// 503. Safe on any goroutine.
func (s *Server) SetRules(r RuleService) { s.rules.Store(&r) }

// Start listens on Options.Listen and serves on a new goroutine, over TLS when a certificate is
// configured. It returns once the listener is open, so a listen error (address in use) or a
// certificate that does not load is returned here.
func (s *Server) Start() error {
	if s.opts.TLSCertFile != "" || s.opts.TLSKeyFile != "" {
		cert, err := tls.LoadX509KeyPair(s.opts.TLSCertFile, s.opts.TLSKeyFile)
		if err != nil {
			return fmt.Errorf("admin tls: load admin.tls.cert_file %s / admin.tls.key_file %s: %w", s.opts.TLSCertFile, s.opts.TLSKeyFile, err)
		}
		s.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", s.opts.Listen)
	if err != nil {
		return fmt.Errorf("admin listen %s: %w", s.opts.Listen, err)
	}
	if s.srv.TLSConfig != nil {
		ln = tls.NewListener(ln, s.srv.TLSConfig)
	}
	s.ln = ln
	s.done = make(chan error, 1)
	go func() {
		err := s.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		if err != nil {
			s.opts.Logger.Error("admin server stopped", "err", err)
		}
		s.done <- err
	}()
	return nil
}

// Addr returns the address the server listens on (useful with port 0), or "" before Start.
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Shutdown stops the server, waiting for requests in progress until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	if s.ln == nil {
		return nil
	}
	if err := s.srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("admin shutdown: %w", err)
	}
	return <-s.done
}

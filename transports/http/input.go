package httpin

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/transports/internal/tmetrics"
)

func init() {
	engine.RegisterInput("http", func(name string, decode engine.Decoder, deps engine.Deps) (engine.Source, error) {
		var c Config
		if err := decode(&c); err != nil {
			return nil, fmt.Errorf("http input %s: %w", name, err)
		}
		return New(name, c, deps)
	})
}

var (
	_ engine.Source  = (*Input)(nil)
	_ engine.Readier = (*Input)(nil)
	_ http.Handler   = (*Input)(nil)
)

// Input is an HTTP listener that dispatches the CloudEvents it receives. Build it with New; the
// engine calls Start once and Close once.
type Input struct {
	name string
	cfg  Config
	log  *slog.Logger

	connected prometheus.Gauge
	requests  *prometheus.CounterVec

	d       engine.Dispatcher
	srv     *http.Server
	addr    net.Addr
	ready   atomic.Bool
	slots   chan struct{} // one token per POST being handled (max_concurrent_requests)
	closing chan struct{} // closed by Close: new requests answer 503
	abort   chan struct{} // closed when Close's deadline passed: waiting requests answer 503
	once    sync.Once
	served  chan struct{} // closed when Serve returned
}

// New validates c and builds an input named name. It registers the input's metrics on
// deps.Registerer; it does not listen (Start does). Errors name the offending key.
func New(name string, c Config, deps engine.Deps) (*Input, error) {
	c, err := c.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("http input %s: %w", name, err)
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	in := &Input{name: name, cfg: c, log: log.With("input", name, "transport", "http"),
		slots:   make(chan struct{}, c.MaxConcurrentRequests),
		closing: make(chan struct{}), abort: make(chan struct{}), served: make(chan struct{})}
	reg := deps.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	connected, err := tmetrics.ConnectedGauge(reg, "http", name)
	if err != nil {
		return nil, fmt.Errorf("http input %s: %w", name, err)
	}
	requests, err := tmetrics.RegisterOrReuse(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "turnout_http_requests_total",
		Help: "HTTP requests answered by HTTP inputs, by status code.",
	}, []string{"name", "code"}))
	if err != nil {
		return nil, fmt.Errorf("http input %s: %w", name, err)
	}
	in.connected = connected
	in.requests = requests
	return in, nil
}

// Start listens on the configured address and serves requests on its own goroutines, handing
// every event to d. A listen error (address in use, bad certificate) is returned and names the
// address. The engine calls Start once.
func (in *Input) Start(ctx context.Context, d engine.Dispatcher) error {
	in.d = d
	var tlsConf *tls.Config
	if in.cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(in.cfg.CertFile, in.cfg.KeyFile)
		if err != nil {
			return fmt.Errorf("http input %s: load cert_file %s / key_file %s: %w", in.name, in.cfg.CertFile, in.cfg.KeyFile, err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", in.cfg.Listen)
	if err != nil {
		return fmt.Errorf("http input %s: listen %s: %w", in.name, in.cfg.Listen, err)
	}
	in.addr = ln.Addr()
	in.srv = &http.Server{
		Handler:           in,
		ReadHeaderTimeout: in.cfg.ReadHeaderTimeout,
		ReadTimeout:       in.cfg.ReadTimeout,
		WriteTimeout:      in.cfg.WriteTimeout,
		IdleTimeout:       in.cfg.IdleTimeout,
		MaxHeaderBytes:    in.cfg.MaxHeaderBytes,
		TLSConfig:         tlsConf,
		ErrorLog:          slog.NewLogLogger(in.log.Handler(), slog.LevelWarn),
	}
	in.ready.Store(true)
	in.connected.Set(1)
	go func() {
		defer close(in.served)
		var err error
		if tlsConf != nil {
			err = in.srv.ServeTLS(ln, "", "")
		} else {
			err = in.srv.Serve(ln)
		}
		in.ready.Store(false)
		in.connected.Set(0)
		if !errors.Is(err, http.ErrServerClosed) {
			in.log.Error("http input stopped serving", "addr", in.addr.String(), "err", err)
		}
	}()
	in.log.Info("http input listening", "addr", in.addr.String(), "path", in.cfg.Path, "tls", tlsConf != nil)
	return nil
}

// Addr is the address the input listens on once Start returned (useful with port 0).
func (in *Input) Addr() net.Addr { return in.addr }

// Ready reports whether the listener is up. Safe from any goroutine.
func (in *Input) Ready() bool { return in.ready.Load() }

// abortGrace is how long requests cut short at Close's deadline have to write their 503
// before the connections are closed.
const abortGrace = 200 * time.Millisecond

// Close stops accepting requests and shuts the server down gracefully: new requests are refused
// (the listener closes; a request that still arrives is answered 503), and requests waiting for
// their events to settle keep waiting, because the engine goes on delivering while it drains
// and settles every message by the drain's end. Answering them 503 at once would make their
// senders send again events that are being delivered. When ctx ends first, the requests still
// waiting are answered 503 (the client resends; events may be delivered twice, never lost) and
// the remaining connections are closed. Called once by the engine, concurrently with its drain.
func (in *Input) Close(ctx context.Context) error {
	in.once.Do(func() { close(in.closing) })
	in.ready.Store(false)
	in.connected.Set(0)
	if in.srv == nil {
		return nil
	}
	err := in.srv.Shutdown(ctx)
	if err != nil {
		close(in.abort)
		grace, cancel := context.WithTimeout(context.Background(), abortGrace)
		_ = in.srv.Shutdown(grace)
		cancel()
		_ = in.srv.Close()
		err = fmt.Errorf("http input %s: shutdown: %w", in.name, err)
	}
	<-in.served
	return err
}

// ServeHTTP answers one request. It is called by net/http on the connection's goroutine (and
// directly by tests).
func (in *Input) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	code := in.serve(w, r)
	in.requests.WithLabelValues(in.name, strconv.Itoa(code)).Inc()
}

// errorBody is the JSON body of every non-2xx answer.
type errorBody struct {
	Error     string `json:"error"`
	Index     *int   `json:"index,omitempty"`
	Attribute string `json:"attribute,omitempty"`
}

func reply(w http.ResponseWriter, code int, reason string) int {
	return replyJSON(w, code, errorBody{Error: reason})
}

func replyJSON(w http.ResponseWriter, code int, b errorBody) int {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(b)
	return code
}

// retryLater answers code (429 when the input is saturated, 503 when it shuts down) with
// Retry-After.
func (in *Input) retryLater(w http.ResponseWriter, code int, reason string) int {
	secs := int((in.cfg.RetryAfter + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	return reply(w, code, reason)
}

// serve handles one request and returns the status it answered.
func (in *Input) serve(w http.ResponseWriter, r *http.Request) int {
	if r.URL.Path != in.cfg.Path {
		return reply(w, http.StatusNotFound, fmt.Sprintf("path %s is not served (use %s)", r.URL.Path, in.cfg.Path))
	}
	switch r.Method {
	case http.MethodPost:
	case http.MethodOptions:
		return in.handshake(w, r)
	default:
		w.Header().Set("Allow", "OPTIONS, POST")
		return reply(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed (use POST)", r.Method))
	}
	if in.cfg.Token != "" && !in.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="turnout"`)
		return reply(w, http.StatusUnauthorized, "missing or wrong bearer token")
	}
	select {
	case <-in.closing:
		return in.retryLater(w, http.StatusServiceUnavailable, "input is shutting down")
	default:
	}
	if r.ContentLength > in.cfg.MaxBodyBytes {
		return reply(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes exceeds max_body_bytes %d", r.ContentLength, in.cfg.MaxBodyBytes))
	}
	// The cap bounds the bodies held at once (max_concurrent_requests × max_body_bytes) and the
	// events decoded from them; a request beyond it is refused before its body is read.
	select {
	case in.slots <- struct{}{}:
		defer func() { <-in.slots }()
	default:
		return in.retryLater(w, http.StatusTooManyRequests, fmt.Sprintf("input busy: %d requests in progress (max_concurrent_requests)", in.cfg.MaxConcurrentRequests))
	}
	body, err := readBody(http.MaxBytesReader(w, r.Body, in.cfg.MaxBodyBytes), r.ContentLength)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return reply(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds max_body_bytes %d", in.cfg.MaxBodyBytes))
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return reply(w, http.StatusRequestTimeout, fmt.Sprintf("body not received within read_timeout %v", in.cfg.ReadTimeout))
		}
		return reply(w, http.StatusBadRequest, fmt.Sprintf("reading body: %v", err))
	}
	format := jsonFormatOf(r.Header.Get("Content-Type"))
	if format == batchFormat {
		// Refused before decoding: the events of a body cost far more memory than its bytes.
		if _, over := countBatch(body, in.cfg.MaxBatchEvents); over {
			return reply(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("batch holds more than max_batch_events %d events: send smaller batches", in.cfg.MaxBatchEvents))
		}
	}
	parts := decodeRequest(r.Header, body)
	if format != notJSONFormat {
		nameInvalidUTF8(parts)
	}
	return in.deliver(w, r, parts)
}

// readBody reads a body of length bytes (-1: unknown, read until EOF). A body of known length is
// read into one buffer of that size: no more memory than the body, where growing a buffer would
// allocate about three times its size.
func readBody(body io.Reader, length int64) ([]byte, error) {
	if length < 0 {
		return io.ReadAll(body)
	}
	b := make([]byte, length)
	if _, err := io.ReadFull(body, b); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("body ended after fewer than its Content-Length %d bytes: %w", length, err)
		}
		return nil, err
	}
	return b, nil
}

// outcome is the settlement of part i of a request.
type outcome struct {
	i   int
	err error
}

// deliver dispatches the parts of a request and answers once all settled, one failed, or time
// ran out. A malformed part goes to the engine with DecodeErr and Raw, which dead-letters it
// (the part then counts as settled); when the engine cannot (no dead-letter output, or one that
// refused it for good) the request is answered with the part's 4xx status and reason, but only
// once every other part settled, so that the client may take the answer as final.
func (in *Input) deliver(w http.ResponseWriter, r *http.Request, parts []part) int {
	// Buffered for every part: settlements arriving after the answer never block the engine.
	settled := make(chan outcome, len(parts))
	origin := "http " + in.name + " " + r.URL.Path + " from " + r.RemoteAddr
	for i, p := range parts {
		m := &engine.Message{Event: p.Event, Origin: origin}
		if p.Err != nil {
			m.DecodeErr, m.Raw = p.Err, p.Raw
			if p.Err.Index >= 0 {
				m.Origin = fmt.Sprintf("%s, batch element %d", origin, p.Err.Index)
			}
		}
		// The short context bounds only the wait for room in the engine (backpressure).
		dctx, cancel := waitContext(r.Context(), in.cfg.DispatchWait)
		err := in.d.Dispatch(dctx, m, func(err error) { settled <- outcome{i, err} })
		cancel()
		if err == nil {
			continue
		}
		switch {
		case errors.Is(err, engine.ErrClosed):
			return in.retryLater(w, http.StatusServiceUnavailable, "engine is shutting down")
		case r.Context().Err() != nil:
			// The client is gone; the events already dispatched are settled by the engine and
			// the client resends what it did not see acknowledged.
			return 499
		case errors.Is(err, context.DeadlineExceeded):
			in.log.Debug("http input saturated", "event", i, "of", len(parts))
			return in.retryLater(w, http.StatusTooManyRequests, fmt.Sprintf("input saturated: event %d of %d not taken within dispatch_wait %v", i, len(parts), in.cfg.DispatchWait))
		default:
			return in.retryLater(w, http.StatusServiceUnavailable, fmt.Sprintf("dispatch event %d: %v", i, err))
		}
	}
	timer := time.NewTimer(in.cfg.RequestTimeout)
	defer timer.Stop()
	refused := -1 // the first part the engine could not dead-letter
	for n := 0; n < len(parts); n++ {
		select {
		case o := <-settled:
			if o.err == nil {
				continue
			}
			if re := parts[o.i].Err; re != nil && notDeadLettered(o.err, re) {
				in.log.Warn("http input refused a malformed message", "remote", r.RemoteAddr, "status", re.Status, "reason", re.Error(), "err", o.err)
				if refused < 0 || o.i < refused {
					refused = o.i
				}
				continue
			}
			in.log.Debug("http input event not delivered", "err", o.err)
			return reply(w, http.StatusBadGateway, fmt.Sprintf("delivery failed, resend the request: %v", o.err))
		case <-timer.C:
			return reply(w, http.StatusGatewayTimeout, fmt.Sprintf("%d of %d events not settled within request_timeout %v, resend the request", len(parts)-n, len(parts), in.cfg.RequestTimeout))
		case <-in.abort:
			return in.retryLater(w, http.StatusServiceUnavailable, "input shut down before delivery was confirmed")
		case <-r.Context().Done():
			return 499
		}
	}
	if refused >= 0 {
		re := parts[refused].Err
		b := errorBody{Error: re.Error(), Attribute: re.Attribute}
		if re.Index >= 0 {
			b.Index = &re.Index
		}
		return replyJSON(w, re.Status, b)
	}
	w.WriteHeader(http.StatusNoContent)
	return http.StatusNoContent
}

// notDeadLettered reports whether err, the settlement of the malformed part re, is final: the
// engine returned re itself (the route has no dead-letter output), or the dead-letter output
// refused the part for good (engine.Permanent). Any other error (the dead-letter output is
// down, shutdown) may pass when the client resends.
func notDeadLettered(err error, re *requestError) bool {
	return errors.Is(err, re) || engine.IsPermanent(err)
}

func (in *Input) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	const scheme = "bearer "
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(h[len(scheme):])), []byte(in.cfg.Token)) == 1
}

// handshake answers the CloudEvents Web Hook validation request (Web Hook spec section 4.1/4.2).
// An OPTIONS without WebHook-Request-Origin is a plain OPTIONS and gets 204 with Allow.
func (in *Input) handshake(w http.ResponseWriter, r *http.Request) int {
	w.Header().Set("Allow", "OPTIONS, POST")
	origin := r.Header.Get("WebHook-Request-Origin")
	if origin == "" {
		w.WriteHeader(http.StatusNoContent)
		return http.StatusNoContent
	}
	allowed := ""
	if len(in.cfg.AllowedOrigins) == 0 {
		allowed = origin
	}
	for _, o := range in.cfg.AllowedOrigins {
		if o == "*" {
			allowed = "*"
			break
		}
		if strings.EqualFold(o, origin) {
			allowed = origin
			break
		}
	}
	if allowed == "" {
		return reply(w, http.StatusForbidden, fmt.Sprintf("origin %q is not in allowed_origins", origin))
	}
	w.Header().Set("WebHook-Allowed-Origin", allowed)
	rate := "*"
	if in.cfg.AllowedRate > 0 {
		rate = strconv.Itoa(in.cfg.AllowedRate)
	}
	w.Header().Set("WebHook-Allowed-Rate", rate)
	w.WriteHeader(http.StatusOK)
	return http.StatusOK
}

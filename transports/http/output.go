package httpin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/ce"
	"github.com/turnout-router/turnout/transports/internal/redact"
	"github.com/turnout-router/turnout/transports/internal/tmetrics"
)

// The HTTP webhook output (output type "http") POSTs each event to one URL and counts it
// confirmed only on 200, 201, 202 or 204 [CE-Webhook §2.3.1]. Other answers:
//
//	5xx, 408, 429, connection errors, timeouts  plain error: the engine retries with backoff
//	Retry-After on any of those                  the wait is carried by *RetryAfterError and every
//	                                             Send holds off until it passed (see Send)
//	410 Gone                                     delivery to the URL stops for good: this and
//	                                             every later Send fail with engine.Permanent and
//	                                             Ready reports false
//	3xx                                          engine.Permanent: redirects are not followed
//	other 4xx                                    engine.Permanent (dead-letter) with the status
//	                                             and at most 512 bytes of the answer's body
//	other 1xx/2xx                                plain error
//
// Abuse protection [CE-Webhook §4]: unless handshake is false, the first Send asks the receiver
// with OPTIONS and WebHook-Request-Origin; delivery proceeds only when the answer is 200 with
// WebHook-Allowed-Origin equal to the origin or "*", and WebHook-Allowed-Rate (requests per
// minute) then bounds the request rate.
//
// Batch mode (batch.go) gathers concurrent Sends into one application/cloudevents-batch+json
// request; every event of a batch shares the request's outcome. A refusal makes Sends fail (plain error) and Ready false;
// the handshake is asked again at most every handshakeRetry.

func init() {
	engine.RegisterOutput("http", func(name string, decode engine.Decoder, deps engine.Deps) (engine.Sink, error) {
		var c OutputConfig
		if err := decode(&c); err != nil {
			return nil, fmt.Errorf("http output %s: %w", name, err)
		}
		return NewOutput(name, c, deps)
	})
}

var (
	_ engine.Sink    = (*Output)(nil)
	_ engine.Readier = (*Output)(nil)
)

const (
	// errorExcerpt bounds the part of an error answer's body quoted in the error.
	errorExcerpt = 512
	// drainLimit bounds what is read of an answer's body so the connection can be reused.
	drainLimit = 64 << 10
	// handshakeRetry is how long a refused or failed handshake is remembered.
	handshakeRetry = 10 * time.Second
)

// RetryAfterError is a retryable Send error whose answer asked for a pause (Retry-After
// [RFC 9110 §10.2.3]). Wait is how long from the moment of the error.
type RetryAfterError struct {
	Wait time.Duration
	Err  error
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("%v (retry after %v)", e.Err, e.Wait.Round(time.Millisecond))
}
func (e *RetryAfterError) Unwrap() error { return e.Err }

// Output is an HTTP webhook sink. The engine calls Send concurrently; every Send is one request
// on a shared keep-alive transport, so many requests are in flight together.
type Output struct {
	name      string
	cfg       OutputConfig
	shownURL  string // cfg.URL with its password hidden: the form errors and logs show
	log       *slog.Logger
	client    *http.Client
	connected prometheus.Gauge

	gone atomic.Bool // a 410 Gone was answered: sticky

	mu sync.Mutex // guards the fields below
	// notBefore is when the receiver's last Retry-After ends.
	notBefore time.Time
	// shaken is true once the handshake allowed delivery; refused holds the last refusal and
	// refusedAt its time.
	shaken    bool
	refused   error
	refusedAt time.Time
	// interval is 1 minute / WebHook-Allowed-Rate (0: no limit); nextSlot is the earliest
	// time of the next request.
	interval time.Duration
	nextSlot time.Time
	// shake serialises handshakes (held without mu).
	shake sync.Mutex

	batches batcher // batch mode only
}

// NewOutput validates c and builds an output named name; it does not connect (the first Send
// does). Errors name the key.
func NewOutput(name string, c OutputConfig, deps engine.Deps) (*Output, error) {
	c, err := c.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("http output %s: %w", name, err)
	}
	tc, err := c.TLS.Client()
	if err != nil {
		return nil, fmt.Errorf("http output %s: %w", name, err)
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	gauge, err := tmetrics.ConnectedGauge(deps.Registerer, "http", name)
	if err != nil {
		return nil, fmt.Errorf("http output %s: %w", name, err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.MaxIdleConns = c.MaxIdleConns
	tr.MaxIdleConnsPerHost = c.MaxIdleConns
	o := &Output{
		name:     name,
		cfg:      c,
		shownURL: redact.URL(c.URL),
		log:      log.With("output", name, "transport", "http"),
		client: &http.Client{
			Transport: tr,
			// Redirects are not followed: the 3xx answer is the outcome.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		connected: gauge,
	}
	if !*c.Handshake {
		o.shaken = true
	}
	gauge.Set(1)
	return o, nil
}

// Ready reports false once the receiver answered 410 Gone or refused the handshake.
func (o *Output) Ready() bool {
	if o.gone.Load() {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.refused == nil
}

// Close releases idle connections. The engine calls it after the last Send.
func (o *Output) Close(context.Context) error {
	o.stopBatcher()
	o.client.CloseIdleConnections()
	o.connected.Set(0)
	return nil
}

// Send POSTs e and returns nil once the receiver answered 200, 201, 202 or 204. Before posting it
// waits, within ctx, for the handshake, for a pending Retry-After and for the allowed rate's next
// slot; when ctx's deadline comes before the pause ends it fails at once with *RetryAfterError
// (retryable) rather than sleeping past ctx. The engine's own backoff runs between attempts
// independently: an attempt that comes early waits out the rest of the pause here. Safe for
// concurrent use.
func (o *Output) Send(ctx context.Context, e *event.Event) error {
	if o.gone.Load() {
		return engine.Permanent(fmt.Errorf("http output %s: %s answered 410 Gone: delivery to it stopped (fix url and restart)", o.name, o.shownURL))
	}
	if o.cfg.Mode == ModeBatch {
		return o.sendBatched(ctx, e)
	}
	req, err := o.request(e)
	if err != nil {
		return engine.Permanent(fmt.Errorf("http output %s: encode event %s: %w", o.name, e.ID(), err))
	}
	return o.post(ctx, req)
}

// post sends req after the handshake and the pauses the receiver asked for, and classifies the
// answer.
func (o *Output) post(ctx context.Context, req *http.Request) error {
	if err := o.handshake(ctx); err != nil {
		return err
	}
	if err := o.pause(ctx); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, o.cfg.Timeout)
	defer cancel()
	resp, err := o.client.Do(req.WithContext(rctx))
	if err != nil {
		return fmt.Errorf("http post %s: %w", o.shownURL, err)
	}
	return o.outcome(resp)
}

// request builds the POST for e in the configured mode.
func (o *Output) request(e *event.Event) (*http.Request, error) {
	var body []byte
	h := http.Header{}
	switch o.cfg.Mode {
	case ModeStructured: // [CE-HTTP-3.2]
		b, err := ce.EncodeStructured(e)
		if err != nil {
			return nil, err
		}
		body = b
		h.Set("Content-Type", ce.ContentTypeJSON+"; charset=utf-8")
	default: // [CE-HTTP-3.1]
		if err := writeBinaryHeaders(h, e); err != nil {
			return nil, err
		}
		body = e.Data()
	}
	return o.newPost(h, body)
}

// newPost builds a POST of body with the headers h and the configured Authorization.
func (o *Output) newPost(h http.Header, body []byte) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodPost, o.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if o.cfg.authorizationHeader != "" {
		req.Header.Set("Authorization", o.cfg.authorizationHeader)
	}
	return req, nil
}

// writeBinaryHeaders writes e's attributes into h as ce-<name> headers with percent-encoded values
// [CE-HTTP-3.1.3], and datacontenttype as Content-Type [CE-HTTP-3.1.1].
func writeBinaryHeaders(h http.Header, e *event.Event) error {
	names := []string{"specversion", "id", "source", "type", "subject", "dataschema", "time"}
	attrs := len(names)
	for n := range e.Extensions() {
		if !ce.ValidAttrName(n) {
			return fmt.Errorf("invalid extension attribute name %q", n)
		}
		names = append(names, n)
	}
	for i, n := range names {
		v := ce.AttrString(e, n)
		if v == "" && i < attrs {
			continue // an unset context attribute; an extension set to "" is sent as it is
		}
		if n == "dataschema" && e.SpecVersion() == event.CloudEventsVersionV03 {
			n = "schemaurl"
		}
		h[cePrefix+strings.ToUpper(n[:1])+n[1:]] = []string{ce.PercentEncode(v)}
	}
	if ct := e.DataContentType(); ct != "" {
		if strings.ContainsFunc(ct, func(r rune) bool { return (r < ' ' && r != '\t') || r == 0x7f }) {
			return errors.New("datacontenttype holds a control character")
		}
		h.Set("Content-Type", ct)
	}
	return nil
}

// outcome classifies the receiver's answer and closes its body.
func (o *Output) outcome(resp *http.Response) error {
	defer resp.Body.Close()
	excerpt := make([]byte, errorExcerpt)
	n, _ := io.ReadFull(resp.Body, excerpt)
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainLimit))
	code := resp.StatusCode
	switch code {
	case http.StatusOK, http.StatusCreated, http.StatusAccepted, http.StatusNoContent:
		return nil
	}
	err := fmt.Errorf("http post %s: %s: %q", o.shownURL, resp.Status, bytes.TrimSpace(excerpt[:n]))
	switch {
	case code == http.StatusGone:
		if !o.gone.Swap(true) {
			o.log.Error("receiver answered 410 Gone: delivery to it stopped until restart", "url", o.shownURL)
			o.connected.Set(0)
		}
		return engine.Permanent(err)
	case code >= 500, code == http.StatusRequestTimeout, code == http.StatusTooManyRequests:
		if wait, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			o.mu.Lock()
			if t := time.Now().Add(wait); t.After(o.notBefore) {
				o.notBefore = t
			}
			o.mu.Unlock()
			return &RetryAfterError{Wait: wait, Err: err}
		}
		return err
	case code >= 300 && code < 400:
		return engine.Permanent(fmt.Errorf("%w (redirect to %q not followed)", err, resp.Header.Get("Location")))
	case code >= 400:
		return engine.Permanent(err)
	}
	return err
}

// retryAfter parses a Retry-After value, delay-seconds or an HTTP-date [RFC 9110 §10.2.3],
// relative to now. A date in the past is a zero wait.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(s) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// pause waits for a pending Retry-After and for the next slot of the allowed rate. When ctx's
// deadline comes first it returns *RetryAfterError at once and reserves no slot. Takes mu.
func (o *Output) pause(ctx context.Context) error {
	o.mu.Lock()
	now := time.Now()
	at := now
	if o.notBefore.After(at) {
		at = o.notBefore
	}
	if o.interval > 0 && o.nextSlot.After(at) {
		at = o.nextSlot
	}
	if dl, ok := ctx.Deadline(); ok && dl.Before(at) {
		o.mu.Unlock()
		return &RetryAfterError{Wait: at.Sub(now), Err: fmt.Errorf("http output %s: receiver asked to wait (Retry-After or WebHook-Allowed-Rate)", o.name)}
	}
	if o.interval > 0 {
		o.nextSlot = at.Add(o.interval)
	}
	o.mu.Unlock()
	if d := at.Sub(now); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// handshake runs the abuse-protection handshake [CE-Webhook §4.1] once before the first
// delivery. Takes shake, then mu.
func (o *Output) handshake(ctx context.Context) error {
	o.mu.Lock()
	done, refused, at := o.shaken, o.refused, o.refusedAt
	o.mu.Unlock()
	if done {
		return nil
	}
	if refused != nil && time.Since(at) < handshakeRetry {
		return refused
	}
	o.shake.Lock()
	defer o.shake.Unlock()
	o.mu.Lock()
	done, refused, at = o.shaken, o.refused, o.refusedAt
	o.mu.Unlock()
	if done {
		return nil
	}
	if refused != nil && time.Since(at) < handshakeRetry {
		return refused
	}
	interval, err := o.ask(ctx)
	o.mu.Lock()
	defer o.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			o.refused, o.refusedAt = err, time.Now()
			o.log.Error("web hook handshake failed: not delivering", "url", o.shownURL, "err", err)
		}
		return err
	}
	o.shaken, o.refused, o.interval = true, nil, interval
	o.log.Info("web hook handshake allowed delivery", "url", o.shownURL, "interval", interval)
	return nil
}

// ask sends the validation request and checks the answer [CE-Webhook §4.1, §4.2]. It returns
// the interval between requests that WebHook-Allowed-Rate asks for (0: no limit).
func (o *Output) ask(ctx context.Context) (time.Duration, error) {
	rctx, cancel := context.WithTimeout(ctx, o.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodOptions, o.cfg.URL, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("WebHook-Request-Origin", o.cfg.Origin)
	req.Header.Set("WebHook-Request-Rate", "*")
	if o.cfg.authorizationHeader != "" {
		req.Header.Set("Authorization", o.cfg.authorizationHeader)
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("http output %s: web hook handshake with %s: %w", o.name, o.shownURL, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainLimit))
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("http output %s: web hook handshake with %s: refused with %s", o.name, o.shownURL, resp.Status)
	}
	origin := resp.Header.Get("WebHook-Allowed-Origin")
	if origin != "*" && !strings.EqualFold(origin, o.cfg.Origin) {
		return 0, fmt.Errorf("http output %s: web hook handshake with %s: origin %q not allowed (WebHook-Allowed-Origin %q)", o.name, o.shownURL, o.cfg.Origin, origin)
	}
	rate := strings.TrimSpace(resp.Header.Get("WebHook-Allowed-Rate"))
	if rate == "" || rate == "*" {
		return 0, nil
	}
	n, err := strconv.ParseUint(rate, 10, 32)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("http output %s: web hook handshake with %s: bad WebHook-Allowed-Rate %q", o.name, o.shownURL, rate)
	}
	return time.Minute / time.Duration(n), nil
}

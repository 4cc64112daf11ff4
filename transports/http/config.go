// Package httpin is turnout's HTTP input: it receives CloudEvents over the CloudEvents HTTP
// protocol binding (v1.0.2) and answers each request only once the fate of its events is known.
//
// It also holds the HTTP webhook output (output type "http", OutputConfig and Output): it POSTs
// events in binary, structured or batch mode and counts one delivered only on 200, 201, 202 or 204;
// see output.go for how every other answer is classified.
//
// The package lives in directory transports/http but is named httpin, so that importers keep the
// standard library's net/http as "http".
//
// Invariant (at-least-once): a request is answered with a 2xx status only after every event it
// carried was dispatched to the engine and settled with nil (every output the rule chose confirmed
// it, the rule dropped it on purpose, or it reached the dead-letter output). Any other outcome is
// answered with a 4xx status when resending the same request cannot help (the client is told and
// keeps what was not taken) or a 5xx status when it can (the client resends; duplicates are
// possible, losses are not).
//
// Modes ([CE-HTTP-3]): binary mode (attributes in ce-<name> headers whose values are
// percent-decoded per [CE-HTTP-3.1.3.2], datacontenttype is Content-Type, the body is the data),
// structured mode (Content-Type application/cloudevents+json, [CE-HTTP-3.2]) and batched mode
// (Content-Type application/cloudevents-batch+json, [CE-HTTP-3.3]). The mode is chosen by the
// content type: application/cloudevents... means structured or batched.
//
// Status codes:
//
//	204 No Content       every event of the request settled with nil (an empty batch too),
//	                     malformed ones included once the dead-letter output confirmed them
//	200 OK               answer to the web hook validation handshake (OPTIONS)
//	400 Bad Request      a malformed event the route could not dead-letter (no dead-letter
//	                     output, or one that refused it for good); the JSON body names the
//	                     attribute and batch index
//	401 Unauthorized     token configured and the Authorization bearer token is missing or wrong
//	403 Forbidden        handshake from an origin not in allowed_origins
//	404 Not Found        a path other than path
//	405 Method Not Allowed  a method other than POST and OPTIONS
//	408 Request Timeout  the body did not arrive within read_timeout
//	413 Content Too Large   the body exceeds max_body_bytes, or a batch holds more than
//	                     max_batch_events events (refused before any is decoded)
//	415 Unsupported Media Type  like 400, for a structured or batch format other than JSON, or
//	                     neither a CloudEvents content type nor a ce-specversion header
//	429 Too Many Requests (with Retry-After)  the input is saturated: max_concurrent_requests
//	                     POSTs are being handled (answered before the body is read), or the
//	                     engine did not take an event within dispatch_wait: resend later
//	431 Request Header Fields Too Large  the header lines exceed max_header_bytes (answered
//	                     by net/http, in plain text)
//	502 Bad Gateway      an event was settled with an error (delivery failed): resend
//	503 Service Unavailable (with Retry-After)  the input or the engine is shutting down:
//	                     resend later
//	504 Gateway Timeout  the events did not settle within request_timeout: resend
//
// Malformed messages: a POST on path with the right token whose body (and headers) are not a
// CloudEvent (a specversion other than 1.0 included: the engine routes no other) goes to the
// engine with DecodeErr and Raw like any message, so the route dead-letters it. Raw is the body of a structured or batch request, and for any other request its
// Content-Type and ce- header lines as received, an empty line and the body. In a batch each
// element is a message of its own (Raw is the element): the valid ones are routed, the malformed
// ones dead-lettered. A 400 or 415 is answered only once every other event of the request
// settled with nil, and names the first malformed element. Requests that are no attempt at an
// event (other path, method, missing token, body or batch too large, input busy) are answered at
// once and never dispatched.
//
// Slow and hostile clients: a client that has not sent its headers within read_header_timeout,
// or its whole request within read_timeout, is disconnected; header lines are capped by
// max_header_bytes, bodies by max_body_bytes, batches by max_batch_events, and the POSTs handled
// at once by max_concurrent_requests, so that the memory requests hold is bounded by the
// configuration, not by what clients send. JSON nesting depth is bounded by the decoder (10000
// levels: deeper is a 400), and a JSON event whose bytes are not UTF-8 is refused with the
// attribute holding the first invalid byte.
//
// A batch is all-or-nothing for delivery failures: 204 only when every event settled with nil,
// otherwise 5xx and the client resends the whole batch (events already delivered are then
// delivered again).
//
// Error bodies are JSON: {"error": "...", "index": 2, "attribute": "id"} where index (the
// position in a batch) and attribute are present when known.
//
// Configuration (the input's block in turnout's configuration file):
//
//	inputs:
//	  alarms:
//	    type: http
//	    listen: 0.0.0.0:8080        # host:port to listen on (required)
//	    path: /events               # the only path served (default "/")
//	    max_body_bytes: 1048576     # larger bodies get 413 (default 1 MiB, at least 65536)
//	    read_timeout: 30s           # reading a whole request, headers and body (default 30s)
//	    read_header_timeout: 10s    # reading the headers (default 10s, at most read_timeout)
//	    idle_timeout: 2m            # a keep-alive connection waiting for its next request
//	    max_header_bytes: 131072    # larger header lines get 431 (default 128 KiB, at least 16 KiB)
//	    max_batch_events: 1000      # larger batches get 413 (default 1000)
//	    max_concurrent_requests: 128  # POSTs handled at once; more get 429 (default 128)
//	    write_timeout: 40s          # writing the answer, counted from the end of the headers;
//	                                # must exceed request_timeout (default request_timeout+10s)
//	    request_timeout: 30s        # how long a request waits for its events to settle
//	                                # before 504 (default 30s)
//	    dispatch_wait: 200ms        # how long an event may wait for room in the engine before
//	                                # the request gets 429 (default 200ms)
//	    retry_after: 1s             # Retry-After sent with 429 and 503, rounded up to seconds
//	                                # (default 1s)
//	    cert_file: /etc/turnout/tls.crt  # serve HTTPS with this certificate chain (PEM) ...
//	    key_file: /etc/turnout/tls.key   # ... and this key; both or neither
//	    token: s3cret               # require "Authorization: Bearer s3cret" on POST ...
//	    token_env: TURNOUT_HTTP_TOKEN    # ... or take the token from this environment variable
//	    allowed_origins: [sender.example.com]  # web hook handshake origins (default: any, echoed)
//	    allowed_rate: 120           # WebHook-Allowed-Rate, requests per minute (default 0 = "*")
//
// The web hook validation handshake (CloudEvents Web Hook spec, section 4) is answered on path:
// OPTIONS with WebHook-Request-Origin gets 200 with WebHook-Allowed-Origin, WebHook-Allowed-Rate
// and Allow. It does not require the token. Callback validation (WebHook-Request-Callback) is not
// performed: the handshake is always answered synchronously.
package httpin

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Config is the configuration of one HTTP input. Zero values take the defaults listed in the
// package documentation.
type Config struct {
	// Listen is the host:port to listen on, e.g. "0.0.0.0:8080" or "127.0.0.1:0".
	Listen string `yaml:"listen"`
	// Path is the only URL path served (default "/").
	Path string `yaml:"path"`
	// MaxBodyBytes bounds a request body; larger bodies get 413 (default 1 MiB). It must be at
	// least 64 KiB, the event size an intermediary must forward.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// ReadTimeout bounds reading a whole request (default 30s).
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// ReadHeaderTimeout bounds reading a request's headers, from the connection's accept or the
	// end of its previous request; a client still sending them then is disconnected (default
	// 10s, at most ReadTimeout).
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// IdleTimeout is how long a keep-alive connection may wait for its next request (default 2m).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes bounds a request's header lines; larger ones get 431 (default 128 KiB, at
	// least 16 KiB).
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxBatchEvents bounds the events of one batched-mode request; more get 413 before any is
	// decoded or dispatched (default 1000).
	MaxBatchEvents int `yaml:"max_batch_events"`
	// MaxConcurrentRequests bounds the POST requests handled at once; a POST beyond it gets 429
	// with Retry-After before its body is read (default 128).
	MaxConcurrentRequests int `yaml:"max_concurrent_requests"`
	// WriteTimeout bounds handling and answering a request after its headers were read; it must
	// exceed RequestTimeout (default RequestTimeout + 10s).
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// RequestTimeout is how long a request waits for its events to settle before 504 (default 30s).
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// DispatchWait is how long one event may wait for room in the engine before the request is
	// answered 429 (default 200ms).
	DispatchWait time.Duration `yaml:"dispatch_wait"`
	// RetryAfter is sent as Retry-After with 429 and 503 answers (default 1s, rounded up to
	// seconds).
	RetryAfter time.Duration `yaml:"retry_after"`
	// CertFile and KeyFile enable HTTPS; both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// Token, when set, is the bearer token POST requests must carry.
	Token string `yaml:"token"`
	// TokenEnv names an environment variable holding the token (exclusive with Token).
	TokenEnv string `yaml:"token_env"`
	// AllowedOrigins lists the origins the web hook handshake accepts; "*" accepts any. Empty
	// accepts any origin and echoes it.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// AllowedRate is the WebHook-Allowed-Rate answered in the handshake, in requests per minute;
	// 0 answers "*" (no limit: the input pushes back with 429 instead).
	AllowedRate int `yaml:"allowed_rate"`
}

// Defaults for Config.
const (
	DefaultPath                  = "/"
	DefaultMaxBodyBytes          = 1 << 20
	MinMaxBodyBytes              = 64 << 10
	DefaultReadTimeout           = 30 * time.Second
	DefaultReadHeaderTimeout     = 10 * time.Second
	DefaultIdleTimeout           = 2 * time.Minute
	DefaultMaxHeaderBytes        = 128 << 10
	MinMaxHeaderBytes            = 16 << 10
	DefaultMaxBatchEvents        = 1000
	DefaultMaxConcurrentRequests = 128
	DefaultRequestTimeout        = 30 * time.Second
	DefaultDispatchWait          = 200 * time.Millisecond
	DefaultRetryAfter            = time.Second
)

// withDefaults validates c, fills in defaults and resolves the token. Errors name the key.
func (c Config) withDefaults() (Config, error) {
	if c.Listen == "" {
		return c, errors.New("listen: required (host:port)")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return c, fmt.Errorf("listen: %w", err)
	}
	if c.Path == "" {
		c.Path = DefaultPath
	}
	if c.Path[0] != '/' {
		return c, fmt.Errorf("path: %q must start with /", c.Path)
	}
	switch {
	case c.MaxBodyBytes == 0:
		c.MaxBodyBytes = DefaultMaxBodyBytes
	case c.MaxBodyBytes < MinMaxBodyBytes:
		return c, fmt.Errorf("max_body_bytes: %d is below %d (events up to 64 KiB must be accepted)", c.MaxBodyBytes, MinMaxBodyBytes)
	}
	for key, d := range map[string]time.Duration{
		"read_timeout": c.ReadTimeout, "write_timeout": c.WriteTimeout, "request_timeout": c.RequestTimeout,
		"dispatch_wait": c.DispatchWait, "retry_after": c.RetryAfter,
		"read_header_timeout": c.ReadHeaderTimeout, "idle_timeout": c.IdleTimeout,
	} {
		if d < 0 {
			return c, fmt.Errorf("%s: %v is negative", key, d)
		}
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	switch {
	case c.ReadHeaderTimeout == 0:
		c.ReadHeaderTimeout = min(DefaultReadHeaderTimeout, c.ReadTimeout)
	case c.ReadHeaderTimeout > c.ReadTimeout:
		return c, fmt.Errorf("read_header_timeout: %v exceeds read_timeout %v (the headers are part of the request)", c.ReadHeaderTimeout, c.ReadTimeout)
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	switch {
	case c.MaxHeaderBytes == 0:
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	case c.MaxHeaderBytes < MinMaxHeaderBytes:
		return c, fmt.Errorf("max_header_bytes: %d is below %d", c.MaxHeaderBytes, MinMaxHeaderBytes)
	}
	for key, n := range map[string]*int{"max_batch_events": &c.MaxBatchEvents, "max_concurrent_requests": &c.MaxConcurrentRequests} {
		if *n < 0 {
			return c, fmt.Errorf("%s: %d is negative", key, *n)
		}
	}
	if c.MaxBatchEvents == 0 {
		c.MaxBatchEvents = DefaultMaxBatchEvents
	}
	if c.MaxConcurrentRequests == 0 {
		c.MaxConcurrentRequests = DefaultMaxConcurrentRequests
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = c.RequestTimeout + 10*time.Second
	}
	if c.WriteTimeout <= c.RequestTimeout {
		return c, fmt.Errorf("write_timeout: %v must exceed request_timeout %v", c.WriteTimeout, c.RequestTimeout)
	}
	if c.DispatchWait == 0 {
		c.DispatchWait = DefaultDispatchWait
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = DefaultRetryAfter
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return c, errors.New("cert_file, key_file: set both or neither")
	}
	if c.Token != "" && c.TokenEnv != "" {
		return c, errors.New("token, token_env: set at most one")
	}
	if c.TokenEnv != "" {
		c.Token = os.Getenv(c.TokenEnv)
		if c.Token == "" {
			return c, fmt.Errorf("token_env: environment variable %s is empty or unset", c.TokenEnv)
		}
	}
	if c.AllowedRate < 0 {
		return c, fmt.Errorf("allowed_rate: %d is negative", c.AllowedRate)
	}
	return c, nil
}

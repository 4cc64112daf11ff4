package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnout-router/turnout/engine"
)

var (
	_ engine.Sink    = (*Output)(nil)
	_ engine.Starter = (*Output)(nil)
	_ engine.Readier = (*Output)(nil)
)

// Output publishes events to JetStream and counts a send as confirmed only when the stream's
// publish acknowledgement (PubAck) for that event arrived.
//
// Goroutines: the engine calls Send concurrently; each Send takes a place in the window of
// max_pending publishes, publishes asynchronously (no request and reply subscription of its
// own: the PubAcks of all publishes come back on one subscription and are matched to theirs by
// nats.go) and waits for its own PubAck or error; its place is given back when that arrives,
// even if Send returned earlier because its context ended. The nats.go client reconnects and
// dispatches PubAcks on its own goroutines.
type Output struct {
	name    string
	cfg     OutputConfig
	log     *slog.Logger
	ready   atomic.Bool
	setUp   func(bool)
	encode  func(*event.Event) (*nats.Msg, error)
	pubOpts []jetstream.PublishOpt
	window  chan struct{} // one element per publish awaiting its PubAck (capacity max_pending)

	startOnce sync.Once
	startErr  error
	mu        sync.Mutex // guards nc, js
	nc        *nats.Conn
	js        jetstream.JetStream
}

// NewOutput is the engine.OutputFactory of the "nats" output type. It validates the
// configuration (errors name the key); it does not connect (Start does).
func NewOutput(name string, decode engine.Decoder, deps engine.Deps) (engine.Sink, error) {
	var cfg OutputConfig
	if err := decode(&cfg); err != nil {
		return nil, err
	}
	return newOutput(name, cfg, deps)
}

func newOutput(name string, cfg OutputConfig, deps engine.Deps) (*Output, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	o := &Output{name: name, cfg: cfg, log: log.With("output", name, "transport", "nats"),
		window: make(chan struct{}, cfg.MaxPending)}
	if cfg.Stream != "" {
		o.pubOpts = []jetstream.PublishOpt{jetstream.WithExpectStream(cfg.Stream)}
	}
	up, err := readyFunc(deps.Registerer, name, o.ready.Store)
	if err != nil {
		return nil, err
	}
	o.setUp = up
	subject := cfg.Subject
	if cfg.Mode == modeStructured {
		o.encode = func(e *event.Event) (*nats.Msg, error) { return encodeStructured(subject, e) }
	} else {
		o.encode = func(e *event.Event) (*nats.Msg, error) { return encodeBinary(subject, e), nil }
	}
	return o, nil
}

// Ready reports whether the connection to the server is up.
func (o *Output) Ready() bool { return o.ready.Load() }

// Start connects; a server that is down does not fail it, the client keeps trying in the
// background and Sends fail (retryably) meanwhile. Called once by the engine, before Send.
func (o *Output) Start(context.Context) error {
	o.startOnce.Do(func() {
		nc, js, err := connect(&o.cfg.ConnectionConfig, o.name, o.log, o.setUp,
			jetstream.WithPublishAsyncTimeout(o.cfg.AckTimeout),
			// The window keeps nats.go's count of publishes awaiting a PubAck at most
			// max_pending (a future leaves it before its Send gives its place back), so
			// nats.go never stalls a publish.
			jetstream.WithPublishAsyncMaxPending(o.cfg.MaxPending))
		if err != nil {
			o.startErr = fmt.Errorf("nats output %s: %w", o.name, err)
			return
		}
		o.mu.Lock()
		o.nc, o.js = nc, js
		o.mu.Unlock()
	})
	return o.startErr
}

// Send publishes e and waits for its PubAck, at most ack_timeout [JetStream publish]. It first
// waits for a place in the window of max_pending publishes awaiting their PubAck. Any error (no
// connection, no stream, timeout, a PubAck from another stream) is retryable and concerns e
// alone; only an event that cannot be encoded is permanent.
func (o *Output) Send(ctx context.Context, e *event.Event) error {
	if err := o.Start(ctx); err != nil {
		return err
	}
	msg, err := o.encode(e)
	if err != nil {
		return engine.Permanent(fmt.Errorf("nats publish %s: %w", o.cfg.Subject, err))
	}
	o.mu.Lock()
	js := o.js
	o.mu.Unlock()
	select {
	case o.window <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("nats publish %s: waiting for room among %d publishes awaiting their acknowledgement: %w", o.cfg.Subject, o.cfg.MaxPending, ctx.Err())
	}
	paf, err := js.PublishMsgAsync(msg, o.pubOpts...)
	if err != nil {
		<-o.window
		if errors.Is(err, nats.ErrHeadersNotSupported) && !o.connected() {
			// Before the first connection the client knows no server features, and says
			// headers are not supported: the cause is the connection.
			return fmt.Errorf("nats publish %s: not connected to a server yet", o.cfg.Subject)
		}
		return fmt.Errorf("nats publish %s: %w", o.cfg.Subject, err)
	}
	// nats.go resolves every future: with its PubAck, an error, or ErrAsyncPublishTimeout
	// after ack_timeout.
	ok, failed := paf.Ok(), paf.Err()
	select {
	case <-ok:
		<-o.window
		return nil
	case err := <-failed:
		<-o.window
		return fmt.Errorf("nats publish %s: %w", o.cfg.Subject, err)
	case <-ctx.Done():
		go func() {
			select {
			case <-ok:
			case <-failed:
			}
			<-o.window
		}()
		return fmt.Errorf("nats publish %s: %w", o.cfg.Subject, ctx.Err())
	}
}

// connected reports whether the connection is up.
func (o *Output) connected() bool {
	o.mu.Lock()
	nc := o.nc
	o.mu.Unlock()
	return nc != nil && nc.IsConnected()
}

// Close flushes and closes the connection after the engine stopped sending.
func (o *Output) Close(context.Context) error {
	o.mu.Lock()
	nc := o.nc
	o.nc = nil
	o.mu.Unlock()
	if nc != nil {
		nc.Close()
	}
	return nil
}

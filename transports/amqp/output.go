package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/Azure/go-amqp"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/transports/internal/reconnect"
)

var (
	_ engine.Sink    = (*Output)(nil)
	_ engine.Starter = (*Output)(nil)
	_ engine.Readier = (*Output)(nil)
)

// Output sends events as durable messages on one sender link and counts a send as confirmed
// only when the broker's disposition is Accepted.
//
// Goroutines: the run goroutine connects, attaches and reattaches after a loss; the engine calls
// Send concurrently, and each Send waits for its own disposition, so many deliveries are in
// flight together.
type Output struct {
	name      string
	cfg       OutputConfig
	log       *slog.Logger
	encode    func(*event.Event) (*amqp.Message, error)
	connected prometheus.Gauge

	mu   sync.Mutex // guards cur
	cur  *senderLink
	lost chan *senderLink // a Send saw cur fail (capacity 1)
	// slots holds one token per delivery in flight on the link, cfg.MaxInFlight at most.
	slots chan struct{}

	startOnce sync.Once
	stop      context.CancelFunc
	done      chan struct{}
}

// senderLink is one attached sender with its connection.
type senderLink struct {
	*link
	snd *amqp.Sender
}

// NewOutput is the engine.OutputFactory of the "amqp" output type. It validates the
// configuration (errors name the key) and registers the metrics; it does not connect (Start
// does).
func NewOutput(name string, decode engine.Decoder, deps engine.Deps) (engine.Sink, error) {
	var cfg OutputConfig
	if err := decode(&cfg); err != nil {
		return nil, err
	}
	return newOutput(name, cfg, deps)
}

func newOutput(name string, cfg OutputConfig, deps engine.Deps) (*Output, error) {
	if err := cfg.validate(); err != nil {
		return nil, err // names the key; the caller adds the output's name and line
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	gauge, err := connectedGauge(deps.Registerer, name)
	if err != nil {
		return nil, err
	}
	o := &Output{
		name:      name,
		cfg:       cfg,
		log:       log.With("output", name, "transport", "amqp"),
		encode:    encodeBinary,
		connected: gauge,
		lost:      make(chan *senderLink, 1),
		slots:     make(chan struct{}, cfg.MaxInFlight),
		done:      make(chan struct{}),
	}
	if cfg.Mode == modeStructured {
		o.encode = encodeStructured
	}
	return o, nil
}

// Start begins connecting on the output's goroutine. It waits for the first connection attempt
// only: if the broker is down it returns nil and keeps trying in the background with backoff;
// Send fails fast meanwhile.
func (o *Output) Start(ctx context.Context) error {
	o.startOnce.Do(func() {
		runCtx, cancel := context.WithCancel(context.Background())
		o.stop = cancel
		first := make(chan struct{})
		go o.run(runCtx, first)
		select {
		case <-first:
		case <-ctx.Done():
		}
	})
	return nil
}

// Ready reports whether the sender link is attached.
func (o *Output) Ready() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.cur != nil
}

// Send sends e and returns nil once the broker settled it as Accepted [AMQP 1.0 §3.4.2]. It is
// called concurrently by the engine, and ctx (the engine's per-attempt timeout) bounds it; at
// most max_in_flight calls have a delivery on the link, the others wait for a slot.
//
// Errors: ErrNotConnected (wrapped) when no link is attached; the link failing before the
// disposition; a Released, Modified or Rejected disposition, with the broker's condition and
// description; ctx ending. All are retryable. An event that cannot be encoded, or that is larger
// than the link accepts, is engine.Permanent.
func (o *Output) Send(ctx context.Context, e *event.Event) error {
	msg, err := o.encode(e)
	if err != nil {
		return engine.Permanent(fmt.Errorf("amqp send %s: %w", o.cfg.Address, err))
	}
	select {
	case o.slots <- struct{}{}:
		defer func() { <-o.slots }()
	case <-ctx.Done():
		return fmt.Errorf("amqp send %s: waiting for one of %d delivery slots: %w", o.cfg.Address, o.cfg.MaxInFlight, ctx.Err())
	}
	o.mu.Lock()
	l := o.cur
	o.mu.Unlock()
	if l == nil {
		return fmt.Errorf("amqp send %s: %w", o.cfg.Address, ErrNotConnected)
	}
	receipt, err := l.snd.SendWithReceipt(ctx, msg, nil)
	if err != nil {
		return o.sendFailed(l, err)
	}
	state, err := receipt.Wait(ctx)
	if err != nil {
		return o.sendFailed(l, err)
	}
	return o.outcome(e, state)
}

// outcome maps a delivery's terminal state to Send's result [AMQP 1.0 §3.4].
//
// Rejected is retryable too: a broker rejects a publication it cannot take for the moment (a
// queue at its max-length with overflow=reject-publish, amqp:resource-limit-exceeded), which
// says nothing against the event itself; the engine retries it with backoff and dead-letters it
// once its attempts are used up, so no event is dropped on a broker's word. Released and
// Modified mean the broker did not act on the message at all.
func (o *Output) outcome(e *event.Event, state amqp.DeliveryState) error {
	switch s := state.(type) {
	case *amqp.StateAccepted:
		return nil
	case *amqp.StateRejected:
		return fmt.Errorf("amqp send %s: event %s rejected by the broker%s", o.cfg.Address, e.ID(), describe(s.Error))
	case *amqp.StateReleased:
		return fmt.Errorf("amqp send %s: event %s released by the broker (not processed)", o.cfg.Address, e.ID())
	case *amqp.StateModified:
		return fmt.Errorf("amqp send %s: event %s modified by the broker (not processed; delivery-failed=%v, undeliverable-here=%v)",
			o.cfg.Address, e.ID(), s.DeliveryFailed, s.UndeliverableHere)
	}
	return fmt.Errorf("amqp send %s: event %s: unexpected delivery state %T", o.cfg.Address, e.ID(), state)
}

// describe renders an AMQP error condition for a message: ": cond: description", or "".
func describe(e *amqp.Error) string {
	if e == nil {
		return ""
	}
	if e.Description == "" {
		return ": " + string(e.Condition)
	}
	return ": " + string(e.Condition) + ": " + e.Description
}

// sendFailed classifies an error of SendWithReceipt or Wait: a message too large for the link is
// permanent; a link, session or connection error makes the run loop reattach; anything else
// (ctx ended) is returned as it is.
func (o *Output) sendFailed(l *senderLink, err error) error {
	var amqpErr *amqp.Error
	if errors.As(err, &amqpErr) && amqpErr.Condition == amqp.ErrCondMessageSizeExceeded {
		return engine.Permanent(fmt.Errorf("amqp send %s: %w", o.cfg.Address, err))
	}
	var (
		linkErr *amqp.LinkError
		sessErr *amqp.SessionError
		connErr *amqp.ConnError
	)
	if errors.As(err, &linkErr) || errors.As(err, &sessErr) || errors.As(err, &connErr) {
		o.mu.Lock()
		current := o.cur == l
		if current {
			o.cur = nil
			o.connected.Set(0)
		}
		o.mu.Unlock()
		if current { // once per link: the run loop emptied lost before installing l
			select {
			case o.lost <- l:
			default:
			}
		}
	}
	return fmt.Errorf("amqp send %s: %w", o.cfg.Address, err)
}

// run is the connection loop, on its own goroutine until ctx ends.
func (o *Output) run(ctx context.Context, first chan struct{}) {
	defer close(o.done)
	bo := o.cfg.NewBackoff()
	signalFirst := func() {
		if first != nil {
			close(first)
			first = nil
		}
	}
	defer signalFirst()
	for {
		l, err := o.attach(ctx)
		if ctx.Err() != nil {
			if l != nil {
				l.close()
			}
			return
		}
		if err != nil {
			w := bo.Next()
			o.log.Warn("amqp output connect failed", "error", err, "retry_in", w)
			signalFirst()
			if !reconnect.Sleep(ctx, w) {
				return
			}
			continue
		}
		bo.Reset()
		select {
		case <-o.lost: // a report about an earlier link
		default:
		}
		o.mu.Lock()
		o.cur = l
		o.mu.Unlock()
		o.connected.Set(1)
		o.log.Info("amqp output connected", "address", o.cfg.Address)
		signalFirst()
		var reason error
	wait:
		for {
			select {
			case <-ctx.Done():
				o.detach(l)
				return
			case <-l.conn.Done():
				reason = l.conn.Err()
				break wait
			case bad := <-o.lost:
				if bad == l {
					reason = errors.New("a send failed on the link")
					break wait
				}
			}
		}
		o.detach(l)
		w := bo.Next()
		o.log.Warn("amqp output link ended", "error", reason, "retry_in", w)
		if !reconnect.Sleep(ctx, w) {
			return
		}
	}
}

// detach forgets l and closes its connection; sends in flight on it fail and are retried.
func (o *Output) detach(l *senderLink) {
	o.mu.Lock()
	if o.cur == l {
		o.cur = nil
	}
	o.mu.Unlock()
	o.connected.Set(0)
	l.close()
}

// attach connects and attaches the sender. The target is durable [AMQP 1.0 §3.5.4], so that
// RabbitMQ declares /queue/NAME durable, like the input's durable source does.
func (o *Output) attach(ctx context.Context) (*senderLink, error) {
	l, err := dial(ctx, &o.cfg.ConnectionConfig)
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithTimeout(ctx, o.cfg.ConnectTimeout)
	defer cancel()
	snd, err := l.sess.NewSender(actx, o.cfg.Address, &amqp.SenderOptions{
		TargetDurability: amqp.DurabilityConfiguration,
	})
	if err != nil {
		l.close()
		return nil, fmt.Errorf("amqp attach sender %s: %w", o.cfg.Address, err)
	}
	return &senderLink{link: l, snd: snd}, nil
}

// Close ends the connection; sends still in flight fail. It waits for the run goroutine or ctx.
func (o *Output) Close(ctx context.Context) error {
	o.startOnce.Do(func() {}) // an output that never started has nothing to stop
	if o.stop == nil {
		return nil
	}
	o.stop()
	select {
	case <-o.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("amqp output %s close: %w", o.name, ctx.Err())
	}
}

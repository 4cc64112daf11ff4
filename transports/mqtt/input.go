package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
)

var (
	_ engine.Source        = (*Input)(nil)
	_ engine.OrderedSource = (*Input)(nil)
	_ engine.Readier       = (*Input)(nil)
)

// Input is an MQTT input: a persistent QoS 1 subscription whose messages are acknowledged only
// once the engine settled them (see the package documentation for the redelivery rules).
//
// Goroutines: paho calls onMessage on its router goroutine; it only queues the message. The
// dispatch goroutine decodes and calls Dispatch (which may block: backpressure). The ack
// goroutine sends PUBACKs, one at a time, in settlement order, which the engine makes the order
// of receipt (OrderedSettlement) [MQTT-4.6.0-2].
type Input struct {
	name string
	cfg  InputConfig
	log  *slog.Logger
	sess *session

	redelivered prometheus.Counter

	recv chan received // paho -> dispatch goroutine

	mu      sync.Mutex    // guards pending, closed, ackDone, started and stop
	pending []settlement  // settled messages waiting for the ack goroutine, in settlement order
	wake    chan struct{} // signals the ack goroutine (capacity 1)
	closed  bool
	ackDone bool // the ack goroutine has ended

	stop    context.CancelFunc
	stopped chan struct{} // closed when Close began: the paho handler stops waiting
	workers sync.WaitGroup
	started bool
}

// received is one PUBLISH as paho handed it over, with the connection it arrived on.
type received struct {
	msg paho.Message
	gen uint64
}

// settlement is the engine's verdict on a received message.
type settlement struct {
	received
	err error
}

// NewInput is the engine.InputFactory of the "mqtt" input type. It validates the configuration
// (errors name the key) and builds the client; it does not connect.
func NewInput(name string, decode engine.Decoder, deps engine.Deps) (engine.Source, error) {
	var cfg InputConfig
	if err := decode(&cfg); err != nil {
		return nil, err
	}
	return newInput(name, cfg, deps)
}

func newInput(name string, cfg InputConfig, deps engine.Deps) (*Input, error) {
	if err := cfg.validate(); err != nil {
		return nil, err // names the key; the caller adds the input's name and line
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	gauge, err := connectedGauge(deps.Registerer, name)
	if err != nil {
		return nil, err
	}
	redelivered, err := redeliveredCounter(deps.Registerer, name)
	if err != nil {
		return nil, err
	}
	in := &Input{
		name:        name,
		redelivered: redelivered,
		cfg:         cfg,
		log:         log.With("input", name),
		recv:        make(chan received, cfg.ReceiveBuffer),
		wake:        make(chan struct{}, 1),
		stopped:     make(chan struct{}),
	}
	opts, err := cfg.clientOptions(cfg.ClientID)
	if err != nil {
		return nil, err
	}
	opts.SetCleanSession(false) // the session keeps subscriptions and unacked messages [MQTT-3.1.2-4]
	opts.SetAutoAckDisabled(true)
	opts.SetOrderMatters(true) // onMessage is called in order of arrival; it never blocks for long
	// Messages of a resumed session can arrive right after CONNACK, before Subscribe registered a
	// route: the default handler catches every message, and no route is ever registered.
	opts.SetDefaultPublishHandler(in.onMessage)
	opts.SetResumeSubs(false)
	in.sess = newSession(name, "input", cfg.ConnectionConfig, opts, in.log, gauge)
	in.sess.onConnect = in.subscribe
	return in, nil
}

// OrderedSettlement tells the engine to settle this input's messages in the order they were
// dispatched, so that PUBACKs go out in the order the PUBLISHes arrived [MQTT-4.6.0-2].
func (in *Input) OrderedSettlement() bool { return true }

// Ready reports whether the input is connected and subscribed.
func (in *Input) Ready() bool { return in.sess.ready() }

// Start connects, subscribes and begins dispatching to d. It waits for the first connection
// attempt only: if the broker is down it returns nil and keeps trying in the background with
// backoff (Ready tells). It is called once, by the engine.
func (in *Input) Start(ctx context.Context, d engine.Dispatcher) error {
	in.mu.Lock()
	if in.started || in.closed {
		in.mu.Unlock()
		return fmt.Errorf("mqtt input %s: started twice or after Close", in.name)
	}
	in.started = true
	runCtx, cancel := context.WithCancel(context.Background())
	in.stop = cancel
	in.mu.Unlock()

	in.workers.Add(2)
	go in.dispatchLoop(runCtx, d)
	go in.ackLoop(runCtx)
	in.sess.start(ctx)
	return nil
}

// Close stops dispatching, sends the PUBACKs of messages already settled, and disconnects.
// Messages dispatched but not yet settled are not acknowledged: the broker redelivers them to the
// next session. Settlements arriving after Close are dropped (the broker redelivers).
func (in *Input) Close(ctx context.Context) error {
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		return nil
	}
	in.closed = true
	started := in.started
	in.mu.Unlock()
	close(in.stopped)
	if !started {
		return in.sess.close(ctx)
	}
	in.stop()
	done := make(chan struct{})
	go func() { in.workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("mqtt input %s close: %w", in.name, ctx.Err())
	}
	return in.sess.close(ctx)
}

// subscribe runs on the session goroutine after each CONNACK. A resumed session keeps its
// subscriptions [MQTT-3.1.2-4], so it subscribes only on the first connection of this process
// (the configured topics may have changed) or when the broker has no session.
func (in *Input) subscribe(ctx context.Context, sessionPresent, first bool) error {
	if sessionPresent && !first {
		return nil
	}
	filters := make(map[string]byte, len(in.cfg.Topics))
	for _, t := range in.cfg.Topics {
		filters[t] = 1
	}
	ctx, cancel := context.WithTimeout(ctx, in.cfg.ConnectTimeout)
	defer cancel()
	tok := in.sess.client.SubscribeMultiple(filters, nil) // nil: messages go to the default handler
	if err := waitToken(ctx, tok); err != nil {
		return fmt.Errorf("mqtt subscribe %v: %w", in.cfg.Topics, err)
	}
	st, ok := tok.(*paho.SubscribeToken)
	if !ok {
		return nil
	}
	for topic, code := range st.Result() {
		switch {
		case code <= 2: // the granted QoS [MQTT-3.9.3]
		case code == 0x80 || !sessionPresent: // failure [MQTT-3.9.3], or a code 3.1.1 does not know
			return fmt.Errorf("mqtt subscribe %s: refused by the broker (code 0x%02x)", topic, code)
		default:
			// Not a 3.1.1 code. The embedded broker answers 0x91 (MQTT 5: packet identifier in
			// use) when the SUBSCRIBE's id is one it uses for a message in flight to this
			// resumed session, as after a restart with messages pending. The session's
			// subscriptions stay in force, so messages keep coming; a filter that is new in the
			// configuration is subscribed only by a later start that finds nothing in flight.
			in.log.Warn("mqtt subscribe not confirmed; the resumed session keeps its earlier subscriptions",
				"topic", topic, "code", fmt.Sprintf("0x%02x", code))
		}
	}
	return nil
}

// onMessage is paho's message handler, called on paho's router goroutine in order of arrival.
// It only queues the message; it blocks when receive_buffer messages already wait, which stops
// paho reading from the network until the engine catches up.
func (in *Input) onMessage(_ paho.Client, m paho.Message) {
	r := received{msg: m, gen: in.sess.gen()}
	select {
	case in.recv <- r:
	case <-in.stopped:
	}
}

// dispatchLoop hands received messages to the engine, in order, on its own goroutine.
func (in *Input) dispatchLoop(ctx context.Context, d engine.Dispatcher) {
	defer in.workers.Done()
	for {
		var r received
		select {
		case r = <-in.recv:
		case <-ctx.Done():
			return
		}
		if r.gen != in.sess.gen() {
			// The connection it came on has ended: the broker redelivers it on the current one.
			continue
		}
		if r.msg.Duplicate() {
			in.redelivered.Inc()
		}
		m := decode(r.msg.Topic(), r.msg.Payload())
		err := d.Dispatch(ctx, m, func(err error) { in.settle(r, err) })
		if err != nil {
			if !errors.Is(err, engine.ErrClosed) && ctx.Err() == nil {
				in.log.Error("mqtt dispatch failed", "topic", r.msg.Topic(), "error", err)
			}
			return // not taken: the message stays unacknowledged and is redelivered
		}
	}
}

// settle is the engine.SettleFunc of every dispatched message. The engine calls it in dispatch
// order (OrderedSettlement); it only queues the verdict for the ack goroutine.
func (in *Input) settle(r received, err error) {
	in.mu.Lock()
	if in.ackDone {
		in.mu.Unlock()
		return // after Close: the broker redelivers it to the next session
	}
	in.pending = append(in.pending, settlement{received: r, err: err})
	in.mu.Unlock()
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// ackLoop sends PUBACKs in settlement order, on its own goroutine. After a rejection it sends no
// further PUBACK on that connection and asks the session to reconnect, once per connection.
// On shutdown it flushes what is already settled.
func (in *Input) ackLoop(ctx context.Context) {
	defer in.workers.Done()
	var rejectedGen uint64 // the connection on which a message was rejected
	for {
		in.mu.Lock()
		batch := in.pending
		in.pending = nil
		in.mu.Unlock()
		for _, s := range batch {
			cur := in.sess.gen()
			switch {
			case s.gen != cur:
				// Ended connection: a PUBACK would be dropped, the broker redelivers (duplicate).
			case s.err == nil && s.gen != rejectedGen:
				s.msg.Ack() // [MQTT-4.3.2-4], in order of arrival [MQTT-4.6.0-2]
				in.sess.resetBackoff()
			case s.err == nil:
				// A message before it on this connection was rejected: acking this one would
				// break the PUBACK order; it is redelivered with the rejected one.
			case s.gen != rejectedGen:
				rejectedGen = s.gen
				in.log.Warn("mqtt message rejected; reconnecting so the broker redelivers it",
					"topic", s.msg.Topic(), "message_id", s.msg.MessageID(), "error", s.err)
				in.sess.requestReconnect(s.gen)
			}
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-in.wake:
		case <-ctx.Done():
			in.mu.Lock()
			empty := len(in.pending) == 0
			if empty {
				in.ackDone = true
			}
			in.mu.Unlock()
			if empty {
				return
			}
		}
	}
}

package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/Azure/go-amqp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/transports/internal/reconnect"
)

var (
	_ engine.Source  = (*Input)(nil)
	_ engine.Readier = (*Input)(nil)
)

// Input is an AMQP 1.0 input: a receiver link on a durable source whose deliveries are settled
// only once the engine settled them (see the package documentation for the rules).
//
// Goroutines: the run goroutine connects, attaches, receives and calls Dispatch (which may
// block: backpressure); the settle goroutine sends the dispositions the engine's settlements
// queue, one at a time, and tops the link credit up. The engine calls the SettleFunc on its own
// goroutines; it only queues.
type Input struct {
	name string
	cfg  InputConfig
	log  *slog.Logger

	connected   prometheus.Gauge
	redelivered prometheus.Counter
	ready       atomic.Bool

	mu      sync.Mutex    // guards pending, cur, closed, started, settleDone
	pending []settlement  // settlements waiting for the settle goroutine, in settlement order
	wake    chan struct{} // signals the settle goroutine (capacity 1)
	cur     *receiverLink // the link being received on; nil between connections
	closed  bool
	started bool
	// settleDone is set when the settle goroutine ended: later settlements are dropped.
	settleDone bool

	stop    context.CancelFunc
	workers sync.WaitGroup
}

// receiverLink is one attached receiver with its credit accounting. Its counters are guarded
// by Input.mu.
type receiverLink struct {
	*link
	rcv *amqp.Receiver
	// unsettled counts deliveries received on this link and not yet settled by turnout.
	unsettled int
	// credit counts the link credit issued and not yet used by a delivery that Receive returned.
	// It is never below the broker's view: deliveries still in go-amqp's buffer count as unused.
	credit int
	// dead is set once the link ended: its settlements are dropped (the broker redelivers).
	dead bool
}

// settlement is the engine's verdict on one delivery.
type settlement struct {
	l   *receiverLink
	msg *amqp.Message
	err error
}

// NewInput is the engine.InputFactory of the "amqp" input type. It validates the configuration
// (errors name the key) and registers the metrics; it does not connect (Start does).
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
	return &Input{
		name:        name,
		cfg:         cfg,
		log:         log.With("input", name, "transport", "amqp"),
		connected:   gauge,
		redelivered: redelivered,
		wake:        make(chan struct{}, 1),
	}, nil
}

// Ready reports whether the receiver link is attached.
func (in *Input) Ready() bool { return in.ready.Load() }

// Start begins connecting and dispatching to d on the input's goroutines. It waits for the
// first connection attempt only: if the broker is down it returns nil and keeps trying in the
// background with backoff (Ready tells). The engine calls it once.
func (in *Input) Start(ctx context.Context, d engine.Dispatcher) error {
	in.mu.Lock()
	if in.started || in.closed {
		in.mu.Unlock()
		return fmt.Errorf("amqp input %s: started twice or after Close", in.name)
	}
	in.started = true
	runCtx, cancel := context.WithCancel(context.Background())
	in.stop = cancel
	in.mu.Unlock()

	first := make(chan struct{})
	in.workers.Add(2)
	go in.run(runCtx, d, first)
	go in.settleLoop(runCtx)
	select {
	case <-first:
	case <-ctx.Done():
	}
	return nil
}

// Close stops receiving, waits (until ctx ends) for the engine to settle the deliveries it
// holds so their dispositions reach the broker, then closes the connection. Deliveries not
// settled by then are redelivered by the broker; settlements arriving later are dropped.
func (in *Input) Close(ctx context.Context) error {
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		return nil
	}
	in.closed = true
	started := in.started
	in.mu.Unlock()
	if !started {
		return nil
	}
	in.stop()
	done := make(chan struct{})
	go func() { in.workers.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		// The settle goroutine still waits for settlements: end the connection under it, so
		// that it stops.
		err = fmt.Errorf("amqp input %s close: %w", in.name, ctx.Err())
	}
	in.mu.Lock()
	l := in.cur
	in.mu.Unlock()
	if l != nil {
		in.endLink(l)
	}
	<-done
	return err
}

// run is the connection loop, on its own goroutine until ctx ends: connect and attach, receive
// until the link ends, reconnect after the backoff.
func (in *Input) run(ctx context.Context, d engine.Dispatcher, first chan struct{}) {
	defer in.workers.Done()
	bo := in.cfg.NewBackoff()
	signalFirst := func() {
		if first != nil {
			close(first)
			first = nil
		}
	}
	defer signalFirst()
	for {
		l, err := in.attach(ctx)
		if ctx.Err() != nil {
			return // Close ends the link, after the settle goroutine is done with it
		}
		if err != nil {
			w := bo.Next()
			in.log.Warn("amqp input connect failed", "error", err, "retry_in", w)
			signalFirst()
			if !reconnect.Sleep(ctx, w) {
				return
			}
			continue
		}
		bo.Reset()
		in.setReady(true)
		in.log.Info("amqp input connected", "address", in.cfg.Address)
		signalFirst()
		err = in.receive(ctx, l, d)
		if errors.Is(err, engine.ErrClosed) {
			// The engine is shutting down and Close follows: keep the link, so that the
			// settlements of the deliveries it still drains reach the broker.
			<-ctx.Done()
		}
		in.setReady(false)
		if ctx.Err() != nil {
			return // Close ends the link, after the settle goroutine is done with it
		}
		in.endLink(l)
		w := bo.Next()
		in.log.Warn("amqp input link ended", "error", err, "retry_in", w)
		if !reconnect.Sleep(ctx, w) {
			return
		}
	}
}

func (in *Input) setReady(up bool) {
	in.ready.Store(up)
	if up {
		in.connected.Set(1)
	} else {
		in.connected.Set(0)
	}
}

// attach connects and attaches the receiver with manual credit, then issues the first credit.
func (in *Input) attach(ctx context.Context) (*receiverLink, error) {
	l, err := dial(ctx, &in.cfg.ConnectionConfig)
	if err != nil {
		return nil, err
	}
	durability := amqp.DurabilityNone
	if *in.cfg.Durable {
		durability = amqp.DurabilityConfiguration
	}
	actx, cancel := context.WithTimeout(ctx, in.cfg.ConnectTimeout)
	defer cancel()
	rcv, err := l.sess.NewReceiver(actx, in.cfg.Address, &amqp.ReceiverOptions{
		// Manual credit [AMQP 1.0 §2.6.7]: go-amqp's automatic top-up stalls delivery on
		// RabbitMQ 3.10; see topUp for the rule that replaces it.
		Credit:           -1,
		SourceDurability: durability,
	})
	if err != nil {
		l.close()
		return nil, fmt.Errorf("amqp attach receiver %s: %w", in.cfg.Address, err)
	}
	rl := &receiverLink{link: l, rcv: rcv}
	in.mu.Lock()
	in.cur = rl
	err = in.topUp(rl)
	in.mu.Unlock()
	if err != nil {
		in.endLink(rl)
		return nil, fmt.Errorf("amqp issue credit on %s: %w", in.cfg.Address, err)
	}
	return rl, nil
}

// topUp issues link credit on l so that unsettled deliveries plus unused credit reach the
// configured credit again. It issues only once the previous credit is used up (every credited
// delivery arrived), and then in a batch of at least half the window: a flow frame is never
// sent while transfers it would count are on the wire, so the broker and turnout never disagree
// about the credit left (go-amqp's automatic mode, which tops up while transfers are in flight,
// stalls on RabbitMQ 3.10). The bound holds: unsettled + credit <= cfg.Credit.
// It expects in.mu held.
func (in *Input) topUp(l *receiverLink) error {
	if l.dead || l.credit > 0 {
		return nil
	}
	free := in.cfg.Credit - l.unsettled
	if free <= 0 || free < max(1, in.cfg.Credit/2) {
		return nil
	}
	if err := l.rcv.IssueCredit(uint32(free)); err != nil {
		return err
	}
	l.credit += free
	return nil
}

// receive hands the deliveries of l to the engine until the link ends or ctx ends.
func (in *Input) receive(ctx context.Context, l *receiverLink, d engine.Dispatcher) error {
	for {
		msg, err := l.rcv.Receive(ctx, nil)
		if err != nil {
			return fmt.Errorf("amqp receive %s: %w", in.cfg.Address, err)
		}
		in.mu.Lock()
		l.credit--
		l.unsettled++
		err = in.topUp(l)
		in.mu.Unlock()
		if err != nil {
			return fmt.Errorf("amqp issue credit on %s: %w", in.cfg.Address, err)
		}
		if h := msg.Header; h != nil && (!h.FirstAcquirer || h.DeliveryCount > 0) {
			in.redelivered.Inc()
		}
		m := decode(in.cfg.Address, msg)
		err = d.Dispatch(ctx, m, func(err error) { in.settle(l, msg, err) })
		if err != nil {
			// Not taken: release it so the broker hands it out again at once.
			in.settle(l, msg, err)
			if !errors.Is(err, engine.ErrClosed) && ctx.Err() == nil {
				in.log.Error("amqp dispatch failed", "address", in.cfg.Address, "error", err)
			}
			return fmt.Errorf("amqp dispatch from %s: %w", in.cfg.Address, err)
		}
	}
}

// settle is the engine.SettleFunc of every dispatched delivery; it only queues the verdict for
// the settle goroutine. Safe from any goroutine.
func (in *Input) settle(l *receiverLink, msg *amqp.Message, err error) {
	in.mu.Lock()
	if in.settleDone {
		in.mu.Unlock()
		return // after Close: the broker redelivers it
	}
	in.pending = append(in.pending, settlement{l: l, msg: msg, err: err})
	in.mu.Unlock()
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// settleLoop sends the dispositions of settled deliveries, on its own goroutine, and tops the
// credit up after each. After ctx ends (Close) it goes on until every delivery of the current
// link is settled or the link is gone.
func (in *Input) settleLoop(ctx context.Context) {
	defer in.workers.Done()
	for {
		in.mu.Lock()
		batch := in.pending
		in.pending = nil
		in.mu.Unlock()
		for _, s := range batch {
			in.dispose(s)
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-in.wake:
			continue
		case <-ctx.Done():
		}
		// Closing: wait for the deliveries still held by the engine.
		in.mu.Lock()
		l := in.cur
		idle := len(in.pending) == 0 && (l == nil || l.dead || l.unsettled == 0)
		if idle {
			in.settleDone = true
		}
		in.mu.Unlock()
		if idle {
			return
		}
		var gone <-chan struct{}
		if l != nil {
			gone = l.conn.Done()
		}
		select {
		case <-in.wake:
		case <-gone:
			in.endLink(l)
		}
	}
}

// dispose sends the disposition of one delivery [AMQP 1.0 §3.4]: accepted when the engine
// settled it with nil; rejected, with the reason as its error, when the error is permanent, so
// that the broker dead-letters it; released otherwise, so that it is delivered again. It never
// sends modified: RabbitMQ 3.10 ends the session on it. A delivery of a link that ended is
// dropped: the broker has already put it back.
func (in *Input) dispose(s settlement) {
	in.mu.Lock()
	dead := s.l.dead
	in.mu.Unlock()
	if dead {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), in.cfg.ConnectTimeout)
	var err error
	switch {
	case s.err == nil:
		err = s.l.rcv.AcceptMessage(ctx, s.msg)
	case engine.IsPermanent(s.err):
		err = s.l.rcv.RejectMessage(ctx, s.msg, &amqp.Error{
			Condition:   amqp.ErrCondInternalError,
			Description: truncate(s.err.Error(), 1024),
		})
	default:
		err = s.l.rcv.ReleaseMessage(ctx, s.msg)
	}
	cancel()
	in.mu.Lock()
	s.l.unsettled--
	if err == nil {
		err = in.topUp(s.l)
	}
	in.mu.Unlock()
	if err != nil {
		// The link is gone or stuck: the broker redelivers what it has not seen settled. End the
		// connection so that the run loop reattaches.
		in.log.Warn("amqp settle failed; reconnecting", "address", in.cfg.Address, "error", err)
		in.endLink(s.l)
	}
}

// endLink marks l dead and closes its connection; the run loop's Receive then fails and it
// reconnects. Safe from any goroutine, more than once.
func (in *Input) endLink(l *receiverLink) {
	in.mu.Lock()
	already := l.dead
	l.dead = true
	if in.cur == l {
		in.cur = nil
	}
	in.mu.Unlock()
	if !already {
		l.close()
	}
}

// truncate shortens s to at most n bytes, for error descriptions sent to the broker.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

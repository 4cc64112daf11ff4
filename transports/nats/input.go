package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/transports/internal/reconnect"
)

var (
	_ engine.Source  = (*Input)(nil)
	_ engine.Readier = (*Input)(nil)
)

// pullExpiry is how long one pull request waits at the server. nats.go's default, 30 s, is also
// how long the input stood still when nats-server 2.9 dropped a pull request the client still
// counted on (docs/benchmarks.md): a request that expires sooner, with the client's heartbeat
// check at half of it, bounds such a pause to a few seconds at the cost of one request per
// expiry while the stream is idle.
const pullExpiry = 5 * time.Second

// Input is a NATS JetStream input: a durable pull consumer whose messages are acknowledged
// only once the engine settled them (see the package documentation for the rules).
//
// Goroutines: the run goroutine creates the consumer, pulls and calls Dispatch (which may block:
// backpressure); the progress goroutine marks long-held messages in progress. The engine calls
// the SettleFunc on its own goroutines; it sends the ack, nak or term (a buffered publish that
// does not wait for the server).
type Input struct {
	name  string
	cfg   InputConfig
	log   *slog.Logger
	ready atomic.Bool
	setUp func(bool)

	mu      sync.Mutex        // guards held, closed, started, nc
	held    map[*heldMsg]bool // dispatched or about to be, not yet settled
	drained chan struct{}     // closed and replaced when held becomes empty while closing
	closed  bool
	started bool
	nc      *nats.Conn

	stop    context.CancelFunc
	workers sync.WaitGroup
}

// heldMsg is one message turnout holds unacknowledged. mark is guarded by Input.mu.
type heldMsg struct {
	msg       jetstream.Msg
	delivered uint64    // JetStream's delivery count, 1 on the first delivery
	mark      time.Time // last delivery or in-progress mark: the start of the server's AckWait
	// orphan is set when the connection was lost while the message was held: it is no longer
	// marked in progress, so the server redelivers it after AckWait whatever became of it.
	orphan bool
}

// NewInput is the engine.InputFactory of the "nats" input type. It validates the configuration
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
	in := &Input{
		name:    name,
		cfg:     cfg,
		log:     log.With("input", name, "transport", "nats"),
		held:    map[*heldMsg]bool{},
		drained: make(chan struct{}),
	}
	up, err := readyFunc(deps.Registerer, name, in.setState)
	if err != nil {
		return nil, err
	}
	in.setUp = up
	return in, nil
}

// setState records the connection's state; on a loss it orphans every held message. Called
// from the nats.go client's callback goroutine.
func (in *Input) setState(up bool) {
	in.ready.Store(up)
	if up {
		return
	}
	in.mu.Lock()
	for h := range in.held {
		h.orphan = true
	}
	in.mu.Unlock()
}

// Ready reports whether the connection to the server is up.
func (in *Input) Ready() bool { return in.ready.Load() }

// Start connects and begins dispatching to d on the input's goroutines. A server that is down
// does not fail it: the client keeps trying in the background (Ready tells). The engine calls
// it once.
func (in *Input) Start(ctx context.Context, d engine.Dispatcher) error {
	in.mu.Lock()
	if in.started || in.closed {
		in.mu.Unlock()
		return fmt.Errorf("nats input %s: started twice or after Close", in.name)
	}
	in.started = true
	in.mu.Unlock()
	nc, js, err := connect(&in.cfg.ConnectionConfig, in.name, in.log, in.setUp)
	if err != nil {
		return fmt.Errorf("nats input %s: %w", in.name, err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	in.mu.Lock()
	in.nc = nc
	in.stop = cancel
	in.mu.Unlock()
	in.workers.Add(2)
	go in.run(runCtx, js, d)
	go in.progress(runCtx)
	return nil
}

// Close stops pulling, waits (until ctx ends) for the engine to settle the messages it holds
// so that their acks reach the server, then closes the connection. Messages not settled by
// then are redelivered after AckWait; later settlements are dropped.
func (in *Input) Close(ctx context.Context) error {
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		return nil
	}
	in.closed = true
	nc := in.nc
	in.mu.Unlock()
	if nc == nil {
		return nil
	}
	in.stop()
	in.workers.Wait()
	var err error
	for {
		in.mu.Lock()
		n, ch := len(in.held), in.drained
		in.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-ch:
			continue
		case <-ctx.Done():
			err = fmt.Errorf("nats input %s close: %d messages unsettled: %w", in.name, n, ctx.Err())
			in.nakHeld()
		}
		break
	}
	// Flush only a live connection: on one that is down, the flush would wait the whole
	// timeout for a PONG that cannot come, and there is nothing it could deliver.
	if nc.IsConnected() {
		if ferr := nc.FlushTimeout(in.cfg.ConnectTimeout); ferr != nil && err == nil {
			err = fmt.Errorf("nats input %s close: flush acks: %w", in.name, ferr)
		}
	}
	nc.Close()
	return err
}

// nakHeld naks every message still held, so that the server redelivers them at once rather
// than after AckWait: their settlements, coming after Close, would be dropped.
func (in *Input) nakHeld() {
	in.mu.Lock()
	held := make([]*heldMsg, 0, len(in.held))
	for h := range in.held {
		held = append(held, h)
	}
	in.mu.Unlock()
	for _, h := range held {
		_ = h.msg.Nak()
	}
}

// consumerConfig is the durable consumer turnout creates or updates.
func (in *Input) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       in.cfg.Consumer,
		FilterSubject: in.cfg.Subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       in.cfg.AckWait,
		MaxAckPending: in.cfg.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// run is the consume loop, on its own goroutine until ctx ends: create or update the durable
// consumer, pull and dispatch, and start again after the backoff when pulling fails.
func (in *Input) run(ctx context.Context, js jetstream.JetStream, d engine.Dispatcher) {
	defer in.workers.Done()
	bo := in.cfg.NewBackoff()
	for ctx.Err() == nil {
		err := in.consume(ctx, js, d, bo)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, engine.ErrClosed) {
			// The engine is shutting down and Close follows: keep the connection, so that the
			// settlements of the messages it still drains reach the server.
			<-ctx.Done()
			return
		}
		w := bo.Next()
		in.log.Warn("nats consume failed", "stream", in.cfg.Stream, "consumer", in.cfg.Consumer, "error", err, "retry_in", w)
		if !reconnect.Sleep(ctx, w) {
			return
		}
	}
}

// consume pulls from the consumer until pulling fails or ctx ends.
func (in *Input) consume(ctx context.Context, js jetstream.JetStream, d engine.Dispatcher, bo *reconnect.Backoff) error {
	cctx, cancel := context.WithTimeout(ctx, in.cfg.ConnectTimeout)
	cons, err := js.CreateOrUpdateConsumer(cctx, in.cfg.Stream, in.consumerConfig())
	cancel()
	if err != nil {
		return fmt.Errorf("nats create consumer %s on stream %s: %w", in.cfg.Consumer, in.cfg.Stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(in.cfg.PullBatch), jetstream.PullExpiry(pullExpiry))
	if err != nil {
		return fmt.Errorf("nats consume %s: %w", in.cfg.Consumer, err)
	}
	defer it.Stop()
	stopOnDone := context.AfterFunc(ctx, it.Stop)
	defer stopOnDone()
	in.log.Info("nats input consuming", "stream", in.cfg.Stream, "consumer", in.cfg.Consumer)
	for {
		msg, err := it.Next()
		if err != nil {
			return fmt.Errorf("nats pull %s: %w", in.cfg.Consumer, err)
		}
		bo.Reset()
		if err := in.dispatch(ctx, msg, d); err != nil {
			return err
		}
	}
}

// dispatch hands one message to the engine. A message the engine did not take is naked at
// once so that the server hands it out again.
func (in *Input) dispatch(ctx context.Context, msg jetstream.Msg, d engine.Dispatcher) error {
	h := &heldMsg{msg: msg, delivered: 1, mark: time.Now()}
	if md, err := msg.Metadata(); err == nil {
		h.delivered = md.NumDelivered
	}
	in.mu.Lock()
	in.held[h] = true
	in.mu.Unlock()
	m := decode(msg.Subject(), msg.Headers(), msg.Data())
	if err := d.Dispatch(ctx, m, func(err error) { in.settle(h, err) }); err != nil {
		in.release(h)
		if nerr := msg.Nak(); nerr != nil {
			in.log.Debug("nats nak failed", "error", nerr)
		}
		return fmt.Errorf("nats dispatch from %s: %w", msg.Subject(), err)
	}
	return nil
}

// release forgets h. It expects in.mu not held.
func (in *Input) release(h *heldMsg) {
	in.mu.Lock()
	delete(in.held, h)
	if len(in.held) == 0 {
		close(in.drained)
		in.drained = make(chan struct{})
	}
	in.mu.Unlock()
}

// settle is the engine.SettleFunc of every dispatched message [JetStream acknowledgements]:
// +ACK on nil, +TERM with the reason on a permanent error, -NAK with the delay of the
// nakDelay rule otherwise. Safe from any goroutine; it does not wait for the server: a lost
// acknowledgement means a redelivery, never a loss.
func (in *Input) settle(h *heldMsg, err error) {
	in.release(h)
	var serr error
	switch {
	case err == nil:
		serr = h.msg.Ack()
	case engine.IsPermanent(err):
		// Plain +TERM: servers before 2.10.4 do not parse "+TERM reason" and redeliver. The
		// reason reaches the dead letter through the engine.
		serr = h.msg.Term()
	default:
		serr = h.msg.NakWithDelay(in.nakDelay(h.delivered))
	}
	if serr != nil && !errors.Is(serr, nats.ErrConnectionClosed) {
		in.log.Warn("nats settle failed; the server redelivers after ack_wait", "subject", h.msg.Subject(), "error", serr)
	}
}

// nakDelay is the redelivery delay after the delivered-th delivery failed: nak_min_delay,
// doubled per earlier delivery, at most nak_max_delay.
func (in *Input) nakDelay(delivered uint64) time.Duration {
	d := in.cfg.NakMinDelay
	for i := uint64(1); i < delivered && d < in.cfg.NakMaxDelay; i++ {
		d *= 2
	}
	return min(d, in.cfg.NakMaxDelay)
}

// progress marks messages held for a third of ack_wait in progress (+WPI), which restarts the
// server's AckWait, so that a message the engine is still working on (a slow output, retries)
// is not redelivered meanwhile. Orphaned messages (held across a connection loss) are left to
// expire. On its own goroutine until ctx ends.
func (in *Input) progress(ctx context.Context) {
	defer in.workers.Done()
	every := in.cfg.AckWait / 3
	t := time.NewTicker(every / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			var due []*heldMsg
			in.mu.Lock()
			for h := range in.held {
				if !h.orphan && now.Sub(h.mark) >= every {
					h.mark = now
					due = append(due, h)
				}
			}
			in.mu.Unlock()
			for _, h := range due {
				if err := h.msg.InProgress(); err != nil {
					in.log.Debug("nats in-progress mark failed", "error", err)
				}
			}
		}
	}
}

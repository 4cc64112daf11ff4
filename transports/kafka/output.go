package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/turnout-router/turnout/engine"
)

var (
	_ engine.Sink    = (*Output)(nil)
	_ engine.Starter = (*Output)(nil)
	_ engine.Readier = (*Output)(nil)
)

// Output produces events to one topic with an idempotent producer and counts a send as
// confirmed only when every in-sync replica has the record (acks=all).
//
// Goroutines: the engine calls Send concurrently; each Send hands its record to the client and
// waits for that record's acknowledgement, so as many records are in flight as the engine has
// Sends running, batched per partition by the client on its own goroutines.
type Output struct {
	name string
	cfg  OutputConfig
	log  *slog.Logger
	conn *connState
	enc  encoder

	startOnce sync.Once
	startErr  error
	mu        sync.Mutex // guards cl
	cl        *kgo.Client
}

// NewOutput is the engine.OutputFactory of the "kafka" output type. It validates the
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
	log = log.With("output", name, "transport", "kafka", "topic", cfg.Topic)
	conn, err := newConnState(deps.Registerer, name, log)
	if err != nil {
		return nil, err
	}
	return &Output{name: name, cfg: cfg, log: log, conn: conn,
		enc: encoder{topic: cfg.Topic, structured: cfg.Mode == modeStructured, keyed: cfg.Key == keyPartition}}, nil
}

// Ready reports whether the latest connection attempt to a broker succeeded.
func (o *Output) Ready() bool { return o.conn.Ready() }

// Start creates the client; it does not wait for the brokers. Brokers that are down do not fail
// it (the client keeps trying, and Sends fail retryably meanwhile). Called once by the engine,
// before Send.
func (o *Output) Start(context.Context) error {
	o.startOnce.Do(func() {
		codec, _ := compression(o.cfg.Compression)
		cl, err := newClient(&o.cfg.ConnectionConfig, o.conn,
			kgo.RequiredAcks(kgo.AllISRAcks()), // idempotent production needs acks=all
			kgo.ProducerLinger(o.cfg.Linger),
			kgo.ProducerBatchCompression(codec),
			kgo.DefaultProduceTopic(o.cfg.Topic),
		)
		if err != nil {
			o.startErr = fmt.Errorf("kafka output %s: %w", o.name, err)
			return
		}
		o.mu.Lock()
		o.cl = cl
		o.mu.Unlock()
		// Ask for the cluster's metadata once, in the background, so that Ready tells early
		// whether the brokers answer; the client connects lazily otherwise.
		go func() {
			pctx, cancel := context.WithTimeout(context.Background(), o.cfg.ConnectTimeout)
			defer cancel()
			if err := cl.Ping(pctx); err != nil {
				o.log.Warn("kafka brokers not reachable yet; the client keeps trying", "error", err)
			}
		}()
	})
	return o.startErr
}

// Send produces e and waits until the record is acknowledged by all in-sync replicas, at most
// ack_timeout (and never past ctx). Any error (no broker, unknown topic, timeout, not enough replicas) is retryable;
// an event that cannot be encoded and a record the broker refuses for its size or form are
// permanent.
func (o *Output) Send(ctx context.Context, e *event.Event) error {
	if err := o.Start(ctx); err != nil {
		return err
	}
	r, err := o.enc.encode(e)
	if err != nil {
		return engine.Permanent(fmt.Errorf("kafka produce %s: %w", o.cfg.Topic, err))
	}
	o.mu.Lock()
	cl := o.cl
	o.mu.Unlock()
	if cl == nil {
		return fmt.Errorf("kafka produce %s: output closed", o.cfg.Topic)
	}
	ctx, cancel := context.WithTimeout(ctx, o.cfg.AckTimeout)
	defer cancel()
	// Not ProduceSync: once an idempotent record was part of a request, franz-go keeps it until
	// the brokers answer, whatever its context says, and Send must return when ctx ends. A
	// record given up on here may still be written later: a duplicate when the engine retries.
	done := make(chan error, 1)
	cl.Produce(ctx, r, func(_ *kgo.Record, err error) { done <- err })
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		err = fmt.Errorf("kafka produce %s: %w", o.cfg.Topic, err)
		if refused(err) {
			return engine.Permanent(err)
		}
		return err
	}
	return nil
}

// refused reports whether err is a broker's or the client's verdict on the record itself, which
// no retry changes.
func refused(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) ||
		errors.Is(err, kerr.RecordListTooLarge) || errors.Is(err, kerr.InvalidRecord) ||
		errors.Is(err, kerr.CorruptMessage)
}

// Close waits for records still buffered (until ctx ends) and closes the client, after the
// engine stopped sending.
func (o *Output) Close(ctx context.Context) error {
	o.mu.Lock()
	cl := o.cl
	o.cl = nil
	o.mu.Unlock()
	if cl == nil {
		return nil
	}
	var err error
	if ferr := cl.Flush(ctx); ferr != nil {
		err = fmt.Errorf("kafka output %s close: flush: %w", o.name, ferr)
	}
	cl.Close()
	return err
}

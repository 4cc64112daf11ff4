package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/engine"
)

var (
	_ engine.Sink    = (*Output)(nil)
	_ engine.Starter = (*Output)(nil)
	_ engine.Readier = (*Output)(nil)
)

// ErrNotConnected is returned (wrapped) by Send while the output has no connection; the engine
// retries.
var ErrNotConnected = errors.New("not connected")

// Output publishes events as structured JSON CloudEvents with QoS 1, retain=0.
type Output struct {
	name  string
	topic *topicTemplate
	sess  *session
}

// NewOutput is the engine.OutputFactory of the "mqtt" output type. It validates the
// configuration (errors name the key) and builds the client; it does not connect (Start does).
func NewOutput(name string, decode engine.Decoder, deps engine.Deps) (engine.Sink, error) {
	var cfg OutputConfig
	if err := decode(&cfg); err != nil {
		return nil, err
	}
	return newOutput(name, cfg, deps)
}

func newOutput(name string, cfg OutputConfig, deps engine.Deps) (*Output, error) {
	tt, err := cfg.validate()
	if err != nil {
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
	id := cfg.ClientID
	if id == "" {
		id = randomClientID(name)
	}
	opts, err := cfg.clientOptions(id)
	if err != nil {
		return nil, err
	}
	// A clean session: when the connection drops, paho fails every publication in flight and
	// the engine retries it, rather than leaving Send waiting for a resumed session.
	opts.SetCleanSession(true)
	o := &Output{name: name, topic: tt}
	o.sess = newSession(name, "output", cfg.ConnectionConfig, opts, log.With("output", name), gauge)
	return o, nil
}

// Start connects. It waits for the first connection attempt only: if the broker is down it
// returns nil and keeps trying in the background with backoff; Send fails fast meanwhile.
func (o *Output) Start(ctx context.Context) error {
	o.sess.start(ctx)
	return nil
}

// Ready reports whether the output is connected.
func (o *Output) Ready() bool { return o.sess.ready() }

// Send publishes e with QoS 1 and returns nil once the broker's PUBACK arrived
// [MQTT-4.3.2-1]. It is called concurrently by the engine; paho keeps the publications in
// flight together. Errors: not connected, connection lost before the PUBACK, ctx ended
// (retryable); an event that cannot be encoded or has no valid topic (Permanent). Handing the
// PUBLISH to the connection can block up to connect_timeout when the network is congested;
// after that Send returns when the PUBACK arrives or ctx ends.
func (o *Output) Send(ctx context.Context, e *event.Event) error {
	topic, err := o.topic.topic(e)
	if err != nil {
		return engine.Permanent(err)
	}
	payload, err := encode(e)
	if err != nil {
		return engine.Permanent(err)
	}
	if !o.sess.ready() || !o.sess.client.IsConnectionOpen() {
		return fmt.Errorf("mqtt publish %s: %w", topic, ErrNotConnected)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mqtt publish %s: %w", topic, err)
	}
	tok := o.sess.client.Publish(topic, 1, false, payload)
	if err := waitToken(ctx, tok); err != nil {
		return fmt.Errorf("mqtt publish %s: %w", topic, err)
	}
	return nil
}

// Close disconnects. Publications still in flight fail.
func (o *Output) Close(ctx context.Context) error {
	return o.sess.close(ctx)
}

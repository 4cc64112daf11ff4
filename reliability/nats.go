package reliability

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsAckTimeout bounds the wait for one PubAck; an event not acknowledged by then is
// published again.
const natsAckTimeout = 5 * time.Second

// natsConnect dials url with a client that reconnects for ever, and opens JetStream on it.
func natsConnect(url, name string, opts ...jetstream.JetStreamOpt) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, nats.Name(name), nats.Timeout(5*time.Second),
		nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond))
	if err != nil {
		return nil, nil, fmt.Errorf("nats connect %s: %w", url, err)
	}
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("nats jetstream %s: %w", url, err)
	}
	return nc, js, nil
}

// NATSProducer publishes events to a JetStream subject with asynchronous publishes and counts
// an event as sent only once its PubAck arrived. A publish that fails or is not acknowledged
// within 5 s is made again. A stream must capture the subject.
type NATSProducer struct {
	sentLog
	subject, mode string
	nc            *nats.Conn
	js            jetstream.JetStream
}

var _ Producer = (*NATSProducer)(nil)

// NewNATSProducer connects to url (nats://host:port) and publishes to subject. mode is
// "binary" (every attribute as a ce-<name> header, datacontenttype included, the data as the
// payload [CE-NATS-3.1]) or "structured" (Content-Type application/cloudevents+json and the
// JSON event [CE-NATS-3.2]).
func NewNATSProducer(url, subject, mode string) (*NATSProducer, error) {
	if mode != "binary" && mode != "structured" {
		return nil, fmt.Errorf("nats producer: mode %q: want binary or structured", mode)
	}
	nc, js, err := natsConnect(url, "reliability producer",
		jetstream.WithPublishAsyncTimeout(natsAckTimeout), jetstream.WithPublishAsyncMaxPending(1<<16))
	if err != nil {
		return nil, err
	}
	return &NATSProducer{subject: subject, mode: mode, nc: nc, js: js}, nil
}

// message builds event seq in the producer's mode.
func (p *NATSProducer) message(run string, seq, size int) *nats.Msg {
	m := nats.NewMsg(p.subject)
	if p.mode == "structured" {
		m.Header["Content-Type"] = []string{"application/cloudevents+json"}
		m.Data = EventJSON(run, seq, size)
		return m
	}
	m.Header["ce-specversion"] = []string{"1.0"}
	m.Header["ce-id"] = []string{EventID(run, seq)}
	m.Header["ce-source"] = []string{EventSource}
	m.Header["ce-type"] = []string{EventType}
	m.Header["ce-datacontenttype"] = []string{"application/json"}
	m.Data = EventData(run, seq, size)
	return m
}

// Publish implements Producer: up to window asynchronous publishes await their PubAck, and
// they are confirmed in sequence order.
func (p *NATSProducer) Publish(run string, first, last, size, window int, deadline time.Time) ([]int, error) {
	type pending struct {
		seq int
		fut jetstream.PubAckFuture // nil: the publish itself failed
		err error
	}
	var confirmed []int
	send := func(seq int) pending {
		p.record(seq)
		f, err := p.js.PublishMsgAsync(p.message(run, seq, size))
		return pending{seq: seq, fut: f, err: err}
	}
	wait := func(pd pending) error {
		for {
			if pd.fut != nil {
				select {
				case <-pd.fut.Ok():
					confirmed = append(confirmed, pd.seq)
					return nil
				case pd.err = <-pd.fut.Err():
				case <-time.After(natsAckTimeout + time.Second):
					pd.err = errors.New("no PubAck")
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("nats publish %s seq %d not confirmed before deadline: %w", p.subject, pd.seq, pd.err)
			}
			if pd.fut == nil {
				time.Sleep(100 * time.Millisecond) // not connected or too many pending
			}
			pd = send(pd.seq)
		}
	}
	return confirmed, inOrder(first, last, window, send, wait)
}

// Close implements Producer.
func (p *NATSProducer) Close() { p.nc.Close() }

// NATSConsumer reads a stream through a durable pull consumer with explicit acknowledgement,
// records the event id of every message (binary or structured mode) and then acks it.
type NATSConsumer struct {
	recvLog
	nc *nats.Conn
	cc jetstream.ConsumeContext
}

var _ Consumer = (*NATSConsumer)(nil)

// NewNATSConsumer connects to url and creates (or takes over) the durable consumer durable on
// stream, reading subject (every subject of the stream if empty) with at most maxAckPending
// messages unacknowledged, and starts receiving in the background. The durable consumer stays
// on the server after Close, so a new NATSConsumer of the same name resumes where it stopped.
func NewNATSConsumer(url, stream, durable, subject string, maxAckPending int) (*NATSConsumer, error) {
	if maxAckPending <= 0 {
		maxAckPending = 1000
	}
	nc, js, err := natsConnect(url, "reliability consumer")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:       durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		FilterSubject: subject,
		MaxAckPending: maxAckPending,
		AckWait:       30 * time.Second,
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("nats consumer %s on stream %s: %w", durable, stream, err)
	}
	c := &NATSConsumer{nc: nc}
	// Pull requests expire after 5 s, not nats.go's 30 s: nats-server 2.9.10 may drop one the
	// client still counts on, and the consumer then stands still until it expires (the input's
	// pullExpiry in transports/nats says more).
	c.cc, err = cons.Consume(func(m jetstream.Msg) {
		c.record(headerEventID(m.Headers().Get("ce-id"), m.Data()))
		_ = m.Ack() // a lost ack means a redelivery, which the log counts as a duplicate
	}, jetstream.PullMaxMessages(min(maxAckPending, 1000)), jetstream.PullExpiry(5*time.Second))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("nats consume %s on stream %s: %w", durable, stream, err)
	}
	return c, nil
}

// Close implements Consumer, keeping the durable consumer on the server.
func (c *NATSConsumer) Close() {
	c.cc.Stop()
	_ = c.nc.FlushTimeout(2 * time.Second) // the acks already made reach the server
	c.nc.Close()
}

package reliability

import (
	"context"
	"fmt"
	"sync"
	"time"

	amqp "github.com/Azure/go-amqp"
)

// amqpClient is one AMQP 1.0 connection with one session, dialled again after a failure.
type amqpClient struct {
	url  string
	conn *amqp.Conn
	sess *amqp.Session
}

func (c *amqpClient) dial(ctx context.Context) error {
	conn, err := amqp.Dial(ctx, c.url, &amqp.ConnOptions{IdleTimeout: 30 * time.Second})
	if err != nil {
		return fmt.Errorf("amqp dial %s: %w", c.url, err)
	}
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		conn.Close()
		return fmt.Errorf("amqp session %s: %w", c.url, err)
	}
	c.conn, c.sess = conn, sess
	return nil
}

// close ends the connection. Links are not closed one by one: RabbitMQ 3.x answers a link
// detach in a way that makes the client wait for ever.
func (c *amqpClient) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn, c.sess = nil, nil
	}
}

// AMQPProducer sends events to an AMQP 1.0 address as durable messages and counts an event as
// sent only once the broker settled it as Accepted. Any other outcome (another delivery state,
// a lost connection: RabbitMQ 3.10 ends the connection when a reject-publish queue is full) is a
// failure, and the event is sent again on a new connection.
type AMQPProducer struct {
	sentLog
	addr, mode string

	mu     sync.Mutex // guards client and sender while reconnecting
	client amqpClient
	sender *amqp.Sender
	epoch  int // incremented on every reconnect
}

var _ Producer = (*AMQPProducer)(nil)

// NewAMQPProducer connects to url (amqp://user:pass@host:port) and attaches a sender to address
// (RabbitMQ: /queue/NAME declares a durable queue). mode is "binary" (the event's attributes as
// cloudEvents_ application properties, data in the body) or "structured" (the JSON event in the
// body, content-type application/cloudevents+json).
func NewAMQPProducer(url, address, mode string) (*AMQPProducer, error) {
	if mode != "binary" && mode != "structured" {
		return nil, fmt.Errorf("amqp producer: mode %q: want binary or structured", mode)
	}
	p := &AMQPProducer{addr: address, mode: mode, client: amqpClient{url: url}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.connect(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

// connect dials and attaches. It expects p.mu held.
func (p *AMQPProducer) connect(ctx context.Context) error {
	p.client.close()
	if err := p.client.dial(ctx); err != nil {
		return err
	}
	s, err := p.client.sess.NewSender(ctx, p.addr, &amqp.SenderOptions{TargetDurability: amqp.DurabilityUnsettledState})
	if err != nil {
		p.client.close()
		return fmt.Errorf("amqp attach sender %s: %w", p.addr, err)
	}
	p.sender = s
	p.epoch++
	return nil
}

// current returns the sender and its epoch, reconnecting when there is none.
func (p *AMQPProducer) current(ctx context.Context) (*amqp.Sender, int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sender == nil {
		if err := p.connect(ctx); err != nil {
			return nil, 0, err
		}
	}
	return p.sender, p.epoch, nil
}

// broken drops the sender of epoch so that the next send reconnects.
func (p *AMQPProducer) broken(epoch int) {
	p.mu.Lock()
	if p.epoch == epoch && p.sender != nil {
		p.client.close()
		p.sender = nil
	}
	p.mu.Unlock()
}

// message builds event seq in the producer's mode.
func (p *AMQPProducer) message(run string, seq, size int) *amqp.Message {
	m := &amqp.Message{Header: &amqp.MessageHeader{Durable: true}}
	if p.mode == "structured" {
		ct := "application/cloudevents+json"
		m.Properties = &amqp.MessageProperties{ContentType: &ct}
		m.Data = [][]byte{EventJSON(run, seq, size)}
		return m
	}
	ct := "application/json"
	m.Properties = &amqp.MessageProperties{ContentType: &ct}
	m.ApplicationProperties = map[string]any{ // [CE-AMQP 3.1.3.1] binary mode
		"cloudEvents_specversion": "1.0",
		"cloudEvents_id":          EventID(run, seq),
		"cloudEvents_source":      EventSource,
		"cloudEvents_type":        EventType,
	}
	m.Data = [][]byte{EventData(run, seq, size)}
	return m
}

// send delivers one message and waits for its disposition; nil only for Accepted.
func (p *AMQPProducer) send(run string, seq, size int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, epoch, err := p.current(ctx)
	if err != nil {
		return err
	}
	p.record(seq)
	rcpt, err := s.SendWithReceipt(ctx, p.message(run, seq, size), nil)
	if err != nil {
		p.broken(epoch)
		return fmt.Errorf("amqp send %s: %w", p.addr, err)
	}
	state, err := rcpt.Wait(ctx)
	if err != nil {
		p.broken(epoch)
		return fmt.Errorf("amqp send %s: %w", p.addr, err)
	}
	if _, ok := state.(*amqp.StateAccepted); !ok {
		return fmt.Errorf("amqp send %s: settled as %T %+v, not accepted", p.addr, state, state)
	}
	return nil
}

// Publish implements Producer: window goroutines each keep one message in flight.
func (p *AMQPProducer) Publish(run string, first, last, size, window int, deadline time.Time) ([]int, error) {
	return concurrently("amqp", first, last, window, deadline, func(seq int) error { return p.send(run, seq, size) })
}

// Close implements Producer.
func (p *AMQPProducer) Close() {
	p.mu.Lock()
	p.client.close()
	p.sender = nil
	p.mu.Unlock()
}

// AMQPConsumer receives from an AMQP 1.0 address, accepts every message, and records the event
// id of each (binary or structured mode). It reconnects after a failure. Credit is issued by
// hand, credit messages at a time and only once the previous batch arrived, because automatic
// top-up stalls delivery on RabbitMQ 3.10.
type AMQPConsumer struct {
	recvLog
	url, addr string
	credit    int

	mu     sync.Mutex
	paused bool
	resume chan struct{} // closed by Resume

	stop context.CancelFunc
	done chan struct{}
}

var _ Consumer = (*AMQPConsumer)(nil)

// NewAMQPConsumer connects to url, attaches a durable receiver to address and starts receiving
// in the background. It returns once the first attach succeeded, so that a queue named
// /queue/NAME exists before anything is sent to it.
func NewAMQPConsumer(url, address string, credit int) (*AMQPConsumer, error) {
	if credit <= 0 {
		credit = 100
	}
	c := &AMQPConsumer{url: url, addr: address, credit: credit, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	attached := make(chan error, 1)
	go c.run(ctx, attached)
	select {
	case err := <-attached:
		if err != nil {
			cancel()
			<-c.done
			return nil, err
		}
	case <-time.After(15 * time.Second):
		cancel()
		<-c.done
		return nil, fmt.Errorf("amqp consumer %s: no attach within 15s", address)
	}
	return c, nil
}

// Pause stops taking messages: those already received wait unsettled and no credit is issued,
// so the queue behind the address fills up.
func (c *AMQPConsumer) Pause() {
	c.mu.Lock()
	if !c.paused {
		c.paused, c.resume = true, make(chan struct{})
	}
	c.mu.Unlock()
}

// Resume takes messages again after Pause.
func (c *AMQPConsumer) Resume() {
	c.mu.Lock()
	if c.paused {
		c.paused = false
		close(c.resume)
	}
	c.mu.Unlock()
}

// waitResumed blocks while the consumer is paused.
func (c *AMQPConsumer) waitResumed(ctx context.Context) {
	c.mu.Lock()
	paused, ch := c.paused, c.resume
	c.mu.Unlock()
	if paused {
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
}

// run receives until ctx ends, reconnecting after any failure. The first attach's result goes
// to attached.
func (c *AMQPConsumer) run(ctx context.Context, attached chan<- error) {
	defer close(c.done)
	first := true
	for ctx.Err() == nil {
		err := c.session(ctx, func(err error) {
			if first {
				attached <- err
				first = false
			}
		})
		if first {
			attached <- err
			return
		}
		if ctx.Err() == nil {
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// session runs one connection: attach, then receive and accept until an error.
func (c *AMQPConsumer) session(ctx context.Context, onAttach func(error)) error {
	cl := amqpClient{url: c.url}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cl.dial(dctx); err != nil {
		return err
	}
	defer cl.close()
	r, err := cl.sess.NewReceiver(dctx, c.addr, &amqp.ReceiverOptions{
		Credit:           -1,
		SourceDurability: amqp.DurabilityUnsettledState,
	})
	if err != nil {
		return fmt.Errorf("amqp attach receiver %s: %w", c.addr, err)
	}
	onAttach(nil)
	if err := r.IssueCredit(uint32(c.credit)); err != nil {
		return fmt.Errorf("amqp credit %s: %w", c.addr, err)
	}
	for n := 0; ; {
		c.waitResumed(ctx)
		m, err := r.Receive(ctx, nil)
		if err != nil {
			return fmt.Errorf("amqp receive %s: %w", c.addr, err)
		}
		if err := r.AcceptMessage(ctx, m); err != nil {
			return fmt.Errorf("amqp accept %s: %w", c.addr, err)
		}
		c.record(amqpEventID(m))
		if n++; n == c.credit {
			n = 0
			if err := r.IssueCredit(uint32(c.credit)); err != nil {
				return fmt.Errorf("amqp credit %s: %w", c.addr, err)
			}
		}
	}
}

// amqpEventID reads the event id of a binary-mode message (either application-property prefix
// [CE-AMQP 3.1.3.1]) or a structured one.
func amqpEventID(m *amqp.Message) string {
	for _, k := range []string{"cloudEvents_id", "cloudEvents:id"} {
		if id, ok := m.ApplicationProperties[k].(string); ok && id != "" {
			return id
		}
	}
	return idOf(m.GetData())
}

// Close implements Consumer.
func (c *AMQPConsumer) Close() {
	c.stop()
	c.Resume()
	<-c.done
}

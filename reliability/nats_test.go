package reliability

import (
	"fmt"
	"testing"
	"time"

	"github.com/turnout-router/turnout/transports/nats/natstest"
)

// TestNATSEndpoints runs the NATS producer straight into the NATS consumer on the shared
// nats-server, in both modes: what the producer confirmed, the consumer must see, once.
func TestNATSEndpoints(t *testing.T) {
	url := natstest.Shared(t)
	for _, mode := range []string{"binary", "structured"} {
		t.Run(mode, func(t *testing.T) {
			stream := natstest.Name("RELIABILITY")
			subject := "reliability." + stream
			natstest.Stream(t, url, stream, subject)
			c, err := NewNATSConsumer(url, stream, "consumer", subject, 50)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			p, err := NewNATSProducer(url, subject, mode)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			checkFlow(t, p, c, fmt.Sprintf("ep%d", time.Now().UnixNano()), 500)
		})
	}
}

// TestNATSConsumerResumes checks that the durable consumer outlives a NATSConsumer: events
// published while no consumer runs reach the next one of the same name, and events the first
// one acknowledged are not delivered again.
func TestNATSConsumerResumes(t *testing.T) {
	url := natstest.Shared(t)
	stream := natstest.Name("RELIABILITY")
	subject := "reliability." + stream
	natstest.Stream(t, url, stream, subject)
	p, err := NewNATSProducer(url, subject, "binary")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	run := fmt.Sprintf("resume%d", time.Now().UnixNano())

	c1, err := NewNATSConsumer(url, stream, "durable", subject, 20)
	if err != nil {
		t.Fatal(err)
	}
	before, err := p.Publish(run, 0, 100, 300, 10, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if r := c1.WaitFor(run, before, 30*time.Second); r.Missing != 0 {
		t.Fatalf("first consumer: %s", r)
	}
	c1.Close()

	after, err := p.Publish(run, 100, 200, 300, 10, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	c2, err := NewNATSConsumer(url, stream, "durable", subject, 20)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if r := c2.WaitFor(run, after, 30*time.Second); r.Missing != 0 || r.Duplicates != 0 {
		t.Fatalf("second consumer, events published while none ran: %s (missing %v)", r, r.MissingIDs)
	}
	if r := c2.Report(run, before); r.Received != 0 {
		t.Fatalf("second consumer received %d events the first one acknowledged", r.Received)
	}
}

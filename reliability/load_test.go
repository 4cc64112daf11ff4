package reliability

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/turnout-router/turnout/transports/amqp/amqptest"
	"github.com/turnout-router/turnout/transports/kafka/kafkatest"
	"github.com/turnout-router/turnout/transports/mqtt/mqtttest"
	"github.com/turnout-router/turnout/transports/nats/natstest"
)

// TestEventSize checks that generated events have the size a scenario asks for, so that the
// figures the suite prints are for the event size they claim.
func TestEventSize(t *testing.T) {
	for _, tc := range []struct {
		run       string
		seq, size int
	}{
		{"r", 0, 300},
		{"kill1764460000000000000", 123456, 300},
		{"r", 7, 1024},
	} {
		t.Run(fmt.Sprintf("%s-%d-%d", tc.run, tc.seq, tc.size), func(t *testing.T) {
			if got := len(EventJSON(tc.run, tc.seq, tc.size)); got != tc.size {
				t.Fatalf("EventJSON is %d bytes, want %d", got, tc.size)
			}
		})
	}
}

// loadPair opens a producer and a consumer of one destination; consumer may be called again to
// open another consumer of the same persistent subscription.
type loadPair struct {
	name     string
	consumer func() (Consumer, error)
	producer func() (Producer, error)
}

// endpoints returns a fresh destination for every producer and consumer of this package, on
// the shared brokers (an unreachable one skips its subtest) and an in-process Kafka cluster.
// It is called inside the subtest named name.
func endpoints(t *testing.T, name string) loadPair {
	t.Helper()
	kind, mode, _ := strings.Cut(name, "-")
	id := fmt.Sprintf("%d", time.Now().UnixNano())
	switch kind {
	case "mqtt":
		url := mqtttest.Shared(t)
		return loadPair{name,
			func() (Consumer, error) { return NewMQTTConsumer(url, "consumer-"+id, "reliability/"+id) },
			func() (Producer, error) { return NewMQTTProducer(url, "producer-"+id, "reliability/"+id) }}
	case "amqp":
		node := amqptest.Shared(t)
		addr := "/queue/" + amqptest.QueueName(t, "reliability-")
		return loadPair{name,
			func() (Consumer, error) { return NewAMQPConsumer(node.URL(), addr, 50) },
			func() (Producer, error) { return NewAMQPProducer(node.URL(), addr, mode) }}
	case "nats":
		url := natstest.Shared(t)
		stream := natstest.Name("RELIABILITY")
		subject := "reliability." + stream
		natstest.Stream(t, url, stream, subject)
		return loadPair{name,
			func() (Consumer, error) { return NewNATSConsumer(url, stream, "durable", subject, 50) },
			func() (Producer, error) { return NewNATSProducer(url, subject, mode) }}
	case "kafka":
		k := kafkatest.Start(t)
		topic := k.Topic(t, "reliability", 3)
		group := kafkatest.Name("group")
		return loadPair{name,
			func() (Consumer, error) { return NewKafkaConsumer(k.Seeds(), topic, group) },
			func() (Producer, error) { return NewKafkaProducer(k.Seeds(), topic, mode) }}
	case "http":
		r, err := NewHTTPReceiver("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		return loadPair{name,
			func() (Consumer, error) { return r, nil },
			func() (Producer, error) { return NewHTTPProducer(r.URL()), nil }}
	}
	t.Fatalf("no endpoint %q", name)
	return loadPair{}
}

// TestEndpoints runs each producer straight into its consumer: what the producer confirmed,
// the consumer must see, once.
func TestEndpoints(t *testing.T) {
	for _, name := range []string{"mqtt", "amqp-binary", "amqp-structured", "nats-binary", "nats-structured",
		"kafka-binary", "kafka-structured", "http"} {
		t.Run(name, func(t *testing.T) {
			e := endpoints(t, name)
			c, err := e.consumer()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			p, err := e.producer()
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			checkFlow(t, p, c, fmt.Sprintf("ep%d", time.Now().UnixNano()), 500)
		})
	}
}

// TestConsumerResumes checks that a consumer's persistent subscription (MQTT session, AMQP
// durable queue, JetStream durable consumer, Kafka group offsets) outlives it: events published
// while no consumer runs reach the next one, and events the first one received are not
// delivered again.
func TestConsumerResumes(t *testing.T) {
	for _, name := range []string{"mqtt", "amqp-binary", "nats-binary", "kafka-binary"} {
		t.Run(name, func(t *testing.T) {
			e := endpoints(t, name)
			p, err := e.producer()
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			run := fmt.Sprintf("resume%d", time.Now().UnixNano())
			c1, err := e.consumer()
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
			c2, err := e.consumer()
			if err != nil {
				t.Fatal(err)
			}
			defer c2.Close()
			if r := c2.WaitFor(run, after, 30*time.Second); r.Missing != 0 || r.Duplicates != 0 {
				t.Fatalf("second consumer, events published while none ran: %s (missing %v)", r, r.MissingIDs)
			}
			if r := c2.Report(run, before); r.Received != 0 {
				t.Fatalf("second consumer received %d events the first one had received", r.Received)
			}
		})
	}
}

func checkFlow(t *testing.T, p Producer, c Consumer, run string, n int) {
	t.Helper()
	seqs, err := p.Publish(run, 0, n, 300, 20, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(seqs) != n {
		t.Fatalf("producer confirmed %d of %d", len(seqs), n)
	}
	r := c.WaitFor(run, seqs, 30*time.Second)
	if r.Missing != 0 || r.Duplicates != 0 {
		t.Fatalf("straight through: %s (missing %v)", r, r.MissingIDs)
	}
	if p50, p99 := Latencies(p, c, run, seqs); p50 <= 0 || p99 < p50 {
		t.Fatalf("latencies p50=%s p99=%s", p50, p99)
	}
}

// TestAMQPConsumerPause checks that a paused consumer lets its queue fill up to a
// reject-publish limit, so the producer's sends are refused, and that Resume drains it.
func TestAMQPConsumerPause(t *testing.T) {
	node := amqptest.Shared(t)
	q := amqptest.QueueName(t, "reliability-full-")
	node.SetPolicy(q, "^"+q+"$", `{"max-length":20,"overflow":"reject-publish"}`)
	c, err := NewAMQPConsumer(node.URL(), "/queue/"+q, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Pause()
	p, err := NewAMQPProducer(node.URL(), "/queue/"+q, "binary")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	run := fmt.Sprintf("pause%d", time.Now().UnixNano())
	// 10 held unsettled by the paused consumer, 20 in the queue: the 31st is refused (RabbitMQ
	// 3.10 ends the connection rather than settling it as rejected) until the deadline passes.
	seqs, err := p.Publish(run, 0, 40, 300, 1, time.Now().Add(3*time.Second))
	if err == nil || len(seqs) >= 40 {
		t.Fatalf("a full reject-publish queue accepted everything (%d confirmed, err %v)", len(seqs), err)
	}
	c.Resume()
	r := c.WaitFor(run, seqs, 20*time.Second)
	if r.Missing != 0 {
		t.Fatalf("after resume: %s", r)
	}
}

package reliability

import (
	"fmt"
	"testing"
	"time"

	"github.com/turnout-router/turnout/transports/amqp/amqptest"
	"github.com/turnout-router/turnout/transports/mqtt/mqtttest"
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

// TestEndpoints runs each producer straight into its consumer on the shared brokers: what the
// producer confirmed, the consumer must see, once.
func TestEndpoints(t *testing.T) {
	const n = 500
	t.Run("mqtt", func(t *testing.T) {
		url := mqtttest.Shared(t)
		run := fmt.Sprintf("ep%d", time.Now().UnixNano())
		c, err := NewMQTTConsumer(url, "consumer-"+run, "reliability/"+run)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		p, err := NewMQTTProducer(url, "producer-"+run, "reliability/"+run)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		checkFlow(t, p, c, run, n)
	})
	for _, mode := range []string{"binary", "structured"} {
		t.Run("amqp-"+mode, func(t *testing.T) {
			node := amqptest.Shared(t)
			addr := "/queue/" + amqptest.QueueName(t, "reliability-")
			run := fmt.Sprintf("ep%d", time.Now().UnixNano())
			c, err := NewAMQPConsumer(node.URL(), addr, 50)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			p, err := NewAMQPProducer(node.URL(), addr, mode)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			checkFlow(t, p, c, run, n)
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

package reliability

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/amqp/amqptest"
	"github.com/turnout-router/turnout/transports/kafka/kafkatest"
	"github.com/turnout-router/turnout/transports/nats/natstest"
)

// The scale-out test (docs/scaling.md): two turnout processes, started from one configuration
// file, share one input's load through the protocol's own mechanism; one of them is killed with
// SIGKILL while events flow. Every event must still arrive, and each instance must have carried
// part of the load. Each instance publishes to an output topic of its own
// (alarms/${TURNOUT_INSTANCE}), so the validator, not turnout, tells who delivered what.

// sharePlan sizes one scale-out run.
type sharePlan struct {
	name   string
	events int
	rate   int // events per second the generator offers
	// down is how long the killed instance stays away when the protocol needs it back.
	down   time.Duration
	settle time.Duration
}

var (
	shortShare = sharePlan{name: "short", events: 3000, rate: 1000, down: time.Second, settle: 60 * time.Second}
	fullShare  = sharePlan{name: "full", events: 30000, rate: 2000, down: 5 * time.Second, settle: 5 * time.Minute}
)

// shareCase is one protocol's way of sharing an input.
type shareCase struct {
	name string
	// input returns the input block both instances run, with ${TURNOUT_INSTANCE} where an
	// instance needs a value of its own, and the generator that feeds it.
	input func(t *testing.T, w *shareWorld) (string, Producer)
	// restart says that the broker holds what it gave the killed instance until a client with
	// the same identity comes back, so the test starts the killed instance again.
	restart bool
	// redelivered is the input's counter of messages the broker delivered before ("": the
	// input has none).
	redelivered string
}

// shareWorld is what a case may use: the private mosquitto that carries the output (and the
// MQTT input), and the run's name. A case may set ready, which the test calls once both
// instances run and before the generator starts, to wait until the broker shares the input
// between them.
type shareWorld struct {
	broker interface{ URL() string }
	run    string
	ready  func()
}

var shareCases = []shareCase{
	{
		// Both instances are members of one consumer group. The group takes the killed
		// member's partitions away only when its session times out (session_timeout, 6 s
		// here, the brokers' usual minimum); the other member then reads them again from the
		// last committed offsets.
		name: "kafka-consumer-group",
		input: func(t *testing.T, w *shareWorld) (string, Producer) {
			c := kafkatest.Start(t)
			topic := c.Topic(t, "share", 4)
			pr, err := NewKafkaProducer(c.Seeds(), topic, "binary")
			if err != nil {
				t.Fatal(err)
			}
			w.ready = func() {
				// The second member's join makes the group rebalance; both must hold partitions.
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if _, err := c.Kfake().WaitGroupStable(ctx, "turnout", 2); err != nil {
					t.Fatalf("kafka group with both instances: %v", err)
				}
			}
			return fmt.Sprintf(`
    type: kafka
    brokers: [%q]
    group: turnout
    topics: [%s]
    session_timeout: 6s
    commit_interval: 200ms`, c.Addr(), topic), pr
		},
	},
	{
		// mosquitto keeps handing a dead member of a shared subscription its turn of new
		// messages, queued in its persistent session with those it had in flight, until a client
		// with its client_id comes back.
		name:        "mqtt-shared-subscription",
		restart:     true,
		redelivered: "turnout_mqtt_redelivered_total",
		input: func(t *testing.T, w *shareWorld) (string, Producer) {
			pr, err := NewMQTTProducer(w.broker.URL(), "generator-"+w.run, "devices/pendant")
			if err != nil {
				t.Fatal(err)
			}
			return fmt.Sprintf(`
    type: mqtt
    brokers: [%q]
    client_id: turnout-${TURNOUT_INSTANCE}
    topics: ["$share/turnout/devices/#"]
    reconnect_min_backoff: 100ms
    reconnect_max_backoff: 500ms`, w.broker.URL()), pr
		},
	},
	{
		// RabbitMQ returns the unsettled deliveries of a closed connection to the queue, and the
		// other consumer takes them.
		name:        "amqp-competing-consumers",
		redelivered: "turnout_amqp_redelivered_total",
		input: func(t *testing.T, w *shareWorld) (string, Producer) {
			node := amqptest.Start(t)
			q := amqptest.QueueName(t, "share")
			pr, err := NewAMQPProducer(node.URL(), "/queue/"+q, "binary")
			if err != nil {
				t.Fatal(err)
			}
			return fmt.Sprintf(`
    type: amqp
    url: %q
    address: /queue/%s
    credit: 128
    reconnect_min_backoff: 100ms
    reconnect_max_backoff: 500ms`, node.URL(), q), pr
		},
	},
	{
		// Both instances pull from one durable consumer; JetStream delivers what the killed
		// instance held to the other once ack_wait passed without an acknowledgement.
		name: "nats-durable-consumer",
		input: func(t *testing.T, w *shareWorld) (string, Producer) {
			url := natstest.Shared(t)
			stream := natstest.Name("SHARE")
			subject := "share." + w.run
			natstest.Stream(t, url, stream, subject)
			pr, err := NewNATSProducer(url, subject, "binary")
			if err != nil {
				t.Fatal(err)
			}
			return fmt.Sprintf(`
    type: nats
    url: %q
    stream: %s
    consumer: turnout
    max_ack_pending: 256
    ack_wait: 2s
    reconnect_min_backoff: 100ms
    reconnect_max_backoff: 500ms`, url, stream), pr
		},
	},
}

// TestScaleOut runs every protocol's case: two instances on one input, one killed mid-stream.
func TestScaleOut(t *testing.T) {
	pl := shortShare
	if os.Getenv("RELIABILITY") == "full" {
		pl = fullShare
	}
	// The cases run in parallel: the Kafka case, listed first, spends most of its time waiting
	// for the group to notice the killed member, and the RabbitMQ node takes seconds to start,
	// while the others run.
	for _, c := range shareCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := runShare(t, c, pl)
			t.Logf("%s, %s plan: %s", c.name, pl.name, r)
		})
	}
}

// shareResult is what one case measured.
type shareResult struct {
	rep         Report
	byA, byB    int // distinct events each instance delivered
	whileDown   int // events published while the killed instance was away
	arrivedDown int // of those, how many arrived before it came back
	killedAfter int // events the validator had when the instance was killed
	restarted   bool
	// tail is how long after the kill the last of the events published before it arrived: how
	// long the events b held took to come through another way.
	tail         time.Duration
	ackedA, ackB float64 // turnout_events_acked_total: a at the end, b summed over its runs
	// redelivered is what the instances alive at the end counted as redelivered: b's in-flight
	// events taken over by a, or returned to b after its restart.
	redelivered float64
}

func (r shareResult) String() string {
	s := fmt.Sprintf("%s; delivered by a=%d b=%d; b killed after %d events arrived", r.rep, r.byA, r.byB, r.killedAfter)
	if r.restarted {
		s += fmt.Sprintf(", away while %d were published, of which %d arrived before it restarted", r.whileDown, r.arrivedDown)
	}
	return s + fmt.Sprintf("; the last event published before the kill arrived %s after it; acked by a=%.0f b=%.0f; redelivered %.0f",
		r.tail.Round(10*time.Millisecond), r.ackedA, r.ackB, r.redelivered)
}

func runShare(t *testing.T, c shareCase, pl sharePlan) shareResult {
	dir := t.TempDir()
	w := &shareWorld{broker: startMosquitto(t, "max_inflight_messages 1000"), run: fmt.Sprintf("share%d", time.Now().UnixNano()%1e9)}
	input, producer := c.input(t, w)
	t.Cleanup(producer.Close)
	validators := map[string]*MQTTConsumer{}
	for _, inst := range []string{"a", "b"} {
		v, err := NewMQTTConsumer(w.broker.URL(), "validator-"+inst+"-"+w.run, "alarms/"+inst)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(v.Close)
		validators[inst] = v
	}

	rule := writeRule(t, dir, "filters/rules/attrroute")
	config := filepath.Join(dir, "turnout.yaml")
	// One file for both instances: the environment names the instance and its admin address.
	writeFile(t, config, fmt.Sprintf(`
data_dir: %[1]s/data-${TURNOUT_INSTANCE}
admin: { listen: "${TURNOUT_ADMIN}" }
log: { level: info }
shutdown: { drain_timeout: 2s }
inputs:
  devices:%[2]s
outputs:
  alarms:
    type: mqtt
    brokers: [%[3]q]
    topic: alarms/${TURNOUT_INSTANCE}
    reconnect_min_backoff: 100ms
    reconnect_max_backoff: 500ms
  dlq:
    type: file
    path: %[4]s/dead-letter-${TURNOUT_INSTANCE}.jsonl
routes:
  care:
    inputs: [devices]
    outputs: [alarms]
    dead_letter: dlq
    max_in_flight: 128
    retry: { max_attempts: 1000, initial_backoff: 50ms, max_backoff: 500ms, timeout: 5s }
    rule:
      file: %[5]s
      config:
        filters: [{ attribute: type, prefix: "care.alarm.", outputs: [alarms] }]
`, dir, input, w.broker.URL(), dir, rule))
	adminA, adminB := testutil.FreeAddr(t), testutil.FreeAddr(t)
	a := StartTurnout(t, config, adminA, "TURNOUT_INSTANCE=a", "TURNOUT_ADMIN="+adminA)
	b := StartTurnout(t, config, adminB, "TURNOUT_INSTANCE=b", "TURNOUT_ADMIN="+adminB)

	if w.ready != nil {
		w.ready()
	}
	var r shareResult
	// arrived counts deliveries to the validator, for progress (an event both instances
	// delivered counts twice).
	arrived := func() int {
		da, _ := validators["a"].Count()
		db, _ := validators["b"].Count()
		return da + db
	}
	s := &setup{t: t, run: w.run, producer: producer}
	start := time.Now()
	f := s.startFlow(0, pl.events, 300, pl.rate, time.Now().Add(pl.settle))

	// Kill b once both instances delivered events and b holds some in flight.
	waitUntil(t, pl.settle, "both instances deliver", func() bool {
		da, _ := validators["a"].Count()
		db, _ := validators["b"].Count()
		return da > 0 && db > 0 && da+db >= pl.events/4
	})
	ackedB := scrape(t, adminB, "turnout_events_acked_total")
	(&setup{t: t, admin: adminB}).waitBusy(time.Second)
	b.Kill()
	killed := time.Now()
	r.killedAfter = arrived()
	if c.restart {
		// While b is away, the generator keeps publishing; the broker gives b's session its turn.
		sentBefore := len(flowSeqs(f))
		time.Sleep(pl.down)
		r.whileDown = len(flowSeqs(f)) - sentBefore
		r.arrivedDown = arrived() - r.killedAfter
		b.Start("/healthz")
		r.restarted = true
	}
	seqs := f.wait(t, pl.events)
	deadline := time.Now().Add(pl.settle)
	r.rep = unionReport(w.run, seqs, validators["a"], validators["b"])
	for r.rep.Missing > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		r.rep = unionReport(w.run, seqs, validators["a"], validators["b"])
	}
	r.rep.Elapsed = time.Since(start)
	for _, seq := range seqs {
		if !producer.SentAt(seq).Before(killed) {
			continue
		}
		for _, v := range validators {
			if at := v.ReceivedAt(EventID(w.run, seq)); at.Sub(killed) > r.tail {
				r.tail = at.Sub(killed)
			}
		}
	}
	r.byA, _ = validators["a"].Count()
	r.byB, _ = validators["b"].Count()
	r.ackedA = scrape(t, adminA, "turnout_events_acked_total")
	r.ackB = ackedB
	if c.redelivered != "" {
		r.redelivered = scrape(t, adminA, c.redelivered)
	}
	if b.Alive() {
		r.ackB += scrape(t, adminB, "turnout_events_acked_total")
		if c.redelivered != "" {
			r.redelivered += scrape(t, adminB, c.redelivered)
		}
	}

	if r.rep.Missing != 0 {
		t.Errorf("%d events lost (first missing seqs %v)", r.rep.Missing, r.rep.MissingIDs)
	}
	if r.byA == 0 || r.byB == 0 {
		t.Errorf("the load was not shared: instance a delivered %d events, b %d", r.byA, r.byB)
	}
	for _, inst := range []string{"a", "b"} {
		if dl := readDeadLetters(t, filepath.Join(dir, "dead-letter-"+inst+".jsonl")); len(dl) != 0 {
			t.Errorf("instance %s dead-lettered %d events", inst, len(dl))
		}
	}
	if !a.Alive() {
		t.Errorf("instance a exited")
	}
	return r
}

// flowSeqs returns the sequence numbers the generator has had confirmed so far.
func flowSeqs(f *flow) []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.seqs...)
}

// unionReport is the Report of the consumers taken together: an event counts as received when
// any of them received it, and every delivery beyond the first is a duplicate.
func unionReport(run string, seqs []int, cs ...Consumer) Report {
	r := Report{Sent: len(seqs)}
	for _, s := range seqs {
		seen := false
		for _, c := range cs {
			if !c.ReceivedAt(EventID(run, s)).IsZero() {
				seen = true
				break
			}
		}
		if seen {
			r.Received++
		} else {
			r.Missing++
			if len(r.MissingIDs) < 20 {
				r.MissingIDs = append(r.MissingIDs, s)
			}
		}
	}
	total := 0
	for _, c := range cs {
		_, n := c.Count()
		total += n
	}
	r.Duplicates = total - r.Received
	return r
}

// waitUntil polls cond every 20 ms and fails the test if it does not hold within limit.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(limit); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %s", what, limit)
		}
	}
}

package reliability

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// KafkaProducer produces events to one Kafka topic with acks from every in-sync replica and
// idempotent writes, and counts an event as sent only once its produce request was
// acknowledged. A record the client gives up on (its delivery timeout of 10 s passed) is
// produced again until Publish's deadline.
type KafkaProducer struct {
	sentLog
	topic, mode string
	cl          *kgo.Client
}

var _ Producer = (*KafkaProducer)(nil)

// NewKafkaProducer connects to the seed brokers (host:port) and produces to topic. mode is
// "binary" (every attribute as a ce_<name> header, datacontenttype as the content-type
// header, the data as the value [CE-Kafka-3.2]) or "structured" (content-type
// application/cloudevents+json and the JSON event as the value [CE-Kafka-3.1]).
func NewKafkaProducer(seeds []string, topic, mode string) (*KafkaProducer, error) {
	if mode != "binary" && mode != "structured" {
		return nil, fmt.Errorf("kafka producer: mode %q: want binary or structured", mode)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.RecordDeliveryTimeout(10*time.Second),
		kgo.MaxBufferedRecords(1<<16))
	if err != nil {
		return nil, fmt.Errorf("kafka producer %v: %w", seeds, err)
	}
	return &KafkaProducer{topic: topic, mode: mode, cl: cl}, nil
}

// message builds event seq in the producer's mode.
func (p *KafkaProducer) message(run string, seq, size int) *kgo.Record {
	if p.mode == "structured" {
		return &kgo.Record{Value: EventJSON(run, seq, size), Headers: []kgo.RecordHeader{
			{Key: "content-type", Value: []byte("application/cloudevents+json")},
		}}
	}
	return &kgo.Record{Value: EventData(run, seq, size), Headers: []kgo.RecordHeader{
		{Key: "ce_specversion", Value: []byte("1.0")},
		{Key: "ce_id", Value: []byte(EventID(run, seq))},
		{Key: "ce_source", Value: []byte(EventSource)},
		{Key: "ce_type", Value: []byte(EventType)},
		{Key: "content-type", Value: []byte("application/json")},
	}}
}

// Publish implements Producer: up to window records await their acknowledgement.
func (p *KafkaProducer) Publish(run string, first, last, size, window int, deadline time.Time) ([]int, error) {
	var (
		mu        sync.Mutex
		confirmed []int
		firstErr  error
		wg        sync.WaitGroup
	)
	slots := make(chan struct{}, max(window, 1))
	var produce func(seq int)
	produce = func(seq int) {
		p.record(seq)
		p.cl.Produce(context.Background(), p.message(run, seq, size), func(_ *kgo.Record, err error) {
			if err == nil {
				mu.Lock()
				confirmed = append(confirmed, seq)
				mu.Unlock()
				<-slots
				wg.Done()
				return
			}
			if time.Now().After(deadline) {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("kafka produce %s seq %d not confirmed before deadline: %w", p.topic, seq, err)
				}
				mu.Unlock()
				<-slots
				wg.Done()
				return
			}
			// Produce again off the promise goroutine, which must not block on a full buffer.
			time.AfterFunc(100*time.Millisecond, func() { produce(seq) })
		})
	}
	for seq := first; seq < last; seq++ {
		slots <- struct{}{}
		wg.Add(1)
		produce(seq)
	}
	wg.Wait()
	sort.Ints(confirmed)
	return confirmed, firstErr
}

// Close implements Producer.
func (p *KafkaProducer) Close() { p.cl.Close() }

// KafkaConsumer reads a topic as a member of a consumer group, from the earliest offset when
// the group has none, records the event id of every record (binary or structured mode) and
// only then marks it for the group's offset commit.
type KafkaConsumer struct {
	recvLog
	cl   *kgo.Client
	stop context.CancelFunc
	done chan struct{}
}

var _ Consumer = (*KafkaConsumer)(nil)

// NewKafkaConsumer connects to the seed brokers, joins group reading topic and starts receiving
// in the background. The group's committed offsets outlive the consumer, so a new
// KafkaConsumer of the same group resumes where it stopped.
func NewKafkaConsumer(seeds []string, topic, group string) (*KafkaConsumer, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(time.Second), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("kafka consumer %s on %s: %w", group, topic, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &KafkaConsumer{cl: cl, stop: cancel, done: make(chan struct{})}
	go c.run(ctx)
	return c, nil
}

// run polls until ctx ends; fetch errors are retried by the client.
func (c *KafkaConsumer) run(ctx context.Context) {
	defer close(c.done)
	for ctx.Err() == nil {
		fs := c.cl.PollFetches(ctx)
		var recs []*kgo.Record
		fs.EachRecord(func(r *kgo.Record) {
			c.record(kafkaEventID(r))
			recs = append(recs, r)
		})
		c.cl.MarkCommitRecords(recs...)
	}
}

// kafkaEventID reads the event id of a binary-mode record (the ce_id header) or a structured
// one.
func kafkaEventID(r *kgo.Record) string {
	for _, h := range r.Headers {
		if h.Key == "ce_id" && len(h.Value) > 0 {
			return string(h.Value)
		}
	}
	return idOf(r.Value)
}

// Close implements Consumer: it commits what it recorded and leaves the group.
func (c *KafkaConsumer) Close() {
	c.stop()
	<-c.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.cl.CommitMarkedOffsets(ctx)
	c.cl.Close()
}

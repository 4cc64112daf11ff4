package kafka

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/transports/kafka/kafkatest"
	"github.com/turnout-router/turnout/transports/transporttest"
)

func BenchmarkDecode(b *testing.B) {
	for _, structured := range []bool{false, true} {
		b.Run(map[bool]string{false: "binary", true: "structured"}[structured], func(b *testing.B) {
			r, err := encoder{topic: "t", structured: structured}.encode(transporttest.Event("bench"))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if m := decode(r); m.DecodeErr != nil {
					b.Fatal(m.DecodeErr)
				}
			}
		})
	}
}

// BenchmarkOutputSend produces to an in-process cluster (kfake) with many Sends in flight, as
// the engine does; each Send waits for its record's acknowledgement.
func BenchmarkOutputSend(b *testing.B) {
	c := kafkatest.Start(b)
	topic := c.Topic(b, "bench", 4)
	o := startOutput(b, OutputConfig{ConnectionConfig: fastConn(c), Topic: topic})
	e := transporttest.Event("bench")
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := o.Send(context.Background(), e); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// countSettle is an engine.Dispatcher that settles every record at once and counts them.
type countSettle struct{ n atomic.Int64 }

func (c *countSettle) Dispatch(_ context.Context, _ *engine.Message, settle engine.SettleFunc) error {
	c.n.Add(1)
	go settle(nil)
	return nil
}

// BenchmarkInput reads b.N records already in an in-process cluster through the input (decode,
// dispatch, settle, contiguous commits), timing from Start until the last one was dispatched.
func BenchmarkInput(b *testing.B) {
	c := kafkatest.Start(b)
	topic := c.Topic(b, "bench", 4)
	recs := make([]*kgo.Record, 0, 1000)
	for i := range b.N {
		r, err := encoder{topic: topic}.encode(transporttest.Event(fmt.Sprint(i)))
		if err != nil {
			b.Fatal(err)
		}
		recs = append(recs, r)
		if len(recs) == cap(recs) || i == b.N-1 {
			c.Produce(b, topic, recs...)
			recs = recs[:0]
		}
	}
	in, err := newInput("bench", InputConfig{ConnectionConfig: fastConn(c), Group: kafkatest.Name("g"), Topics: []string{topic}}, testDeps())
	if err != nil {
		b.Fatal(err)
	}
	d := &countSettle{}
	b.ResetTimer()
	if err := in.Start(context.Background(), d); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for d.n.Load() < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("dispatched %d of %d", d.n.Load(), b.N)
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = in.Close(ctx)
}

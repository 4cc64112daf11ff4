package mqtt

import (
	"context"
	"testing"
	"time"
)

func BenchmarkDecode(b *testing.B) {
	payload := eventPayload(b, "bench")
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if m := decode("t", payload); m.DecodeErr != nil {
			b.Fatal(m.DecodeErr)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	e := newEvent("bench", map[string]string{"room": "kitchen"})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := encode(e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOutputSend publishes through the embedded broker with many Sends in flight, as the
// engine does; each Send waits for its PUBACK.
func BenchmarkOutputSend(b *testing.B) {
	br, _ := startBroker(b, BrokerConfig{})
	out := startOutput(b, "tcp://"+br.Addr(), OutputConfig{TopicTemplate: "bench/{type}"})
	waitFor(b, "output ready", 10*time.Second, out.Ready)
	e := newEvent("bench", nil)
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := out.Send(context.Background(), e); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

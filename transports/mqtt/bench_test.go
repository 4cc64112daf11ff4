package mqtt

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/internal/testutil"
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
	testutil.WaitFor(b, "output ready", 10*time.Second, out.Ready)
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

// BenchmarkBrokerPublish measures QoS 1 publications through the embedded broker to a
// persistent subscriber (CleanSession=0, QoS 1, acknowledging as it receives), in memory and
// with broker.persistence: one publisher keeping 100 publications unacknowledged, and 20
// publishers keeping 10 each. A publication counts once its PUBACK arrived; msgs/s is that rate.
func BenchmarkBrokerPublish(b *testing.B) {
	payload := make([]byte, 300)
	for _, store := range []bool{false, true} {
		for _, shape := range []struct {
			name               string
			publishers, window int
		}{{"1x100", 1, 100}, {"20x10", 20, 10}} {
			name := "memory/" + shape.name
			if store {
				name = "persistence/" + shape.name
			}
			b.Run(name, func(b *testing.B) {
				cfg := BrokerConfig{}
				if store {
					cfg.Persistence = b.TempDir()
				}
				br, reg := startBroker(b, cfg)
				url := "tcp://" + br.Addr()
				var received atomic.Int64
				so := paho.NewClientOptions().AddBroker(url).SetClientID(uniq(b)).SetCleanSession(false).
					SetProtocolVersion(4).SetDefaultPublishHandler(func(paho.Client, paho.Message) { received.Add(1) })
				sub := paho.NewClient(so)
				if tok := sub.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					b.Fatal(tok.Error())
				}
				defer sub.Disconnect(50)
				if tok := sub.Subscribe("bench/#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
					b.Fatal(tok.Error())
				}
				pubs := make([]paho.Client, shape.publishers)
				for i := range pubs {
					pubs[i] = rawClient(b, url)
				}
				b.SetBytes(int64(len(payload)))
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for i, c := range pubs {
					n := b.N / shape.publishers
					if i < b.N%shape.publishers {
						n++
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						window := make(chan paho.Token, shape.window)
						wait := func(tok paho.Token) {
							if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
								b.Errorf("publish: %v", tok.Error())
							}
						}
						for range n {
							if len(window) == cap(window) {
								wait(<-window)
							}
							window <- c.Publish("bench/x", 1, false, payload)
						}
						for len(window) > 0 {
							wait(<-window)
						}
					}()
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
				if store {
					commits, seconds := histogram(b, reg, "turnout_broker_persistence_commit_seconds")
					b.ReportMetric(commits/elapsed.Seconds(), "commits/s")
					b.ReportMetric(1000*seconds/commits, "ms/commit")
				}
				testutil.WaitFor(b, "every message delivered", 60*time.Second, func() bool { return received.Load() >= int64(b.N) })
			})
		}
	}
}

// histogram returns the sample count and sum of the histogram name.
func histogram(b *testing.B, reg *prometheus.Registry, name string) (count, sum float64) {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				count += float64(m.GetHistogram().GetSampleCount())
				sum += m.GetHistogram().GetSampleSum()
			}
		}
	}
	return count, sum
}

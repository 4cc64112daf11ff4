package nats

import (
	"sync"
	"syscall"
	"testing"
)

// BenchmarkOutput sends events through the output from 512 goroutines at once to a stream on
// the shared server, as the engine does with many deliveries in flight, and reports the CPU
// time this process spent per event (cpu-µs/event: encoding, publishing, matching PubAcks; the
// server's own is not counted).
func BenchmarkOutput(b *testing.B) {
	f := sharedFixture(b)
	o := startOutput(b, f.outputConfig(modeBinary))
	const senders = 512
	data := []byte(`{"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","seq":1}`)
	ev := fullEvent("bench", data, "application/json", true)
	var before, after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	b.ResetTimer()
	var wg sync.WaitGroup
	for g := range senders {
		n := b.N / senders
		if g < b.N%senders {
			n++
		}
		wg.Go(func() {
			for range n {
				if err := o.Send(b.Context(), ev); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano()
	b.ReportMetric(float64(cpu)/1e3/float64(b.N), "cpu-µs/event")
}

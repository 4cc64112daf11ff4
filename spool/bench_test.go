package spool

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkSend measures what an event costs to spool (encode, append, fsync) with the output
// down, so that nothing is forwarded, for one sender and for as many senders as a route has
// events in flight by default. ns/op is per event; fsyncs/op says how many events share one.
func BenchmarkSend(b *testing.B) {
	for _, fsync := range []string{FsyncAlways, FsyncBatch} {
		for _, senders := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("fsync=%s/senders=%d", fsync, senders), func(b *testing.B) {
				sink := newSwitchSink()
				sink.down.Store(true)
				s := open(b, b.TempDir(), Config{MaxBytes: size(1 << 40), Fsync: fsync}, sink)
				ev := testEvent(1) // ~400 bytes in the log
				// RunParallel starts parallelism x GOMAXPROCS goroutines.
				b.SetParallelism(max(senders/runtime.GOMAXPROCS(0), 1))
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := s.Send(context.Background(), ev); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.StopTimer()
				b.ReportMetric(fsyncCount(b, s)/float64(b.N), "fsyncs/op")
			})
		}
	}
}

// BenchmarkForward measures how fast a backlog leaves the spool for an output that confirms at
// once: the drain rate after an outage, with the default in_flight.
func BenchmarkForward(b *testing.B) {
	dir := b.TempDir()
	sink := newSwitchSink()
	sink.down.Store(true)
	s := open(b, dir, Config{MaxBytes: size(1 << 40)}, sink)
	for i := 0; i < b.N; i++ {
		if err := s.Send(context.Background(), testEvent(i)); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	var n atomic.Int64
	up := &countSink{n: &n}
	b.ResetTimer()
	s2 := open(b, dir, Config{MaxBytes: size(1 << 40)}, up)
	for n.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	_ = s2.Close(context.Background())
}

package engine_test

import (
	"context"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/engine/enginetest"
)

// BenchmarkRuleSwitchOverhead compares Decide on a pass-through rule called directly with the
// same rule behind a RuleSwitch, from every P at once (the engine calls Decide concurrently).
func BenchmarkRuleSwitchOverhead(b *testing.B) {
	rule := enginetest.RouteTo("a")
	sw, err := engine.NewRuleSwitch("bench", engine.NewRuleVersion(rule, engine.RuleVersionOptions{ID: "v1"}), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer sw.Close(context.Background())
	ev := enginetest.NewEvent("bench", nil)
	for _, bc := range []struct {
		name string
		rule engine.Rule
	}{{"direct", rule}, {"switch", sw}} {
		b.Run(bc.name+"/serial", func(b *testing.B) {
			b.ReportAllocs()
			ctx := context.Background()
			for range b.N {
				if _, err := bc.rule.Decide(ctx, ev); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if _, err := bc.rule.Decide(ctx, ev); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkRuleSwitchPause measures the worst pause a swap causes to Decide under full load:
// every P calls Decide through the switch in a loop, timing each call, while (in "swapping")
// another goroutine swaps between two versions as fast as it can (a rollback loop: neither
// version is closed). It reports the slowest call (max-ns), the 99.99th percentile (p9999-ns)
// and the number of swaps made; compare "steady", the same load without swaps. A call's time
// includes whatever the scheduler does to it, so max-ns is noisy on a busy machine: compare
// the two cases from the same run.
func BenchmarkRuleSwitchPause(b *testing.B) {
	for _, swapping := range []bool{false, true} {
		name := "steady"
		if swapping {
			name = "swapping"
		}
		b.Run(name, func(b *testing.B) {
			v1 := engine.NewRuleVersion(enginetest.RouteTo("a"), engine.RuleVersionOptions{ID: "v1"})
			other := engine.NewRuleVersion(enginetest.RouteTo("a"), engine.RuleVersionOptions{ID: "v2"})
			sw, err := engine.NewRuleSwitch("bench", v1, nil)
			if err != nil {
				b.Fatal(err)
			}
			stop := make(chan struct{})
			var swaps atomic.Int64
			var swg sync.WaitGroup
			if swapping {
				until(&swg, stop, func() bool {
					prev, err := sw.Swap(other)
					if err != nil {
						b.Error(err)
						return false
					}
					other = prev
					swaps.Add(1)
					runtime.Gosched()
					return true
				})
			}
			ev := enginetest.NewEvent("bench", nil)
			var mu sync.Mutex
			var all latencies
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				var lat latencies // a histogram, not a slice: no allocation, no GC pause, in the loop
				for pb.Next() {
					t0 := time.Now()
					if _, err := sw.Decide(ctx, ev); err != nil {
						b.Error(err)
						return
					}
					lat.add(time.Since(t0))
				}
				mu.Lock()
				all.merge(&lat)
				mu.Unlock()
			})
			b.StopTimer()
			close(stop)
			swg.Wait()
			b.ReportMetric(float64(all.max), "max-ns")
			b.ReportMetric(float64(all.quantile(0.9999)), "p9999-ns")
			b.ReportMetric(float64(swaps.Load()), "swaps")
			ctx := context.Background()
			_ = other.Release(ctx)
			_ = sw.Close(ctx)
		})
	}
}

// latencies is a log-linear histogram of durations in nanoseconds: 8 buckets per power of two
// (12.5% resolution), plus the exact maximum.
type latencies struct {
	n      int64
	max    int64
	counts [64 * 8]int64
}

func latencyBucket(ns int64) int {
	if ns < 8 {
		return int(max(ns, 0))
	}
	hi := bits.Len64(uint64(ns)) - 1 // ns is in [2^hi, 2^(hi+1))
	return hi*8 + int(ns>>(hi-3)&7)
}

// bucketUpper is the largest duration bucket i holds.
func bucketUpper(i int) int64 {
	if i < 8 {
		return int64(i)
	}
	hi, sub := i/8, int64(i%8)
	return (8+sub+1)<<(hi-3) - 1
}

func (l *latencies) add(d time.Duration) {
	ns := d.Nanoseconds()
	l.n++
	l.max = max(l.max, ns)
	l.counts[latencyBucket(ns)]++
}

func (l *latencies) merge(o *latencies) {
	l.n += o.n
	l.max = max(l.max, o.max)
	for i, c := range o.counts {
		l.counts[i] += c
	}
}

// quantile returns the upper bound of the bucket holding the q-quantile.
func (l *latencies) quantile(q float64) int64 {
	want := int64(q * float64(l.n))
	var seen int64
	for i, c := range l.counts {
		seen += c
		if seen > want {
			return min(bucketUpper(i), l.max)
		}
	}
	return l.max
}

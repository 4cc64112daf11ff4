package spool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/engine/enginetest"
	"github.com/turnout-router/turnout/internal/ce"
	"github.com/turnout-router/turnout/internal/testutil"
)

func TestForwardsInOrderUnchanged(t *testing.T) {
	sink := newSwitchSink()
	s := open(t, t.TempDir(), Config{InFlight: 1}, sink)
	const n = 500
	sendAll(t, s, 0, n)
	testutil.WaitFor(t, "every event forwarded", 10*time.Second, func() bool { return len(sink.Confirmed()) == n })
	for i, got := range sink.Confirmed() {
		if d := ce.Diff(testEvent(i), got); len(d) > 0 {
			t.Fatalf("event %d changed on its way through the spool: %v", i, d)
		}
	}
	if v := s.metric(t, "turnout_spool_forwarded_total", nil); v != n {
		t.Errorf("forwarded_total = %v, want %d", v, n)
	}
	if v := s.metric(t, "turnout_spool_written_total", nil); v != n {
		t.Errorf("written_total = %v, want %d", v, n)
	}
	testutil.WaitFor(t, "events gauge back to 0", time.Second, func() bool { return s.metric(t, "turnout_spool_events", nil) == 0 })
}

// The output is down: Send still confirms, the events wait on disk, the gauges say so; once the
// output is back everything goes out and the space is given back.
func TestOutageThenRecovery(t *testing.T) {
	sink := newSwitchSink()
	sink.down.Store(true)
	s := open(t, t.TempDir(), Config{MaxBytes: size(4 << 20)}, sink)
	const n = 3000
	sendAll(t, s, 0, n)
	if v := s.metric(t, "turnout_spool_events", nil); v != n {
		t.Errorf("events gauge = %v during the outage, want %d", v, n)
	}
	full := s.metric(t, "turnout_spool_bytes", nil)
	if full < n*100 {
		t.Errorf("bytes gauge = %v for %d events", full, n)
	}
	testutil.WaitFor(t, "a failed forwarding attempt", 5*time.Second, func() bool {
		return s.metric(t, "turnout_spool_forward_errors_total", nil) > 0
	})
	time.Sleep(20 * time.Millisecond)
	if age := s.metric(t, "turnout_spool_oldest_event_age_seconds", nil); age <= 0 {
		t.Errorf("oldest event age = %v during the outage, want > 0", age)
	}
	if !s.Ready() {
		t.Error("spool not ready during an outage of its output; it should keep taking events")
	}
	sink.down.Store(false)
	testutil.WaitFor(t, "every event forwarded", 30*time.Second, func() bool { return s.metric(t, "turnout_spool_forwarded_total", nil) == n })
	assertEach(t, sink.ids(), 0, n)
	testutil.WaitFor(t, "the space given back", 5*time.Second, func() bool {
		return s.metric(t, "turnout_spool_bytes", nil) <= float64(s.cfg.segmentBytes)+hdrSize+1024
	})
	if age := s.metric(t, "turnout_spool_oldest_event_age_seconds", nil); age != 0 {
		t.Errorf("oldest event age = %v with nothing waiting", age)
	}
	noDamage(t, s)
}

// assertEach fails unless ids holds every id of from..to-1, each at least once, and no other.
func assertEach(t testing.TB, ids []string, from, to int) {
	t.Helper()
	seen := map[string]int{}
	for _, id := range ids {
		seen[id]++
	}
	var missing []string
	for i := from; i < to; i++ {
		id := testEvent(i).ID()
		if seen[id] == 0 {
			missing = append(missing, id)
		}
		delete(seen, id)
	}
	if len(missing) > 0 {
		t.Errorf("%d events never forwarded, first %v", len(missing), missing[:min(5, len(missing))])
	}
	if len(seen) > 0 {
		t.Errorf("%d events forwarded that were never sent: %v", len(seen), seen)
	}
}

func TestRestartResumes(t *testing.T) {
	dir := t.TempDir()
	t.Run("after an outage", func(t *testing.T) {
		down := newSwitchSink()
		down.down.Store(true)
		s := open(t, dir, Config{MaxBytes: size(2 << 20)}, down)
		sendAll(t, s, 0, 2000)
		if err := s.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if down.Closes() != 1 {
			t.Errorf("wrapped output closed %d times, want 1", down.Closes())
		}
		up := newSwitchSink()
		s2 := open(t, dir, Config{MaxBytes: size(2 << 20)}, up)
		if v := s2.metric(t, "turnout_spool_events", nil); v > 2000 || v < 1 {
			t.Errorf("events gauge after restart = %v", v)
		}
		testutil.WaitFor(t, "the backlog forwarded after restart", 20*time.Second, func() bool { return len(up.Confirmed()) >= 2000 })
		assertEach(t, up.ids(), 0, 2000)
		if len(up.Confirmed()) != 2000 {
			t.Errorf("%d events forwarded for 2000 spooled: nothing had been confirmed before, so no duplicates expected", len(up.Confirmed()))
		}
		noDamage(t, s2)
		if err := s2.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("after everything was confirmed", func(t *testing.T) {
		up := newSwitchSink()
		s := open(t, dir, Config{MaxBytes: size(2 << 20)}, up)
		time.Sleep(100 * time.Millisecond)
		if n := len(up.Confirmed()); n != 0 {
			t.Errorf("%d events forwarded again after a clean stop; the cursor should have held them back", n)
		}
		sendAll(t, s, 2000, 2100)
		testutil.WaitFor(t, "new events forwarded", 5*time.Second, func() bool { return len(up.Confirmed()) == 100 })
		assertEach(t, up.ids(), 2000, 2100)
		noDamage(t, s)
	})
}

// A restart whose cursor lies inside a segment forwards exactly the events after it.
func TestRestartInsideASegment(t *testing.T) {
	dir := t.TempDir()
	half := &enginetest.Sink{Fail: func(_ context.Context, _ int, e *event.Event) error {
		if i, _ := eventNumber(e.ID()); i >= 50 {
			return outputDown
		}
		return nil
	}}
	s := open(t, dir, Config{InFlight: 1}, half)
	sendAll(t, s, 0, 100)
	testutil.WaitFor(t, "the first 50 forwarded", 5*time.Second, func() bool { return len(half.Confirmed()) == 50 })
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if segs := segments(t, dir); len(segs) != 1 {
		t.Fatalf("%d segments, want the 100 events in one", len(segs))
	}
	up := newSwitchSink()
	s2 := open(t, dir, Config{InFlight: 1}, up)
	testutil.WaitFor(t, "the other 50 forwarded", 5*time.Second, func() bool { return len(up.Confirmed()) >= 50 })
	time.Sleep(50 * time.Millisecond)
	assertEach(t, up.ids(), 50, 100)
	if n := len(up.Confirmed()); n != 50 {
		t.Errorf("%d events forwarded after the restart, want exactly the 50 after the cursor", n)
	}
	noDamage(t, s2)
}

// Two processes must never write one spool.
func TestSecondSpoolOnADirectoryIsRefused(t *testing.T) {
	dir := t.TempDir()
	open(t, dir, Config{}, newSwitchSink())
	_, err := tryOpen(t, dir, Config{}, newSwitchSink())
	if err == nil {
		t.Fatal("a second spool opened the same directory")
	}
	if !strings.Contains(err.Error(), "in use by another process") || !strings.Contains(err.Error(), fmt.Sprint(os.Getpid())) {
		t.Errorf("error %q does not say the directory is in use and by which pid", err)
	}
}

func TestFull(t *testing.T) {
	for _, tt := range []struct {
		name     string
		whenFull string
	}{{"block", WhenFullBlock}, {"dead_letter", WhenFullDeadLetter}} {
		t.Run(tt.name, func(t *testing.T) {
			sink := newSwitchSink()
			sink.down.Store(true)
			s := open(t, t.TempDir(), Config{MaxBytes: size(1 << 20), WhenFull: tt.whenFull}, sink)
			// Fill it: ~1000-byte events until one is refused.
			big := func(i int) *event.Event {
				e := testEvent(i)
				_ = e.SetData("application/octet-stream", make([]byte, 1000))
				return e
			}
			var sent int
			var refused error
			for i := 0; i < 5000 && refused == nil; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				refused = s.Send(ctx, big(i))
				cancel()
				if refused == nil {
					sent++
				}
			}
			if refused == nil {
				t.Fatal("a 1MiB spool took 5000 events of 1000 bytes")
			}
			if used := s.metric(t, "turnout_spool_bytes", nil); used > 1<<20 {
				t.Errorf("spool holds %v bytes, above max_bytes", used)
			}
			if s.Ready() {
				t.Error("a full spool reports ready")
			}
			action := map[string]string{WhenFullBlock: "blocked", WhenFullDeadLetter: "dead_lettered"}[tt.whenFull]
			if v := s.metric(t, "turnout_spool_full_total", map[string]string{"action": action}); v != 1 {
				t.Errorf("turnout_spool_full_total{action=%s} = %v, want 1", action, v)
			}
			switch tt.whenFull {
			case WhenFullBlock:
				if !errors.Is(refused, context.DeadlineExceeded) || engine.IsPermanent(refused) {
					t.Errorf("block: Send = %v, want a retryable wait that ended with its context", refused)
				}
				// A Send that waits long enough goes through once the output is back.
				done := make(chan error, 1)
				go func() { done <- s.Send(context.Background(), big(100000)) }()
				select {
				case err := <-done:
					t.Fatalf("Send returned %v while the spool is full", err)
				case <-time.After(300 * time.Millisecond):
				}
				sink.down.Store(false)
				select {
				case err := <-done:
					if err != nil {
						t.Fatalf("blocked Send: %v", err)
					}
				case <-time.After(20 * time.Second):
					t.Fatal("blocked Send did not go through after the output came back")
				}
			case WhenFullDeadLetter:
				if !errors.Is(refused, ErrFull) || !engine.IsPermanent(refused) {
					t.Errorf("dead_letter: Send = %v, want a permanent error wrapping ErrFull", refused)
				}
				sink.down.Store(false)
			}
			testutil.WaitFor(t, "the spooled events forwarded", 20*time.Second, func() bool {
				return s.metric(t, "turnout_spool_events", nil) == 0
			})
			if !s.Ready() {
				t.Error("spool not ready again once emptied")
			}
		})
	}
}

func TestMaxAge(t *testing.T) {
	sink := newSwitchSink()
	sink.down.Store(true)
	s := open(t, t.TempDir(), Config{MaxAge: time.Hour, WhenFull: WhenFullDeadLetter}, sink)
	var mu sync.Mutex
	now := time.Now()
	s.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	sendAll(t, s, 0, 10)
	testutil.WaitFor(t, "the oldest event in flight", 5*time.Second, func() bool { return s.oldestAt.Load() != 0 })
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	err := s.Send(context.Background(), testEvent(10))
	if !errors.Is(err, ErrFull) {
		t.Fatalf("Send with the oldest event 2h old and max_age 1h = %v, want ErrFull", err)
	}
	if !strings.Contains(err.Error(), "oldest event 2h0m0s old") {
		t.Errorf("error %q does not say how old the oldest event is", err)
	}
	sink.down.Store(false)
	testutil.WaitFor(t, "the backlog forwarded", 10*time.Second, func() bool { return s.metric(t, "turnout_spool_events", nil) == 0 })
	if err := s.Send(context.Background(), testEvent(11)); err != nil {
		t.Errorf("Send once the old events left: %v", err)
	}
}

// An event the output refuses for good is kept in rejected.jsonl, counted, and the spool moves
// on instead of stalling the events behind it.
func TestPermanentRefusalIsKept(t *testing.T) {
	sink := &enginetest.Sink{Fail: func(_ context.Context, _ int, e *event.Event) error {
		if e.ID() == testEvent(3).ID() {
			return engine.Permanent(errors.New("message too large for the broker"))
		}
		return nil
	}}
	s := open(t, t.TempDir(), Config{InFlight: 1}, sink)
	sendAll(t, s, 0, 10)
	testutil.WaitFor(t, "the others forwarded", 5*time.Second, func() bool { return len(sink.Confirmed()) == 9 })
	if v := s.metric(t, "turnout_spool_rejected_total", nil); v != 1 {
		t.Errorf("rejected_total = %v, want 1", v)
	}
	b, err := os.ReadFile(filepath.Join(s.Dir(), rejectedFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"id":"ev-000003"`) || !strings.Contains(string(b), "message too large for the broker") {
		t.Errorf("rejected.jsonl does not hold the event and its reason:\n%s", b)
	}
}

func TestSendErrors(t *testing.T) {
	s := open(t, t.TempDir(), Config{MaxBytes: size(1 << 20)}, newSwitchSink())
	t.Run("larger than the spool", func(t *testing.T) {
		e := testEvent(1)
		_ = e.SetData("application/octet-stream", make([]byte, 2<<20))
		if err := s.Send(context.Background(), e); !engine.IsPermanent(err) {
			t.Errorf("Send of an event larger than max_bytes = %v, want a permanent error", err)
		}
	})
	t.Run("invalid event", func(t *testing.T) {
		e := event.New()
		if err := s.Send(context.Background(), &e); !engine.IsPermanent(err) {
			t.Errorf("Send of an invalid event = %v, want a permanent error", err)
		}
	})
	t.Run("after close", func(t *testing.T) {
		if err := s.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := s.Send(context.Background(), testEvent(2)); err == nil || engine.IsPermanent(err) {
			t.Errorf("Send after Close = %v, want a retryable error", err)
		}
	})
}

// With fsync: batch an event is confirmed before its fsync; the periodic fsync still runs.
func TestFsyncBatch(t *testing.T) {
	sink := newSwitchSink()
	s := open(t, t.TempDir(), Config{Fsync: FsyncBatch, FsyncInterval: 20 * time.Millisecond}, sink)
	sendAll(t, s, 0, 50)
	testutil.WaitFor(t, "a periodic fsync", 5*time.Second, func() bool { return s.metric(t, "turnout_spool_fsync_seconds_count", nil) > 0 || fsyncCount(t, s) > 0 })
	testutil.WaitFor(t, "events forwarded", 5*time.Second, func() bool { return len(sink.Confirmed()) == 50 })
}

func fsyncCount(t testing.TB, s *testSpool) float64 {
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "turnout_spool_fsync_seconds" {
			return float64(mf.GetMetric()[0].GetHistogram().GetSampleCount())
		}
	}
	return 0
}

// Through the engine: a route whose output is spooled acknowledges its input while the output
// is down; with when_full: dead_letter a full spool sends the event to the dead-letter output.
func TestEngineRoute(t *testing.T) {
	sink := newSwitchSink()
	sink.down.Store(true)
	sp, err := build(t, t.TempDir(), Config{MaxBytes: size(1 << 20), WhenFull: WhenFullDeadLetter}, sink)
	if err != nil {
		t.Fatal(err)
	}
	dlq := &enginetest.Sink{}
	src := &enginetest.Source{}
	e := engine.New(engine.Options{})
	if err := e.AddRoute(engine.Route{
		Config:         engine.RouteConfig{Name: "care", Retry: engine.RetryPolicy{MaxAttempts: 2, InitialBackoff: time.Millisecond, MaxBackoff: time.Millisecond}},
		Inputs:         map[string]engine.Source{"pendants": src},
		Outputs:        map[string]engine.Sink{"uplink": sp},
		DeadLetter:     dlq,
		DeadLetterName: "dlq",
		Rule:           enginetest.RouteTo("uplink"),
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown(context.Background())
	ctx := context.Background()
	acked := 0
	for i := 0; len(dlq.Confirmed()) == 0 && i < 3000; i++ {
		ev := testEvent(i)
		_ = ev.SetData("application/octet-stream", make([]byte, 1000))
		st, err := src.Send(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err, ok := st.Wait(wctx)
		cancel()
		if !ok || err != nil {
			t.Fatalf("event %d: settled %v, %v; want acknowledged (spooled or dead-lettered)", i, ok, err)
		}
		acked++
	}
	if len(dlq.Confirmed()) == 0 {
		t.Fatal("the spool never filled up")
	}
	if got := dlq.Confirmed()[0].Extensions()[engine.ExtError]; !strings.Contains(fmt.Sprint(got), "spool full") {
		t.Errorf("dead letter's reason = %q, want it to say the spool is full", got)
	}
	t.Logf("%d events acknowledged while the output was down, %d of them dead-lettered", acked, len(dlq.Confirmed()))
}

// An output that says it is not connected is not tried at all; once it is back, the spool
// forwards at once instead of after a backoff grown during the outage.
func TestWaitsForAReadyOutput(t *testing.T) {
	sink := &enginetest.Sink{}
	sink.NotReady.Store(true)
	s := open(t, t.TempDir(), Config{}, sink)
	sendAll(t, s, 0, 20)
	time.Sleep(300 * time.Millisecond)
	if n := sink.Sends(); n != 0 {
		t.Errorf("%d sends to an output that is not ready", n)
	}
	sink.NotReady.Store(false)
	testutil.WaitFor(t, "the events forwarded once the output is ready", 2*time.Second, func() bool { return len(sink.Confirmed()) == 20 })
}

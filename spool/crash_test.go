package spool

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/internal/testutil"
)

// TestCrash kills a process that spools events (its output down) with SIGKILL at random
// moments, three times, then opens the spool with the output up: every event the killed
// processes saw confirmed is forwarded.
func TestCrash(t *testing.T) {
	if os.Getenv("SPOOL_CRASH_CHILD") != "" {
		t.Skip("runs as the parent only")
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(3, uint64(time.Now().UnixNano())))
	confirmed := map[int]bool{}
	next := 0
	for round, fsync := range []string{FsyncAlways, FsyncBatch, FsyncAlways} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.v")
		cmd.Env = append(os.Environ(), "SPOOL_CRASH_CHILD="+dir, "SPOOL_CRASH_FROM="+strconv.Itoa(next), "SPOOL_CRASH_FSYNC="+fsync)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		kill := time.After(time.Duration(100+rng.IntN(400)) * time.Millisecond)
		started := false
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				if n, found := strings.CutPrefix(l, "confirmed "); found {
					i, _ := strconv.Atoi(n)
					confirmed[i] = true
					next = max(next, i+1)
					started = true
				}
			case <-kill:
				if !started {
					kill = time.After(50 * time.Millisecond)
					continue
				}
				_ = cmd.Process.Signal(syscall.SIGKILL)
				kill = nil
			}
		}
		_ = cmd.Wait()
		next += 1000 // the killed process may have spooled events it did not get to report
		t.Logf("round %d (fsync %s): %d events confirmed so far", round, fsync, len(confirmed))
	}
	got, s := delivered(t, dir, Config{MaxBytes: size(64 << 20)})
	noDamage(t, s)
	seen := checkNoGarbage(t, got, next)
	for i := range confirmed {
		if !seen[i] {
			t.Errorf("event %d was confirmed by a killed process and never forwarded", i)
		}
	}
	t.Logf("%d confirmed events, %d forwarded after the kills", len(confirmed), len(got))
}

// TestCrashChild is the process TestCrash kills: it spools events to an output that is down,
// eight at a time, and prints each number once Send confirmed it.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv("SPOOL_CRASH_CHILD")
	if dir == "" {
		t.Skip("started by TestCrash")
	}
	from, _ := strconv.Atoi(os.Getenv("SPOOL_CRASH_FROM"))
	sink := newSwitchSink()
	sink.down.Store(true)
	s := open(t, dir, Config{MaxBytes: size(64 << 20), Fsync: os.Getenv("SPOOL_CRASH_FSYNC")}, sink)
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	var n atomic.Int64
	n.Store(int64(from))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				i := int(n.Add(1) - 1)
				if err := s.Send(context.Background(), testEvent(i)); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				fmt.Fprintf(w, "confirmed %d\n", i)
				w.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// TestHammer: many senders, an output that fails now and then, a small spool that fills up
// (when_full: block), and restarts of the spool while all of that goes on. Every event a Send
// confirmed is forwarded in the end.
func TestHammer(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{MaxBytes: size(1 << 20), InFlight: 8}
	var flaky atomic.Bool
	flaky.Store(true)
	newSink := func() *switchSink {
		s := newSwitchSink()
		s.Fail = func(ctx context.Context, _ int, _ *event.Event) error {
			if flaky.Load() && rand.IntN(4) == 0 {
				return outputDown
			}
			return nil
		}
		return s
	}
	var (
		cur       atomic.Pointer[testSpool]
		sinksMu   sync.Mutex
		sinks     []*switchSink
		confirmed idSet
		wg        sync.WaitGroup
		stop      atomic.Bool
	)
	openFast := func(sk *switchSink) (*testSpool, error) {
		s, err := build(t, dir, cfg, sk)
		if err != nil {
			return nil, err
		}
		s.retryInitial, s.retryMax = time.Millisecond, 20*time.Millisecond
		return s, s.Start(context.Background())
	}
	first := newSink()
	sinks = append(sinks, first)
	s0, err := openFast(first)
	if err != nil {
		t.Fatal(err)
	}
	cur.Store(s0)
	const senders, each = 16, 300
	for g := range senders {
		wg.Go(func() {
			for i := 0; i < each; {
				e := testEvent(g*each + i)
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				err := cur.Load().Send(ctx, e)
				cancel()
				if err != nil {
					if t.Failed() {
						return
					}
					time.Sleep(time.Millisecond) // closed for a restart, or full: try again, as the engine does
					continue
				}
				confirmed.add(e.ID())
				i++
			}
		})
	}
	restarts := 0
	restarter := make(chan struct{})
	go func() {
		defer close(restarter)
		for !stop.Load() && restarts < 4 {
			time.Sleep(150 * time.Millisecond)
			old := cur.Load()
			if err := old.Close(context.Background()); err != nil {
				t.Error(err)
			}
			sk := newSink()
			sinksMu.Lock()
			sinks = append(sinks, sk)
			sinksMu.Unlock()
			s, err := openFast(sk)
			if err != nil {
				t.Error(err) // the senders then fail and the test ends
				return
			}
			cur.Store(s)
			restarts++
		}
	}()
	wg.Wait()
	stop.Store(true)
	flaky.Store(false)
	<-restarter
	last := cur.Load()
	testutil.WaitFor(t, "the spool emptied", 60*time.Second, func() bool { return last.events.Load() == 0 })
	noDamage(t, last)
	forwarded := map[string]bool{}
	for _, sk := range sinks {
		for _, id := range sk.ids() {
			forwarded[id] = true
		}
	}
	confirmed.mu.Lock()
	defer confirmed.mu.Unlock()
	if len(confirmed.n) != senders*each {
		t.Fatalf("%d events confirmed, want %d", len(confirmed.n), senders*each)
	}
	for id := range confirmed.n {
		if !forwarded[id] {
			t.Errorf("event %s confirmed by the spool and never forwarded", id)
		}
	}
	t.Logf("%d events through %d restarts", len(confirmed.n), restarts)
}

// Package spool is turnout's store-and-forward: a durable log on local disk in front of an
// output, so that the inputs keep being acknowledged while the output is unreachable for hours,
// and what was acknowledged survives a crash or a power cut.
//
// A Spool wraps an output's engine.Sink and is itself the engine.Sink the routes send to. Send
// confirms an event once it is appended to the log (and fsynced, with fsync: always); a
// forwarder goroutine then sends the log's events to the real output in order, retrying each
// until the output confirms it, and deletes a segment of the log only once every event in it
// was confirmed. After a restart the spool forwards again from its cursor (the last position
// it knows confirmed): some events may go out twice, none is skipped.
//
// Invariant (at-least-once across the spool): an event Send confirmed stays in the log until
// the output confirmed it, or it was refused by the output as permanently undeliverable, in
// which case it is written to rejected.jsonl in the spool's directory (counted and logged). A
// torn or damaged part of the log (CRC per record) is cut off at start and never forwarded as
// an event. When the spool is full, new events are refused according to when_full, never
// dropped: "block" makes Send wait (the engine sees an output that does not confirm, as
// without a spool), "dead_letter" makes Send fail at once as engine.Permanent, which sends the
// event to the route's dead-letter output.
//
// Lifecycle: New checks the configuration (touching nothing on disk), Start opens (creating,
// locking and recovering) the directory and starts the wrapped output and the forwarder, Close
// stops both and closes the wrapped output.
package spool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/ce"
)

var (
	_ engine.Sink    = (*Spool)(nil)
	_ engine.Starter = (*Spool)(nil)
	_ engine.Readier = (*Spool)(nil)
)

// ErrFull is what Send returns (wrapped, and as engine.Permanent) for an event that does not fit
// a spool whose when_full is dead_letter.
var ErrFull = errors.New("spool full")

// errClosed is Send's error after Close.
var errClosed = errors.New("spool closed")

// Forwarding backoff between attempts of one event.
const (
	retryInitial = 100 * time.Millisecond
	retryMax     = 10 * time.Second
	// cursorEvery is how often the forwarder stores its cursor when it moved.
	cursorEvery = 250 * time.Millisecond
	// blockedRecheck is how often a blocked writer looks at max_age again.
	blockedRecheck = time.Second
)

// Spool is a durable log in front of an output. Build it with New; the engine calls Start once,
// Send from many goroutines, and Close once after its last Send.
type Spool struct {
	name string
	cfg  settings
	sink engine.Sink
	log  *slog.Logger
	m    *metrics
	reg  prometheus.Registerer

	now func() time.Time // injectable for tests of max_age
	// Forwarding backoff between attempts of one event; tests shorten it.
	retryInitial, retryMax time.Duration

	// mu guards the fields below it. The writer holds it only to take the pending requests and
	// to publish what it wrote; the forwarder to read segs and to delete segments.
	mu       sync.Mutex
	segs     []*segment
	used     int64 // bytes of every segment file
	pending  []*appendReq
	started  bool
	closed   bool
	failed   error // the log cannot be written any more (a write failed and could not be undone)
	lock     *os.File
	notifier chan struct{} // capacity 1: the writer published records (forwarder wakes)
	wake     chan struct{} // capacity 1: there are pending requests (writer wakes)
	space    chan struct{} // capacity 1: the forwarder freed space (writer wakes)

	// Writer state, owned by the writer goroutine after Start.
	active   *os.File
	activeSg *segment
	next     uint64 // sequence number of the next record
	wbuf     []byte
	dirty    bool // written since the last fsync (fsync: batch)

	acked    atomic.Uint64 // every record with seq <= acked is confirmed
	events   atomic.Int64  // records above acked
	oldestAt atomic.Int64  // spool time of the oldest record being forwarded, 0 when none
	failing  atomic.Bool   // the last forwarding attempt failed (logged once per episode)
	refusing atomic.Bool   // the writer found the spool full and has not found room since

	stopWriter chan struct{}
	writerDone chan struct{}
	stopFwd    context.CancelFunc
	fwdDone    chan struct{}
	rejectMu   sync.Mutex // serialises appends to rejected.jsonl
}

// appendReq is one Send waiting for the writer.
type appendReq struct {
	ctx     context.Context
	data    []byte
	id      string
	done    chan error // capacity 1
	blocked bool       // counted once as blocked
}

// New checks cfg and wraps sink, which must not be started or closed by anyone else from here.
// Relative directories are resolved against deps.DataDir. It registers the spool's metrics on
// deps.Registerer and touches nothing on disk. Errors are *KeyError values (joined) naming the
// key.
func New(name string, cfg Config, sink engine.Sink, deps engine.Deps) (*Spool, error) {
	s, err := cfg.check(deps.DataDir)
	if err != nil {
		return nil, err
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sp := &Spool{
		name: name, cfg: s, sink: sink, log: log.With("output", name, "component", "spool"),
		now: time.Now, reg: deps.Registerer, retryInitial: retryInitial, retryMax: retryMax,
		notifier: make(chan struct{}, 1), wake: make(chan struct{}, 1), space: make(chan struct{}, 1),
		stopWriter: make(chan struct{}), writerDone: make(chan struct{}), fwdDone: make(chan struct{}),
	}
	sp.m = newMetrics(sp)
	if sp.reg != nil {
		if err := sp.reg.Register(sp.m); err != nil {
			return nil, fmt.Errorf("spool %s: register metrics: %w", name, err)
		}
	}
	return sp, nil
}

// Dir returns the spool's directory, resolved.
func (s *Spool) Dir() string { return s.cfg.dir }

// Start creates and locks the spool's directory, recovers its log (cutting off a torn tail),
// starts the wrapped output, then the writer and the forwarder. Errors name the directory.
func (s *Spool) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return fmt.Errorf("spool %s: started twice or after Close", s.name)
	}
	if err := os.MkdirAll(s.cfg.dir, 0o700); err != nil {
		return fmt.Errorf("spool %s: create %s: %w", s.name, s.cfg.dir, err)
	}
	lock, err := lockDir(s.cfg.dir)
	if err != nil {
		return fmt.Errorf("spool %s: %w", s.name, err)
	}
	rec, err := recoverDir(s.cfg.dir)
	if err == nil {
		err = s.openLog(rec)
	}
	if err != nil {
		lock.Close()
		return fmt.Errorf("spool %s: open %s: %w", s.name, s.cfg.dir, err)
	}
	s.lock = lock
	if st, ok := s.sink.(engine.Starter); ok {
		if err := st.Start(ctx); err != nil {
			s.active.Close()
			lock.Close()
			return err
		}
	}
	s.started = true
	fctx, cancel := context.WithCancel(context.Background())
	s.stopFwd = cancel
	go s.writer()
	go s.forward(fctx)
	return nil
}

// openLog takes over what recovery found and opens the last segment for appending (or creates
// the first one). Called with s.mu held, before the goroutines start.
func (s *Spool) openLog(rec *recovery) error {
	for _, n := range rec.notes {
		s.log.Error("spool log repaired", "dir", s.cfg.dir, "repair", n)
	}
	s.m.discarded.Add(float64(rec.discarded))
	s.segs = rec.segs
	s.acked.Store(rec.acked)
	s.events.Store(rec.pending)
	s.next = rec.acked + 1
	for _, sg := range s.segs {
		s.used += sg.size
		s.next = max(s.next, sg.last+1, sg.first)
	}
	if len(s.segs) > 0 {
		last := s.segs[len(s.segs)-1]
		f, err := os.OpenFile(last.path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		s.active, s.activeSg = f, last
	} else {
		f, sg, err := createSegment(s.cfg.dir, s.next)
		if err != nil {
			return err
		}
		s.active, s.activeSg = f, sg
		s.segs = []*segment{sg}
		s.used = sg.size
	}
	s.log.Info("spool open", "dir", s.cfg.dir, "events", rec.pending, "bytes", s.used, "segments", len(s.segs),
		"fsync", map[bool]string{true: FsyncAlways, false: FsyncBatch}[s.cfg.fsyncAlways])
	return nil
}

// Ready reports whether the spool takes events: started, not closed, its log writable, and not
// found full by the last event that came (until events leave it). It does not depend on the
// wrapped output, whose state its own metrics show.
func (s *Spool) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started && !s.closed && s.failed == nil && !s.refusing.Load()
}

// Send appends e to the log and returns nil once it is written (and fsynced, with fsync:
// always). It is called concurrently by the engine; concurrent events share one write and one
// fsync. Errors: an event that cannot be encoded, or larger than the spool, is engine.Permanent;
// a full spool with when_full: dead_letter is engine.Permanent wrapping ErrFull; a write or
// fsync failure, or ctx ending (a full spool with when_full: block waits for room until ctx
// ends), is retryable. When ctx ends first, the event may still be written and forwarded: the
// engine's retry then makes a duplicate, never a loss.
func (s *Spool) Send(ctx context.Context, e *event.Event) error {
	if err := e.Validate(); err != nil {
		return engine.Permanent(fmt.Errorf("spool %s: invalid event %s: %w", s.name, e.ID(), err))
	}
	data, err := ce.EncodeStructured(e)
	if err != nil {
		return engine.Permanent(fmt.Errorf("spool %s: encode event %s: %w", s.name, e.ID(), err))
	}
	if hdrSize+len(data) > maxPayload || int64(hdrSize+len(data)+len(segMagic)) > s.cfg.maxBytes {
		return engine.Permanent(fmt.Errorf("spool %s: event %s is %d bytes, more than the spool can hold", s.name, e.ID(), len(data)))
	}
	r := &appendReq{ctx: ctx, data: data, id: e.ID(), done: make(chan error, 1)}
	s.mu.Lock()
	switch {
	case s.closed || !s.started:
		s.mu.Unlock()
		return fmt.Errorf("spool %s: send %s: %w", s.name, e.ID(), errClosed)
	case s.failed != nil:
		err := s.failed
		s.mu.Unlock()
		return fmt.Errorf("spool %s: send %s: log unusable: %w", s.name, e.ID(), err)
	}
	s.pending = append(s.pending, r)
	s.mu.Unlock()
	signal(s.wake)
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("spool %s: send %s: %w", s.name, e.ID(), ctx.Err())
	}
}

// signal wakes the goroutine waiting on c, without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// fullLocked reports whether n more bytes would overfill the spool, or its oldest waiting event
// is older than max_age. s.mu must be held.
func (s *Spool) fullLocked(n int64) bool {
	if s.used+n > s.cfg.maxBytes {
		return true
	}
	if s.cfg.maxAge > 0 {
		if at := s.oldestAt.Load(); at != 0 && s.now().Sub(time.Unix(0, at)) > s.cfg.maxAge {
			return true
		}
	}
	return false
}

// writer appends pending requests to the log until Close. It runs on its own goroutine, the only
// one writing segment files.
func (s *Spool) writer() {
	defer close(s.writerDone)
	var (
		blocked []*appendReq
		syncC   <-chan time.Time
		recheck <-chan time.Time
	)
	if !s.cfg.fsyncAlways {
		t := time.NewTicker(s.cfg.fsyncInterval)
		defer t.Stop()
		syncC = t.C
	}
	for {
		select {
		case <-s.wake:
		case <-s.space:
		case <-recheck:
		case <-syncC:
			s.syncActive()
			continue
		case <-s.stopWriter:
			s.mu.Lock()
			reqs := append(blocked, s.pending...)
			s.pending = nil
			s.mu.Unlock()
			for _, r := range reqs {
				r.done <- fmt.Errorf("spool %s: send %s: %w", s.name, r.id, errClosed)
			}
			s.syncActive()
			return
		}
		s.mu.Lock()
		reqs := append(blocked, s.pending...)
		s.pending = nil
		if len(reqs) == 0 && s.refusing.Load() && !s.fullLocked(hdrSize) {
			s.refusing.Store(false) // room again, though no event came to find out
		}
		s.mu.Unlock()
		blocked = s.appendBatch(reqs)
		recheck = nil
		if len(blocked) > 0 && s.cfg.maxAge > 0 {
			recheck = time.After(blockedRecheck)
		}
	}
}

// appendBatch writes the requests it can, in order, with one write per segment and one fsync,
// and answers them. It returns the requests that wait for room (when_full: block), in order.
// Called on the writer goroutine.
func (s *Spool) appendBatch(reqs []*appendReq) (blocked []*appendReq) {
	buf := s.wbuf[:0]
	var batch []*appendReq
	now := s.now().UnixNano()
	for i, r := range reqs {
		if err := r.ctx.Err(); err != nil {
			r.done <- err // the caller is gone: not written, it is retried by the engine
			continue
		}
		size := int64(hdrSize + len(r.data))
		s.mu.Lock()
		full := s.fullLocked(int64(len(buf)) + size)
		s.mu.Unlock()
		if full {
			s.refusing.Store(true)
			if s.cfg.deadLetter {
				s.m.fullDeadLettered.Inc()
				r.done <- engine.Permanent(fmt.Errorf("spool %s: event %s: %w (%s of %s, oldest event %s old)",
					s.name, r.id, ErrFull, fmtBytes(s.usedBytes()), fmtBytes(s.cfg.maxBytes), s.oldestAge().Round(time.Second)))
				continue
			}
			for _, b := range reqs[i:] {
				if !b.blocked {
					b.blocked = true
					s.m.fullBlocked.Inc()
				}
			}
			s.flush(buf, batch)
			return reqs[i:]
		}
		if s.activeSg.size+int64(len(buf)) > int64(len(segMagic)) && s.activeSg.size+int64(len(buf))+size > s.cfg.segmentBytes {
			s.flush(buf, batch)
			buf, batch = buf[:0], nil
			if err := s.rotate(); err != nil {
				s.fail(fmt.Errorf("start a new segment: %w", err))
				for _, b := range reqs[i:] {
					b.done <- fmt.Errorf("spool %s: send %s: %w", s.name, b.id, err)
				}
				return nil
			}
		}
		buf = appendRecord(buf, s.next, now, r.data)
		s.next++
		batch = append(batch, r)
	}
	s.flush(buf, batch)
	s.wbuf = buf[:0]
	return nil
}

// flush writes buf, the records of batch, to the active segment, fsyncs it (fsync: always),
// publishes the records to the forwarder and answers batch. On a failure the segment is cut back
// to where it was, so that no half-written record stays, and batch is answered with the error.
// Called on the writer goroutine.
func (s *Spool) flush(buf []byte, batch []*appendReq) {
	if len(batch) == 0 {
		return
	}
	sg := s.activeSg
	_, err := s.active.Write(buf)
	if err == nil && s.cfg.fsyncAlways {
		start := time.Now()
		if err = s.active.Sync(); err != nil {
			// After a failed fsync the kernel may have dropped the dirty pages and forgotten
			// the error: nothing written to this file can be trusted to be on disk.
			s.fail(fmt.Errorf("fsync %s: %w", sg.path, err))
		}
		s.m.fsync.Observe(time.Since(start).Seconds())
	}
	if err != nil {
		s.m.writeErrors.Inc()
		s.next -= uint64(len(batch))
		s.log.Error("spool write failed; the events are not confirmed and the engine retries them", "dir", s.cfg.dir, "err", err)
		if terr := s.active.Truncate(sg.size); terr != nil {
			s.fail(fmt.Errorf("write failed (%v), and cutting the segment back failed: %w", err, terr))
		}
		for _, r := range batch {
			r.done <- fmt.Errorf("spool %s: write %s: %w", s.name, sg.path, err)
		}
		return
	}
	s.dirty = !s.cfg.fsyncAlways
	s.mu.Lock()
	sg.size += int64(len(buf))
	sg.last = s.next - 1
	s.used += int64(len(buf))
	s.mu.Unlock()
	s.events.Add(int64(len(batch)))
	s.m.written.Add(float64(len(batch)))
	s.refusing.Store(false)
	signal(s.notifier)
	for _, r := range batch {
		r.done <- nil
	}
}

// rotate closes the active segment (fsynced) and starts the next one. Called on the writer
// goroutine.
func (s *Spool) rotate() error {
	if err := s.active.Sync(); err != nil {
		return err
	}
	s.dirty = false
	f, sg, err := createSegment(s.cfg.dir, s.next)
	if err != nil {
		return err
	}
	old := s.active
	s.mu.Lock()
	s.segs = append(s.segs, sg)
	s.used += sg.size
	s.active, s.activeSg = f, sg
	s.mu.Unlock()
	signal(s.notifier)
	return old.Close()
}

// syncActive fsyncs the active segment if it was written since (fsync: batch, and at Close).
func (s *Spool) syncActive() {
	if !s.dirty {
		return
	}
	start := time.Now()
	if err := s.active.Sync(); err != nil {
		s.m.writeErrors.Inc()
		s.log.Error("spool fsync failed", "dir", s.cfg.dir, "err", err)
		return
	}
	s.m.fsync.Observe(time.Since(start).Seconds())
	s.dirty = false
}

// fail marks the log unusable: Send fails from now on, and Ready is false.
func (s *Spool) fail(err error) {
	s.log.Error("spool log unusable until turnout restarts; sends fail", "dir", s.cfg.dir, "err", err)
	s.mu.Lock()
	s.failed = err
	s.mu.Unlock()
}

func (s *Spool) usedBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// oldestAge is how long the oldest event being forwarded has waited; 0 when none is.
func (s *Spool) oldestAge() time.Duration {
	at := s.oldestAt.Load()
	if at == 0 {
		return 0
	}
	return max(s.now().Sub(time.Unix(0, at)), 0)
}

// Close stops taking events, stops the forwarder (events it had not seen confirmed stay in the
// log and go out after the next start), stores the cursor, closes the log and then the wrapped
// output. The engine calls it once, after its last Send.
func (s *Spool) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	started := s.started
	s.mu.Unlock()
	var errs []error
	if started {
		close(s.stopWriter)
		s.stopFwd()
		for _, done := range []chan struct{}{s.writerDone, s.fwdDone} {
			select {
			case <-done:
			case <-ctx.Done():
				errs = append(errs, fmt.Errorf("spool %s: close: %w", s.name, ctx.Err()))
			}
		}
		if err := s.active.Close(); err != nil {
			errs = append(errs, fmt.Errorf("spool %s: close %s: %w", s.name, s.activeSg.path, err))
		}
		s.lock.Close()
	}
	if err := s.sink.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	if s.reg != nil {
		s.reg.Unregister(s.m)
	}
	return errors.Join(errs...)
}

// flight is one event the forwarder is delivering.
type flight struct {
	seq  uint64
	at   int64
	data []byte
	seg  *segment
	done bool
}

// forward reads the log in order and delivers its events to the wrapped output, at most
// in_flight at once, until ctx ends. It moves the cursor over every confirmed prefix and deletes
// the segments behind it. It runs on its own goroutine, the only one deleting segments.
func (s *Spool) forward(ctx context.Context) {
	defer close(s.fwdDone)
	var (
		queue     []*flight // in log order
		doneC     = make(chan *flight, s.cfg.inFlight)
		wg        sync.WaitGroup
		rd        = reader{s: s, prev: s.acked.Load()}
		cursorAt  = s.acked.Load()
		tick      = time.NewTicker(cursorEvery)
		cursorErr bool
	)
	defer tick.Stop()
	saveCursor := func() {
		acked := s.acked.Load()
		if acked == cursorAt {
			return
		}
		if err := writeCursor(filepath.Join(s.cfg.dir, cursorFile), acked); err != nil {
			if !cursorErr {
				s.log.Warn("spool cursor not stored; confirmed events may go out again after a restart", "err", err)
			}
			cursorErr = true
			return
		}
		cursorErr, cursorAt = false, acked
	}
	defer rd.close()
	for {
		for len(queue) < s.cfg.inFlight {
			f, ok := rd.next()
			if !ok {
				break
			}
			queue = append(queue, f)
			if len(queue) == 1 {
				s.oldestAt.Store(f.at)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if s.deliver(ctx, f) {
					doneC <- f
				}
			}()
		}
		select {
		case f := <-doneC:
			f.done = true
			n := 0
			for n < len(queue) && queue[n].done {
				n++
			}
			if n == 0 {
				continue
			}
			s.acked.Store(queue[n-1].seq)
			s.events.Add(-int64(n))
			signal(s.space) // a writer waiting on max_age judges again
			queue = append(queue[:0], queue[n:]...)
			if len(queue) > 0 {
				s.oldestAt.Store(queue[0].at)
			} else {
				s.oldestAt.Store(0)
			}
			s.deleteConfirmed()
		case <-s.notifier:
		case <-tick.C:
			saveCursor()
		case <-ctx.Done():
			wg.Wait()
			// Deliveries that finished while stopping still move the cursor.
			for len(doneC) > 0 {
				(<-doneC).done = true
			}
			n := 0
			for n < len(queue) && queue[n].done {
				n++
			}
			if n > 0 {
				s.acked.Store(queue[n-1].seq)
				s.events.Add(-int64(n))
			}
			saveCursor()
			return
		}
	}
}

// deleteConfirmed deletes the segments, other than the one being written, whose records were all
// confirmed, and wakes a writer waiting for room. Called on the forwarder goroutine.
func (s *Spool) deleteConfirmed() {
	acked := s.acked.Load()
	freed := false
	for {
		s.mu.Lock()
		if len(s.segs) < 2 || s.segs[0].last > acked {
			s.mu.Unlock()
			break
		}
		sg := s.segs[0]
		s.mu.Unlock()
		if err := os.Remove(sg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Error("spool segment not deleted; it stays on disk and counts as used", "path", sg.path, "err", err)
			break
		}
		s.mu.Lock()
		s.segs = s.segs[1:]
		s.used -= sg.size
		s.mu.Unlock()
		freed = true
	}
	if freed {
		signal(s.space)
	}
}

// deliver sends one logged event to the wrapped output until it confirms, retrying with
// backoff. It reports whether the event is done with (confirmed, or rejected as permanently
// undeliverable); false means ctx ended first.
func (s *Spool) deliver(ctx context.Context, f *flight) bool {
	e, err := ce.DecodeStructured(f.data)
	if err != nil {
		return s.reject(f, nil, fmt.Errorf("decode the spooled event: %w", err))
	}
	backoff := s.retryInitial
	for {
		if s.waitReady(ctx) {
			backoff = s.retryInitial // the output is back: no reason to wait longer than that
		}
		if ctx.Err() != nil {
			return false
		}
		actx, cancel := context.WithTimeout(ctx, s.cfg.timeout)
		err := engine.SendOnce(actx, s.sink, e)
		cancel()
		if err == nil {
			s.m.forwarded.Inc()
			if s.failing.CompareAndSwap(true, false) {
				s.log.Info("spool forwarding again", "waiting", s.events.Load())
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if engine.IsPermanent(err) {
			return s.reject(f, e, err)
		}
		s.m.forwardErrors.Inc()
		if s.failing.CompareAndSwap(false, true) {
			s.log.Warn("spool cannot forward: the output fails; events wait in the spool and are retried",
				"err", err, "waiting", s.events.Load())
		}
		t := time.NewTimer(rand.N(backoff) + backoff/2)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		}
		backoff = min(backoff*2, s.retryMax)
	}
}

// readyPoll is how often a forwarding attempt waiting for its output asks it again.
const readyPoll = 100 * time.Millisecond

// waitReady waits while the wrapped output says it is not ready (engine.Readier: not connected),
// so that an output that is down is not tried at all, and one that comes back is tried at once
// rather than after a backoff grown during the outage. It reports whether it waited.
func (s *Spool) waitReady(ctx context.Context) bool {
	r, ok := s.sink.(engine.Readier)
	if !ok || r.Ready() {
		return false
	}
	t := time.NewTicker(readyPoll)
	defer t.Stop()
	for !r.Ready() {
		select {
		case <-t.C:
		case <-ctx.Done():
			return true
		}
	}
	return true
}

// rejectedFile is where events the output refused for good are kept, one JSON object a line.
const rejectedFile = "rejected.jsonl"

// reject keeps an event the output refused as permanently undeliverable (or that could not be
// read back) in rejected.jsonl, fsynced, and counts it; the forwarder then moves past it. It
// reports false only when the file could not be written, so the event stays in the log.
func (s *Spool) reject(f *flight, e *event.Event, cause error) bool {
	line, err := json.Marshal(struct {
		Time   time.Time       `json:"time"`
		Output string          `json:"output"`
		Seq    uint64          `json:"seq"`
		Error  string          `json:"error"`
		Event  json.RawMessage `json:"event"`
	}{s.now().UTC(), s.name, f.seq, cause.Error(), rawOrString(f.data)})
	if err == nil {
		err = s.appendRejected(append(line, '\n'))
	}
	if err != nil {
		s.log.Error("spool cannot keep an event the output refused; it stays in the spool", "seq", f.seq, "cause", cause, "err", err)
		return false
	}
	s.m.rejected.Inc()
	id := ""
	if e != nil {
		id = e.ID()
	}
	s.log.Error("spool: the output refused an event for good; kept in "+rejectedFile, "id", id, "seq", f.seq, "cause", cause)
	return true
}

// rawOrString returns b as a JSON value: itself when it is valid JSON, a JSON string otherwise.
func rawOrString(b []byte) json.RawMessage {
	if json.Valid(b) {
		return b
	}
	q, _ := json.Marshal(string(b))
	return q
}

func (s *Spool) appendRejected(line []byte) error {
	s.rejectMu.Lock()
	defer s.rejectMu.Unlock()
	f, err := os.OpenFile(filepath.Join(s.cfg.dir, rejectedFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(line)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// reader walks the log's records in order for the forwarder, from the record after prev.
type reader struct {
	s    *Spool
	prev uint64 // the last record returned (or the cursor)
	seg  *segment
	f    *os.File
	sc   *scanner
}

// next returns the next record the writer has published, or false when there is none yet.
// Damage met here (after recovery checked the log) is logged and skipped.
func (r *reader) next() (*flight, bool) {
	for {
		if r.seg == nil && !r.open() {
			return nil, false
		}
		r.s.mu.Lock()
		r.sc.limit = r.seg.size
		isLast := r.s.segs[len(r.s.segs)-1] == r.seg
		r.s.mu.Unlock()
		rec, err := r.sc.next()
		switch {
		case err == nil:
			r.prev = rec.seq
			if rec.seq <= r.s.acked.Load() {
				continue // confirmed before the last stop
			}
			return &flight{seq: rec.seq, at: rec.at, data: append([]byte(nil), rec.data...), seg: r.seg}, true
		case errors.Is(err, errTorn) || errors.Is(err, errDamaged):
			bad := r.sc.off
			found, rerr := r.sc.resync()
			if rerr == nil && found {
				r.s.m.discarded.Add(float64(r.sc.off - bad))
				r.s.log.Error("spool record damaged on disk; skipped", "path", r.seg.path, "offset", bad, "bytes", r.sc.off-bad)
				continue
			}
			r.s.m.discarded.Add(float64(r.sc.limit - bad))
			r.s.log.Error("spool segment damaged on disk; the rest of it is skipped", "path", r.seg.path, "offset", bad, "err", rerr)
			r.sc.off = r.sc.limit
			if isLast {
				return nil, false
			}
			r.advance()
		case errors.Is(err, io.EOF):
			if isLast {
				return nil, false
			}
			r.advance()
		default:
			r.s.log.Error("spool read failed; retrying", "path", r.seg.path, "err", err)
			return nil, false
		}
	}
}

// open positions the reader on the first segment that may hold a record after prev.
func (r *reader) open() bool {
	r.s.mu.Lock()
	var sg *segment
	for _, c := range r.s.segs {
		if c.last > r.prev || c == r.s.segs[len(r.s.segs)-1] {
			sg = c
			break
		}
	}
	r.s.mu.Unlock()
	if sg == nil {
		return false
	}
	return r.use(sg)
}

// advance moves the reader to the segment after the current one.
func (r *reader) advance() {
	r.s.mu.Lock()
	var nextSeg *segment
	for i, c := range r.s.segs {
		if c == r.seg && i+1 < len(r.s.segs) {
			nextSeg = r.s.segs[i+1]
		}
	}
	r.s.mu.Unlock()
	r.close()
	if nextSeg != nil {
		r.use(nextSeg)
	}
}

func (r *reader) use(sg *segment) bool {
	f, err := os.Open(sg.path)
	if err != nil {
		r.s.log.Error("spool segment cannot be read; retrying", "path", sg.path, "err", err)
		return false
	}
	r.seg, r.f = sg, f
	// The scanner checks the segment's own order; records up to the cursor are skipped above it.
	r.sc = &scanner{r: f, off: int64(len(segMagic)), prev: sg.first - 1}
	return true
}

func (r *reader) close() {
	if r.f != nil {
		r.f.Close()
	}
	r.seg, r.f, r.sc = nil, nil, nil
}

func fmtBytes(n int64) string { return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20)) }

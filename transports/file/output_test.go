package file

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/turnout-router/turnout/engine"
)

func testEvent(t testing.TB, i int) *event.Event {
	t.Helper()
	e := event.New()
	e.SetID(fmt.Sprintf("ev-%d", i))
	e.SetSource("/care/home-7")
	e.SetType("care.alarm")
	e.SetSubject(fmt.Sprintf("bed %d \"quoted\"\nnewline", i))
	e.SetTime(time.Date(2026, 11, 24, 10, 0, i%60, 0, time.UTC))
	e.SetExtension("patientid", fmt.Sprintf("p%d", i))
	var err error
	switch i % 3 {
	case 0: // JSON data spread over lines
		err = e.SetData("application/json", json.RawMessage(fmt.Sprintf("{\n  \"n\": %d,\n  \"kind\": \"fall\"\n}", i)))
	case 1: // binary data
		e.SetDataContentType("application/octet-stream")
		e.DataEncoded = []byte{0xff, 0x00, byte(i), '\n', 0xfe}
	case 2: // text
		e.SetDataContentType("text/plain")
		e.DataEncoded = []byte(fmt.Sprintf("help from bed %d\n", i))
	}
	if err != nil {
		t.Fatal(err)
	}
	return &e
}

// sameEvent compares what a reader of the file would compare: every attribute, every extension,
// and the data (JSON data by value).
func sameEvent(t *testing.T, got, want *event.Event) {
	t.Helper()
	if got.ID() != want.ID() || got.Source() != want.Source() || got.Type() != want.Type() ||
		got.Subject() != want.Subject() || !got.Time().Equal(want.Time()) ||
		got.DataContentType() != want.DataContentType() || got.SpecVersion() != want.SpecVersion() {
		t.Errorf("attributes differ:\ngot  %s\nwant %s", got, want)
	}
	if fmt.Sprint(got.Extensions()) != fmt.Sprint(want.Extensions()) {
		t.Errorf("%s: extensions %v, want %v", want.ID(), got.Extensions(), want.Extensions())
	}
	if want.DataContentType() == "application/json" {
		var g, w any
		if json.Unmarshal(got.Data(), &g) != nil || json.Unmarshal(want.Data(), &w) != nil || fmt.Sprint(g) != fmt.Sprint(w) {
			t.Errorf("%s: JSON data %s, want %s", want.ID(), got.Data(), want.Data())
		}
	} else if !bytes.Equal(got.Data(), want.Data()) {
		t.Errorf("%s: data %q, want %q", want.ID(), got.Data(), want.Data())
	}
}

func boolPtr(b bool) *bool { return &b }

func startOutput(t testing.TB, c Config) *Output {
	t.Helper()
	o, err := New("test", c, engine.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return o
}

// readLines parses every line of path back into an event, keyed by id.
func readLines(t *testing.T, r io.Reader) map[string]*event.Event {
	t.Helper()
	out := map[string]*event.Event{}
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		n++
		var e event.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("line %d is not one complete event: %v\n%s", n, err, sc.Bytes())
		}
		if _, dup := out[e.ID()]; dup {
			t.Fatalf("line %d: event %s written twice", n, e.ID())
		}
		out[e.ID()] = &e
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestConcurrentSends(t *testing.T) {
	for _, fsync := range []bool{true, false} {
		t.Run(fmt.Sprintf("fsync=%v", fsync), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "new", "dir", "events.jsonl")
			o := startOutput(t, Config{Path: path, Fsync: boolPtr(fsync)})
			const senders, each = 8, 60
			want := map[string]*event.Event{}
			var wg sync.WaitGroup
			errs := make(chan error, senders*each)
			for s := range senders {
				evs := make([]*event.Event, each)
				for k := range each {
					evs[k] = testEvent(t, s*each+k)
					want[evs[k].ID()] = evs[k]
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					for _, e := range evs {
						if err := o.Send(context.Background(), e); err != nil {
							errs <- err
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatalf("Send: %v", err)
			}
			if err := o.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got := readLines(t, f)
			if len(got) != len(want) {
				t.Fatalf("%d events in the file, want %d", len(got), len(want))
			}
			for id, w := range want {
				sameEvent(t, got[id], w)
			}
			if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
				t.Errorf("mode %v, want 0644", st.Mode().Perm())
			}
		})
	}
}

func TestAppendsToExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	for round := range 2 {
		o := startOutput(t, Config{Path: path})
		if err := o.Send(context.Background(), testEvent(t, round)); err != nil {
			t.Fatal(err)
		}
		if err := o.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	f, _ := os.Open(path)
	defer f.Close()
	if got := readLines(t, f); len(got) != 2 {
		t.Fatalf("%d events after two runs, want 2 (append, not truncate)", len(got))
	}
}

// fakeFile records writes and lets a test control Sync.
type fakeFile struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	syncs     int
	syncErr   error
	writeErr  error
	partial   int           // with writeErr: bytes written before failing
	syncGate  chan struct{} // when set, Sync waits for a receive from it
	syncStart chan struct{} // when set, Sync signals here first
}

func (f *fakeFile) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.writeErr != nil {
		n := min(f.partial, len(p))
		f.buf.Write(p[:n])
		return n, f.writeErr
	}
	return f.buf.Write(p)
}

func (f *fakeFile) Sync() error {
	if f.syncStart != nil {
		f.syncStart <- struct{}{}
	}
	if f.syncGate != nil {
		<-f.syncGate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs++
	return f.syncErr
}

func (f *fakeFile) Close() error { return nil }

func (f *fakeFile) set(fn func(f *fakeFile)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func startFake(t *testing.T, ff *fakeFile) *Output {
	t.Helper()
	o, err := New("fake", Config{Path: "/nowhere/events.jsonl"}, engine.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	o.open = func(string) (File, error) { return ff, nil }
	if err := o.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Close(context.Background()) })
	return o
}

func TestWriteFailuresSurface(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(f *fakeFile)
		want   string
	}{
		{"fsync error", func(f *fakeFile) { f.syncErr = errors.New("EIO") }, "fsync: EIO"},
		{"write error", func(f *fakeFile) { f.writeErr = errors.New("ENOSPC"); f.partial = 10 }, "ENOSPC"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ff := &fakeFile{}
			o := startFake(t, ff)
			ff.set(tt.break_)
			err := o.Send(context.Background(), testEvent(t, 1))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Send error %v, want one mentioning %q", err, tt.want)
			}
			if engine.IsPermanent(err) {
				t.Errorf("an I/O failure must be retryable, got a permanent error")
			}
			ff.set(func(f *fakeFile) { f.syncErr, f.writeErr = nil, nil })
			if err := o.Send(context.Background(), testEvent(t, 2)); err != nil {
				t.Fatalf("Send after recovery: %v", err)
			}
			// The retried event is on a line of its own even after a partial write.
			lines := strings.Split(strings.TrimSuffix(ff.buf.String(), "\n"), "\n")
			var e event.Event
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &e); err != nil || e.ID() != "ev-2" {
				t.Fatalf("last line %q is not event ev-2: %v", lines[len(lines)-1], err)
			}
		})
	}
}

// TestGroupCommit checks that Send waits for the fsync covering its line, and that lines sent
// while an fsync runs are confirmed together by the next one.
func TestGroupCommit(t *testing.T) {
	ff := &fakeFile{syncGate: make(chan struct{}), syncStart: make(chan struct{}, 16)}
	o := startFake(t, ff)
	results := make(chan error, 11)
	go func() { results <- o.Send(context.Background(), testEvent(t, 0)) }()
	<-ff.syncStart // the first line is written; its fsync is in progress
	const more = 10
	for i := 1; i <= more; i++ {
		go func() { results <- o.Send(context.Background(), testEvent(t, i)) }()
	}
	// Wait until all ten lines are pending behind the running fsync.
	for {
		o.mu.Lock()
		n := 0
		if o.pending != nil {
			n = bytes.Count(o.pending.buf, []byte("\n"))
		}
		o.mu.Unlock()
		if n == more {
			break
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-results:
		t.Fatalf("a Send returned (%v) before any fsync finished", err)
	default:
	}
	ff.syncGate <- struct{}{} // first fsync returns
	if err := <-results; err != nil {
		t.Fatal(err)
	}
	<-ff.syncStart
	select {
	case err := <-results:
		t.Fatalf("a Send returned (%v) before the fsync covering its line finished", err)
	default:
	}
	ff.syncGate <- struct{}{}
	for range more {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	ff.mu.Lock()
	syncs := ff.syncs
	ff.mu.Unlock()
	if syncs != 2 {
		t.Errorf("%d fsyncs for 11 events sent in two groups, want 2", syncs)
	}
}

func TestSendEndsWithContext(t *testing.T) {
	ff := &fakeFile{syncGate: make(chan struct{})}
	o := startFake(t, ff)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Send(ctx, testEvent(t, 0)) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Send = %v, want context.Canceled", err)
	}
	close(ff.syncGate) // let the flusher finish so Close returns
}

func TestStdout(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	t.Cleanup(func() { os.Stdout = stdout })
	// fsync: true is ignored for standard output (a pipe cannot be fsynced: Sync would fail).
	o := startOutput(t, Config{Path: "-", Fsync: boolPtr(true)})
	os.Stdout = stdout
	want := []*event.Event{testEvent(t, 0), testEvent(t, 1), testEvent(t, 2)}
	for _, e := range want {
		if err := o.Send(context.Background(), e); err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	if err := o.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(nil); err != nil {
		t.Fatalf("standard output was closed by Close: %v", err)
	}
	w.Close()
	got := readLines(t, r)
	if len(got) != len(want) {
		t.Fatalf("%d events on stdout, want %d", len(got), len(want))
	}
	for _, e := range want {
		sameEvent(t, got[e.ID()], e)
	}
}

func TestEncodeLine(t *testing.T) {
	tests := []struct {
		name    string
		event   func() *event.Event
		contain string
		perm    bool
	}{
		{"binary data as data_base64", func() *event.Event { return testEvent(t, 1) }, `"data_base64":"/wAB`, false},
		{"JSON data compacted", func() *event.Event { return testEvent(t, 0) }, `"data":{"n":0,"kind":"fall"}`, false},
		{"text data as string", func() *event.Event { return testEvent(t, 2) }, `"data":"help from bed 2\n"`, false},
		{"invalid event is permanent", func() *event.Event { e := testEvent(t, 0); e.SetID(""); return e }, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ff := &fakeFile{}
			o := startFake(t, ff)
			err := o.Send(context.Background(), tt.event())
			if tt.perm {
				if !engine.IsPermanent(err) {
					t.Fatalf("Send = %v, want a permanent error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			line := ff.buf.String()
			if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
				t.Fatalf("not exactly one line: %q", line)
			}
			if !strings.Contains(line, tt.contain) {
				t.Errorf("line %s does not contain %s", line, tt.contain)
			}
		})
	}
}

func TestLifecycleErrors(t *testing.T) {
	t.Run("send after close", func(t *testing.T) {
		o := startOutput(t, Config{Path: filepath.Join(t.TempDir(), "x.jsonl")})
		if !o.Ready() {
			t.Fatal("not ready after Start")
		}
		if err := o.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if o.Ready() {
			t.Error("ready after Close")
		}
		if err := o.Send(context.Background(), testEvent(t, 0)); err == nil {
			t.Fatal("Send after Close succeeded")
		}
	})
	t.Run("open error names the path", func(t *testing.T) {
		dir := t.TempDir()
		blocker := filepath.Join(dir, "file")
		if err := os.WriteFile(blocker, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(blocker, "sub", "x.jsonl") // a directory under a file
		o, err := New("bad", Config{Path: path}, engine.Deps{})
		if err != nil {
			t.Fatal(err)
		}
		if err := o.Start(context.Background()); err == nil || !strings.Contains(err.Error(), path) {
			t.Fatalf("Start = %v, want an error naming %s", err, path)
		}
	})
}

func TestConfig(t *testing.T) {
	factory, err := engine.LookupOutput("file")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		yaml      string
		wantErr   string
		wantFsync bool
	}{
		{"file defaults to fsync", "path: /tmp/x.jsonl", "", true},
		{"fsync off", "path: /tmp/x.jsonl\nfsync: false", "", false},
		{"stdout never fsyncs", "path: \"-\"", "", false},
		{"path missing", "fsync: true", "path", false},
		{"unknown key", "path: /tmp/x\nrotate: daily", "rotate", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dec := func(v any) error {
				d := yaml.NewDecoder(strings.NewReader(tt.yaml))
				d.KnownFields(true)
				return d.Decode(v)
			}
			s, err := factory("out", dec, engine.Deps{Registerer: prometheus.NewRegistry()})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v does not name %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := s.(*Output).fsync; got != tt.wantFsync {
				t.Errorf("fsync = %v, want %v", got, tt.wantFsync)
			}
		})
	}
}

// BenchmarkFileOutput measures parallel Sends to a real file with fsync (group commit).
func BenchmarkFileOutput(b *testing.B) {
	for _, fsync := range []bool{true, false} {
		b.Run(fmt.Sprintf("fsync=%v", fsync), func(b *testing.B) {
			o := startOutput(b, Config{Path: filepath.Join(b.TempDir(), "bench.jsonl"), Fsync: boolPtr(fsync)})
			e := testEvent(b, 0)
			b.SetParallelism(16) // many deliveries in flight, as the engine runs them
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := o.Send(context.Background(), e); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			if err := o.Close(context.Background()); err != nil {
				b.Fatal(err)
			}
		})
	}
}

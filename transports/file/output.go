// Package file is turnout's JSON-lines output: it appends every event it is sent to a file (or
// standard output) as one line in the CloudEvents JSON format.
//
// Invariant: Send returns nil only once the event's line, whole, has been written and, for a
// file with fsync enabled, an fsync that started after the write returned successfully. Lines
// of concurrent Sends never interleave.
//
// Concurrent Sends use group commit: each Send appends its encoded line to the pending batch
// under a mutex; one flusher goroutine writes a whole batch with one write call and confirms it
// with one fsync, while the next batch fills. Under load, one fsync confirms many events.
//
// Configuration (the output's block in turnout's configuration file):
//
//	outputs:
//	  archive:
//	    type: file
//	    path: /var/lib/turnout/alarms.jsonl  # file to append to; "-" is standard output (required)
//	    fsync: true                         # fsync each batch before confirming (default true;
//	                                        # ignored for standard output)
//
// The file is opened with O_APPEND|O_CREATE, mode 0644, and missing directories are created
// (mode 0755). There is no rotation: rotate externally (copy-truncate is not safe while turnout
// writes; rename the file and restart turnout, or point path at a new file).
//
// Each line is the event in the CloudEvents JSON format ([CE-JSON-3]); data that is not JSON
// under a JSON media type, or not UTF-8 text otherwise, is written as data_base64 ([CE-JSON-3.1])
// so nothing is lost. JSON data is compacted so that a line holds exactly one event.
//
// A write that fails half-way (disk full) can leave a partial line; the output ends it with a
// newline before the next batch, and the events of the failed batch are reported as not
// confirmed (the engine retries them). Readers should skip a line that does not parse.
package file

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/engine"
)

func init() {
	engine.RegisterOutput("file", func(name string, decode engine.Decoder, deps engine.Deps) (engine.Sink, error) {
		var c Config
		if err := decode(&c); err != nil {
			return nil, fmt.Errorf("file output %s: %w", name, err)
		}
		return New(name, c, deps)
	})
}

var (
	_ engine.Sink    = (*Output)(nil)
	_ engine.Starter = (*Output)(nil)
	_ engine.Readier = (*Output)(nil)
)

// Config is the configuration of one file output.
type Config struct {
	// Path is the file to append to; "-" writes to standard output.
	Path string `yaml:"path"`
	// Fsync makes every batch of lines durable (fsync) before Send returns nil. Default true;
	// standard output is never fsynced.
	Fsync *bool `yaml:"fsync"`
}

// File is what the output writes to: an *os.File, or a stand-in in tests.
type File interface {
	io.Writer
	Sync() error
	Close() error
}

// Output appends events to a file as JSON lines. Build it with New; the engine calls Start once,
// Send from many goroutines, then Close once.
type Output struct {
	name  string
	path  string
	fsync bool
	log   *slog.Logger
	open  func(path string) (File, error) // injectable for tests

	mu      sync.Mutex
	f       File   // nil until Start
	pending *batch // lines waiting for the flusher; nil when none
	closed  bool
	broken  bool // a write failed: the file may end in a partial line

	wake chan struct{} // capacity 1: there is a pending batch
	done chan struct{} // closed when the flusher exited
}

// batch is a group of lines confirmed together: err is set and ready closed once the batch was
// written (and fsynced).
type batch struct {
	buf   []byte
	err   error
	ready chan struct{}
}

// New validates c and builds an output named name. It does not open the file (Start does).
func New(name string, c Config, deps engine.Deps) (*Output, error) {
	if c.Path == "" {
		return nil, fmt.Errorf("file output %s: path: required (a file, or \"-\" for standard output)", name)
	}
	fsync := c.Fsync == nil || *c.Fsync
	if c.Path == "-" {
		fsync = false
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Output{
		name: name, path: c.Path, fsync: fsync, log: log.With("output", name, "transport", "file"),
		open: openFile, wake: make(chan struct{}, 1), done: make(chan struct{}),
	}, nil
}

// openFile opens path for appending, creating it and its directories; "-" is standard output.
func openFile(path string) (File, error) {
	if path == "-" {
		return nopCloser{os.Stdout}, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
}

// nopCloser keeps standard output open when the output closes.
type nopCloser struct{ *os.File }

func (nopCloser) Close() error { return nil }

// Start opens the file and starts the flusher goroutine. Called once by the engine before the
// first Send; an error names the path.
func (o *Output) Start(ctx context.Context) error {
	f, err := o.open(o.path)
	if err != nil {
		return fmt.Errorf("file output %s: open %s: %w", o.name, o.path, err)
	}
	o.mu.Lock()
	o.f = f
	o.mu.Unlock()
	go o.flusher()
	return nil
}

// Ready reports whether the file is open. Safe from any goroutine.
func (o *Output) Ready() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.f != nil && !o.closed
}

// Send appends e as one JSON line and returns nil once the line is written and (with fsync)
// durable. It is called by the engine from many goroutines at once. An event that cannot be
// encoded is a Permanent error; a write or fsync failure is a retryable error. When ctx ends
// first, Send returns ctx.Err() and the line may still be written (a retry then duplicates it).
func (o *Output) Send(ctx context.Context, e *event.Event) error {
	line, err := EncodeLine(e)
	if err != nil {
		return engine.Permanent(fmt.Errorf("file output %s: encode event %s: %w", o.name, e.ID(), err))
	}
	o.mu.Lock()
	if o.closed || o.f == nil {
		o.mu.Unlock()
		return fmt.Errorf("file output %s: send %s: output not started or closed", o.name, e.ID())
	}
	if o.pending == nil {
		o.pending = &batch{ready: make(chan struct{})}
	}
	b := o.pending
	b.buf = append(b.buf, line...)
	select {
	case o.wake <- struct{}{}: // under mu: Close closes wake under mu
	default: // the flusher is already woken and has not taken pending yet
	}
	o.mu.Unlock()
	select {
	case <-b.ready:
		if b.err != nil {
			return fmt.Errorf("file output %s: write %s: %w", o.name, o.path, b.err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flusher writes and fsyncs pending batches one after the other until Close. It runs on its own
// goroutine, the only one touching the file after Start.
func (o *Output) flusher() {
	defer close(o.done)
	for range o.wake {
		o.mu.Lock()
		b, broken := o.pending, o.broken
		o.pending = nil
		o.mu.Unlock()
		if b == nil {
			continue
		}
		buf := b.buf
		if broken {
			// End the partial line a failed write may have left, so it cannot swallow ours.
			buf = append([]byte{'\n'}, buf...)
		}
		_, err := o.f.Write(buf)
		if err != nil {
			o.mu.Lock()
			o.broken = true
			o.mu.Unlock()
		} else {
			if broken {
				o.mu.Lock()
				o.broken = false
				o.mu.Unlock()
			}
			if o.fsync {
				if err = o.f.Sync(); err != nil {
					err = fmt.Errorf("fsync: %w", err)
				}
			}
		}
		if err != nil {
			o.log.Warn("file output write failed", "path", o.path, "err", err)
		}
		b.err = err
		close(b.ready)
	}
}

// Close waits for lines already sent to be written, then closes the file. Called once by the
// engine after it stopped sending.
func (o *Output) Close(ctx context.Context) error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return nil
	}
	o.closed = true
	started := o.f != nil
	if started {
		// The flusher writes what is pending (its wake-up is buffered), then exits.
		close(o.wake)
	}
	o.mu.Unlock()
	if !started {
		return nil
	}
	select {
	case <-o.done:
	case <-ctx.Done():
		return fmt.Errorf("file output %s: close %s: %w", o.name, o.path, ctx.Err())
	}
	if err := o.f.Close(); err != nil {
		return fmt.Errorf("file output %s: close %s: %w", o.name, o.path, err)
	}
	return nil
}

// EncodeLine returns e in the CloudEvents JSON format on one line, followed by a newline, as the
// output writes it (data that would not survive as JSON text goes as data_base64). It returns
// an error for an invalid event. The dead-letter file of cmd/turnout writes events with it too.
func EncodeLine(e *event.Event) ([]byte, error) {
	if err := e.Validate(); err != nil {
		return nil, errors.New(strings.TrimSpace(err.Error()))
	}
	out := e
	if data := e.DataEncoded; len(data) > 0 && !isBase64(e) {
		mt, _ := e.Context.GetDataMediaType()
		switch {
		case isJSONMediaType(mt) && json.Valid(data):
			// Raw JSON data is copied into the line verbatim: compact it to one line.
			if bytes.ContainsAny(data, "\r\n") {
				var c bytes.Buffer
				if err := json.Compact(&c, data); err != nil {
					return nil, err
				}
				cp := e.Clone()
				cp.DataEncoded = c.Bytes()
				out = &cp
			}
		case !isJSONMediaType(mt) && utf8.Valid(data):
			// Written as a JSON string: lossless.
		default:
			cp := e.Clone()
			if cp.SpecVersion() == event.CloudEventsVersionV1 {
				cp.DataBase64 = true
			} else {
				cp.SetDataContentEncoding(event.Base64)
			}
			out = &cp
		}
	}
	var buf bytes.Buffer
	if err := event.WriteJson(out, &buf); err != nil {
		return nil, err
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// isBase64 reports whether e's data is already written base64-encoded.
func isBase64(e *event.Event) bool {
	if e.SpecVersion() == event.CloudEventsVersionV1 {
		return e.DataBase64
	}
	return strings.EqualFold(e.DeprecatedDataContentEncoding(), event.Base64)
}

// isJSONMediaType reports whether the CloudEvents JSON format writes data of media type mt
// verbatim as JSON rather than as a string (the rule of sdk-go's event writer).
func isJSONMediaType(mt string) bool {
	switch strings.ToLower(mt) {
	case "", event.ApplicationJSON, event.TextJSON:
		return true
	}
	return false
}

// Package dlq is turnout's last-resort dead-letter store: a durable JSON-lines file per route
// under <data_dir>/dead-letter/, which receives the events a route without a dead_letter output
// cannot deliver (malformed messages, events its rule failed, events an output refused after the
// retry policy), so that such an event is acknowledged to its source instead of being redelivered
// for ever, and is never dropped silently. It also reads the files back (turnout dlq list and
// show) and replays entries into their route (Route.Replay, behind the admin API).
//
// Layout: <data_dir>/dead-letter/<route>.jsonl is the file being written; when a line would take
// it past Options.MaxFileBytes it is renamed <route>.jsonl.<n>, n = 1, 2, ... in the order they
// were rotated, and a new <route>.jsonl begins. Each line is one Entry: the time it was written,
// the route, the kind (malformed, rule, output), the reason, and the event in the CloudEvents
// JSON format with the engine's turnouterror* extensions.
//
// Invariants: Send returns nil only once the event's whole line is written and fsynced (and the
// directory fsynced when the file was created or rotated), so the engine acknowledges the input
// only after that; a failed write leaves no partial line behind (the file is truncated back).
// Nothing is created before the first Send: building the store, as `turnout validate` does,
// writes nothing. Entries leave a file only by Replay, and only once the engine has settled the
// replayed delivery with an acknowledgement (at least once: an entry whose replay is acknowledged
// while the process dies before the removal is replayed again next time). One process owns the
// directory (cmd/turnout locks the data directory); readers (List) may run beside it.
package dlq

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
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/fsutil"
	"github.com/turnout-router/turnout/transports/file"
)

// Dir is the directory under the data directory that holds the files.
const Dir = "dead-letter"

// DefaultMaxFileBytes is the size past which a route's file is rotated when Options leaves it 0.
const DefaultMaxFileBytes = 64 << 20

// Entry kinds, from the engine's extensions on the dead-letter event.
const (
	KindMalformed = "malformed" // not a valid CloudEvent (type dev.turnout.malformed)
	KindRule      = "rule"      // the rule failed or decided fail
	KindOutput    = "output"    // an output refused it after the retry policy
)

// Options configure a Store.
type Options struct {
	// MaxFileBytes rotates a route's file before a line would take it past this size; 0 means
	// DefaultMaxFileBytes. A line larger than it goes alone into a file.
	MaxFileBytes int64
	// Registerer receives the metrics; nil uses a private registry.
	Registerer prometheus.Registerer
}

// Store is the dead-letter directory of one data directory. Its methods are safe for concurrent
// use.
type Store struct {
	dir  string
	max  int64
	m    metrics
	mu   sync.Mutex
	rts  map[string]*Route
	errM error
}

type metrics struct {
	events, bytes, replayed *prometheus.CounterVec
	entries                 *prometheus.GaugeVec
}

// New returns the store of dataDir; it creates nothing. The metrics are
//
//	turnout_dead_letter_file_events_total{route}    entries written (fsynced)
//	turnout_dead_letter_file_bytes_total{route}     bytes of those entries
//	turnout_dead_letter_file_replayed_total{route}  entries replayed and acknowledged, so removed
//	turnout_dead_letter_file_entries{route}         lines waiting in the route's files
func New(dataDir string, o Options) (*Store, error) {
	reg := o.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if o.MaxFileBytes <= 0 {
		o.MaxFileBytes = DefaultMaxFileBytes
	}
	s := &Store{dir: filepath.Join(dataDir, Dir), max: o.MaxFileBytes, rts: map[string]*Route{}}
	s.m = metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turnout_dead_letter_file_events_total",
			Help: "Events written to the route's last-resort dead-letter file (routes without a dead_letter output)."}, []string{"route"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turnout_dead_letter_file_bytes_total",
			Help: "Bytes written to the route's last-resort dead-letter file."}, []string{"route"}),
		replayed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "turnout_dead_letter_file_replayed_total",
			Help: "Dead-letter file entries replayed into their route and acknowledged, hence removed from the file."}, []string{"route"}),
		entries: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "turnout_dead_letter_file_entries",
			Help: "Lines waiting in the route's dead-letter files: events that reached no output, until turnout dlq replay delivers them (lines that are not entries, which turnout dlq list reports, included)."}, []string{"route"}),
	}
	for _, c := range []prometheus.Collector{s.m.events, s.m.bytes, s.m.replayed, s.m.entries} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("dead-letter file metrics: %w", err)
		}
	}
	return s, nil
}

// Dir returns the directory of the files.
func (s *Store) Dir() string { return s.dir }

// Route returns the handle of route name (the same one for every call). The first call counts
// the lines already in the route's files, for turnout_dead_letter_file_entries.
func (s *Store) Route(name string) *Route {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.rts[name]; ok {
		return r
	}
	r := &Route{s: s, name: name}
	s.m.events.WithLabelValues(name)
	s.m.bytes.WithLabelValues(name)
	s.m.replayed.WithLabelValues(name)
	r.lines = s.countLines(name)
	s.m.entries.WithLabelValues(name).Set(float64(r.lines))
	s.rts[name] = r
	return r
}

// countLines counts the complete, non-blank lines of route's files, reading them in pieces (a
// file may be larger than memory allows). A file it cannot read counts what it read.
func (s *Store) countLines(route string) int {
	files, _ := s.files(route)
	n := 0
	for _, f := range files {
		fh, err := os.Open(f.path)
		if err != nil {
			continue
		}
		br := bufio.NewReaderSize(fh, 64<<10)
		blank := true // the current line holds only white space so far
		for {
			chunk, err := br.ReadSlice('\n')
			if len(bytes.TrimSpace(chunk)) > 0 {
				blank = false
			}
			if err == nil {
				if !blank {
					n++
				}
				blank = true
				continue
			}
			if !errors.Is(err, bufio.ErrBufferFull) {
				break
			}
		}
		fh.Close()
	}
	return n
}

// Route is one route's dead-letter file: the Sink the engine writes dead letters to, and the
// Source replays come through.
type Route struct {
	s    *Store
	name string

	mu    sync.Mutex // guards f, size and lines, and every change to the route's files
	f     *os.File   // the open <route>.jsonl, nil until the first write (or after a rewrite)
	size  int64
	lines int // lines in the route's files (turnout_dead_letter_file_entries)

	dmu sync.Mutex // guards d
	d   engine.Dispatcher

	replaying sync.Mutex // one replay at a time
}

// Name returns the route's name.
func (r *Route) Name() string { return r.name }

// Path returns the file being written.
func (r *Route) Path() string { return filepath.Join(r.s.dir, r.name+".jsonl") }

// Sink returns the engine.Sink that appends to the file.
func (r *Route) Sink() engine.Sink { return sink{r} }

type sink struct{ r *Route }

// Send appends ev as one entry and fsyncs it.
func (k sink) Send(ctx context.Context, ev *event.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return k.r.append(ev)
}

// Close closes the file.
func (k sink) Close(context.Context) error {
	k.r.mu.Lock()
	defer k.r.mu.Unlock()
	return k.r.closeFile()
}

// Entry is one line of a dead-letter file.
type Entry struct {
	Time   time.Time       `json:"time"`
	Route  string          `json:"route"`
	Kind   string          `json:"kind"`
	Reason string          `json:"reason"`
	Event  json.RawMessage `json:"event"`

	// Where it is: the file (its path) and the line (1-based); not stored.
	File string `json:"-"`
	Line int    `json:"-"`
	raw  []byte // the line as stored, without its newline
}

// Locator returns "file:line", the file's name relative to the dead-letter directory.
func (e *Entry) Locator() string { return filepath.Base(e.File) + ":" + strconv.Itoa(e.Line) }

// Decode returns the entry's event.
func (e *Entry) Decode() (*event.Event, error) {
	ev := event.New()
	if err := json.Unmarshal(e.Event, &ev); err != nil {
		return nil, fmt.Errorf("dead-letter entry %s: event: %w", e.Locator(), err)
	}
	return &ev, nil
}

// Summary are the event's attributes a listing shows (empty when the event does not decode).
func (e *Entry) Summary() (id, typ, source string) {
	var a struct{ ID, Type, Source string }
	_ = json.Unmarshal(e.Event, &a)
	return a.ID, a.Type, a.Source
}

// kindOf tells the entry kind from the extensions the engine set on the dead-letter event.
func kindOf(ev *event.Event) string {
	ext := ev.Extensions()
	switch {
	case ev.Type() == engine.TypeMalformed && ext[engine.ExtErrorInput] != nil:
		return KindMalformed
	case ext[engine.ExtErrorOutput] != nil:
		return KindOutput
	default:
		return KindRule
	}
}

// encode returns ev's entry line, newline included.
func (r *Route) encode(ev *event.Event) ([]byte, error) {
	body, err := file.EncodeLine(ev)
	if err != nil {
		return nil, engine.Permanent(fmt.Errorf("dead-letter file %s: encode event %s: %w", r.Path(), ev.ID(), err))
	}
	reason, _ := ev.Extensions()[engine.ExtError].(string)
	e := Entry{Time: time.Now().UTC(), Route: r.name, Kind: kindOf(ev), Reason: reason,
		Event: json.RawMessage(bytes.TrimSuffix(body, []byte("\n")))}
	line, err := json.Marshal(&e)
	if err != nil {
		return nil, engine.Permanent(fmt.Errorf("dead-letter file %s: encode entry %s: %w", r.Path(), ev.ID(), err))
	}
	return append(line, '\n'), nil
}

// append writes ev's entry to the file and fsyncs it.
func (r *Route) append(ev *event.Event) error {
	line, err := r.encode(ev)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.open(); err != nil {
		return err
	}
	if r.size > 0 && r.size+int64(len(line)) > r.s.max {
		if err := r.rotate(); err != nil {
			return err
		}
		if err := r.open(); err != nil {
			return err
		}
	}
	if _, err := r.f.Write(line); err != nil {
		// Leave no partial line: cut the file back to its last whole entry.
		if terr := r.f.Truncate(r.size); terr != nil {
			_ = r.closeFile()
		}
		return fmt.Errorf("dead-letter file %s: write: %w", r.Path(), err)
	}
	if err := r.f.Sync(); err != nil {
		// Whether the line reached the disk is unknown: the engine retries it, and a line written
		// twice is a duplicate, not a loss. Reopen to learn the real size.
		_ = r.closeFile()
		return fmt.Errorf("dead-letter file %s: fsync: %w", r.Path(), err)
	}
	r.size += int64(len(line))
	r.lines++
	r.s.m.entries.WithLabelValues(r.name).Set(float64(r.lines))
	r.s.m.events.WithLabelValues(r.name).Inc()
	r.s.m.bytes.WithLabelValues(r.name).Add(float64(len(line)))
	return nil
}

// open opens the route's file for appending when it is not open, creating the directory and
// the file (both fsynced) when missing. r.mu is held.
func (r *Route) open() error {
	if r.f != nil {
		return nil
	}
	if err := os.MkdirAll(r.s.dir, 0o750); err != nil {
		return fmt.Errorf("dead-letter file: create %s: %w", r.s.dir, err)
	}
	path := r.Path()
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("dead-letter file: %w", err)
	}
	st, err := f.Stat()
	if err == nil && st.Size() > 0 {
		// A line cut short (a write that failed and could not be cut back): end it, so that the
		// next entry starts a line of its own; readers report the fragment.
		last := make([]byte, 1)
		if _, err = f.ReadAt(last, st.Size()-1); err == nil && last[0] != '\n' {
			if _, err = f.Write([]byte("\n")); err == nil {
				st, err = f.Stat()
				r.lines++ // the fragment is a line now, which countLines counts too
				r.s.m.entries.WithLabelValues(r.name).Set(float64(r.lines))
			}
		}
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("dead-letter file %s: %w", path, err)
	}
	if statErr != nil {
		if err := fsutil.SyncDir(r.s.dir); err != nil {
			f.Close()
			return fmt.Errorf("dead-letter file %s: %w", path, err)
		}
	}
	r.f, r.size = f, st.Size()
	return nil
}

// rotate renames the full file to the next <route>.jsonl.<n>. r.mu is held and the file open.
func (r *Route) rotate() error {
	if err := r.closeFile(); err != nil {
		return err
	}
	files, err := r.s.files(r.name)
	if err != nil {
		return err
	}
	n := 1
	for _, f := range files {
		if f.n >= n {
			n = f.n + 1
		}
	}
	to := fmt.Sprintf("%s.%d", r.Path(), n)
	if err := os.Rename(r.Path(), to); err != nil {
		return fmt.Errorf("dead-letter file: rotate: %w", err)
	}
	if err := fsutil.SyncDir(r.s.dir); err != nil {
		return fmt.Errorf("dead-letter file: rotate %s: %w", to, err)
	}
	return nil
}

// closeFile closes the open file, if any. r.mu is held.
func (r *Route) closeFile() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f, r.size = nil, 0
	if err != nil {
		return fmt.Errorf("dead-letter file %s: close: %w", r.Path(), err)
	}
	return nil
}

// routeFile is one file of a route: n is its rotation number, 0 for the file being written.
type routeFile struct {
	route, path string
	n           int
}

// parseName returns the route and rotation number of a file name of the directory.
func parseName(name string) (route string, n int, ok bool) {
	if r, found := strings.CutSuffix(name, ".jsonl"); found && r != "" {
		return r, 0, true
	}
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(name[i+1:])
	if err != nil || n <= 0 || strconv.Itoa(n) != name[i+1:] {
		return "", 0, false
	}
	r, found := strings.CutSuffix(name[:i], ".jsonl")
	if !found || r == "" {
		return "", 0, false
	}
	return r, n, true
}

// files returns the files of route (every route when route is ""), each route's in the order
// they were written: rotated ones by number, then the current one; routes by name.
func (s *Store) files(route string) ([]routeFile, error) {
	des, err := os.ReadDir(s.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dead-letter directory: %w", err)
	}
	var out []routeFile
	for _, de := range des {
		if !de.Type().IsRegular() {
			continue
		}
		rt, n, ok := parseName(de.Name())
		if !ok || (route != "" && rt != route) {
			continue
		}
		out = append(out, routeFile{route: rt, path: filepath.Join(s.dir, de.Name()), n: n})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.route != b.route {
			return a.route < b.route
		}
		if (a.n == 0) != (b.n == 0) {
			return b.n == 0
		}
		return a.n < b.n
	})
	return out, nil
}

// ReadError is a line of a dead-letter file that is not an entry (a line cut short by a crash
// of an older version, or edited by hand); List skips it and reports it.
type ReadError struct {
	File string
	Line int
	Err  error
}

func (e *ReadError) Error() string {
	return fmt.Sprintf("%s:%d: not a dead-letter entry: %v", e.File, e.Line, e.Err)
}

// List returns the entries of route (every route when route is ""), in the order they were
// written per route, routes by name. Lines that are not entries are skipped and returned as
// *ReadError in errs. It only reads, and may run beside the process that writes the files.
func (s *Store) List(route string) (entries []Entry, errs []error) {
	files, err := s.files(route)
	if err != nil {
		return nil, []error{err}
	}
	for _, f := range files {
		es, ferrs := readFile(f.path)
		entries = append(entries, es...)
		errs = append(errs, ferrs...)
	}
	return entries, errs
}

// readFile reads the entries of one file.
func readFile(path string) (entries []Entry, errs []error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // rotated or rewritten since the directory was read
	}
	if err != nil {
		return nil, []error{fmt.Errorf("dead-letter file: %w", err)}
	}
	defer f.Close()
	br := bufio.NewReader(f)
	for line := 1; ; line++ {
		b, err := br.ReadBytes('\n')
		if len(b) > 0 && b[len(b)-1] != '\n' {
			// An unfinished last line: being written right now, or cut short. Not an entry yet.
			if err == io.EOF {
				return entries, errs
			}
		}
		if len(bytes.TrimSpace(b)) > 0 {
			raw := bytes.TrimSuffix(b, []byte("\n"))
			var e Entry
			if uerr := json.Unmarshal(raw, &e); uerr != nil {
				errs = append(errs, &ReadError{File: path, Line: line, Err: uerr})
			} else if len(e.Event) == 0 {
				errs = append(errs, &ReadError{File: path, Line: line, Err: errors.New("no event")})
			} else {
				e.File, e.Line, e.raw = path, line, append([]byte(nil), raw...)
				entries = append(entries, e)
			}
		}
		if err == io.EOF {
			return entries, errs
		}
		if err != nil {
			return entries, append(errs, fmt.Errorf("dead-letter file %s: %w", path, err))
		}
	}
}

// remove deletes the given entries of the route from its files (matched by their stored bytes,
// so wherever a rotation moved them), rewriting each file that holds one through a temporary
// file that is fsynced and renamed over it. A file left empty is removed. It returns how many
// entries it removed.
func (r *Route) remove(entries []Entry) (int, error) {
	want := map[string]int{}
	for _, e := range entries {
		want[string(e.raw)]++
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	removed := 0
	defer func() {
		r.lines = max(0, r.lines-removed)
		r.s.m.entries.WithLabelValues(r.name).Set(float64(r.lines))
	}()
	files, err := r.s.files(r.name)
	if err != nil {
		return 0, err
	}
	for _, f := range files {
		if len(want) == 0 {
			break
		}
		data, err := os.ReadFile(f.path)
		if err != nil {
			return removed, fmt.Errorf("dead-letter file: %w", err)
		}
		var keep bytes.Buffer
		n := 0
		for rest := data; len(rest) > 0; {
			line, after, found := bytes.Cut(rest, []byte("\n"))
			rest = after
			if found && want[string(line)] > 0 {
				if want[string(line)]--; want[string(line)] == 0 {
					delete(want, string(line))
				}
				n++
				continue
			}
			keep.Write(line)
			if found {
				keep.WriteByte('\n')
			}
		}
		if n == 0 {
			continue
		}
		if f.n == 0 {
			// The file being written: reopened on the next write.
			if err := r.closeFile(); err != nil {
				return removed, err
			}
		}
		if err := replaceFile(f.path, keep.Bytes()); err != nil {
			return removed, err
		}
		removed += n
	}
	return removed, nil
}

// replaceFile makes data the content of path (removing path when data is empty), durably.
func replaceFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	if len(data) == 0 {
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("dead-letter file: %w", err)
		}
		return fsutil.SyncDir(dir)
	}
	tmp, err := os.CreateTemp(dir, ".rewrite-*")
	if err != nil {
		return fmt.Errorf("dead-letter file: %w", err)
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("dead-letter file %s: rewrite: %w", path, err)
	}
	return fsutil.SyncDir(dir)
}

package dlq

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/testutil"
)

// deadLetter returns a dead-letter event as the engine makes it: a rule failure, an output
// failure, or a malformed message wrapping raw.
func deadLetter(kind, id string, raw []byte) *event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource("/t")
	e.SetType("t.x")
	e.SetExtension(engine.ExtErrorRoute, "r")
	switch kind {
	case KindRule:
		_ = e.SetData(event.ApplicationJSON, map[string]int{"n": 1})
		e.SetExtension(engine.ExtError, "asked to fail")
		e.SetExtension(engine.ExtErrorKind, "fail")
	case KindOutput:
		_ = e.SetData(event.ApplicationJSON, map[string]int{"n": 2})
		e.SetExtension(engine.ExtError, "503 Service Unavailable")
		e.SetExtension(engine.ExtErrorOutput, "hook")
	case KindMalformed:
		e.SetType(engine.TypeMalformed)
		_ = e.SetData("application/octet-stream", raw)
		e.SetExtension(engine.ExtError, "not json")
		e.SetExtension(engine.ExtErrorInput, "in")
		e.SetExtension(engine.ExtOrigin, "topic/a")
	}
	return &e
}

func newStore(t *testing.T, max int64) (*Store, *prometheus.Registry, string) {
	t.Helper()
	dataDir := filepath.Join(t.TempDir(), "data")
	reg := prometheus.NewRegistry()
	s, err := New(dataDir, Options{MaxFileBytes: max, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	return s, reg, dataDir
}

// TestNothingBeforeTheFirstEvent: a store and its routes, as validate or a start builds them,
// create nothing; the first event creates the directory and the file.
func TestNothingBeforeTheFirstEvent(t *testing.T) {
	s, _, dataDir := newStore(t, 0)
	r := s.Route("care")
	_ = r.Sink()
	_ = r.Source()
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Fatalf("the data directory exists before any event (stat: %v)", err)
	}
	if entries, errs := s.List(""); len(entries) != 0 || len(errs) != 0 {
		t.Fatalf("List of a missing directory = %v %v, want nothing", entries, errs)
	}
	if err := r.Sink().Send(context.Background(), deadLetter(KindRule, "e1", nil)); err != nil {
		t.Fatal(err)
	}
	if got := fileText(t, r.Path()); strings.Count(got, "\n") != 1 {
		t.Fatalf("%s = %q, want one line", r.Path(), got)
	}
}

func fileText(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestWriteRotateList writes entries of every kind past the rotation size and reads them back
// in order, with their kind, reason, event and place; the metrics count them.
func TestWriteRotateList(t *testing.T) {
	s, reg, _ := newStore(t, 1000)
	r := s.Route("care")
	kinds := []string{KindRule, KindOutput, KindMalformed}
	const n = 12
	for i := range n {
		k := kinds[i%3]
		if err := r.Sink().Send(context.Background(), deadLetter(k, fmt.Sprintf("e%d", i), []byte("raw\x00bytes"))); err != nil {
			t.Fatal(err)
		}
	}
	// Another route, whose names could be mistaken for a rotated file of care.
	if err := s.Route("care.1").Sink().Send(context.Background(), deadLetter(KindRule, "other", nil)); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(s.Dir(), "care.jsonl*"))
	if len(files) < 3 {
		t.Fatalf("files %v: want the 1000-byte limit to have rotated care.jsonl at least twice", files)
	}
	for _, f := range files {
		if st, _ := os.Stat(f); st.Size() > 1000 {
			t.Errorf("%s is %d bytes, over the 1000-byte limit", f, st.Size())
		}
	}
	entries, errs := s.List("care")
	if len(errs) > 0 || len(entries) != n {
		t.Fatalf("List = %d entries, errors %v; want %d", len(entries), errs, n)
	}
	for i, e := range entries {
		id, _, _ := e.Summary()
		want := kinds[i%3]
		if id != fmt.Sprintf("e%d", i) || e.Kind != want || e.Route != "care" || time.Since(e.Time) > time.Minute || e.Reason == "" {
			t.Errorf("entry %d = %s %s %s %v %q, want e%d of kind %s", i, id, e.Kind, e.Route, e.Time, e.Reason, i, want)
		}
		ev, err := e.Decode()
		if err != nil {
			t.Fatal(err)
		}
		if want == KindMalformed && string(ev.Data()) != "raw\x00bytes" {
			t.Errorf("malformed entry %d holds data %q, want the raw bytes", i, ev.Data())
		}
	}
	if all, _ := s.List(""); len(all) != n+1 || all[0].Route != "care" || all[n].Route != "care.1" {
		t.Errorf("List of every route = %d entries, want %d, care's then care.1's", len(all), n+1)
	}
	if got := testutil.Metric(t, reg, "turnout_dead_letter_file_events_total", map[string]string{"route": "care"}); got != n {
		t.Errorf("turnout_dead_letter_file_events_total{route=care} = %v, want %d", got, n)
	}
	var size int64
	for _, f := range files {
		st, _ := os.Stat(f)
		size += st.Size()
	}
	if got := testutil.Metric(t, reg, "turnout_dead_letter_file_bytes_total", map[string]string{"route": "care"}); got != float64(size) {
		t.Errorf("turnout_dead_letter_file_bytes_total{route=care} = %v, want the files' %d bytes", got, size)
	}
}

// TestListSkipsBadLines: an unfinished last line is not an entry yet; a line that is not an
// entry is reported with its place; the entries around them are listed.
func TestListSkipsBadLines(t *testing.T) {
	s, _, _ := newStore(t, 0)
	r := s.Route("care")
	send := func(id string) {
		if err := r.Sink().Send(context.Background(), deadLetter(KindRule, id, nil)); err != nil {
			t.Fatal(err)
		}
	}
	send("a")
	f, err := os.OpenFile(r.Path(), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString("not an entry\n")
	f.Close()
	send("b")
	f, _ = os.OpenFile(r.Path(), os.O_APPEND|os.O_WRONLY, 0)
	_, _ = f.WriteString(`{"time":"2026-01-01T00:00:00Z","route":"care","ev`)
	f.Close()
	entries, errs := s.List("")
	var re *ReadError
	if len(entries) != 2 || len(errs) != 1 || !errors.As(errs[0], &re) || re.Line != 2 {
		t.Fatalf("List = %d entries, errors %v; want a and b, and line 2 reported", len(entries), errs)
	}
	if entries[1].Line != 3 || entries[1].Locator() != "care.jsonl:3" {
		t.Errorf("b is at %s, want care.jsonl:3", entries[1].Locator())
	}
}

// TestReplay replays a route's entries through a dispatcher: the acknowledged ones leave the
// file, the rejected one stays; the messages are the events as received, without the engine's
// error extensions, and a malformed one's bytes as received.
func TestReplay(t *testing.T) {
	s, reg, dataDir := newStore(t, 0)
	waiting := func(reg *prometheus.Registry) float64 {
		return testutil.Metric(t, reg, "turnout_dead_letter_file_entries", map[string]string{"route": "care"})
	}
	r := s.Route("care")
	if _, err := r.Replay(context.Background(), ""); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Replay before the engine started the source = %v, want ErrNotRunning", err)
	}
	for i, k := range []string{KindRule, KindOutput, KindMalformed} {
		raw := []byte(`{"specversion":"1.0","id":"fixed","source":"/s","type":"t"}`)
		if err := r.Sink().Send(context.Background(), deadLetter(k, fmt.Sprintf("e%d", i), raw)); err != nil {
			t.Fatal(err)
		}
	}
	if got := waiting(reg); got != 3 {
		t.Errorf("turnout_dead_letter_file_entries after 3 writes = %v, want 3", got)
	}
	d := testutil.NewDispatcher()
	if err := r.Source().Start(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Replay(context.Background(), "nope"); !errors.Is(err, ErrNoEntry) {
		t.Fatalf("Replay of an unknown id = %v, want ErrNoEntry", err)
	}
	type result struct {
		res ReplayResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := r.Replay(context.Background(), "")
		done <- result{res, err}
	}()
	for i := range 3 {
		x := d.Next(t, 5*time.Second)
		m := x.M
		switch i {
		case 0, 1:
			if m.Event == nil || m.Event.ID() != fmt.Sprintf("e%d", i) {
				t.Fatalf("message %d = %+v, want event e%d", i, m, i)
			}
			for _, ext := range []string{engine.ExtError, engine.ExtErrorRoute, engine.ExtErrorKind, engine.ExtErrorOutput} {
				if _, ok := m.Event.Extensions()[ext]; ok {
					t.Errorf("replayed event %s still carries %s", m.Event.ID(), ext)
				}
			}
		case 2:
			if m.Event == nil || m.Event.ID() != "fixed" || m.Origin != "topic/a" {
				t.Errorf("the malformed entry's bytes, a valid event, replayed as %+v; want event fixed from topic/a", m)
			}
		}
		if i == 1 {
			x.Settle(errors.New("output still down"))
		} else {
			x.Settle(nil)
		}
	}
	got := <-done
	if got.err != nil || got.res.Selected != 3 || got.res.Replayed != 2 || got.res.Failed != 1 || len(got.res.Errors) != 1 ||
		!strings.Contains(got.res.Errors[0], "output still down") {
		t.Fatalf("Replay = %+v, %v; want 3 selected, 2 replayed, 1 failed with its reason", got.res, got.err)
	}
	entries, _ := s.List("care")
	if id, _, _ := entries[0].Summary(); len(entries) != 1 || id != "e1" {
		t.Fatalf("after the replay the file holds %d entries, want only e1", len(entries))
	}
	if got := testutil.Metric(t, reg, "turnout_dead_letter_file_replayed_total", map[string]string{"route": "care"}); got != 2 {
		t.Errorf("turnout_dead_letter_file_replayed_total = %v, want 2", got)
	}
	if got := waiting(reg); got != 1 {
		t.Errorf("turnout_dead_letter_file_entries after 2 of 3 replayed = %v, want 1", got)
	}
	// Writing goes on after the rewrite, into the same file.
	if err := r.Sink().Send(context.Background(), deadLetter(KindRule, "e9", nil)); err != nil {
		t.Fatal(err)
	}
	if entries, _ := s.List("care"); len(entries) != 2 || entries[1].Locator() != "care.jsonl:2" {
		t.Errorf("after a write following the replay: %d entries, want 2, the new one at care.jsonl:2", len(entries))
	}
	// A restart counts what the files hold.
	reg2 := prometheus.NewRegistry()
	s2, err := New(dataDir, Options{Registerer: reg2})
	if err != nil {
		t.Fatal(err)
	}
	s2.Route("care")
	if got, got2 := waiting(reg), waiting(reg2); got != 2 || got2 != 2 {
		t.Errorf("turnout_dead_letter_file_entries = %v, and %v counted by a new store, want 2", got, got2)
	}
	if err := r.Source().Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Replay(context.Background(), ""); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Replay after Close = %v, want ErrNotRunning", err)
	}
}

func TestParseName(t *testing.T) {
	for name, want := range map[string]struct {
		route string
		n     int
		ok    bool
	}{
		"care.jsonl": {"care", 0, true}, "care.jsonl.3": {"care", 3, true}, "care.1.jsonl": {"care.1", 0, true},
		"a.jsonl.jsonl.2": {"a.jsonl", 2, true}, "care.jsonl.03": {}, "care.jsonl.0": {}, ".rewrite-123": {},
		"care.json": {}, ".jsonl": {}, "LOCK": {},
	} {
		r, n, ok := parseName(name)
		if r != want.route || n != want.n || ok != want.ok {
			t.Errorf("parseName(%q) = %q %d %v, want %q %d %v", name, r, n, ok, want.route, want.n, want.ok)
		}
	}
}

// TestCutLineEnded: a file whose last line was cut short (a crash in the middle of a write that
// could not be cut back) gets that line ended before the next entry, which stays readable.
func TestCutLineEnded(t *testing.T) {
	s, _, _ := newStore(t, 0)
	r := s.Route("care")
	if err := os.MkdirAll(s.Dir(), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.Path(), []byte(`{"time":"2026-01-01T00:00:00Z","rou`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Sink().Send(context.Background(), deadLetter(KindRule, "after", nil)); err != nil {
		t.Fatal(err)
	}
	entries, errs := s.List("care")
	if id, _, _ := entries[0].Summary(); len(entries) != 1 || id != "after" || entries[0].Line != 2 || len(errs) != 1 {
		t.Fatalf("List = %d entries, errors %v; want the new entry on line 2 and the fragment on line 1 reported", len(entries), errs)
	}
}

// TestCountLines: the waiting-lines gauge a start computes counts the complete, non-blank lines
// of the route's files, rotated ones included, however long a line is, and no other route's.
func TestCountLines(t *testing.T) {
	s, reg, _ := newStore(t, 0)
	if err := os.MkdirAll(s.Dir(), 0o750); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 200<<10) // longer than the reader's buffer
	for name, text := range map[string]string{
		"care.jsonl.1": "a\n\n  \nb\n",
		"care.jsonl":   long + "\n" + "cut sho",
		"other.jsonl":  "c\nd\n",
	} {
		if err := os.WriteFile(filepath.Join(s.Dir(), name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s.Route("care")
	if got := testutil.Metric(t, reg, "turnout_dead_letter_file_entries", map[string]string{"route": "care"}); got != 3 {
		t.Errorf("turnout_dead_letter_file_entries = %v, want 3 (a, b and the long line)", got)
	}
}

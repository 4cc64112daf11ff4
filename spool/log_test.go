package spool

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/internal/ce"
	"github.com/turnout-router/turnout/internal/testutil"
)

func TestRecordRoundTrip(t *testing.T) {
	for _, data := range [][]byte{{}, []byte("x"), bytes.Repeat([]byte{0}, 1000)} {
		b := appendRecord(nil, 7, 1234, data)
		r, n, err := decodeRecord(b, 6)
		if err != nil || n != len(b) || r.seq != 7 || r.at != 1234 || !bytes.Equal(r.data, data) {
			t.Errorf("round trip of %d bytes: %+v, %d, %v", len(data), r, n, err)
		}
	}
	t.Run("zeroes are not a record", func(t *testing.T) {
		if _, _, err := decodeRecord(make([]byte, 100), 0); err == nil {
			t.Error("a run of zero bytes decoded as a record")
		}
	})
	t.Run("every cut is torn", func(t *testing.T) {
		b := appendRecord(nil, 1, 1, []byte("payload"))
		for cut := range len(b) {
			if _, _, err := decodeRecord(b[:cut], 0); err != errTorn {
				t.Errorf("record cut at %d of %d: %v, want errTorn", cut, len(b), err)
			}
		}
	})
	t.Run("every bit flip is damage", func(t *testing.T) {
		b := appendRecord(nil, 1, 1, []byte("payload"))
		for i := range len(b) * 8 {
			c := bytes.Clone(b)
			c[i/8] ^= 1 << (i % 8)
			if _, _, err := decodeRecord(c, 0); err == nil {
				t.Errorf("bit %d flipped: still decodes", i)
			}
		}
	})
	t.Run("sequence must grow", func(t *testing.T) {
		if _, _, err := decodeRecord(appendRecord(nil, 5, 1, nil), 5); err != errDamaged {
			t.Errorf("record 5 after 5: %v, want errDamaged", err)
		}
	})
}

func TestCursor(t *testing.T) {
	path := filepath.Join(t.TempDir(), cursorFile)
	if got := readCursor(path); got != 0 {
		t.Errorf("missing cursor = %d, want 0", got)
	}
	if err := writeCursor(path, 123456789); err != nil {
		t.Fatal(err)
	}
	if got := readCursor(path); got != 123456789 {
		t.Errorf("cursor = %d, want 123456789", got)
	}
	b, _ := os.ReadFile(path)
	b[len(cursorMagic)] ^= 1
	_ = os.WriteFile(path, b, 0o600)
	if got := readCursor(path); got != 0 {
		t.Errorf("damaged cursor = %d, want 0 (forward everything again)", got)
	}
}

// segments returns the segment files of dir in order.
func segments(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

// delivered reopens the spool on dir with a working output and returns what it forwarded once
// its events gauge is down to 0 (the spool, still open, is closed at the test's end).
func delivered(t *testing.T, dir string, cfg Config) ([]*event.Event, *testSpool) {
	t.Helper()
	sink := newSwitchSink()
	s := open(t, dir, cfg, sink)
	testutil.WaitFor(t, "the spool emptied", 20*time.Second, func() bool { return s.events.Load() == 0 })
	return sink.Confirmed(), s
}

// checkNoGarbage fails for any forwarded event that is not, unchanged, one of events 0..n-1.
func checkNoGarbage(t *testing.T, got []*event.Event, n int) map[int]bool {
	t.Helper()
	seen := map[int]bool{}
	for _, e := range got {
		i, ok := eventNumber(e.ID())
		if !ok || i >= n {
			t.Fatalf("forwarded an event that was never sent: %s", e)
		}
		if d := ce.Diff(testEvent(i), e); len(d) > 0 {
			t.Fatalf("forwarded event %d differs from what was sent: %v", i, d)
		}
		seen[i] = true
	}
	return seen
}

// TestPowerCut simulates a power cut at a random point: events 0..k-1 were confirmed (written
// and fsynced); events k..k+m-1 were written after them but not yet fsynced, so the cut keeps
// any prefix of their bytes, or keeps pages of them out of order, or leaves zeroes where the
// file grew. After restart every confirmed event goes out, and nothing that is not an event that
// was sent.
func TestPowerCut(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	damages := []struct {
		name  string
		apply func(tail []byte) []byte
	}{
		{"torn at a random offset", func(tail []byte) []byte { return tail[:rng.IntN(len(tail))] }},
		{"random bytes overwritten", func(tail []byte) []byte {
			c := bytes.Clone(tail)
			for range 1 + rng.IntN(8) {
				c[rng.IntN(len(c))] = byte(rng.Uint32())
			}
			return c
		}},
		{"a hole of zeroes, later pages kept", func(tail []byte) []byte {
			c := bytes.Clone(tail)
			from := rng.IntN(len(c))
			clear(c[from:min(len(c), from+1+rng.IntN(4096))])
			return c
		}},
		{"file grown by zeroes only", func(tail []byte) []byte { return make([]byte, 1+rng.IntN(8192)) }},
	}
	for _, dmg := range damages {
		t.Run(dmg.name, func(t *testing.T) {
			for iter := range 8 {
				dir := t.TempDir()
				cfg := Config{MaxBytes: size(1 << 20)}
				k, m := 1+rng.IntN(400), 1+rng.IntN(20)
				down := newSwitchSink()
				down.down.Store(true)
				s := open(t, dir, cfg, down)
				sendAll(t, s, 0, k)
				if err := s.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
				// The unconfirmed records, as the writer would have appended them.
				segs := segments(t, dir)
				lastSeg := segs[len(segs)-1]
				var tail []byte
				for j := range m {
					data, err := ce.EncodeStructured(testEvent(k + j))
					if err != nil {
						t.Fatal(err)
					}
					tail = appendRecord(tail, uint64(k+j+1), time.Now().UnixNano(), data)
				}
				f, err := os.OpenFile(lastSeg, os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.Write(dmg.apply(tail)); err != nil {
					t.Fatal(err)
				}
				f.Close()

				got, _ := delivered(t, dir, cfg)
				seen := checkNoGarbage(t, got, k+m)
				for i := range k {
					if !seen[i] {
						t.Fatalf("iteration %d: confirmed event %d of %d lost after the cut", iter, i, k)
					}
				}
			}
		})
	}
}

// TestDamageAnywhere flips bytes anywhere in the log, confirmed records included (a disk
// failing, not a power cut): nothing damaged is ever forwarded as an event, the damage is
// counted, and the records in undamaged segments all go out.
func TestDamageAnywhere(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, uint64(time.Now().UnixNano())))
	for iter := range 12 {
		dir := t.TempDir()
		cfg := Config{MaxBytes: size(1 << 20)}
		const n = 600
		down := newSwitchSink()
		down.down.Store(true)
		s := open(t, dir, cfg, down)
		sendAll(t, s, 0, n)
		if err := s.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		segs := segments(t, dir)
		victim := segs[rng.IntN(len(segs))]
		b, err := os.ReadFile(victim)
		if err != nil {
			t.Fatal(err)
		}
		// Which events the undamaged segments hold.
		intact := map[int]bool{}
		for _, p := range segs {
			if p == victim {
				continue
			}
			for _, i := range eventsIn(t, p) {
				intact[i] = true
			}
		}
		for range 1 + rng.IntN(3) {
			off := rng.IntN(len(b))
			b[off] ^= byte(1 + rng.IntN(255))
		}
		if err := os.WriteFile(victim, b, 0o600); err != nil {
			t.Fatal(err)
		}
		got, s2 := delivered(t, dir, cfg)
		seen := checkNoGarbage(t, got, n)
		for i := range intact {
			if !seen[i] {
				t.Fatalf("iteration %d: event %d, in an undamaged segment, was not forwarded", iter, i)
			}
		}
		if v := s2.metric(t, "turnout_spool_discarded_bytes_total", nil); v == 0 {
			t.Errorf("iteration %d: damage found but turnout_spool_discarded_bytes_total = 0", iter)
		}
		if len(seen) == n {
			t.Errorf("iteration %d: every event forwarded although a segment was damaged", iter)
		}
	}
}

// eventsIn returns the event numbers in the segment file at path.
func eventsIn(t *testing.T, path string) []int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	sc := &scanner{r: f, limit: st.Size(), off: int64(len(segMagic))}
	var out []int
	for {
		r, err := sc.next()
		if err != nil {
			return out
		}
		e, err := ce.DecodeStructured(r.data)
		if err != nil {
			t.Fatal(err)
		}
		i, _ := eventNumber(e.ID())
		out = append(out, i)
	}
}

func TestBadMagicIsSetAside(t *testing.T) {
	dir := t.TempDir()
	down := newSwitchSink()
	down.down.Store(true)
	s := open(t, dir, Config{MaxBytes: size(1 << 20)}, down)
	sendAll(t, s, 0, 300)
	s.Close(context.Background())
	segs := segments(t, dir)
	if len(segs) < 2 {
		t.Fatalf("want several segments, got %d", len(segs))
	}
	b, _ := os.ReadFile(segs[0])
	copy(b, "NOTASPOO")
	_ = os.WriteFile(segs[0], b, 0o600)
	got, _ := delivered(t, dir, Config{MaxBytes: size(1 << 20)})
	checkNoGarbage(t, got, 300)
	if _, err := os.Stat(segs[0] + ".damaged"); err != nil {
		t.Errorf("segment with a bad magic not set aside: %v", err)
	}
	if len(got) == 0 {
		t.Error("nothing forwarded from the segments after the damaged one")
	}
}

// FuzzDecodeRecord: any bytes either decode to a record that encodes back to the same bytes, or
// are refused; decodeRecord never panics.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendRecord(nil, 1, 2, []byte(`{"specversion":"1.0"}`)), uint64(0))
	f.Add(make([]byte, 30), uint64(0))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, uint64(0))
	f.Fuzz(func(t *testing.T, b []byte, prev uint64) {
		r, n, err := decodeRecord(b, prev)
		if err != nil {
			return
		}
		if r.seq <= prev {
			t.Fatalf("record %d accepted after %d", r.seq, prev)
		}
		if again := appendRecord(nil, r.seq, r.at, r.data); !bytes.Equal(again, b[:n]) {
			t.Fatalf("decoded record does not encode back to its bytes")
		}
	})
}

// FuzzRecover: whatever a segment file holds, recovery does not fail or panic, and leaves a file
// that is entirely valid records.
func FuzzRecover(f *testing.F) {
	good := []byte(segMagic)
	good = appendRecord(good, 1, 1, []byte("a"))
	good = appendRecord(good, 2, 1, []byte("bc"))
	f.Add(good)
	f.Add(append(bytes.Clone(good), 1, 2, 3))
	f.Add(append(bytes.Clone(good[:20]), good[30:]...))
	f.Add([]byte("TSPO"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, segmentName(1))
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		rec, err := recoverDir(dir)
		if err != nil {
			t.Fatalf("recover: %v", err)
		}
		if len(rec.segs) == 0 {
			if _, err := os.Stat(path + ".damaged"); err != nil {
				t.Fatalf("segment neither kept nor set aside: %v", err)
			}
			return
		}
		fh, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		st, _ := fh.Stat()
		if st.Size() != rec.segs[0].size {
			t.Fatalf("recovered size %d, file has %d", rec.segs[0].size, st.Size())
		}
		sc := &scanner{r: fh, limit: st.Size(), off: int64(len(segMagic))}
		for {
			_, err := sc.next()
			if err != nil {
				if !strings.Contains(err.Error(), "EOF") {
					t.Fatalf("recovered segment still holds bad bytes at %d: %v", sc.off, err)
				}
				return
			}
		}
	})
}

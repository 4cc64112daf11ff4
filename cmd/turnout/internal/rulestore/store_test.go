package rulestore

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// module returns distinct bytes standing for a module, and a passing report for them (Put
// checks the report, not the bytes; Validate is tested with real modules in validate_test.go).
func module(t testing.TB) ([]byte, *Report) {
	t.Helper()
	b := make([]byte, 64)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b, &Report{SHA256: Sum(b), Size: int64(len(b)), ABIVersion: 1, Exports: []string{"memory", "turnout_decide"}, OK: true}
}

func open(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func put(t testing.TB, s *Store, m Meta) Version {
	t.Helper()
	b, rep := module(t)
	v, created, err := s.Put(b, rep, m)
	if err != nil || !created {
		t.Fatalf("Put = %v, created %v", err, created)
	}
	return v
}

func TestPutGet(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	b, rep := module(t)
	at := time.Date(2026, 11, 30, 4, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return at }
	v, created, err := s.Put(b, rep, Meta{UploadedBy: "ops", Description: "first", DefaultConfig: []byte(`{ "outputs": ["a"] }`)})
	if err != nil || !created {
		t.Fatalf("Put = %v, created %v", err, created)
	}
	want := Version{SHA256: Sum(b), Size: 64, ABIVersion: 1, Exports: []string{"memory", "turnout_decide"}, UploadedAt: at, UploadedBy: "ops", Description: "first", DefaultConfig: []byte(`{"outputs":["a"]}`)}
	check := func(t *testing.T, got Version) {
		t.Helper()
		if got.SHA256 != want.SHA256 || got.Size != want.Size || got.ABIVersion != 1 || !slices.Equal(got.Exports, want.Exports) ||
			!got.UploadedAt.Equal(at) || got.UploadedBy != "ops" || got.Description != "first" || string(got.DefaultConfig) != string(want.DefaultConfig) {
			t.Errorf("version = %+v, want %+v", got, want)
		}
	}
	check(t, v)

	t.Run("same bytes again is idempotent", func(t *testing.T) {
		s.now = func() time.Time { return at.Add(time.Hour) }
		v2, created, err := s.Put(b, rep, Meta{UploadedBy: "someone else"})
		if err != nil || created {
			t.Fatalf("second Put = %v, created %v; want no error, not created", err, created)
		}
		check(t, v2)
		if n := len(s.List()); n != 1 {
			t.Errorf("List has %d versions, want 1", n)
		}
	})
	t.Run("bytes and metadata survive a reopen", func(t *testing.T) {
		s2 := open(t, dir)
		got, err := s2.Get(Sum(b))
		if err != nil {
			t.Fatal(err)
		}
		check(t, got)
		wasm, err := s2.Wasm(Sum(b))
		if err != nil || string(wasm) != string(b) {
			t.Errorf("Wasm = %v, %v", len(wasm), err)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		other, otherRep := module(t)
		failed := *otherRep
		failed.OK = false
		for name, c := range map[string]struct {
			b   []byte
			rep *Report
			m   Meta
			err string
		}{
			"no report":               {other, nil, Meta{}, "not validated"},
			"failed report":           {other, &failed, Meta{}, "not validated"},
			"report of other bytes":   {other, rep, Meta{}, "not validated"},
			"default config not JSON": {other, otherRep, Meta{DefaultConfig: []byte(`{"a"`)}, "default config is not valid JSON"},
		} {
			t.Run(name, func(t *testing.T) {
				if _, _, err := s.Put(c.b, c.rep, c.m); err == nil || !strings.Contains(err.Error(), c.err) {
					t.Errorf("Put = %v, want %q", err, c.err)
				}
			})
		}
		if _, err := s.Get(Sum(other)); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get of a refused version = %v, want ErrNotFound", err)
		}
	})
}

func TestActivateRollbackDelete(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	v1, v2, v3 := put(t, s, Meta{}), put(t, s, Meta{}), put(t, s, Meta{})
	step := func(t *testing.T, r Route, err error, active string, history ...string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if r.Active != active || !slices.Equal(r.History, history) {
			t.Fatalf("route = active %s history %v, want %s %v", short(r.Active), r.History, short(active), history)
		}
	}
	r, err := s.Activate("care", v1.SHA256, "ops")
	step(t, r, err, v1.SHA256)
	r, err = s.Activate("care", v2.SHA256, "ops")
	step(t, r, err, v2.SHA256, v1.SHA256)
	r, err = s.Activate("care", v2.SHA256, "ops")
	step(t, r, err, v2.SHA256, v1.SHA256) // the active version again: no change
	r, err = s.Activate("care", v3.SHA256, "ops")
	step(t, r, err, v3.SHA256, v1.SHA256, v2.SHA256)
	if r.UpdatedBy != "ops" || r.UpdatedAt.IsZero() {
		t.Errorf("route = %+v, want updated by ops", r)
	}

	if _, err := s.Activate("care", strings.Repeat("0", 64), "ops"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Activate of an unknown version = %v, want ErrNotFound", err)
	}
	if _, err := s.Rollback("other", "ops"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Rollback of an unknown route = %v, want ErrNotFound", err)
	}
	for _, v := range []Version{v1, v2, v3} {
		if err := s.Delete(v.SHA256); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "route(s) care") {
			t.Errorf("Delete of a version in use = %v, want ErrInUse naming care", err)
		}
	}

	r, err = s.Rollback("care", "ops")
	step(t, r, err, v2.SHA256, v1.SHA256)
	if err := s.Delete(v3.SHA256); err != nil {
		t.Errorf("Delete of the version rolled back from: %v", err)
	}
	if _, err := s.Get(v3.SHA256); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete = %v, want ErrNotFound", err)
	}
	if err := s.Delete(v3.SHA256); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}

	t.Run("state survives a reopen", func(t *testing.T) {
		s2 := open(t, dir)
		r, ok := s2.Route("care")
		if !ok {
			t.Fatal("route care lost")
		}
		step(t, r, nil, v2.SHA256, v1.SHA256)
		if got := s2.UsedBy(v1.SHA256); !slices.Equal(got, []string{"care"}) {
			t.Errorf("UsedBy = %v", got)
		}
		if n := len(s2.List()); n != 2 {
			t.Errorf("List has %d versions, want 2", n)
		}
		if _, err := os.Stat(filepath.Join(dir, "rules", "blobs", v3.SHA256+".wasm")); !os.IsNotExist(err) {
			t.Errorf("deleted module file still there: %v", err)
		}
	})

	r, err = s.Rollback("care", "ops")
	step(t, r, err, v1.SHA256)
	if _, err := s.Rollback("care", "ops"); !errors.Is(err, ErrNoPrevious) {
		t.Errorf("Rollback without history = %v, want ErrNoPrevious", err)
	}
}

// TestRecordConfigured checks that the version recorded for the configuration is remembered
// through activations, rollbacks and a reopen, and that recording the active version again
// only updates what is remembered.
func TestRecordConfigured(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	v1, v2 := put(t, s, Meta{}), put(t, s, Meta{})
	check := func(r Route, err error, active, configured string, history ...string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if r.Active != active || r.Configured != configured || !slices.Equal(r.History, history) {
			t.Fatalf("route = active %s configured %s history %v, want %s %s %v",
				short(r.Active), short(r.Configured), r.History, short(active), short(configured), history)
		}
	}
	r, err := s.RecordConfigured("care", v1.SHA256)
	check(r, err, v1.SHA256, v1.SHA256)
	if r.UpdatedBy != "config" {
		t.Errorf("recorded by %q, want config", r.UpdatedBy)
	}
	r, err = s.Activate("care", v2.SHA256, "ops")
	check(r, err, v2.SHA256, v1.SHA256, v1.SHA256)
	r, err = s.Rollback("care", "ops")
	check(r, err, v1.SHA256, v1.SHA256)
	r, err = s.Activate("care", v2.SHA256, "ops")
	check(r, err, v2.SHA256, v1.SHA256, v1.SHA256)
	r, err = s.RecordConfigured("care", v2.SHA256) // the file now holds the active version
	check(r, err, v2.SHA256, v2.SHA256, v1.SHA256)
	r, ok := open(t, dir).Route("care")
	if !ok {
		t.Fatal("route lost on reopen")
	}
	check(r, nil, v2.SHA256, v2.SHA256, v1.SHA256)
}

func TestHistoryLimit(t *testing.T) {
	s := open(t, t.TempDir())
	var all []string
	for range HistoryLimit + 3 {
		v := put(t, s, Meta{})
		all = append(all, v.SHA256)
		if _, err := s.Activate("r", v.SHA256, ""); err != nil {
			t.Fatal(err)
		}
	}
	r, _ := s.Route("r")
	if !slices.Equal(r.History, all[2:len(all)-1]) {
		t.Errorf("history keeps %d versions, want the last %d", len(r.History), HistoryLimit)
	}
	if err := s.Delete(all[0]); err != nil {
		t.Errorf("Delete of a version out of the history: %v", err)
	}
}

func TestRouteNames(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	v := put(t, s, Meta{})
	names := []string{"care", "a/b", "..", ".tmp-x", "ünï cødé", "%2E"}
	for _, n := range names {
		if _, err := s.Activate(n, v.SHA256, ""); err != nil {
			t.Fatalf("Activate %q: %v", n, err)
		}
	}
	if _, err := s.Activate("", v.SHA256, ""); err == nil {
		t.Error("Activate with an empty route name succeeded")
	}
	s2 := open(t, dir)
	var got []string
	for _, r := range s2.Routes() {
		got = append(got, r.Name)
	}
	slices.Sort(names)
	if !slices.Equal(got, names) {
		t.Errorf("routes after reopen = %q, want %q", got, names)
	}
}

// TestCrashLeftovers reopens stores holding what a crash leaves behind: temporary files (empty,
// truncated, garbage) in every directory and a module written without its metadata. Open
// removes them and shows the state before the interrupted write.
func TestCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	v := put(t, s, Meta{Description: "kept"})
	if _, err := s.Activate("care", v.SHA256, ""); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "rules")
	orphan, _ := module(t)
	leftovers := map[string][]byte{
		"blobs/" + tmpPrefix + "1":       orphan[:10],
		"blobs/" + Sum(orphan) + ".wasm": orphan, // the upload died before its metadata
		"versions/" + tmpPrefix + "2":    []byte(`{"sha256":"` + Sum(orphan) + `","si`),
		"routes/" + tmpPrefix + "3":      []byte(`{"route":"care","active":"` + Sum(orphan) + `"}`),
		"routes/" + tmpPrefix + "4":      nil,
	}
	for name, b := range leftovers {
		if err := os.WriteFile(filepath.Join(root, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s2 := open(t, dir)
	for name := range leftovers {
		if _, err := os.Stat(filepath.Join(root, name)); !os.IsNotExist(err) {
			t.Errorf("%s left after Open (%v)", name, err)
		}
	}
	if vs := s2.List(); len(vs) != 1 || vs[0].SHA256 != v.SHA256 || vs[0].Description != "kept" {
		t.Errorf("versions after reopen = %+v, want the one stored", vs)
	}
	if r, ok := s2.Route("care"); !ok || r.Active != v.SHA256 {
		t.Errorf("route after reopen = %+v, want %s active", r, short(v.SHA256))
	}
	// The interrupted upload can be done again.
	if _, created, err := s2.Put(orphan, &Report{SHA256: Sum(orphan), OK: true}, Meta{}); err != nil || !created {
		t.Errorf("Put after the crash = %v, created %v", err, created)
	}
}

// TestCorruptStore: files that no write of the store produces are reported, naming the file.
func TestCorruptStore(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, root string, v Version)
		err    string
	}{
		{"truncated metadata", func(t *testing.T, root string, v Version) {
			write(t, filepath.Join(root, "versions", v.SHA256+".json"), `{"sha256":"`)
		}, "versions/"},
		{"module bytes changed", func(t *testing.T, root string, v Version) {
			write(t, filepath.Join(root, "blobs", v.SHA256+".wasm"), "other bytes")
		}, "blobs/"},
		{"module missing", func(t *testing.T, root string, v Version) {
			if err := os.Remove(filepath.Join(root, "blobs", v.SHA256+".wasm")); err != nil {
				t.Fatal(err)
			}
		}, "its module"},
		{"route names an unknown version", func(t *testing.T, root string, v Version) {
			write(t, filepath.Join(root, "routes", "care.json"), `{"route":"care","active":"`+strings.Repeat("a", 64)+`","history":[]}`)
		}, "which is not stored"},
		{"truncated route", func(t *testing.T, root string, v Version) {
			write(t, filepath.Join(root, "routes", "care.json"), `{"route":"ca`)
		}, "routes/care.json"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir)
			v := put(t, s, Meta{})
			if _, err := s.Activate("care", v.SHA256, ""); err != nil {
				t.Fatal(err)
			}
			c.damage(t, filepath.Join(dir, "rules"), v)
			if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Open = %v, want an error containing %q", err, c.err)
			}
		})
	}
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentUse: uploads of the same and of different bytes, activations, rollbacks and
// reads from many goroutines (run with -race) leave a store that reopens to the same state.
func TestConcurrentUse(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	same, sameRep := module(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 5 {
				if _, _, err := s.Put(same, sameRep, Meta{}); err != nil {
					t.Error(err)
				}
				b, rep := module(t)
				v, _, err := s.Put(b, rep, Meta{})
				if err != nil {
					t.Error(err)
					return
				}
				route := []string{"a", "b"}[g%2]
				if _, err := s.Activate(route, v.SHA256, ""); err != nil {
					t.Error(err)
				}
				if i%2 == 1 {
					if _, err := s.Rollback(route, ""); err != nil {
						t.Error(err)
					}
				}
				s.List()
				s.Routes()
				s.UsedBy(v.SHA256)
			}
		})
	}
	wg.Wait()
	if n := len(s.List()); n != 1+8*5 {
		t.Errorf("%d versions, want %d", n, 1+8*5)
	}
	s2 := open(t, dir)
	if !slices.EqualFunc(s.Routes(), s2.Routes(), func(a, b Route) bool {
		return a.Name == b.Name && a.Active == b.Active && slices.Equal(a.History, b.History)
	}) {
		t.Errorf("routes after reopen differ:\n%+v\n%+v", s.Routes(), s2.Routes())
	}
}

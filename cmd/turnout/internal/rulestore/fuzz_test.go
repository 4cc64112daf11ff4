package rulestore

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzOpen stores arbitrary bytes as one version's metadata and as a route file (under an
// arbitrary file name) next to a consistent store, and opens it. Open either refuses, naming
// the file, and leaves the files as they were; or yields a store that is consistent (every
// version's module matches its metadata, every route names stored versions and sits in its own
// file) and that a second Open reads back the same. (The writes' own round trip is
// TestPutGet's and TestActivateRollback's: they fsync, too slow for a fuzzer.)
func FuzzOpen(f *testing.F) {
	// Seeds: the files a real store writes, and some corruptions of them.
	seedDir := f.TempDir()
	s, err := Open(seedDir)
	if err != nil {
		f.Fatal(err)
	}
	at := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return at }
	if _, _, err := s.Put(fuzzModA, &Report{SHA256: Sum(fuzzModA), Size: int64(len(fuzzModA)), ABIVersion: 1, Exports: []string{"memory", "turnout_decide"}, OK: true},
		Meta{UploadedBy: "ops", Description: "a", DefaultConfig: []byte(`{"outputs":["x"]}`)}); err != nil {
		f.Fatal(err)
	}
	if _, _, err := s.Put(fuzzModB, &Report{SHA256: Sum(fuzzModB), Size: int64(len(fuzzModB)), ABIVersion: 1, OK: true}, Meta{}); err != nil {
		f.Fatal(err)
	}
	for _, v := range []string{Sum(fuzzModA), Sum(fuzzModB), Sum(fuzzModA)} {
		if _, err := s.Activate("care/alarms", v, "ops"); err != nil {
			f.Fatal(err)
		}
	}
	if _, err := s.RecordConfigured(".hidden", Sum(fuzzModB)); err != nil {
		f.Fatal(err)
	}
	read := func(elem ...string) []byte {
		b, err := os.ReadFile(filepath.Join(append([]string{seedDir, "rules"}, elem...)...))
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	version := read("versions", Sum(fuzzModA)+".json")
	route := read("routes", routeFile("care/alarms"))
	hidden := read("routes", routeFile(".hidden"))
	f.Add(version, route, routeFile("care/alarms"))
	f.Add(version, hidden, routeFile(".hidden"))
	f.Add(version, hidden, ".hidden.json")
	f.Add(version, route, "care%2falarms.json")
	f.Add(bytes.Replace(version, []byte(`"size":7`), []byte(`"size":-1`), 1), route, routeFile("care/alarms"))
	f.Add(bytes.Replace(version, []byte(Sum(fuzzModA)), []byte(Sum(fuzzModB)), 1), route, routeFile("care/alarms"))
	f.Add([]byte(`{"sha256":"`+Sum(fuzzModA)+`","size":7,"exports":null,"uploaded_at":"2026-12-01T08:00:00+23:59","default_config":[1,{"a":null}],"new":1}`),
		[]byte(`{"route":"r","active":"`+Sum(fuzzModA)+`","history":[]}`), "r.json")
	f.Add([]byte(`null`), []byte(`{"route":"r","active":"`+Sum(fuzzModB)+`","history":null}`), "r.json")
	f.Add(version[:len(version)/2], route, "x.txt")
	f.Add(version, []byte(`{"route":"","active":""}`), ".json")

	base := f.TempDir()
	for _, d := range []string{"blobs", "versions", "routes"} {
		if err := os.MkdirAll(filepath.Join(base, "rules", d), 0o700); err != nil {
			f.Fatal(err)
		}
	}
	f.Fuzz(func(t *testing.T, version, route []byte, routeName string) {
		if routeName == "" || routeName == "." || routeName == ".." || strings.ContainsAny(routeName, "/\x00") || len(routeName) > 200 {
			return // not a file name
		}
		// The consistent part is written once per worker; each input rewrites A's metadata and
		// blob and adds the route file, removed afterwards.
		dir := base
		rules := filepath.Join(dir, "rules")
		a, b := Sum(fuzzModA), Sum(fuzzModB)
		files := map[string][]byte{
			filepath.Join(rules, "blobs", a+".wasm"):    fuzzModA,
			filepath.Join(rules, "blobs", b+".wasm"):    fuzzModB,
			filepath.Join(rules, "versions", b+".json"): fuzzVersionB,
			filepath.Join(rules, "versions", a+".json"): version,
			filepath.Join(rules, "routes", routeName):   route,
		}
		for p, data := range files {
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		defer os.Remove(filepath.Join(rules, "routes", routeName))
		tmp := strings.HasPrefix(routeName, tmpPrefix)
		s, err := Open(dir)
		if err != nil {
			named := false
			for p := range files {
				named = named || strings.Contains(err.Error(), p)
			}
			if !named || !strings.HasPrefix(err.Error(), "rulestore open: ") {
				t.Fatalf("Open refused the store with %q, which names none of its files", err)
			}
			// Refusing changes nothing but temporary files.
			for p, data := range files {
				got, rerr := os.ReadFile(p)
				if tmp && strings.HasSuffix(p, routeName) {
					continue
				}
				if rerr != nil || !bytes.Equal(got, data) {
					t.Fatalf("a refused Open changed %s: %v", p, rerr)
				}
			}
			return
		}
		checkConsistent(t, s)
		if s.versions[b] == nil {
			t.Fatal("the valid version B was not loaded")
		}
		if _, err := os.Stat(filepath.Join(rules, "blobs", a+".wasm")); (err == nil) != (s.versions[a] != nil) {
			t.Fatalf("module A on disk: %v, but loaded: %v (a module without metadata is removed, one with is kept)", err, s.versions[a] != nil)
		}
		if tmp {
			if _, err := os.Stat(filepath.Join(rules, "routes", routeName)); err == nil {
				t.Fatalf("temporary file %s left by Open", routeName)
			}
		}
		reopen(t, dir, s)
	})
}

var (
	fuzzModA     = []byte("\x00asm\x01\x00\x00")
	fuzzModB     = []byte("\x00asm\x01\x00\x00\x00")
	fuzzVersionB = []byte(`{"sha256":"` + Sum(fuzzModB) + `","size":8,"abi_version":1,"exports":null,"uploaded_at":"2026-12-01T08:00:00Z"}` + "\n")
)

// checkConsistent fails t unless every version's module is on disk with its size and SHA-256,
// and every route is in the file its name gives and names only stored versions.
func checkConsistent(t *testing.T, s *Store) {
	t.Helper()
	for _, v := range s.List() {
		w, err := s.Wasm(v.SHA256)
		if err != nil || int64(len(w)) != v.Size || Sum(w) != v.SHA256 {
			t.Fatalf("version %+v: module %d bytes, %v", v, len(w), err)
		}
		if _, err := json.Marshal(v); err != nil {
			t.Fatalf("version %+v cannot be written as JSON (the admin API's answer): %v", v, err)
		}
	}
	for _, r := range s.Routes() {
		if _, err := os.Stat(filepath.Join(s.Dir(), "routes", routeFile(r.Name))); err != nil {
			t.Fatalf("route %q is not in its file: %v", r.Name, err)
		}
		for _, v := range append([]string{r.Active}, r.History...) {
			if _, err := s.Get(v); err != nil {
				t.Fatalf("route %+v names a version that is not stored: %v", r, err)
			}
		}
		if got, ok := s.Route(r.Name); !ok || got.Active != r.Active {
			t.Fatalf("Route(%q) = %+v, %v; Routes has %+v", r.Name, got, ok, r)
		}
	}
}

// reopen opens dir again and fails t unless it holds what s holds; it returns the new store.
func reopen(t *testing.T, dir string, s *Store) *Store {
	t.Helper()
	s2, err := Open(dir)
	if err != nil {
		t.Fatalf("reopening a store that opened: %v", err)
	}
	checkConsistent(t, s2)
	for _, pair := range [][2]any{{s.List(), s2.List()}, {s.Routes(), s2.Routes()}} {
		was, _ := json.Marshal(pair[0])
		now, _ := json.Marshal(pair[1])
		if !bytes.Equal(was, now) {
			t.Fatalf("reopened store differs:\nwas %s\nnow %s", was, now)
		}
	}
	return s2
}

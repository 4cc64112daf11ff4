// Package rulestore keeps rule versions and each route's active version durably under
// <data_dir>/rules, for the admin API and the start-up of turnout run.
//
// Layout (one process owns the directory):
//
//	rules/blobs/<sha256>.wasm      the module bytes, named by their SHA-256 (hex)
//	rules/versions/<sha256>.json   a Version: metadata of one uploaded module
//	rules/routes/<route>.json      a Route: the active version and its rollback history
//
// Invariant: every file is written whole or not at all (temporary file, fsync, rename, fsync of
// the directory), and in an order that keeps the store consistent at every step: a blob before
// its metadata (a version exists once its metadata does), a route file only naming existing
// versions, metadata removed before its blob. A crash therefore leaves the old state or the new;
// Open removes the leftovers (temporary files, a blob without metadata) and refuses a store whose
// files contradict each other, naming the file, rather than guess.
package rulestore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/turnout-router/turnout/internal/fsutil"
)

// HistoryLimit is how many previous versions a route keeps for rollback; older ones fall off
// (and become deletable).
const HistoryLimit = 10

// Errors the store returns, wrapped with the operation; test them with errors.Is.
var (
	// ErrNotFound: no such version, or no such route.
	ErrNotFound = errors.New("not found")
	// ErrInUse: Delete of a version active on a route or in a route's rollback history.
	ErrInUse = errors.New("version in use")
	// ErrNoPrevious: Rollback of a route without history.
	ErrNoPrevious = errors.New("no previous version to roll back to")
	// ErrNotValidated: Put without a passing validation report for these bytes.
	ErrNotValidated = errors.New("not validated")
)

// Version is one stored rule module, identified by the SHA-256 of its bytes.
type Version struct {
	SHA256        string          `json:"sha256"`
	Size          int64           `json:"size"`
	ABIVersion    int             `json:"abi_version"`
	Exports       []string        `json:"exports"`
	UploadedAt    time.Time       `json:"uploaded_at"`
	UploadedBy    string          `json:"uploaded_by,omitempty"`
	Description   string          `json:"description,omitempty"`
	DefaultConfig json.RawMessage `json:"default_config,omitempty"`
}

// Meta is what an uploader says about a version.
type Meta struct {
	UploadedBy    string
	Description   string
	DefaultConfig json.RawMessage // JSON, optional
}

// Route is a route's rule state: the active version and the versions active before it, most
// recent last (Rollback returns to the last one).
type Route struct {
	Name      string    `json:"route"`
	Active    string    `json:"active"`
	History   []string  `json:"history"`
	UpdatedAt time.Time `json:"updated_at"`
	UpdatedBy string    `json:"updated_by,omitempty"`
	// Configured is the version of the rule file the route's configuration named when it was
	// last recorded (RecordConfigured): at start, a file with other bytes means the operator
	// changed the configuration since, and it takes over from the stored active version.
	Configured string `json:"configured,omitempty"`
}

// Store is the rule store. It is safe for concurrent use: one sync.RWMutex (mu) guards the
// in-memory index and the files; readers share it, writers hold it across their fsyncs, so
// writes are serialised and a reader never sees a half-applied change.
type Store struct {
	dir string
	now func() time.Time

	mu       sync.RWMutex
	versions map[string]*Version
	routes   map[string]*Route
}

const tmpPrefix = ".tmp-"

// Open opens (creating it if needed) the store under dataDir/rules, removing leftovers of an
// interrupted write. It fails when a stored file is unreadable or inconsistent (metadata whose
// blob is missing or has other bytes, a route naming an unknown version), naming the file.
func Open(dataDir string) (*Store, error) {
	s := &Store{dir: filepath.Join(dataDir, "rules"), now: time.Now, versions: map[string]*Version{}, routes: map[string]*Route{}}
	for _, d := range []string{"blobs", "versions", "routes"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("rulestore open: %w", err)
		}
		if err := cleanTemp(filepath.Join(s.dir, d)); err != nil {
			return nil, fmt.Errorf("rulestore open: %w", err)
		}
	}
	if err := s.loadVersions(); err != nil {
		return nil, fmt.Errorf("rulestore open: %w", err)
	}
	if err := s.loadRoutes(); err != nil {
		return nil, fmt.Errorf("rulestore open: %w", err)
	}
	return s, nil
}

// Dir returns the store's directory (<data_dir>/rules).
func (s *Store) Dir() string { return s.dir }

func cleanTemp(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	removed := false
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
			removed = true
		}
	}
	if removed {
		return fsutil.SyncDir(dir)
	}
	return nil
}

func (s *Store) loadVersions() error {
	vdir, bdir := filepath.Join(s.dir, "versions"), filepath.Join(s.dir, "blobs")
	entries, err := os.ReadDir(vdir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		sum, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !isSum(sum) {
			continue
		}
		path := filepath.Join(vdir, e.Name())
		var v Version
		if err := readJSON(path, &v); err != nil {
			return err
		}
		if v.SHA256 != sum {
			return fmt.Errorf("%s: holds version %q, not %s", path, v.SHA256, sum)
		}
		blob := filepath.Join(bdir, sum+".wasm")
		b, err := os.ReadFile(blob)
		if err != nil {
			return fmt.Errorf("%s: its module: %w", path, err)
		}
		if got := Sum(b); got != sum || int64(len(b)) != v.Size {
			return fmt.Errorf("%s: %d bytes with SHA-256 %s, want %d bytes with %s", blob, len(b), got, v.Size, sum)
		}
		s.versions[sum] = &v
	}
	// A blob without metadata is an upload interrupted before its metadata was written.
	blobs, err := os.ReadDir(bdir)
	if err != nil {
		return err
	}
	removed := false
	for _, e := range blobs {
		sum, ok := strings.CutSuffix(e.Name(), ".wasm")
		if ok && isSum(sum) && s.versions[sum] == nil {
			if err := os.Remove(filepath.Join(bdir, e.Name())); err != nil {
				return err
			}
			removed = true
		}
	}
	if removed {
		return fsutil.SyncDir(bdir)
	}
	return nil
}

func (s *Store) loadRoutes() error {
	rdir := filepath.Join(s.dir, "routes")
	entries, err := os.ReadDir(rdir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(rdir, e.Name())
		var r Route
		if err := readJSON(path, &r); err != nil {
			return err
		}
		if r.Name == "" || routeFile(r.Name) != e.Name() {
			return fmt.Errorf("%s: holds route %q", path, r.Name)
		}
		for _, v := range append([]string{r.Active}, r.History...) {
			if s.versions[v] == nil {
				return fmt.Errorf("%s: route %s names version %q, which is not stored", path, r.Name, v)
			}
		}
		s.routes[r.Name] = &r
	}
	return nil
}

// readJSON decodes one stored file. Unknown members are ignored, so a store written by a newer
// turnout still opens after a downgrade.
func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func isSum(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// Sum is a module's identity in the store: the SHA-256 of its bytes, in hex.
func Sum(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// routeFile is the file name of a route's state: the name path-escaped, a leading dot escaped
// too (so no route file is hidden or taken for a temporary file).
func routeFile(name string) string {
	f := url.PathEscape(name)
	if strings.HasPrefix(f, ".") {
		f = "%2E" + f[1:]
	}
	return f + ".json"
}

// writeAtomic replaces dir/name with data: a temporary file in dir, fsync, rename, fsync of dir.
func writeAtomic(dir, name string, data []byte) (err error) {
	f, err := os.CreateTemp(dir, tmpPrefix+"*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	return fsutil.SyncDir(dir)
}

func writeJSON(dir, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeAtomic(dir, name, append(b, '\n'))
}

// Put stores wasm as a version, after Validate passed on these bytes (rep). Storing bytes that
// are already stored changes nothing and returns the stored version with created false (the
// first upload's metadata stays). It takes mu for writing.
func (s *Store) Put(wasm []byte, rep *Report, m Meta) (Version, bool, error) {
	sum := Sum(wasm)
	if rep == nil || !rep.OK || rep.SHA256 != sum {
		return Version{}, false, fmt.Errorf("rulestore put %s: %w: validate these bytes first", short(sum), ErrNotValidated)
	}
	if len(bytes.TrimSpace(m.DefaultConfig)) > 0 && !json.Valid(m.DefaultConfig) {
		return Version{}, false, fmt.Errorf("rulestore put %s: default config is not valid JSON", short(sum))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.versions[sum]; v != nil {
		return *v, false, nil
	}
	v := &Version{
		SHA256: sum, Size: int64(len(wasm)), ABIVersion: rep.ABIVersion, Exports: slices.Clone(rep.Exports),
		UploadedAt: s.now().UTC(), UploadedBy: m.UploadedBy, Description: m.Description,
	}
	if len(bytes.TrimSpace(m.DefaultConfig)) > 0 {
		var c bytes.Buffer
		if err := json.Compact(&c, m.DefaultConfig); err != nil {
			return Version{}, false, fmt.Errorf("rulestore put %s: default config: %w", short(sum), err)
		}
		v.DefaultConfig = c.Bytes()
	}
	if err := writeAtomic(filepath.Join(s.dir, "blobs"), sum+".wasm", wasm); err != nil {
		return Version{}, false, fmt.Errorf("rulestore put %s: %w", short(sum), err)
	}
	if err := writeJSON(filepath.Join(s.dir, "versions"), sum+".json", v); err != nil {
		return Version{}, false, fmt.Errorf("rulestore put %s: %w", short(sum), err)
	}
	s.versions[sum] = v
	return *v, true, nil
}

func short(sum string) string { return sum[:min(12, len(sum))] }

// Get returns a version's metadata. It takes mu for reading.
func (s *Store) Get(sum string) (Version, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v := s.versions[sum]
	if v == nil {
		return Version{}, fmt.Errorf("rulestore get %s: %w", short(sum), ErrNotFound)
	}
	return *v, nil
}

// Wasm returns a version's module bytes, checked against its SHA-256. It takes mu for reading.
func (s *Store) Wasm(sum string) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.versions[sum] == nil {
		return nil, fmt.Errorf("rulestore read %s: %w", short(sum), ErrNotFound)
	}
	b, err := os.ReadFile(filepath.Join(s.dir, "blobs", sum+".wasm"))
	if err != nil {
		return nil, fmt.Errorf("rulestore read %s: %w", short(sum), err)
	}
	if Sum(b) != sum {
		return nil, fmt.Errorf("rulestore read %s: the stored module's bytes changed on disk", short(sum))
	}
	return b, nil
}

// List returns every version, oldest upload first. It takes mu for reading.
func (s *Store) List() []Version {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Version, 0, len(s.versions))
	for _, v := range s.versions {
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].UploadedAt.Equal(out[j].UploadedAt) {
			return out[i].UploadedAt.Before(out[j].UploadedAt)
		}
		return out[i].SHA256 < out[j].SHA256
	})
	return out
}

// Route returns a route's state. It takes mu for reading.
func (s *Store) Route(name string) (Route, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.routes[name]
	if r == nil {
		return Route{}, false
	}
	return cloneRoute(r), true
}

// Routes returns every route with a stored active version, by name. It takes mu for reading.
func (s *Store) Routes() []Route {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Route, 0, len(s.routes))
	for _, r := range s.routes {
		out = append(out, cloneRoute(r))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// UsedBy returns the routes on which a version is active or in the rollback history, by name.
// It takes mu for reading.
func (s *Store) UsedBy(sum string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.usedBy(sum)
}

// usedBy expects mu held.
func (s *Store) usedBy(sum string) []string {
	var out []string
	for name, r := range s.routes {
		if r.Active == sum || slices.Contains(r.History, sum) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func cloneRoute(r *Route) Route {
	c := *r
	c.History = slices.Clone(r.History)
	return c
}

// Activate makes version sum the active one of route; the previously active version goes to
// the end of the history (at most HistoryLimit kept). Activating the active version changes
// nothing. It takes mu for writing.
func (s *Store) Activate(route, sum, by string) (Route, error) {
	return s.activate(route, sum, by, false)
}

// RecordConfigured activates version sum, the rule file route's configuration names, on behalf
// of the configuration ("config"), and remembers it as the route's configured version.
func (s *Store) RecordConfigured(route, sum string) (Route, error) {
	return s.activate(route, sum, "config", true)
}

// activate implements Activate and RecordConfigured. It takes mu for writing.
func (s *Store) activate(route, sum, by string, configured bool) (Route, error) {
	if route == "" {
		return Route{}, errors.New("rulestore activate: empty route name")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.versions[sum] == nil {
		return Route{}, fmt.Errorf("rulestore activate %s on %s: version %w", short(sum), route, ErrNotFound)
	}
	next := &Route{Name: route}
	if configured {
		next.Configured = sum
	}
	if cur := s.routes[route]; cur != nil {
		if !configured {
			next.Configured = cur.Configured
		}
		if cur.Active == sum && cur.Configured == next.Configured {
			return cloneRoute(cur), nil
		}
		next.History = slices.Clone(cur.History)
		if cur.Active != sum {
			next.History = append(next.History, cur.Active)
		}
		if len(next.History) > HistoryLimit {
			next.History = next.History[len(next.History)-HistoryLimit:]
		}
	}
	next.Active, next.UpdatedAt, next.UpdatedBy = sum, s.now().UTC(), by
	if err := writeJSON(filepath.Join(s.dir, "routes"), routeFile(route), next); err != nil {
		return Route{}, fmt.Errorf("rulestore activate %s on %s: %w", short(sum), route, err)
	}
	s.routes[route] = next
	return cloneRoute(next), nil
}

// Rollback makes the last version of route's history active again; the version it replaces is
// dropped (a second Rollback goes one further back, not forth). It takes mu for writing.
func (s *Store) Rollback(route, by string) (Route, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.routes[route]
	if cur == nil {
		return Route{}, fmt.Errorf("rulestore rollback %s: route %w", route, ErrNotFound)
	}
	if len(cur.History) == 0 {
		return Route{}, fmt.Errorf("rulestore rollback %s: %w", route, ErrNoPrevious)
	}
	n := len(cur.History)
	next := &Route{Name: route, Active: cur.History[n-1], History: slices.Clone(cur.History[:n-1]), UpdatedAt: s.now().UTC(), UpdatedBy: by,
		Configured: cur.Configured}
	if err := writeJSON(filepath.Join(s.dir, "routes"), routeFile(route), next); err != nil {
		return Route{}, fmt.Errorf("rulestore rollback %s: %w", route, err)
	}
	s.routes[route] = next
	return cloneRoute(next), nil
}

// Delete removes a version that no route uses: a version active on a route or in a route's
// rollback history is refused with ErrInUse (naming the routes), so a rollback never finds its
// version gone. It takes mu for writing.
func (s *Store) Delete(sum string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.versions[sum] == nil {
		return fmt.Errorf("rulestore delete %s: %w", short(sum), ErrNotFound)
	}
	if used := s.usedBy(sum); len(used) > 0 {
		return fmt.Errorf("rulestore delete %s: %w by route(s) %s", short(sum), ErrInUse, strings.Join(used, ", "))
	}
	// Metadata first: once it is gone the version is gone; a blob left by a crash here is
	// removed by the next Open.
	vdir, bdir := filepath.Join(s.dir, "versions"), filepath.Join(s.dir, "blobs")
	if err := os.Remove(filepath.Join(vdir, sum+".json")); err != nil {
		return fmt.Errorf("rulestore delete %s: %w", short(sum), err)
	}
	if err := fsutil.SyncDir(vdir); err != nil {
		return fmt.Errorf("rulestore delete %s: %w", short(sum), err)
	}
	delete(s.versions, sum)
	if err := os.Remove(filepath.Join(bdir, sum+".wasm")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rulestore delete %s: module file: %w", short(sum), err)
	}
	if err := fsutil.SyncDir(bdir); err != nil {
		return fmt.Errorf("rulestore delete %s: %w", short(sum), err)
	}
	return nil
}

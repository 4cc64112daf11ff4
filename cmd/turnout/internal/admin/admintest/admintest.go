// Package admintest provides Fake, an in-memory admin.RuleService that tests of the rules API
// and of the `turnout rules` client run against.
//
// Invariant: Fake behaves as the real service promises (content-addressed, idempotent uploads,
// per-route history, no deletion of an active version) without loading any Wasm: a module is
// valid when it starts with the Wasm magic, and a body "fail:CODE" is refused with a
// *hostabi.LoadError of that code, so that every error mapping can be exercised.
package admintest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/turnout-router/turnout/cmd/turnout/internal/admin"
	"github.com/turnout-router/turnout/hostabi"
)

// Wasm returns a module Fake accepts, distinct for each tag.
func Wasm(tag string) []byte { return append([]byte("\x00asm\x01\x00\x00\x00"), tag...) }

// Fake is an in-memory RuleService. Safe for concurrent use.
type Fake struct {
	mu       sync.Mutex
	versions map[string]*admin.Version
	routes   map[string]*admin.Route
	// Now stamps uploads; tests may set it before use.
	Now func() time.Time
}

var _ admin.RuleService = (*Fake)(nil)

// New returns a Fake with the given routes, none of them with an active version.
func New(routes ...string) *Fake {
	f := &Fake{versions: map[string]*admin.Version{}, routes: map[string]*admin.Route{}, Now: time.Now}
	for _, r := range routes {
		f.routes[r] = &admin.Route{Name: r}
	}
	return f
}

// List implements admin.RuleService.
func (f *Fake) List(context.Context) (admin.Listing, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var l admin.Listing
	for _, v := range f.versions {
		l.Versions = append(l.Versions, f.withRoutes(*v))
	}
	sort.Slice(l.Versions, func(i, j int) bool { return l.Versions[i].UploadedAt.Before(l.Versions[j].UploadedAt) })
	for _, r := range f.routes {
		l.Routes = append(l.Routes, *r)
	}
	sort.Slice(l.Routes, func(i, j int) bool { return l.Routes[i].Name < l.Routes[j].Name })
	return l, nil
}

// Show implements admin.RuleService; version may be a unique prefix.
func (f *Fake) Show(_ context.Context, version string) (admin.Version, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, err := f.find(version)
	if err != nil {
		return admin.Version{}, err
	}
	return f.withRoutes(*v), nil
}

// Upload implements admin.RuleService.
func (f *Fake) Upload(ctx context.Context, u admin.Upload) (admin.Uploaded, error) {
	if code, ok := bytes.CutPrefix(u.Wasm, []byte("fail:")); ok {
		le := &hostabi.LoadError{Code: string(code), Detail: "the module failed with " + string(code)}
		return admin.Uploaded{}, fmt.Errorf("load rule %s: %w", u.Route, le)
	}
	if !bytes.HasPrefix(u.Wasm, []byte("\x00asm")) {
		return admin.Uploaded{}, &hostabi.LoadError{Code: hostabi.CodeNotWasm, Detail: "not a WebAssembly module"}
	}
	if bytes.Contains(u.SelfTest, []byte(`"mismatch"`)) {
		return admin.Uploaded{}, &admin.APIError{Status: 422, Code: admin.CodeSelfTestFailed, Detail: "sample 1: decided drop, expected route"}
	}
	sum := sha256.Sum256(u.Wasm)
	id := hex.EncodeToString(sum[:])
	f.mu.Lock()
	if u.Route != "" && f.routes[u.Route] == nil {
		f.mu.Unlock()
		return admin.Uploaded{}, fmt.Errorf("upload for route %q: %w", u.Route, admin.ErrRouteNotFound)
	}
	res := admin.Uploaded{}
	if v, ok := f.versions[id]; ok {
		res.Version = *v
	} else {
		v := &admin.Version{SHA256: id, Size: int64(len(u.Wasm)), ABIVersion: 1,
			Exports: []string{"turnout_abi_version", "turnout_alloc", "turnout_decide"}, UploadedAt: f.Now().UTC(),
			UploadedBy: u.UploadedBy, Description: u.Description, DefaultConfig: u.DefaultConfig}
		f.versions[id] = v
		res.Version, res.Created = *v, true
	}
	f.mu.Unlock()
	if u.Activate {
		c, err := f.Activate(ctx, u.Route, id)
		if err != nil {
			return admin.Uploaded{}, err
		}
		res.Activated = &c
	}
	f.mu.Lock()
	res.Version = f.withRoutes(res.Version)
	f.mu.Unlock()
	return res, nil
}

// Activate implements admin.RuleService.
func (f *Fake) Activate(_ context.Context, route, version string) (admin.Change, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.routes[route]
	if !ok {
		return admin.Change{}, fmt.Errorf("activate on %q: %w", route, admin.ErrRouteNotFound)
	}
	v, err := f.find(version)
	if err != nil {
		return admin.Change{}, err
	}
	c := admin.Change{Route: route, Old: r.Active, New: v.SHA256}
	if r.Active != "" && r.Active != v.SHA256 {
		r.History = append([]string{r.Active}, r.History...)
	}
	r.Active = v.SHA256
	return c, nil
}

// Rollback implements admin.RuleService.
func (f *Fake) Rollback(_ context.Context, route string) (admin.Change, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.routes[route]
	if !ok {
		return admin.Change{}, fmt.Errorf("rollback %q: %w", route, admin.ErrRouteNotFound)
	}
	if len(r.History) == 0 {
		return admin.Change{}, fmt.Errorf("rollback %q: %w", route, admin.ErrNoPreviousVersion)
	}
	c := admin.Change{Route: route, Old: r.Active, New: r.History[0]}
	r.Active, r.History = r.History[0], r.History[1:]
	return c, nil
}

// Delete implements admin.RuleService.
func (f *Fake) Delete(_ context.Context, version string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, err := f.find(version)
	if err != nil {
		return err
	}
	if used := f.withRoutes(*v).Routes; len(used) > 0 {
		return fmt.Errorf("version %s is active on %s: activate another version there first: %w", v.SHA256, strings.Join(used, ", "), admin.ErrVersionInUse)
	}
	delete(f.versions, v.SHA256)
	for _, r := range f.routes {
		r.History = slices.DeleteFunc(r.History, func(h string) bool { return h == v.SHA256 })
	}
	return nil
}

// find resolves a sha256 or a unique prefix of one. f.mu must be held.
func (f *Fake) find(version string) (*admin.Version, error) {
	var found *admin.Version
	for id, v := range f.versions {
		if version != "" && strings.HasPrefix(id, version) {
			if found != nil {
				return nil, fmt.Errorf("version %q is ambiguous: %w", version, admin.ErrVersionNotFound)
			}
			found = v
		}
	}
	if found == nil {
		return nil, fmt.Errorf("version %q: %w", version, admin.ErrVersionNotFound)
	}
	return found, nil
}

// withRoutes returns v with the routes it is active on. f.mu must be held.
func (f *Fake) withRoutes(v admin.Version) admin.Version {
	v.Routes = []string{}
	for _, r := range f.routes {
		if r.Active == v.SHA256 {
			v.Routes = append(v.Routes, r.Name)
		}
	}
	sort.Strings(v.Routes)
	return v
}

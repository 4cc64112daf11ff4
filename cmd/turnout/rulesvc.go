package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/turnout-router/turnout/cmd/turnout/internal/admin"
	"github.com/turnout-router/turnout/cmd/turnout/internal/config"
	"github.com/turnout-router/turnout/cmd/turnout/internal/rulestore"
	"github.com/turnout-router/turnout/cmd/turnout/internal/ruletest"
	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/hostabi"
)

// releaseWait bounds how long an activation waits for the calls still running on the version
// it replaced; calls still running after it close the old version when they finish.
const releaseWait = time.Second

// ruleService is the admin.RuleService of a running turnout: versions live in the rule store,
// each route with a rule runs behind its engine.RuleSwitch, and modules are validated through
// the rule host with the route's options before anything is stored or activated.
//
// Invariant: a route's switch runs the version the store names active for it (or the configured
// rule file while the store names none): every change is made durable in the store first, then
// swapped in, and both happen under mu, so concurrent requests cannot interleave them.
type ruleService struct {
	store *rulestore.Store
	// host runs the routes' rules; validator loads modules to validate and self-test them, on
	// a registry of its own, so that validation calls never count as a route's calls.
	host, validator *hostabi.Host
	routes          map[string]*config.Route // routes with a rule, by name
	switches        map[string]*engine.RuleSwitch
	log             *slog.Logger

	mu sync.Mutex // serialises changes (Upload with activation, Activate, Rollback, Delete)
}

var _ admin.RuleService = (*ruleService)(nil)

func newRuleService(store *rulestore.Store, host, validator *hostabi.Host, cfg *config.Config, switches map[string]*engine.RuleSwitch, log *slog.Logger) *ruleService {
	s := &ruleService{store: store, host: host, validator: validator, routes: map[string]*config.Route{}, switches: switches, log: log}
	for _, r := range cfg.Routes {
		if r.Rule != nil && switches[r.Name] != nil {
			s.routes[r.Name] = r
		}
	}
	return s
}

// ruleOptions are the options a version runs with on route r: the route's limits and its rule
// configuration, or the version's default configuration when the route's config block is
// absent.
func ruleOptions(r *config.Route, defaultConfig []byte) hostabi.RuleOptions {
	cfg := r.Rule.ConfigJSON
	if (len(cfg) == 0 || bytes.Equal(cfg, []byte("null"))) && len(defaultConfig) > 0 {
		cfg = defaultConfig
	}
	return hostabi.RuleOptions{
		Name:             r.Name,
		Config:           cfg,
		MemoryLimitPages: r.Rule.MemoryLimitPages,
		Timeout:          r.Rule.Timeout,
		PoolSize:         r.Rule.PoolSize,
		AllowClock:       r.Rule.AllowClock,
	}
}

// storedRuleLoader loads each route's rule: the version the store names active for the route
// when there is one (so that activations survive a restart), else the configured file. When the
// configured file's bytes differ from those the store last recorded for the route, the operator
// changed the configuration since: the file is recorded and becomes the active version (the
// one it replaces stays in the route's history, for rollback). The latest change wins, whether
// it came through the admin API or the configuration.
func storedRuleLoader(host *hostabi.Host, store *rulestore.Store, log *slog.Logger) config.RuleLoader {
	return func(ctx context.Context, r *config.Route, wasm []byte) (engine.Rule, error) {
		st, ok := store.Route(r.Name)
		if ok && st.Configured != "" && st.Configured != rulestore.Sum(wasm) {
			rule, err := host.Load(ctx, wasm, ruleOptions(r, nil))
			if err != nil {
				return nil, err
			}
			rep := rulestore.Validate(ctx, host, wasm, ruleOptions(r, nil), nil)
			if rep.OK {
				if _, _, err = store.Put(wasm, rep, rulestore.Meta{UploadedBy: "config", Description: "configured rule file " + r.Rule.Path}); err == nil {
					_, err = store.RecordConfigured(r.Name, rep.SHA256)
				}
			} else {
				err = fmt.Errorf("%s: %s", rep.Error.Code, rep.Error.Detail)
			}
			if err != nil {
				_ = rule.Close(ctx)
				return nil, fmt.Errorf("record the changed rule file %s of route %s: %w", r.Rule.Path, r.Name, err)
			}
			log.Info("the configured rule file changed since it was last recorded: it is the route's active version now",
				"route", r.Name, "file", r.Rule.Path, "version", rep.SHA256, "replaced", st.Active)
			return rule, nil
		}
		if !ok {
			return host.Load(ctx, wasm, ruleOptions(r, nil))
		}
		rule, err := loadStored(ctx, host, store, r, st.Active)
		if err != nil {
			return nil, fmt.Errorf("the route's stored active version %s (activated by %q at %s), not the file, is loaded: %w;"+
				" to start from the configured file instead, remove the route's file under %s",
				st.Active, st.UpdatedBy, st.UpdatedAt.Format(time.RFC3339), err, filepath.Join(store.Dir(), "routes"))
		}
		log.Info("route runs its stored active rule version, not the configured file", "route", r.Name,
			"version", st.Active, "file", r.Rule.Path, "activated_by", st.UpdatedBy, "activated_at", st.UpdatedAt)
		return rule, nil
	}
}

// loadStored loads stored version sum with route r's options.
func loadStored(ctx context.Context, host *hostabi.Host, store *rulestore.Store, r *config.Route, sum string) (*hostabi.Rule, error) {
	v, err := store.Get(sum)
	if err != nil {
		return nil, storeError(err)
	}
	wasm, err := store.Wasm(sum)
	if err != nil {
		return nil, storeError(err)
	}
	return host.Load(ctx, wasm, ruleOptions(r, v.DefaultConfig))
}

// route returns the route named name, or an error wrapping admin.ErrRouteNotFound.
func (s *ruleService) route(name string) (*config.Route, error) {
	r := s.routes[name]
	if r == nil {
		known := make([]string, 0, len(s.routes))
		for n := range s.routes {
			known = append(known, n)
		}
		slices.Sort(known)
		return nil, fmt.Errorf("route %q has no rule to replace (routes with a rule: %s): %w", name, strings.Join(known, ", "), admin.ErrRouteNotFound)
	}
	return r, nil
}

// resolve returns the full SHA-256 of version, which may be a unique prefix of at least 4 hex
// digits.
func (s *ruleService) resolve(version string) (string, error) {
	if len(version) < 4 {
		return "", fmt.Errorf("version %q: give at least 4 hex digits of its sha256: %w", version, admin.ErrVersionNotFound)
	}
	var found []string
	for _, v := range s.store.List() {
		if strings.HasPrefix(v.SHA256, version) {
			found = append(found, v.SHA256)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no stored version %s (turnout rules list shows them): %w", version, admin.ErrVersionNotFound)
	case 1:
		return found[0], nil
	}
	return "", fmt.Errorf("version prefix %s matches %d versions: give more digits: %w", version, len(found), admin.ErrVersionNotFound)
}

func (s *ruleService) version(v rulestore.Version) admin.Version {
	routes := []string{}
	for _, r := range s.store.Routes() {
		if r.Active == v.SHA256 {
			routes = append(routes, r.Name)
		}
	}
	return admin.Version{
		SHA256: v.SHA256, Size: v.Size, ABIVersion: uint32(v.ABIVersion), Exports: v.Exports,
		UploadedAt: v.UploadedAt, UploadedBy: v.UploadedBy, Description: v.Description,
		DefaultConfig: v.DefaultConfig, Routes: routes,
	}
}

// List implements admin.RuleService: every stored version, and every route with a rule.
func (s *ruleService) List(context.Context) (admin.Listing, error) {
	var l admin.Listing
	for _, v := range s.store.List() {
		l.Versions = append(l.Versions, s.version(v))
	}
	names := make([]string, 0, len(s.routes))
	for n := range s.routes {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		r := admin.Route{Name: n}
		if st, ok := s.store.Route(n); ok {
			r.Active = st.Active
			r.History = slices.Clone(st.History)
			slices.Reverse(r.History) // the store keeps the most recent last
		}
		l.Routes = append(l.Routes, r)
	}
	return l, nil
}

// Show implements admin.RuleService.
func (s *ruleService) Show(_ context.Context, version string) (admin.Version, error) {
	sum, err := s.resolve(version)
	if err != nil {
		return admin.Version{}, err
	}
	v, err := s.store.Get(sum)
	if err != nil {
		return admin.Version{}, storeError(err)
	}
	return s.version(v), nil
}

// Upload implements admin.RuleService: validate with the route's options (or the defaults when
// no route is named) and the self-test, store, and activate when asked.
func (s *ruleService) Upload(ctx context.Context, u admin.Upload) (admin.Uploaded, error) {
	opts := hostabi.RuleOptions{Name: "upload", Config: u.DefaultConfig}
	var r *config.Route
	if u.Route != "" {
		var err error
		if r, err = s.route(u.Route); err != nil {
			return admin.Uploaded{}, err
		}
		opts = ruleOptions(r, u.DefaultConfig)
	}
	var samples []ruletest.Sample
	if len(u.SelfTest) > 0 {
		var err error
		if samples, err = ruletest.DecodeSamples("selftest", u.SelfTest); err != nil {
			return admin.Uploaded{}, &admin.APIError{Status: 400, Code: admin.CodeBadRequest, Detail: err.Error()}
		}
	}
	rep := rulestore.Validate(ctx, s.validator, u.Wasm, opts, samples)
	if !rep.OK {
		return admin.Uploaded{}, reportError(rep)
	}
	v, created, err := s.store.Put(u.Wasm, rep, rulestore.Meta{UploadedBy: u.UploadedBy, Description: u.Description, DefaultConfig: u.DefaultConfig})
	if err != nil {
		return admin.Uploaded{}, fmt.Errorf("store the version: %w", err)
	}
	res := admin.Uploaded{Created: created}
	if u.Activate {
		c, err := s.activate(ctx, r, v.SHA256, u.UploadedBy)
		if err != nil {
			return admin.Uploaded{}, err
		}
		res.Activated = &c
	}
	res.Version = s.version(v)
	return res, nil
}

// reportError turns a failed validation into the API's answer.
func reportError(rep *rulestore.Report) error {
	p := rep.Error
	switch p.Code {
	case rulestore.CodeInternal:
		return errors.New(p.Detail)
	case rulestore.CodeSelfTestFailed:
		return &admin.APIError{Status: 422, Code: admin.CodeSelfTestFailed, Detail: p.Detail, Samples: rep.Samples}
	}
	return &hostabi.LoadError{Code: p.Code, Detail: p.Detail}
}

// Activate implements admin.RuleService.
func (s *ruleService) Activate(ctx context.Context, route, version string) (admin.Change, error) {
	r, err := s.route(route)
	if err != nil {
		return admin.Change{}, err
	}
	sum, err := s.resolve(version)
	if err != nil {
		return admin.Change{}, err
	}
	return s.activate(ctx, r, sum, "")
}

// activate makes sum the active version of r: load it with the route's options (so a version
// whose init refuses the route's configuration is refused before anything changes), record it
// in the store, swap it in, and let the replaced version drain. A route's first activation
// first records the configured rule file as a version, so that a rollback can return to it.
func (s *ruleService) activate(ctx context.Context, r *config.Route, sum, by string) (admin.Change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.store.Route(r.Name); !ok {
		if err := s.recordConfigured(ctx, r); err != nil {
			return admin.Change{}, err
		}
	}
	return s.swap(ctx, r, sum, by, func() (rulestore.Route, error) { return s.store.Activate(r.Name, sum, by) })
}

// recordConfigured stores the rule file route r was started with and makes it the route's
// stored active version. s.mu must be held.
func (s *ruleService) recordConfigured(ctx context.Context, r *config.Route) error {
	wasm, err := os.ReadFile(r.Rule.Path)
	if err != nil {
		return fmt.Errorf("record the configured rule of route %s: %w", r.Name, err)
	}
	rep := rulestore.Validate(ctx, s.validator, wasm, ruleOptions(r, nil), nil)
	if !rep.OK {
		return fmt.Errorf("record the configured rule %s of route %s: %s: %s", r.Rule.Path, r.Name, rep.Error.Code, rep.Error.Detail)
	}
	v, _, err := s.store.Put(wasm, rep, rulestore.Meta{UploadedBy: "config", Description: "configured rule file " + r.Rule.Path})
	if err != nil {
		return fmt.Errorf("record the configured rule of route %s: %w", r.Name, err)
	}
	if _, err := s.store.RecordConfigured(r.Name, v.SHA256); err != nil {
		return fmt.Errorf("record the configured rule of route %s: %w", r.Name, err)
	}
	s.log.Info("configured rule file recorded as the route's first stored version, for rollback", "route", r.Name, "file", r.Rule.Path, "version", v.SHA256)
	return nil
}

// Rollback implements admin.RuleService.
func (s *ruleService) Rollback(ctx context.Context, route string) (admin.Change, error) {
	r, err := s.route(route)
	if err != nil {
		return admin.Change{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.store.Route(r.Name)
	if !ok || len(st.History) == 0 {
		return admin.Change{}, fmt.Errorf("route %s has no earlier version to roll back to: %w", route, admin.ErrNoPreviousVersion)
	}
	prev := st.History[len(st.History)-1]
	return s.swap(ctx, r, prev, "", func() (rulestore.Route, error) { return s.store.Rollback(r.Name, "") })
}

// swap loads version sum for route r, commits the change to the store (commit), and swaps the
// loaded version into the route's switch. s.mu must be held.
func (s *ruleService) swap(ctx context.Context, r *config.Route, sum, by string, commit func() (rulestore.Route, error)) (admin.Change, error) {
	old := ""
	if st, ok := s.store.Route(r.Name); ok {
		old = st.Active
	}
	if old == sum {
		return admin.Change{Route: r.Name, Old: old, New: sum}, nil
	}
	rule, err := loadStored(ctx, s.host, s.store, r, sum)
	if err != nil {
		return admin.Change{}, fmt.Errorf("load version %s for route %s: %w", sum, r.Name, err)
	}
	next := engine.NewRuleVersion(rule, engine.RuleVersionOptions{Logger: s.log.With("route", r.Name)})
	if _, err := commit(); err != nil {
		return admin.Change{}, errors.Join(storeError(err), next.Release(ctx))
	}
	prev, err := s.switches[r.Name].Swap(next)
	if err != nil {
		// Only after Close, at shutdown: the store holds the change, which the next start runs.
		return admin.Change{}, errors.Join(fmt.Errorf("swap route %s: %w", r.Name, err), next.Release(ctx))
	}
	if prev != next {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseWait)
		defer cancel()
		if err := prev.Release(rctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			s.log.Warn("close the replaced rule version", "route", r.Name, "version", prev.ID(), "err", err)
		}
	}
	return admin.Change{Route: r.Name, Old: old, New: sum}, nil
}

// Delete implements admin.RuleService.
func (s *ruleService) Delete(_ context.Context, version string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sum, err := s.resolve(version)
	if err != nil {
		return err
	}
	return storeError(s.store.Delete(sum))
}

// storeError maps the store's errors to the API's.
func storeError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rulestore.ErrInUse):
		return fmt.Errorf("%w (activate another version on the route, or wait until it leaves the rollback history): %w", err, admin.ErrVersionInUse)
	case errors.Is(err, rulestore.ErrNoPrevious):
		return fmt.Errorf("%w: %w", err, admin.ErrNoPreviousVersion)
	case errors.Is(err, rulestore.ErrNotFound):
		return fmt.Errorf("%w: %w", err, admin.ErrVersionNotFound)
	}
	return err
}

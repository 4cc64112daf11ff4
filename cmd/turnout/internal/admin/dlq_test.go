package admin_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/cmd/turnout/internal/admin"
)

// fakeDeadLetters replays route "care", which has entries of id "e1" only.
type fakeDeadLetters struct{ calls []string }

func (f *fakeDeadLetters) Replay(_ context.Context, route, id string) (admin.ReplayResult, error) {
	f.calls = append(f.calls, route+"/"+id)
	switch {
	case route != "care":
		return admin.ReplayResult{}, fmt.Errorf("route %q: %w", route, admin.ErrRouteNotFound)
	case id != "" && id != "e1":
		return admin.ReplayResult{}, fmt.Errorf("id %q: %w", id, admin.ErrEntryNotFound)
	}
	return admin.ReplayResult{Route: route, Selected: 1, Replayed: 1}, nil
}

// TestReplayEndpoint: the replay endpoint is a write (token required, read-only without one),
// answers 503 until the service is set, and maps the service's errors to 400, 404.
func TestReplayEndpoint(t *testing.T) {
	newServer := func(opts admin.Options, d admin.DeadLetterService) *httptest.Server {
		opts.Gatherer = prometheus.NewRegistry()
		opts.Logger = slog.New(slog.DiscardHandler)
		s := admin.New(opts)
		if d != nil {
			s.SetDeadLetters(d)
		}
		srv := httptest.NewServer(s.Handler())
		t.Cleanup(srv.Close)
		return srv
	}
	fake := &fakeDeadLetters{}
	srv := newServer(admin.Options{Token: []byte(token)}, fake)
	for _, tc := range []struct {
		name, query, tok string
		status           int
		code             string
	}{
		{"no token", "route=care", "", http.StatusUnauthorized, admin.CodeUnauthorized},
		{"wrong token", "route=care", "wrong", http.StatusUnauthorized, admin.CodeUnauthorized},
		{"no route", "", token, http.StatusBadRequest, admin.CodeBadRequest},
		{"unknown route", "route=other", token, http.StatusNotFound, admin.CodeRouteNotFound},
		{"unknown id", "route=care&id=e2", token, http.StatusNotFound, admin.CodeEntryNotFound},
		{"all", "route=care", token, http.StatusOK, ""},
		{"one id", "route=care&id=e1", token, http.StatusOK, ""},
	} {
		status, code, body := call(t, "POST", srv.URL+"/dlq/replay?"+tc.query, tc.tok, nil)
		if status != tc.status || code != tc.code {
			t.Errorf("%s: %d %q, want %d %q: %s", tc.name, status, code, tc.status, tc.code, body)
		}
	}
	if got := fmt.Sprint(fake.calls); got != "[other/ care/e2 care/ care/e1]" {
		t.Errorf("the service was called for %s; want only the authorised requests with a route", got)
	}
	res, err := (&admin.Client{Base: srv.URL, Token: token}).Replay(context.Background(), "care", "e1")
	if err != nil || res.Replayed != 1 || res.Route != "care" {
		t.Errorf("Client.Replay = %+v, %v", res, err)
	}

	if status, code, _ := call(t, "POST", newServer(admin.Options{}, fake).URL+"/dlq/replay?route=care", "", nil); status != http.StatusForbidden || code != admin.CodeReadOnly {
		t.Errorf("without a configured token: %d %q, want 403 %s", status, code, admin.CodeReadOnly)
	}
	if status, code, _ := call(t, "POST", newServer(admin.Options{Token: []byte(token)}, nil).URL+"/dlq/replay?route=care", token, nil); status != http.StatusServiceUnavailable || code != admin.CodeUnavailable {
		t.Errorf("before the routes run: %d %q, want 503 %s", status, code, admin.CodeUnavailable)
	}
}

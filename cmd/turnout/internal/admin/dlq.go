package admin

// The dead-letter replay endpoint, on the admin listener:
//
//	POST /dlq/replay?route=R[&id=ID]   replay route R's dead-letter file entries (those of event
//	                                   id ID, or all) into the route; answers ReplayResult
//
// It is a write: it needs the admin token like the rules API's writes (auth.go). Listing and
// showing entries needs no server: `turnout dlq list|show` read the files.

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/turnout-router/turnout/cmd/turnout/internal/dlq"
)

// ReplayResult is the answer of a replay.
type ReplayResult = dlq.ReplayResult

// DeadLetterService replays dead-letter file entries. Replay returns ErrRouteNotFound (wrapped)
// for a route turnout does not run, ErrEntryNotFound for an id no entry of the route has.
type DeadLetterService interface {
	Replay(ctx context.Context, route, id string) (ReplayResult, error)
}

// ErrEntryNotFound is wrapped by a DeadLetterService for an id no entry has.
var ErrEntryNotFound = errors.New("no such dead-letter entry")

// CodeEntryNotFound is the error code of a replay of an id no entry has (404).
const CodeEntryNotFound = "entry_not_found"

// SetDeadLetters provides the replay endpoint's service once the routes run; until then (and
// after SetDeadLetters(nil)) it answers 503. Safe on any goroutine.
func (s *Server) SetDeadLetters(d DeadLetterService) { s.dlq.Store(&d) }

func (s *Server) dlqRoutes(mux *http.ServeMux) {
	mux.Handle("POST /dlq/replay", s.authorize(true, s.replay))
}

func (s *Server) replay(w http.ResponseWriter, r *http.Request, who string) {
	d := s.dlq.Load()
	if d == nil || *d == nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, &APIError{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Detail: "replay is not available while turnout starts or stops: it answers once the routes run"})
		return
	}
	q := r.URL.Query()
	route, id := q.Get("route"), q.Get("id")
	if route == "" {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeBadRequest, Detail: "replay needs a route: add route=NAME"})
		return
	}
	res, err := (*d).Replay(r.Context(), route, id)
	if err != nil && errors.Is(err, ErrEntryNotFound) {
		writeError(w, &APIError{Status: http.StatusNotFound, Code: CodeEntryNotFound, Detail: err.Error()})
		return
	}
	s.opts.Logger.Info("dead-letter entries replayed", "who", who, "remote", r.RemoteAddr, "route", route, "id", id,
		"selected", res.Selected, "replayed", res.Replayed, "failed", res.Failed, "err", err)
	if err != nil {
		writeError(w, apiError(err))
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// Replay asks the server to replay route's dead-letter entries (of event id, or all when id is
// "").
func (c *Client) Replay(ctx context.Context, route, id string) (ReplayResult, error) {
	q := url.Values{"route": {route}}
	if id != "" {
		q.Set("id", id)
	}
	var res ReplayResult
	err := c.do(ctx, http.MethodPost, "/dlq/replay?"+q.Encode(), nil, "", &res)
	return res, err
}

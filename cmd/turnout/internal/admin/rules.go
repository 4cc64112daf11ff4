package admin

// The rules API: upload, list, show, activate, roll back and delete Wasm rule versions, on the
// admin listener under /rules. Every request is authorised by Server.authorize (auth.go); the
// handlers only translate between HTTP and a RuleService.
//
//	GET    /rules                          every version and every route's active version
//	POST   /rules/versions                 upload (body: the Wasm bytes, or multipart, see upload)
//	GET    /rules/versions/{version}       one version
//	DELETE /rules/versions/{version}       delete a version no route uses
//	POST   /rules/routes/{route}/activate  activate {"version": V} on the route
//	POST   /rules/routes/{route}/rollback  reactivate the route's previous version
//
// Errors are {"error":{"code":C,"detail":D}}; C is a hostabi.LoadError code for a module that
// does not validate, or one of the Code* constants below.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/turnout-router/turnout/hostabi"
)

// DefaultMaxUploadBytes is the upload limit when Options.MaxUploadBytes is 0.
const DefaultMaxUploadBytes = 16 << 20

// Error codes of the rules API besides the hostabi.LoadError codes.
const (
	CodeUnauthorized      = "unauthorized"        // 401: no or wrong bearer token
	CodeTooManyAttempts   = "too_many_attempts"   // 429: too many wrong tokens from the address
	CodeReadOnly          = "read_only"           // 403: no token configured, writes refused
	CodeVersionNotFound   = "version_not_found"   // 404
	CodeRouteNotFound     = "route_not_found"     // 404
	CodeVersionInUse      = "version_in_use"      // 409: delete of an active version
	CodeNoPreviousVersion = "no_previous_version" // 409: rollback with no history
	CodeTooLarge          = "too_large"           // 413: upload above the limit
	CodeBadRequest        = "bad_request"         // 400: malformed request
	CodeSelfTestFailed    = "self_test_failed"    // 422: a sample's decision differs
	CodeInternal          = "internal"            // 500
	CodeUnavailable       = "unavailable"         // 503: the routes do not run (starting, stopping)
)

// Sentinel errors a RuleService wraps so that the API answers with the right status.
var (
	ErrVersionNotFound   = errors.New("no such rule version")
	ErrRouteNotFound     = errors.New("no such route")
	ErrVersionInUse      = errors.New("rule version in use")
	ErrNoPreviousVersion = errors.New("route has no previous version")
)

// Version describes one stored rule version. Versions are named by the sha256 of their bytes.
type Version struct {
	SHA256     string    `json:"sha256"`
	Size       int64     `json:"size"`
	ABIVersion uint32    `json:"abi_version"`
	Exports    []string  `json:"exports"`
	UploadedAt time.Time `json:"uploaded_at"`
	UploadedBy string    `json:"uploaded_by,omitempty"`
	// Description and DefaultConfig (JSON) are the metadata given at upload.
	Description   string          `json:"description,omitempty"`
	DefaultConfig json.RawMessage `json:"default_config,omitempty"`
	// Routes are the routes on which this version is active.
	Routes []string `json:"routes"`
}

// Route is one route's rule state.
type Route struct {
	Name string `json:"name"`
	// Active is the sha256 of the active version; empty when the route runs the rule file
	// named in the configuration (or has no rule).
	Active string `json:"active,omitempty"`
	// History are the versions active before, most recent first: what rollback goes back to.
	History []string `json:"history,omitempty"`
}

// Listing is the answer to GET /rules.
type Listing struct {
	Versions []Version `json:"versions"`
	Routes   []Route   `json:"routes"`
}

// Change is one activation: on Route, Old (empty if none) was replaced by New.
type Change struct {
	Route string `json:"route"`
	Old   string `json:"old,omitempty"`
	New   string `json:"new"`
}

// Upload is one upload request.
type Upload struct {
	Wasm        []byte
	Description string
	UploadedBy  string
	// DefaultConfig is JSON, or nil.
	DefaultConfig json.RawMessage
	// SelfTest is the JSON of sample events with the decisions they must produce, or nil.
	SelfTest json.RawMessage
	// Route, when set, is the route whose configuration the version is validated with; with
	// Activate the version is then activated on it.
	Route    string
	Activate bool
}

// Uploaded is the answer to an upload.
type Uploaded struct {
	Version Version `json:"version"`
	// Created is false when the same bytes were already stored (the upload is idempotent).
	Created bool `json:"created"`
	// Activated is the activation, when one was asked for.
	Activated *Change `json:"activated,omitempty"`
}

// RuleService is what the rules API manages: the rule store, the routes' rule switches and the
// validation of modules. The API's handlers call it on HTTP server goroutines, concurrently; an
// implementation serialises what must be serialised. Errors: a *hostabi.LoadError (wrapped or
// not) for a module that does not validate; ErrVersionNotFound, ErrRouteNotFound,
// ErrVersionInUse, ErrNoPreviousVersion (wrapped) for the requests they name; an *APIError for
// any other answer a person can act on (e.g. a failed self-test); anything else is an internal
// error (500).
type RuleService interface {
	List(ctx context.Context) (Listing, error)
	// Show returns one version; version is its sha256 (an implementation may accept a unique
	// prefix).
	Show(ctx context.Context, version string) (Version, error)
	// Upload validates and stores a version, and activates it when asked. Storing the same
	// bytes again returns the stored version with Created false.
	Upload(ctx context.Context, u Upload) (Uploaded, error)
	// Activate makes version the route's active version.
	Activate(ctx context.Context, route, version string) (Change, error)
	// Rollback reactivates the route's previous version.
	Rollback(ctx context.Context, route string) (Change, error)
	// Delete removes a version that no route uses.
	Delete(ctx context.Context, version string) error
}

// APIError is an error answer of the rules API: the HTTP status and the JSON error body. A
// RuleService may return one; Client returns one for every error answer.
type APIError struct {
	Status int    `json:"-"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
	// Samples are the self-test results, for a failed self-test.
	Samples any `json:"samples,omitempty"`
}

func (e *APIError) Error() string {
	if e.Code == "" {
		return e.Detail
	}
	return e.Code + ": " + e.Detail
}

// apiError maps a RuleService error to its answer.
func apiError(err error) *APIError {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	var le *hostabi.LoadError
	if errors.As(err, &le) {
		return &APIError{Status: http.StatusUnprocessableEntity, Code: le.Code, Detail: err.Error()}
	}
	for _, m := range []struct {
		err    error
		status int
		code   string
	}{
		{ErrVersionNotFound, http.StatusNotFound, CodeVersionNotFound},
		{ErrRouteNotFound, http.StatusNotFound, CodeRouteNotFound},
		{ErrVersionInUse, http.StatusConflict, CodeVersionInUse},
		{ErrNoPreviousVersion, http.StatusConflict, CodeNoPreviousVersion},
	} {
		if errors.Is(err, m.err) {
			return &APIError{Status: m.status, Code: m.code, Detail: err.Error()}
		}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return &APIError{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge,
			Detail: fmt.Sprintf("the upload is larger than the limit of %d bytes (admin.max_upload_bytes)", mbe.Limit)}
	}
	return &APIError{Status: http.StatusInternalServerError, Code: CodeInternal, Detail: err.Error()}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away: nothing to do
}

func writeError(w http.ResponseWriter, e *APIError) {
	if aw, ok := w.(*auditWriter); ok {
		aw.err = e
	}
	writeJSON(w, e.Status, map[string]*APIError{"error": e})
}

// rulesRoutes adds the rules API to mux.
func (s *Server) rulesRoutes(mux *http.ServeMux) {
	mux.Handle("GET /rules", s.authorize(false, s.withRules(s.listRules)))
	mux.Handle("POST /rules/versions", s.authorize(true, s.withRules(s.uploadRule)))
	mux.Handle("GET /rules/versions/{version}", s.authorize(false, s.withRules(s.showRule)))
	mux.Handle("DELETE /rules/versions/{version}", s.authorize(true, s.withRules(s.deleteRule)))
	mux.Handle("POST /rules/routes/{route}/activate", s.authorize(true, s.withRules(s.activateRule)))
	mux.Handle("POST /rules/routes/{route}/rollback", s.authorize(true, s.withRules(s.rollbackRule)))
}

// rulesHandler is a rules API handler: who made the request (authorize) and the service.
type rulesHandler func(w http.ResponseWriter, r *http.Request, who string, rs RuleService)

// withRules hands h the service, answering 503 while there is none yet.
func (s *Server) withRules(h rulesHandler) func(w http.ResponseWriter, r *http.Request, who string) {
	return func(w http.ResponseWriter, r *http.Request, who string) {
		rs := s.rules.Load()
		if rs == nil || *rs == nil {
			w.Header().Set("Retry-After", "1")
			writeError(w, &APIError{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Detail: "the rules API is not available while turnout starts or stops: it answers once the routes run"})
			return
		}
		h(w, r, who, *rs)
	}
}

func (s *Server) listRules(w http.ResponseWriter, r *http.Request, _ string, rs RuleService) {
	l, err := rs.List(r.Context())
	if err != nil {
		writeError(w, apiError(err))
		return
	}
	if l.Versions == nil {
		l.Versions = []Version{}
	}
	if l.Routes == nil {
		l.Routes = []Route{}
	}
	writeJSON(w, http.StatusOK, l)
}

func (s *Server) showRule(w http.ResponseWriter, r *http.Request, _ string, rs RuleService) {
	v, err := rs.Show(r.Context(), r.PathValue("version"))
	if err != nil {
		writeError(w, apiError(err))
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// uploadRule stores a version. The body is the Wasm module (any content type but multipart),
// with the metadata in the query: description, uploaded_by, route, activate, config (JSON
// default configuration); or multipart/form-data with a "wasm" part and optional "config" and
// "selftest" (JSON samples) parts beside the same query parameters. The X-Turnout-Uploaded-By
// and X-Turnout-Description headers may carry the metadata instead.
func (s *Server) uploadRule(w http.ResponseWriter, r *http.Request, who string, rs RuleService) {
	q := r.URL.Query()
	u := Upload{
		Description: first(q.Get("description"), r.Header.Get("X-Turnout-Description")),
		UploadedBy:  first(q.Get("uploaded_by"), r.Header.Get("X-Turnout-Uploaded-By")),
		Route:       q.Get("route"),
	}
	if c := q.Get("config"); c != "" {
		u.DefaultConfig = json.RawMessage(c)
	}
	if a := q.Get("activate"); a != "" {
		b, err := strconv.ParseBool(a)
		if err != nil {
			writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeBadRequest, Detail: fmt.Sprintf("activate=%q: want true or false", a)})
			return
		}
		u.Activate = b
	}
	if u.Activate && u.Route == "" {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeBadRequest, Detail: "activate needs a route: add route=NAME"})
		return
	}
	addAudit(w, "uploaded_by", u.UploadedBy, "route", u.Route)
	body := http.MaxBytesReader(w, r.Body, s.maxUpload())
	var err error
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "multipart/form-data" {
		err = readMultipart(r, body, &u)
	} else {
		u.Wasm, err = io.ReadAll(body)
	}
	if err != nil {
		writeError(w, apiError(err))
		return
	}
	if len(u.Wasm) == 0 {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeBadRequest, Detail: "the request holds no Wasm module: send the .wasm file as the body"})
		return
	}
	for name, js := range map[string]json.RawMessage{"config": u.DefaultConfig, "selftest": u.SelfTest} {
		if js != nil && !json.Valid(js) {
			writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeBadRequest, Detail: name + " is not valid JSON"})
			return
		}
	}
	addAudit(w, "size", len(u.Wasm))
	res, err := rs.Upload(r.Context(), u)
	if err != nil {
		writeError(w, apiError(err)) // logged by audit
		return
	}
	status := http.StatusOK
	if res.Created {
		status = http.StatusCreated
		s.opts.Logger.Info("rule version uploaded", "who", who, "remote", r.RemoteAddr, "uploaded_by", u.UploadedBy, "version", res.Version.SHA256, "size", res.Version.Size, "description", u.Description)
	}
	if c := res.Activated; c != nil {
		s.logChange("rule version activated", who, r, u.UploadedBy, *c)
	}
	writeJSON(w, status, res)
}

// readMultipart reads the parts of a multipart upload into u.
func readMultipart(r *http.Request, body io.ReadCloser, u *Upload) error {
	r.Body = body
	mr, err := r.MultipartReader()
	if err != nil {
		return &APIError{Status: http.StatusBadRequest, Code: CodeBadRequest, Detail: "multipart body: " + err.Error()}
	}
	for {
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return badOrTooLarge("multipart body", err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			return badOrTooLarge("part "+p.FormName(), err)
		}
		switch p.FormName() {
		case "wasm":
			u.Wasm = b
		case "config":
			u.DefaultConfig = b
		case "selftest":
			u.SelfTest = b
		default:
			return &APIError{Status: http.StatusBadRequest, Code: CodeBadRequest, Detail: fmt.Sprintf("unknown part %q (known: wasm, config, selftest)", p.FormName())}
		}
	}
}

func badOrTooLarge(what string, err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	return &APIError{Status: http.StatusBadRequest, Code: CodeBadRequest, Detail: what + ": " + err.Error()}
}

func (s *Server) deleteRule(w http.ResponseWriter, r *http.Request, who string, rs RuleService) {
	v := r.PathValue("version")
	if err := rs.Delete(r.Context(), v); err != nil {
		writeError(w, apiError(err))
		return
	}
	s.opts.Logger.Info("rule version deleted", "who", who, "remote", r.RemoteAddr, "version", v)
	writeJSON(w, http.StatusOK, map[string]string{"deleted": v})
}

func (s *Server) activateRule(w http.ResponseWriter, r *http.Request, who string, rs RuleService) {
	var req struct {
		Version string `json:"version"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.Version == "" {
		writeError(w, &APIError{Status: http.StatusBadRequest, Code: CodeBadRequest, Detail: `the body must be {"version": "SHA256"}`})
		return
	}
	c, err := rs.Activate(r.Context(), r.PathValue("route"), req.Version)
	if err != nil {
		writeError(w, apiError(err))
		return
	}
	s.logChange("rule version activated", who, r, "", c)
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) rollbackRule(w http.ResponseWriter, r *http.Request, who string, rs RuleService) {
	c, err := rs.Rollback(r.Context(), r.PathValue("route"))
	if err != nil {
		writeError(w, apiError(err))
		return
	}
	s.logChange("rule version rolled back", who, r, "", c)
	writeJSON(w, http.StatusOK, c)
}

// logChange records an activation: who asked, from where, and what changed on which route.
func (s *Server) logChange(msg, who string, r *http.Request, uploadedBy string, c Change) {
	args := []any{"who", who, "remote", r.RemoteAddr, "route", c.Route, "old", c.Old, "new", c.New}
	if uploadedBy != "" {
		args = append(args, "uploaded_by", uploadedBy)
	}
	s.opts.Logger.Info(msg, args...)
}

func (s *Server) maxUpload() int64 {
	if s.opts.MaxUploadBytes > 0 {
		return s.opts.MaxUploadBytes
	}
	return DefaultMaxUploadBytes
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return strings.TrimSpace(b)
}

package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Who made a request, as change logs record it: the holder of the configured token, or an
// anonymous reader when reads are open or no token is configured.
const (
	whoToken     = "token-holder"
	whoAnonymous = "anonymous"
)

// authorize wraps a rules API handler with the access rules:
//   - without a configured token the API is read-only: reads are open, writes (rule changes,
//     dead-letter replays) answer 403;
//   - with a token, writes need "Authorization: Bearer TOKEN", and reads too unless
//     Options.RulesReadOpen;
//   - a missing or wrong token answers 401 and counts as a failed authentication of the
//     remote address; an address with too many recent failures (authLimiter) is answered 429
//     with Retry-After before its token is looked at.
//
// Every refused write, and every read refused for its token, is logged at warn level with the
// remote address, method, path, status and reason (audit). The token is compared in constant
// time (over the SHA-256 of both sides, so that neither its length leaks). It is called on HTTP
// server goroutines.
func (s *Server) authorize(write bool, h func(w http.ResponseWriter, r *http.Request, who string)) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w := &auditWriter{ResponseWriter: rw}
		defer s.audit(w, r, write)
		noToken := len(s.opts.Token) == 0
		switch {
		case write && noToken:
			writeError(w, &APIError{Status: http.StatusForbidden, Code: CodeReadOnly,
				Detail: "the admin API is read-only (rule uploads, swaps and dead-letter replays are writes) because no admin token is configured: set admin.token_file (a file holding the token) or admin.token_env (the name of an environment variable holding it) and restart turnout"})
			return
		case !write && (noToken || s.opts.RulesReadOpen):
			w.who = whoAnonymous
			h(w, r, whoAnonymous)
			return
		}
		remote := remoteHost(r)
		if wait := s.authLimit.wait(remote); wait > 0 {
			secs := max(1, int((wait+time.Second-1)/time.Second))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			writeError(w, &APIError{Status: http.StatusTooManyRequests, Code: CodeTooManyAttempts,
				Detail: fmt.Sprintf("too many requests with a missing or wrong token from %s: retry in %d s with the right token", remote, secs)})
			return
		}
		if !s.validToken(r.Header.Get("Authorization")) {
			s.authLimit.fail(remote)
			w.Header().Set("WWW-Authenticate", `Bearer realm="turnout admin"`)
			writeError(w, &APIError{Status: http.StatusUnauthorized, Code: CodeUnauthorized,
				Detail: "missing or wrong bearer token: send Authorization: Bearer TOKEN with the token of admin.token_file or admin.token_env (turnout rules: --token-file or TURNOUT_ADMIN_TOKEN)"})
			return
		}
		w.who = whoToken
		h(w, r, whoToken)
	})
}

// remoteHost is the IP address of r's client (its TCP peer: a proxy's address behind one).
func remoteHost(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// auditWriter records what a rules API handler answered, for audit.
type auditWriter struct {
	http.ResponseWriter
	status int
	err    *APIError // the error answered, set by writeError
	who    string
	attrs  []any // set by handlers with addAudit
}

func (w *auditWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *auditWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets net/http reach the connection's writer (http.ResponseController).
func (w *auditWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// addAudit adds key-value pairs to the audit line of w's request, if it is refused.
func addAudit(w http.ResponseWriter, kv ...any) {
	if aw, ok := w.(*auditWriter); ok {
		aw.attrs = append(aw.attrs, kv...)
	}
}

// audit logs a refused write, or a read refused for its token.
func (s *Server) audit(w *auditWriter, r *http.Request, write bool) {
	if w.status < 400 || (!write && w.status != http.StatusUnauthorized && w.status != http.StatusTooManyRequests) {
		return
	}
	msg := "admin write refused"
	if !write {
		msg = "admin read refused"
	}
	reason, code := http.StatusText(w.status), ""
	if w.err != nil {
		reason, code = w.err.Detail, w.err.Code
	}
	who := w.who
	if who == "" {
		who = "unauthenticated"
	}
	args := append([]any{"remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "status", w.status, "code", code, "reason", reason, "who", who}, w.attrs...)
	s.opts.Logger.Warn(msg, args...)
}

// validToken reports whether the Authorization header value carries the configured token.
func (s *Server) validToken(header string) bool {
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	want := sha256.Sum256(s.opts.Token)
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

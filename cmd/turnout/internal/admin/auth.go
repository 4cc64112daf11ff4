package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// Who made a request, as change logs record it: the holder of the configured token, or an
// anonymous reader when reads are open or no token is configured.
const (
	whoToken     = "token-holder"
	whoAnonymous = "anonymous"
)

// authorize wraps a rules API handler with the access rules:
//   - without a configured token the API is read-only: reads are open, writes answer 403;
//   - with a token, writes need "Authorization: Bearer TOKEN", and reads too unless
//     Options.RulesReadOpen;
//   - a missing or wrong token answers 401.
//
// The token is compared in constant time (over the SHA-256 of both sides, so that neither its
// length leaks). It is called on HTTP server goroutines; it reads only Options.
func (s *Server) authorize(write bool, h func(w http.ResponseWriter, r *http.Request, who string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		noToken := len(s.opts.Token) == 0
		switch {
		case write && noToken:
			writeError(w, &APIError{Status: http.StatusForbidden, Code: CodeReadOnly,
				Detail: "the rules API is read-only because no admin token is configured: set admin.token_file (a file holding the token) or admin.token_env (the name of an environment variable holding it) and restart turnout"})
			return
		case !write && (noToken || s.opts.RulesReadOpen):
			h(w, r, whoAnonymous)
			return
		}
		if !s.validToken(r.Header.Get("Authorization")) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="turnout admin"`)
			writeError(w, &APIError{Status: http.StatusUnauthorized, Code: CodeUnauthorized,
				Detail: "missing or wrong bearer token: send Authorization: Bearer TOKEN with the token of admin.token_file or admin.token_env (turnout rules: --token-file or TURNOUT_ADMIN_TOKEN)"})
			return
		}
		h(w, r, whoToken)
	})
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

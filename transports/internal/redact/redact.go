// Package redact hides the credentials of broker and webhook URLs in what turnout writes: logs,
// error messages and the turnouterror extension of dead letters.
//
// Invariant: a string this package returns never holds the password or token a URL carried in
// its user information, whether or not the URL is valid.
package redact

import (
	"fmt"
	"net/url"
	"strings"
)

// URL returns s with the password of its user information replaced (url.URL.Redacted). When s
// does not parse as a URL, the whole user information is replaced: there is no telling which
// part of it is the password.
func URL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return hideUserinfo(s)
}

// Parse parses s as url.Parse does, but its error never shows s's user information:
// url.Parse's own error quotes the whole input, credentials included, and may quote the bad
// part of a password.
func Parse(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err == nil {
		return u, nil
	}
	hidden := hideUserinfo(s)
	if hidden == s {
		return nil, err
	}
	// Parse again without the user information: a remaining error is about the rest of the URL.
	if _, herr := url.Parse(hidden); herr != nil {
		return nil, herr
	}
	return nil, fmt.Errorf("parse %q: invalid user information (not shown)", hidden)
}

// hideUserinfo replaces everything between "//" and the last "@" of the authority by "xxxxx".
func hideUserinfo(s string) string {
	start := strings.Index(s, "//")
	if start < 0 {
		// No authority: "user:pass@host" without a scheme still hides what precedes "@".
		start = -2
	}
	auth := s[start+2:]
	if end := strings.IndexAny(auth, "/?#"); end >= 0 {
		auth = auth[:end]
	}
	at := strings.LastIndexByte(auth, '@')
	if at < 0 {
		return s
	}
	return s[:start+2] + "xxxxx" + s[start+2+at:]
}

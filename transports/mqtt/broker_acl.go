package mqtt

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"

	mochi "github.com/mochi-mqtt/server/v2"
)

// BrokerUser is one entry of broker.users: a client that authenticates with Username and
// Password may publish to the topics that Publish's filters match and subscribe to the filters
// that Subscribe's filters cover. An empty list allows nothing.
type BrokerUser struct {
	// Username is the MQTT user name (required, unique).
	Username string `yaml:"username"`
	// Password is compared in constant time (required). The configuration file's ${ENV}
	// substitution keeps it out of the file.
	Password string `yaml:"password"`
	// Publish lists the topic filters the user may publish to, e.g. "devices/+/alarms".
	Publish []string `yaml:"publish"`
	// Subscribe lists the topic filters the user may subscribe within: a SUBSCRIBE filter is
	// allowed when every topic it matches is matched by one of these ("alarms/#" allows
	// "alarms/fall" and "alarms/+", not "#"). Shared subscriptions ($share/group/filter) are
	// judged by their filter.
	Subscribe []string `yaml:"subscribe"`
}

// brokerUser is a BrokerUser ready for the hook; all marks the single username/password of
// broker.username, which may publish and subscribe anywhere.
type brokerUser struct {
	name, pass []byte
	pub, sub   []string
	all        bool
}

// brokerUsers validates the users of cfg and returns them; nil means anonymous clients are
// allowed. Errors name the key ("broker.users[1].publish[0]: ...").
func brokerUsers(cfg BrokerConfig) ([]*brokerUser, error) {
	if len(cfg.Users) > 0 && (cfg.Username != "" || cfg.Password != "") {
		return nil, errors.New("broker.users: set either broker.users or broker.username/broker.password, not both")
	}
	if cfg.Password != "" && cfg.Username == "" {
		return nil, errors.New("broker.password: set broker.username too")
	}
	if cfg.Username != "" {
		return []*brokerUser{{name: []byte(cfg.Username), pass: []byte(cfg.Password), all: true}}, nil
	}
	var users []*brokerUser
	seen := map[string]bool{}
	for i, u := range cfg.Users {
		key := fmt.Sprintf("broker.users[%d]", i)
		switch {
		case u.Username == "":
			return nil, fmt.Errorf("%s.username: required", key)
		case seen[u.Username]:
			return nil, fmt.Errorf("%s.username: %q is listed twice", key, u.Username)
		case u.Password == "":
			return nil, fmt.Errorf("%s.password: required for user %q", key, u.Username)
		}
		seen[u.Username] = true
		for j, f := range u.Publish {
			if mochi.IsSharedFilter(f) {
				return nil, fmt.Errorf("%s.publish[%d]: %q is a shared subscription, not a topic filter to publish to", key, j, f)
			}
			if !validFilter(f) {
				return nil, fmt.Errorf("%s.publish[%d]: %q is not a valid topic filter", key, j, f)
			}
		}
		for j, f := range u.Subscribe {
			if !validFilter(f) {
				return nil, fmt.Errorf("%s.subscribe[%d]: %q is not a valid topic filter", key, j, f)
			}
		}
		users = append(users, &brokerUser{name: []byte(u.Username), pass: []byte(u.Password),
			pub: u.Publish, sub: u.Subscribe})
	}
	return users, nil
}

// authenticate returns the user whose name and password match, comparing with every user in
// constant time so that the time taken tells nothing about which names exist.
func authenticate(users []*brokerUser, name, pass []byte) *brokerUser {
	var found *brokerUser
	for _, u := range users {
		if subtle.ConstantTimeCompare(name, u.name)&subtle.ConstantTimeCompare(pass, u.pass) == 1 {
			found = u
		}
	}
	return found
}

// allows reports whether the user may publish to topic (write) or subscribe to / receive from
// the filter or topic f (!write).
func (u *brokerUser) allows(f string, write bool) bool {
	if u.all {
		return true
	}
	allowed := u.sub
	if write {
		allowed = u.pub
	} else if mochi.IsSharedFilter(f) {
		// $share/{group}/{filter} [MQTT-4.8.2-1]: judge the filter.
		if parts := strings.SplitN(f, "/", 3); len(parts) == 3 {
			f = parts[2]
		}
	}
	for _, a := range allowed {
		if filterCovers(a, f) {
			return true
		}
	}
	return false
}

// filterCovers reports whether every topic that filter f matches is also matched by the filter
// a (a topic name is a filter without wildcards). A wildcard at the first level of a does not
// match a first level starting with '$' [MQTT-4.7.2-1].
func filterCovers(a, f string) bool {
	if strings.HasPrefix(f, "$") && (strings.HasPrefix(a, "#") || strings.HasPrefix(a, "+")) {
		return false
	}
	al, fl := strings.Split(a, "/"), strings.Split(f, "/")
	for i, x := range al {
		if x == "#" { // matches the parent level and everything below (MQTT 3.1.1 section 4.7.1.2)
			return true
		}
		if i >= len(fl) {
			return false
		}
		switch y := fl[i]; {
		case y == "#":
			return false // a has no '#' here, so it cannot match all that y does
		case x == "+":
			// matches any one level, '+' included
		case y == "+" || x != y:
			return false
		}
	}
	return len(al) == len(fl)
}

// validFilter reports whether f is a valid topic filter: '#' only as the whole last level
// [MQTT-4.7.1-2], '+' only as a whole level [MQTT-4.7.1-3], and the broker library's own checks
// (not empty, shared subscription syntax).
func validFilter(f string) bool {
	if !mochi.IsValidFilter(f, false) {
		return false
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.ContainsAny(l, "+#") && l != "+" && l != "#" || l == "#" && i != len(levels)-1 {
			return false
		}
	}
	return true
}

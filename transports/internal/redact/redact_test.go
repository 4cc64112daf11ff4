package redact

import (
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"password", "amqp://guest:s3cret@rabbit:5672", "amqp://guest:xxxxx@rabbit:5672"},
		{"user only", "https://hook@example.org/x", "https://hook@example.org/x"},
		{"no userinfo", "nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"at in password", "https://u:p@ss@example.org/a@b", "https://u:xxxxx@example.org/a@b"},
		{"unparsable", "http://u:s3cret@host:port:x/%zz", "http://xxxxx@host:port:x/%zz"},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := URL(tc.in); got != tc.want {
				t.Errorf("URL(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestParseErrorHidesUserinfo(t *testing.T) {
	_, err := Parse("http://user:s3cret@host:99999999999999999999/x%zz")
	if err == nil {
		t.Fatal("Parse accepted an invalid URL")
	}
	if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "xxxxx@host") {
		t.Errorf("error %q: want the URL with its user information hidden", err)
	}
	if u, err := Parse("amqp://u:p@h:5672"); err != nil || u.User.Username() != "u" {
		t.Errorf("Parse of a valid URL = %v, %v", u, err)
	}
}

// FuzzURL checks the invariant: whatever the password and the rest of the URL, valid or not,
// the password is not in what URL returns.
func FuzzURL(f *testing.F) {
	f.Add("s3cret", "rabbit:5672")
	f.Add("p%zz", "h:x/%zz")
	f.Add("s3cret", "[::1]:80/a@b")
	f.Fuzz(func(t *testing.T, password, rest string) {
		// A password with a separator cannot be told apart; one that occurs in the rest of the URL
		// (as written or escaped) or in the placeholder is there anyway.
		if password == "" || strings.ContainsAny(password, "@/?#") || strings.Contains("amqp://user:@"+rest, password) ||
			strings.Contains(URL("amqp://user:Q@"+rest), password) {
			return
		}
		s := "amqp://user:" + password + "@" + rest
		if got := URL(s); strings.Contains(got, password) {
			t.Errorf("URL(%q) = %q still holds the password %q", s, got, password)
		}
		_, errQ := Parse("amqp://user:Q@" + rest)
		if _, err := Parse(s); err != nil && errQ != nil && strings.Contains(err.Error(), password) && !strings.Contains(errQ.Error(), password) {
			t.Errorf("Parse(%q) error %q holds the password %q", s, err, password)
		}
	})
}

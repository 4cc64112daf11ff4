package ruletest

import (
	"strings"
	"testing"
)

func TestDecodeSamples(t *testing.T) {
	cases := []struct {
		name    string
		data    string
		samples []string // names
		expect  []string // expected action per sample ("" = none)
		err     string
	}{
		{"one event", `{"specversion":"1.0","id":"1","source":"/s","type":"t"}`, []string{"f"}, []string{""}, ""},
		{"array with expect", `[{"specversion":"1.0","id":"1","source":"/s","type":"t","expect":{"action":"drop"}},
			{"specversion":"1.0","id":"2","source":"/s","type":"t"}]`, []string{"f[0]", "f[1]"}, []string{"drop", ""}, ""},
		{"empty array", `[]`, nil, nil, "f: an empty array"},
		{"not an object", `[1]`, nil, nil, "f[0]: want a CloudEvent JSON object"},
		{"null", `null`, nil, nil, "f: want a CloudEvent JSON object"},
		{"not JSON", `{`, nil, nil, "f: not JSON"},
		{"missing type", `{"specversion":"1.0","id":"1","source":"/s"}`, nil, nil, "f: invalid CloudEvent"},
		{"bad action", `{"specversion":"1.0","id":"1","source":"/s","type":"t","expect":{"action":"keep"}}`, nil, nil, `f: expect: action "keep": want drop, route, fail or error`},
		{"error kind without action error", `{"specversion":"1.0","id":"1","source":"/s","type":"t","expect":{"action":"drop","error":"trap"}}`, nil, nil, `only action "error" has an error kind`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := DecodeSamples("f", []byte(c.data))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(c.samples) {
				t.Fatalf("%d samples, want %d", len(got), len(c.samples))
			}
			for i, s := range got {
				act := ""
				if s.Expect != nil {
					act = s.Expect.Action
				}
				if s.Name != c.samples[i] || act != c.expect[i] {
					t.Errorf("sample %d = %s expect %q, want %s expect %q", i, s.Name, act, c.samples[i], c.expect[i])
				}
				if _, ok := s.Event.Extensions()["expect"]; ok {
					t.Errorf("sample %d: the expect member became an extension", i)
				}
			}
		})
	}
}

func TestCompare(t *testing.T) {
	str := func(s string) *string { return &s }
	d := Decision{Action: ActionRoute, Outputs: []string{"a", "b"}, Changes: map[string]*string{"subject": str("x"), "time": nil}}
	cases := []struct {
		name string
		want Expectation
		ms   []string
	}{
		{"action only", Expectation{Action: "route"}, nil},
		{"outputs as a set", Expectation{Action: "route", Outputs: []string{"b", "a"}}, nil},
		{"other outputs", Expectation{Action: "route", Outputs: []string{"a"}}, []string{"outputs: got [a, b], want [a]"}},
		{"other action", Expectation{Action: "drop"}, []string{"action: got route, want drop"}},
		{"changes", Expectation{Action: "route", Changes: map[string]*string{"subject": str("x"), "time": nil}}, nil},
		{"no changes expected", Expectation{Action: "route", Changes: map[string]*string{}}, []string{`changes: got subject="x" time=(removed), want none`}},
		{"reason", Expectation{Action: "route", Reason: str("r")}, []string{`reason: got "", want "r"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, m := range Compare(d, c.want) {
				got = append(got, m.String())
			}
			if strings.Join(got, "\n") != strings.Join(c.ms, "\n") {
				t.Errorf("mismatches %q, want %q", got, c.ms)
			}
		})
	}
}

// FuzzDecodeSamples: no input makes the decoder panic, and every sample it accepts is a valid
// event whose expectation (if any) has a known action.
func FuzzDecodeSamples(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"/s","type":"t","expect":{"action":"route","outputs":["a"],"changes":{"x":null}}}`))
	f.Add([]byte(`[{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"AAE="}]`))
	f.Add([]byte(`[{"expect":{"action":"error","error":"trap"}}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		samples, err := DecodeSamples("f", data)
		if err != nil {
			return
		}
		for _, s := range samples {
			if err := s.Event.Validate(); err != nil {
				t.Fatalf("accepted an invalid event: %v", err)
			}
			if s.Expect != nil && !validActions[s.Expect.Action] {
				t.Fatalf("accepted action %q", s.Expect.Action)
			}
		}
	})
}

// FuzzDecodeExpectations: no input makes the expectation decoder panic or return a count other
// than asked.
func FuzzDecodeExpectations(f *testing.F) {
	f.Add([]byte(`{"action":"drop"}`), 1)
	f.Add([]byte(`[{"action":"route","outputs":[]},{"action":"fail","reason":"r"}]`), 2)
	f.Fuzz(func(t *testing.T, data []byte, n int) {
		if n < 0 || n > 64 {
			return
		}
		got, err := DecodeExpectations("f", data, n)
		if err == nil && len(got) != n {
			t.Fatalf("%d expectations, asked for %d", len(got), n)
		}
	})
}

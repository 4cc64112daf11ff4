//go:build !wasip1

package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/turnout-router/turnout/filters/sdk"
)

// These tests run the rule natively through the SDK (the same encoding the host uses); the
// Wasm build is exercised by hostabi's golden tests.

func TestAttrRoute(t *testing.T) {
	const first = `{"filters":[
		{"attribute":"type","prefix":"care.alarm.","outputs":["urgent"]},
		{"attribute":"region","exact":"north","outputs":["north"]},
		{"attribute":"subject","suffix":".low","outputs":["maintenance"]}],
		"default":["archive"]}`
	const all = `{"match":"all","filters":[
		{"attribute":"type","prefix":"care.alarm.","outputs":["urgent","archive"]},
		{"attribute":"region","exact":"north","outputs":["north","archive"]}]}`
	tests := []struct {
		name, config string
		ev           sdk.Fields
		action       string
		outputs      []string
	}{
		{"first: type prefix wins over a later match", first, sdk.Fields{Type: "care.alarm.fall", Extensions: map[string]string{"region": "north"}}, "route", []string{"urgent"}},
		{"first: extension exact", first, sdk.Fields{Type: "care.heartbeat", Extensions: map[string]string{"region": "north"}}, "route", []string{"north"}},
		{"first: exact is not a prefix", first, sdk.Fields{Type: "care.heartbeat", Extensions: map[string]string{"region": "northeast"}}, "route", []string{"archive"}},
		{"first: subject suffix", first, sdk.Fields{Type: "care.battery", Subject: "battery.low"}, "route", []string{"maintenance"}},
		{"first: absent attribute never matches", first, sdk.Fields{Type: "x"}, "route", []string{"archive"}},
		{"all: union without duplicates", all, sdk.Fields{Type: "care.alarm.fall", Extensions: map[string]string{"region": "north"}}, "route", []string{"urgent", "archive", "north"}},
		{"all: nothing matches and no default drops", all, sdk.Fields{Type: "care.heartbeat"}, "drop", nil},
		{"suffix on source", `{"filters":[{"attribute":"source","suffix":"/pendant","outputs":["p"]}]}`, sdk.Fields{Type: "t", Source: "/homes/1/pendant"}, "route", []string{"p"}},
		{"empty exact matches only the empty value", `{"filters":[{"attribute":"subject","exact":"","outputs":["e"]}]}`, sdk.Fields{Type: "t", Subject: "s"}, "drop", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := sdk.Init([]byte(tt.config)); err != nil {
				t.Fatal(err)
			}
			tt.ev.ID = "1"
			if tt.ev.Source == "" {
				tt.ev.Source = "/s"
			}
			r, err := sdk.Run(tt.ev)
			if err != nil {
				t.Fatal(err)
			}
			if r.Action != tt.action || !reflect.DeepEqual(r.Outputs, tt.outputs) || len(r.Mutations) != 0 {
				t.Errorf("got %s %v (mutations %v), want %s %v", r.Action, r.Outputs, r.Mutations, tt.action, tt.outputs)
			}
		})
	}
}

func TestAttrRouteConfigErrors(t *testing.T) {
	for _, tt := range []struct{ name, config, want string }{
		{"empty", ``, "want an object or an array"},
		{"not an object", `["a"]`, "want an object"},
		{"wrong type", `{"filters":[{"attribute":1,"exact":"a","outputs":["x"]}]}`, "filters[0]: attribute: want a string, got 1"},
		{"outputs not strings", `{"filters":[{"attribute":"type","exact":"a","outputs":[1]}]}`, "filters[0]: outputs: json: want a string, got 1"},
		{"duplicate key", `{"match":"all","match":"first","filters":[]}`, "each key once"},
		{"unknown key", `{"filters":[],"bogus":1}`, `unknown key "bogus"`},
		{"no filters", `{"filters":[]}`, "at least one filter is required"},
		{"bad match", `{"match":"some","filters":[{"attribute":"type","exact":"a","outputs":["x"]}]}`, `match "some"`},
		{"no attribute", `{"filters":[{"exact":"a","outputs":["x"]}]}`, "filters[0]: attribute is required"},
		{"no match kind", `{"filters":[{"attribute":"type","outputs":["x"]}]}`, "exactly one of exact, prefix, suffix"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := sdk.Init([]byte(tt.config))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Init error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

//go:build !wasip1

package main

import (
	"reflect"
	"testing"

	"github.com/turnout-router/turnout/filters/sdk"
)

func TestPassthrough(t *testing.T) {
	if err := sdk.Init([]byte(`{"outputs":["primary","audit"]}`)); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{"care.alarm.fall", "anything"} {
		r, err := sdk.Run(sdk.Fields{ID: "1", Source: "/s", Type: typ, Data: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		if r.Action != "route" || !reflect.DeepEqual(r.Outputs, []string{"primary", "audit"}) || len(r.Mutations) != 0 {
			t.Errorf("%s: got %+v, want route [primary audit] unchanged", typ, r)
		}
	}
	if err := sdk.Init([]byte(`{"outputs":[]}`)); err == nil {
		t.Error("Init accepted a configuration without outputs")
	}
}

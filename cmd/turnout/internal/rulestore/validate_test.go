package rulestore

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/cmd/turnout/internal/ruletest"
	"github.com/turnout-router/turnout/hostabi"
	"github.com/turnout-router/turnout/internal/rulebuild"
)

func TestValidate(t *testing.T) {
	ctx := context.Background()
	host, err := hostabi.NewHost(ctx, hostabi.Options{CacheDir: filepath.Join(os.TempDir(), "turnout-test-wazero-cache")})
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close(ctx)
	attrroute, err := rulebuild.Build("filters/rules/attrroute")
	if err != nil {
		t.Fatal(err)
	}
	config := []byte(`{"filters":[{"attribute":"type","prefix":"alarm.","outputs":["urgent"]}],"default":["archive"]}`)
	sample := func(typ, want string) ruletest.Sample {
		e := event.New()
		e.SetID("1")
		e.SetSource("/s")
		e.SetType(typ)
		return ruletest.Sample{Name: typ, Event: &e, Expect: &ruletest.Expectation{Action: "route", Outputs: []string{want}}}
	}
	cases := []struct {
		name       string
		wasm       []byte
		config     []byte
		samples    []ruletest.Sample
		code       string
		mismatches int
	}{
		{"loads", attrroute, config, nil, "", 0},
		{"self-test passes", attrroute, config, []ruletest.Sample{sample("alarm.fall", "urgent"), sample("heartbeat", "archive")}, "", 0},
		{"self-test fails", attrroute, config, []ruletest.Sample{sample("alarm.fall", "urgent"), sample("heartbeat", "urgent")}, CodeSelfTestFailed, 1},
		{"not wasm", []byte("{}"), nil, nil, hostabi.CodeNotWasm, 0},
		{"config refused", attrroute, []byte(`{"filters":[]}`), nil, hostabi.CodeInitFailed, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep := Validate(ctx, host, c.wasm, hostabi.RuleOptions{Name: "care", Config: c.config}, c.samples)
			if rep.SHA256 != Sum(c.wasm) || rep.Size != int64(len(c.wasm)) {
				t.Errorf("report names %s/%d, want the module's hash and size", rep.SHA256, rep.Size)
			}
			if c.code == "" {
				if !rep.OK || rep.Error != nil {
					t.Fatalf("report = %+v, want ok", rep)
				}
				if rep.ABIVersion != 1 || len(rep.Exports) == 0 {
					t.Errorf("report lacks the ABI version and exports: %+v", rep)
				}
				return
			}
			if rep.OK || rep.Error == nil || rep.Error.Code != c.code || rep.Error.Detail == "" {
				t.Fatalf("report = %+v, want error code %s", rep, c.code)
			}
			n := 0
			for _, r := range rep.Samples {
				n += len(r.Mismatches)
			}
			if n != c.mismatches {
				t.Errorf("%d mismatches in %+v, want %d", n, rep.Samples, c.mismatches)
			}
		})
	}
}

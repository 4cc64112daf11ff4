package rulestore

import (
	"context"
	"errors"
	"fmt"

	"github.com/turnout-router/turnout/cmd/turnout/internal/ruletest"
	"github.com/turnout-router/turnout/hostabi"
)

// Codes a Report carries besides the hostabi load codes (hostabi.CodeNotWasm ...).
const (
	// CodeSelfTestFailed: the module loaded but a sample's decision differs from its expectation.
	CodeSelfTestFailed = "self_test_failed"
	// CodeInternal: the host failed for a reason that is not the module's.
	CodeInternal = "internal"
)

// Problem is why a module was refused: a stable code and a message a person can act on.
type Problem struct {
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

// Report is the outcome of Validate, ready to be returned as JSON.
type Report struct {
	SHA256     string            `json:"sha256"`
	Size       int64             `json:"size"`
	ABIVersion int               `json:"abi_version,omitempty"`
	Exports    []string          `json:"exports,omitempty"`
	OK         bool              `json:"ok"`
	Error      *Problem          `json:"error,omitempty"`
	Samples    []ruletest.Result `json:"samples,omitempty"`
}

// Validate loads wasm through host with the route's options (memory cap, configuration, clock,
// timeout), exactly as the route would, and runs the optional self-test samples on it. The
// module passes when it loads and every sample with an expectation gets its decision. The
// loaded rule is closed before Validate returns. Called by the admin API before Put, from any
// goroutine; ctx bounds the load and the samples.
func Validate(ctx context.Context, host *hostabi.Host, wasm []byte, o hostabi.RuleOptions, samples []ruletest.Sample) *Report {
	rep := &Report{SHA256: Sum(wasm), Size: int64(len(wasm))}
	rule, err := host.Load(ctx, wasm, o)
	if err != nil {
		code := CodeInternal
		var le *hostabi.LoadError
		if errors.As(err, &le) {
			code = le.Code
		}
		rep.Error = &Problem{Code: code, Detail: err.Error()}
		return rep
	}
	defer rule.Close(context.Background())
	rep.ABIVersion, rep.Exports = rule.ABIVersion(), rule.Exports()
	rep.Samples = ruletest.Run(ctx, rule, samples)
	failed := 0
	for _, r := range rep.Samples {
		if !r.Passed() {
			failed++
		}
	}
	if failed > 0 {
		rep.Error = &Problem{Code: CodeSelfTestFailed, Detail: fmt.Sprintf("%d of %d sample(s) did not get the expected decision", failed, len(rep.Samples))}
		return rep
	}
	rep.OK = true
	return rep
}

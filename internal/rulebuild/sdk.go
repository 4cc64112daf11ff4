package rulebuild

import (
	"errors"
	"sync"
)

// An SDK is one language's rule SDK as the rule tests see it: the same rules (the conformance
// rule conform, the stock rule attrroute) written against it, and how to build them. The ABI
// conformance suite (hostabi) runs every registered SDK's build of a rule through the real host.
type SDK struct {
	// Name is the language: go, assemblyscript, rust.
	Name string
	// Build returns the Wasm bytes of the SDK's build of the named rule ("conform",
	// "attrroute"), building it when no cached build of its sources exists. An error wrapping
	// ErrToolchain means the language's compiler is not installed; its message says how to
	// install it.
	Build func(rule string) ([]byte, error)
}

// ErrToolchain is wrapped by an SDK's Build error when its compiler is missing.
var ErrToolchain = errors.New("toolchain not installed")

var (
	sdkMu sync.Mutex
	sdks  []SDK
)

// Register adds an SDK; each SDK's file registers itself from init.
func Register(s SDK) {
	sdkMu.Lock()
	defer sdkMu.Unlock()
	sdks = append(sdks, s)
}

// SDKs returns the registered SDKs, Go first, then in the order they registered.
func SDKs() []SDK {
	sdkMu.Lock()
	defer sdkMu.Unlock()
	return append([]SDK{goSDK}, sdks...)
}

// goSDK builds filters/rules/<rule> with the Go toolchain (Build); the conformance rule, which is
// no stock rule, is filters/sdk/testdata/conform.
var goSDK = SDK{Name: "go", Build: func(rule string) ([]byte, error) {
	if rule == "conform" {
		return Build("filters/sdk/testdata/conform")
	}
	return Build("filters/rules/" + rule)
}}

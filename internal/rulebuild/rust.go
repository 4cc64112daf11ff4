package rulebuild

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// The Rust SDK (filters/sdk-rust): its rules are crates under filters/sdk-rust/rules, built by
// filters/sdk-rust/build.sh, the script `make rules` uses too, so tests load the module turnout
// ships. Builds are cached like Build's, under os.TempDir()/turnout-rules, keyed by the SHA-256 of
// the compiler's `rustc -vV`, build.sh, the SDK's sources and the rule's.

const rustSDKDir = "filters/sdk-rust"

func init() {
	Register(SDK{Name: "rust", Build: func(rule string) ([]byte, error) {
		return BuildRustDir(rustSDKDir + "/rules/" + rule)
	}})
}

var (
	rustMu    sync.Mutex
	rustBuilt = map[string][]byte{}
	// rustc is the compiler build.sh chose and its `rustc -vV`, found once per process.
	rustc struct {
		found bool
		id    []byte
	}
)

// linkerMissing is rustc's error when the linker it calls is not installed.
var linkerMissing = regexp.MustCompile("error: linker `[^`]+` not found")

// rustInstallHint is how to get a compiler build.sh accepts.
const rustInstallHint = "run scripts/toolchains.d/rust.sh (make toolchains; Debian: apt-get install rustc libstd-rust-dev-wasm32 lld-14), or rustup target add wasm32-unknown-unknown"

// BuildRustDir returns the Wasm bytes of the Rust rule crate in dir, a path relative to the
// module root holding src/lib.rs or lib.rs (e.g. "filters/sdk-rust/rules/attrroute"), building
// it with filters/sdk-rust/build.sh when the cache has no build of its sources. The error wraps
// ErrToolchain when no rustc with the wasm32-unknown-unknown standard library (or no linker) is
// installed. Callers are tests, from any goroutine.
func BuildRustDir(dir string) ([]byte, error) {
	rustMu.Lock()
	defer rustMu.Unlock()
	if b, ok := rustBuilt[dir]; ok {
		return b, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(root, dir)); err != nil {
		return nil, fmt.Errorf("rulebuild rust %s: %w", dir, err)
	}
	script := filepath.Join(root, rustSDKDir, "build.sh")
	if !rustc.found {
		out, err := exec.Command("bash", script, "--rustc").Output()
		if err != nil {
			msg := exitMessage(err) // build.sh says what it tried and how to install
			if !strings.Contains(msg, "toolchains.d/rust.sh") {
				msg += "; " + rustInstallHint
			}
			return nil, fmt.Errorf("rulebuild rust %s: %w: %s", dir, ErrToolchain, msg)
		}
		rustc.found, rustc.id = true, out
	}
	h := sha256.New()
	fmt.Fprintf(h, "rust %s\n", dir)
	h.Write(rustc.id)
	for _, f := range [][2]string{{dir, ".rs"}, {dir, ".toml"}, {rustSDKDir + "/src", ".rs"}, {rustSDKDir + "/build.sh", ".sh"}} {
		if err := hashFiles(h, filepath.Join(root, f[0]), f[1]); err != nil {
			return nil, fmt.Errorf("rulebuild rust %s: %w", dir, err)
		}
	}
	b, err := cached(dir, hex.EncodeToString(h.Sum(nil))[:16], func(tmp string) error {
		cmd := exec.Command("bash", script, filepath.Join(root, dir), tmp)
		if msg, err := cmd.CombinedOutput(); err != nil {
			// Debian's rustc links with rust-lld, a link to lld-14, which is a package of its own.
			if linkerMissing.Match(msg) || bytes.Contains(msg, []byte("could not exec the linker")) {
				return fmt.Errorf("rulebuild rust %s: no linker for wasm32-unknown-unknown: %w; %s\n%s", dir, ErrToolchain, rustInstallHint, msg)
			}
			return fmt.Errorf("rulebuild rust %s: build.sh: %w\n%s", dir, err, msg)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	rustBuilt[dir] = b
	return b, nil
}

// exitMessage is what a failed command said on stderr, or the error itself.
func exitMessage(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(bytes.TrimSpace(ee.Stderr)) > 0 {
		return string(bytes.TrimSpace(ee.Stderr))
	}
	return err.Error()
}

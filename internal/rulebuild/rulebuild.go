// Package rulebuild builds Go rule packages into wasip1 WebAssembly modules for tests and
// benchmarks, so `go test ./...` works on a fresh checkout without running make first, and
// builds turnout's own commands for tests that run the real binary (Command).
//
// Invariant: a build is cached under os.TempDir()/turnout-rules, keyed by the SHA-256 of the Go
// version and every Go source file the rule can import from this module (the rule's directory,
// filters/sdk and hostabi/wire); a cached file is always a complete build (written to a temporary
// name, then renamed), so concurrent test binaries never read a partial module.
package rulebuild

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
)

var (
	mu    sync.Mutex
	built = map[string][]byte{}
)

// ModuleRoot returns the directory holding go.mod, found by walking up from the working
// directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("rulebuild: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Build returns the Wasm bytes of the rule package in pkgDir, a path relative to the module root
// (e.g. "filters/rules/attrroute"), building it when the cache has no build of its sources.
// Callers are tests, from any goroutine.
func Build(pkgDir string) ([]byte, error) {
	mu.Lock()
	defer mu.Unlock()
	if b, ok := built[pkgDir]; ok {
		return b, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	fmt.Fprintln(h, runtime.Version(), pkgDir)
	for _, d := range []string{pkgDir, "filters/sdk", "hostabi/wire", "go.mod"} {
		if err := hashTree(h, filepath.Join(root, d)); err != nil {
			return nil, fmt.Errorf("rulebuild %s: %w", pkgDir, err)
		}
	}
	b, err := cached(pkgDir, hex.EncodeToString(h.Sum(nil))[:16], func(tmp string) error {
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", tmp, "./"+pkgDir)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("rulebuild: go build %s: %w\n%s", pkgDir, err, msg)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	built[pkgDir] = b
	return b, nil
}

// cached returns the module cached under os.TempDir()/turnout-rules for dir (the rule's
// directory) and key (the hash of everything the build reads), or makes it: build writes the
// module to the file tmp, which is renamed into the cache only once build succeeded, so a cached
// file is always complete and concurrent test processes never read half a module.
func cached(dir, key string, build func(tmp string) error) ([]byte, error) {
	cacheDir := filepath.Join(os.TempDir(), "turnout-rules")
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("rulebuild: %w", err)
	}
	out := filepath.Join(cacheDir, strings.ReplaceAll(dir, "/", "_")+"-"+key+".wasm")
	if b, err := os.ReadFile(out); err == nil {
		return b, nil
	}
	tmp, err := os.CreateTemp(cacheDir, "build-*.wasm")
	if err != nil {
		return nil, fmt.Errorf("rulebuild: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	if err := build(tmp.Name()); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return nil, fmt.Errorf("rulebuild: %w", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("rulebuild: %w", err)
	}
	return b, nil
}

// hashTree hashes the names and contents of the non-test Go files, go.mod and go.sum under path,
// leaving out testdata, build output and hidden directories.
func hashTree(h io.Writer, path string) error {
	var files []string
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != path && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") || d.Name() == "build") {
			return filepath.SkipDir
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum") && !strings.HasSuffix(p, "_test.go") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %d\n", filepath.Base(f), len(b))
		h.Write(b)
	}
	return nil
}

var (
	cmdMu    sync.Mutex
	commands = map[string]string{}
)

// staleCommand is how long a cached build of other sources is kept after its last use.
const staleCommand = 6 * time.Hour

// Command builds the main package pkgDir (e.g. "cmd/turnout") for this machine and returns the
// path of the executable, cached under os.TempDir()/turnout-commands by the SHA-256 of the Go
// version and every non-test Go file, go.mod and go.sum of the module. Reading those files also
// tells go test's result cache what the test depends on: a test that runs the binary is run
// again after any change to the module, though its package imports none of it. Callers are
// tests, from any goroutine.
func Command(pkgDir string) (string, error) {
	cmdMu.Lock()
	defer cmdMu.Unlock()
	if p, ok := commands[pkgDir]; ok {
		return p, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintln(h, runtime.Version(), runtime.GOOS, runtime.GOARCH, pkgDir)
	if err := hashTree(h, root); err != nil {
		return "", fmt.Errorf("rulebuild %s: %w", pkgDir, err)
	}
	key := hex.EncodeToString(h.Sum(nil))[:16]
	cacheDir := filepath.Join(os.TempDir(), "turnout-commands")
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("rulebuild: %w", err)
	}
	out := filepath.Join(cacheDir, strings.ReplaceAll(pkgDir, "/", "_")+"-"+key)
	if _, err := os.Stat(out); err == nil {
		now := time.Now()
		_ = os.Chtimes(out, now, now) // in use: keep it from the clean-up below
		commands[pkgDir] = out
		return out, nil
	}
	tmp := fmt.Sprintf("%s.build-%d", out, os.Getpid())
	defer os.Remove(tmp)
	cmd := exec.Command("go", "build", "-o", tmp, "./"+pkgDir)
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("rulebuild: go build %s: %w\n%s", pkgDir, err, msg)
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", fmt.Errorf("rulebuild: %w", err)
	}
	// Builds of other sources unused for a while are not needed again. Recent ones may belong to
	// another checkout of the module whose tests run at the same time.
	if old, err := filepath.Glob(strings.TrimSuffix(out, key) + "*"); err == nil {
		for _, o := range old {
			if fi, err := os.Stat(o); err == nil && o != out && !strings.Contains(o, ".build-") && time.Since(fi.ModTime()) > staleCommand {
				os.Remove(o)
			}
		}
	}
	commands[pkgDir] = out
	return out, nil
}

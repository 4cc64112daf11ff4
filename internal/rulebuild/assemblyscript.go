package rulebuild

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// ASSDKDir is the AssemblyScript rule SDK (an npm package), relative to the module root. Its
// stock rules are rules/<name>/index.ts; its asconfig.json holds the build options.
const ASSDKDir = "filters/sdk-as"

// asInstallHint says how to get the AssemblyScript toolchain.
const asInstallHint = "install Node.js 20 or newer with npm (Debian packages nodejs and npm; scripts/toolchains.sh does)"

// asFlags are the compiler options beyond asconfig.json; they are part of the cache key.
var asFlags = []string{"--config", "asconfig.json", "--target", "release"}

func init() {
	Register(SDK{Name: "assemblyscript", Build: func(rule string) ([]byte, error) {
		return BuildASDir(ASSDKDir + "/rules/" + rule)
	}})
}

var (
	asMu    sync.Mutex
	asBuilt = map[string][]byte{}
	asReady bool // node_modules matched package-lock.json once in this process
)

// BuildASDir returns the Wasm bytes of the AssemblyScript rule whose entry file is
// dir/index.ts, dir being a directory inside filters/sdk-as relative to the module root (e.g.
// "filters/sdk-as/rules/attrroute"), building it with the SDK's pinned compiler (npx asc, the
// options of asconfig.json) when the cache has no build of its sources. The compiler is
// installed into filters/sdk-as/node_modules with npm ci first when it is missing or differs
// from package-lock.json. Builds are cached like Build's, keyed by the SHA-256 of the rule's and
// the SDK's sources, asconfig.json, package.json and package-lock.json. An error wrapping
// ErrToolchain means Node.js or npm is missing or too old. Callers are tests, from any goroutine.
func BuildASDir(dir string) ([]byte, error) {
	asMu.Lock()
	defer asMu.Unlock()
	if b, ok := asBuilt[dir]; ok {
		return b, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	sdk := filepath.Join(root, ASSDKDir)
	rel, err := filepath.Rel(sdk, filepath.Join(root, dir))
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return nil, fmt.Errorf("rulebuild: %s is not a directory inside %s", dir, ASSDKDir)
	}
	entry := filepath.ToSlash(filepath.Join(rel, "index.ts"))
	if _, err := os.Stat(filepath.Join(sdk, entry)); err != nil {
		return nil, fmt.Errorf("rulebuild: AssemblyScript rule %s: %w", dir, err)
	}

	h := sha256.New()
	fmt.Fprintln(h, "assemblyscript", dir, strings.Join(asFlags, " "))
	for _, p := range []string{filepath.Join(sdk, rel), filepath.Join(sdk, "assembly")} {
		if err := hashFiles(h, p, ".ts"); err != nil {
			return nil, fmt.Errorf("rulebuild %s: %w", dir, err)
		}
	}
	for _, f := range []string{"asconfig.json", "package.json", "package-lock.json"} {
		b, err := os.ReadFile(filepath.Join(sdk, f))
		if err != nil {
			return nil, fmt.Errorf("rulebuild %s: %w", dir, err)
		}
		fmt.Fprintf(h, "%s %d\n", f, len(b))
		h.Write(b)
	}
	b, err := cached(dir, hex.EncodeToString(h.Sum(nil))[:16], func(tmp string) error {
		if err := asToolchain(sdk, filepath.Join(os.TempDir(), "turnout-rules")); err != nil {
			return err
		}
		cmd := exec.Command("npx", append([]string{"--no", "--", "asc", entry, "-o", tmp}, asFlags...)...)
		cmd.Dir = sdk
		if msg, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("rulebuild: asc %s (in %s): %w\n%s", entry, ASSDKDir, err, msg)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	asBuilt[dir] = b
	return b, nil
}

// hashFiles hashes the names and contents of the files under path whose names end in ext.
func hashFiles(h io.Writer, path, ext string) error {
	var files []string
	err := filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && p != path && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ext) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// WalkDir visits in lexical order: files is sorted.
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		r, _ := filepath.Rel(path, f)
		fmt.Fprintf(h, "%s %d\n", filepath.ToSlash(r), len(b))
		h.Write(b)
	}
	return nil
}

// asToolchain checks for Node.js 20+ and npx, and runs npm ci in sdk when node_modules does not
// hold the versions package-lock.json pins. npm ci replaces node_modules, so concurrent test
// processes take an exclusive lock around the check and the install.
func asToolchain(sdk, cacheDir string) error {
	if asReady {
		return nil
	}
	for _, tool := range []string{"node", "npm", "npx"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("rulebuild: the AssemblyScript SDK needs %s: %w: %s", tool, ErrToolchain, asInstallHint)
		}
	}
	v, err := exec.Command("node", "--version").Output()
	if err != nil {
		return fmt.Errorf("rulebuild: the AssemblyScript SDK needs node, and node --version failed (%v): %w: %s", err, ErrToolchain, asInstallHint)
	}
	if major := nodeMajor(string(v)); major < 20 {
		return fmt.Errorf("rulebuild: the AssemblyScript SDK needs Node.js 20 or newer, this is %s: %w: %s", strings.TrimSpace(string(v)), ErrToolchain, asInstallHint)
	}
	sum := sha256.Sum256([]byte(sdk))
	lock, err := os.OpenFile(filepath.Join(cacheDir, "npm-ci-"+hex.EncodeToString(sum[:])[:12]+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("rulebuild: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("rulebuild: lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing releases it too
	if installed, err := nodeModulesMatchLock(sdk); err != nil {
		return err
	} else if !installed {
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = sdk
		if msg, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("rulebuild: npm ci in %s: %w\n%s", ASSDKDir, err, msg)
		}
		if ok, err := nodeModulesMatchLock(sdk); err != nil || !ok {
			return fmt.Errorf("rulebuild: npm ci in %s left node_modules unlike package-lock.json (%v)", ASSDKDir, err)
		}
	}
	asReady = true
	return nil
}

// nodeMajor returns the major version of a `node --version` line ("v20.19.2"), or 0.
func nodeMajor(v string) int {
	v = strings.TrimPrefix(strings.TrimSpace(v), "v")
	if i := strings.IndexByte(v, '.'); i >= 0 {
		v = v[:i]
	}
	n, _ := strconv.Atoi(v)
	return n
}

// nodeModulesMatchLock reports whether every package package-lock.json in dir pins is installed
// in dir/node_modules at its pinned version.
func nodeModulesMatchLock(dir string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return false, fmt.Errorf("rulebuild: %w", err)
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(b, &lock); err != nil {
		return false, fmt.Errorf("rulebuild: %s: %w", filepath.Join(dir, "package-lock.json"), err)
	}
	for path, p := range lock.Packages {
		if path == "" || !strings.HasPrefix(path, "node_modules/") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, path, "package.json"))
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("rulebuild: %w", err)
		}
		var installed struct {
			Version string `json:"version"`
		}
		if err := json.Unmarshal(b, &installed); err != nil || installed.Version != p.Version {
			return false, nil
		}
	}
	return true, nil
}

// Command releasecheck checks the release directory `make release` wrote before anything is
// shipped from it, and prints one line per binary with its size:
//
//	go run ./scripts/releasecheck -version VERSION build/release
//
// Invariant: it accepts a directory only when it holds exactly the binaries of Targets for
// VERSION and a SHA256SUMS file over them, and every binary is a static ELF executable of its
// target's architecture (no program interpreter, no dynamic section, no shared library), built
// with CGO_ENABLED=0 and -trimpath for its GOARCH (and GOARM). Each binary that can run here,
// natively or under qemu-user (qemu-user-static), is run with `version` and must print "turnout
// VERSION": -trimpath leaves -ldflags out of the build information, so running it is the only
// check of the stamp. It reports every problem, not only the first, and exits 1 when there is
// one.
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Target is one platform turnout is released for.
type Target struct {
	// Suffix ends the binary's name: turnout-VERSION-Suffix.
	Suffix string
	// GOARCH and GOARM are what the binary must have been built for (GOARM empty: not arm).
	GOARCH, GOARM string
	// Machine and Class are the ELF header's architecture and word size.
	Machine elf.Machine
	Class   elf.Class
	// Qemu is qemu-user's emulator that runs the binary on another architecture.
	Qemu string
}

// Targets are the release platforms, in the order of the Makefile's release target.
var Targets = []Target{
	{"linux-amd64", "amd64", "", elf.EM_X86_64, elf.ELFCLASS64, "qemu-x86_64-static"},
	{"linux-arm64", "arm64", "", elf.EM_AARCH64, elf.ELFCLASS64, "qemu-aarch64-static"},
	{"linux-armv7", "arm", "7", elf.EM_ARM, elf.ELFCLASS32, "qemu-arm-static"},
}

// Package is the main package every release binary is built from.
const Package = "github.com/turnout-router/turnout/cmd/turnout"

// SumsFile is the checksum file of a release directory, in sha256sum's format.
const SumsFile = "SHA256SUMS"

// BinaryName is the file name of the binary for target t of version.
func BinaryName(version string, t Target) string { return "turnout-" + version + "-" + t.Suffix }

func main() {
	version := flag.String("version", "", "the version the binaries must carry (make release passes $(VERSION))")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: releasecheck -version VERSION DIR\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *version == "" || flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	dir := flag.Arg(0)
	bins, errs := CheckDir(dir, *version)
	for _, e := range errs {
		fmt.Fprintln(os.Stderr, "releasecheck:", e)
	}
	if len(errs) > 0 {
		fmt.Fprintf(os.Stderr, "releasecheck: %s is not a valid release of %s (%d problems)\n", dir, *version, len(errs))
		os.Exit(1)
	}
	width := len(BinaryName(*version, Targets[0]))
	for _, b := range bins {
		fmt.Printf("%-*s %10d bytes %6.1f MiB  static, %s\n", width, b.Name, b.Size, float64(b.Size)/(1<<20), b.Ran)
	}
	fmt.Printf("%s: %d static binaries of turnout %s, %s matches\n", dir, len(Targets), *version, SumsFile)
}

// Binary is what CheckDir found out about one release binary.
type Binary struct {
	Name string
	Size int64
	// Ran says how `version` was checked: "version checked natively", "version checked under
	// qemu-arm-static", or why it was not run.
	Ran string
}

// CheckDir checks the release directory dir for version (see the package comment). It returns
// the binaries it found, in the order of Targets, and every problem found.
func CheckDir(dir, version string) ([]Binary, []error) {
	var errs []error
	var bins []Binary
	want := map[string]bool{SumsFile: true}
	for _, t := range Targets {
		name := BinaryName(version, t)
		want[name] = true
		path := filepath.Join(dir, name)
		fi, err := os.Stat(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("release binary %s: %w", name, err))
			continue
		}
		ran, berrs := CheckBinary(path, t, Package, version)
		bins = append(bins, Binary{Name: name, Size: fi.Size(), Ran: ran})
		errs = append(errs, berrs...)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return bins, append(errs, fmt.Errorf("read release directory: %w", err))
	}
	for _, e := range entries {
		if !want[e.Name()] {
			errs = append(errs, fmt.Errorf("%s: not part of release %s (a leftover of another build?)", e.Name(), version))
		}
	}
	return bins, append(errs, CheckSums(dir, version)...)
}

// CheckBinary checks one binary, a build of the main package pkg, against its target: ELF architecture, static linking, build
// settings, and, when it can run here (natively or under qemu-user), what `version` prints. ran
// says how `version` was checked, or why it was not: a binary that cannot run here is not a
// problem, the one of this machine's architecture is built by the same command.
func CheckBinary(path string, t Target, pkg, version string) (ran string, errs []error) {
	name := filepath.Base(path)
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...))
	}
	f, err := elf.Open(path)
	if err != nil {
		return "not run", []error{bad("not an ELF file: %v", err)}
	}
	defer f.Close()
	if f.Machine != t.Machine || f.Class != t.Class {
		errs = append(errs, bad("built for %v %v, want %v %v (%s)", f.Machine, f.Class, t.Machine, t.Class, t.Suffix))
	}
	if f.OSABI != elf.ELFOSABI_NONE && f.OSABI != elf.ELFOSABI_LINUX {
		errs = append(errs, bad("ELF OS ABI %v, want Linux", f.OSABI))
	}
	if f.Type != elf.ET_EXEC {
		errs = append(errs, bad("ELF type %v, want a static executable (EXEC)", f.Type))
	}
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			interp, _ := io.ReadAll(io.LimitReader(p.Open(), 256))
			errs = append(errs, bad("dynamically linked: it needs the program interpreter %s", bytes.TrimRight(interp, "\x00")))
		case elf.PT_DYNAMIC:
			errs = append(errs, bad("has a dynamic section (PT_DYNAMIC): not statically linked"))
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		errs = append(errs, bad("links shared libraries %v", libs))
	}

	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return "not run", append(errs, bad("no Go build information: %v", err))
	}
	if bi.Path != pkg {
		errs = append(errs, bad("is a build of %s, not of %s", bi.Path, pkg))
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	for _, w := range []struct{ key, want string }{
		{"GOOS", "linux"}, {"GOARCH", t.GOARCH}, {"GOARM", t.GOARM}, {"CGO_ENABLED", "0"}, {"-trimpath", "true"},
	} {
		if got := settings[w.key]; got != w.want {
			errs = append(errs, bad("built with %s=%q, want %q", w.key, got, w.want))
		}
	}
	// -trimpath leaves -ldflags out of the build information: the stamped version is checked by
	// running the binary.
	if len(errs) > 0 {
		return "not run", errs
	}
	ran, err = checkVersionOutput(path, t, version)
	if err != nil && !errors.Is(err, errNotRun) {
		errs = append(errs, bad("%v", err))
	}
	return ran, errs
}

// errNotRun is returned by checkVersionOutput when the binary cannot run on this machine.
var errNotRun = errors.New("version not checked")

// runner returns the command line prefix that runs a binary of t here: none on its own
// architecture, else qemu-user's emulator when it is installed; ok is false when neither.
func runner(t Target) (prefix []string, ok bool) {
	if runtime.GOOS == "linux" && t.GOARCH == runtime.GOARCH {
		return nil, true
	}
	if p, err := exec.LookPath(t.Qemu); err == nil {
		return []string{p}, true
	}
	return nil, false
}

// checkVersionOutput runs `path version` (under qemu-user for another architecture) and checks
// its first line is "turnout VERSION". ran says how it ran; the error wraps errNotRun when the
// binary cannot run here.
func checkVersionOutput(path string, t Target, version string) (ran string, err error) {
	prefix, ok := runner(t)
	if !ok {
		ran = fmt.Sprintf("version not checked: %s is not installed (apt-get install qemu-user-static)", t.Qemu)
		return ran, fmt.Errorf("%w: no %s", errNotRun, t.Qemu)
	}
	ran = "version checked natively"
	if len(prefix) > 0 {
		ran = "version checked under " + filepath.Base(prefix[0])
	}
	args := append(prefix, path, "version")
	out, err := exec.Command(args[0], args[1:]...).Output()
	if err != nil {
		return ran, fmt.Errorf("run %s: %w", strings.Join(args, " "), err)
	}
	first, _, _ := strings.Cut(string(out), "\n")
	if want := "turnout " + version; first != want {
		return ran, fmt.Errorf("`version` prints %q, want %q", first, want)
	}
	return ran, nil
}

// CheckSums checks that dir's SHA256SUMS lists exactly the release binaries of version, each
// with its file's SHA-256, in sha256sum's text format ("HEX  NAME").
func CheckSums(dir, version string) []error {
	data, err := os.ReadFile(filepath.Join(dir, SumsFile))
	if err != nil {
		return []error{fmt.Errorf("%s: %w", SumsFile, err)}
	}
	var errs []error
	listed := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if _, herr := hex.DecodeString(sum); !ok || herr != nil || len(sum) != 64 || name == "" {
			errs = append(errs, fmt.Errorf("%s:%d: %q is not a sha256sum line (HEX, two spaces, NAME)", SumsFile, n, sc.Text()))
			continue
		}
		listed[name] = sum
	}
	for _, t := range Targets {
		name := BinaryName(version, t)
		sum, ok := listed[name]
		if !ok {
			errs = append(errs, fmt.Errorf("%s: does not list %s", SumsFile, name))
			continue
		}
		delete(listed, name)
		got, err := fileSHA256(filepath.Join(dir, name))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if got != sum {
			errs = append(errs, fmt.Errorf("%s: %s has SHA-256 %s, the file has %s", SumsFile, name, sum, got))
		}
	}
	for name := range listed {
		errs = append(errs, fmt.Errorf("%s: lists %s, which is not a binary of release %s", SumsFile, name, version))
	}
	return errs
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("checksum %s: %w", filepath.Base(path), err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("checksum %s: %w", filepath.Base(path), err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

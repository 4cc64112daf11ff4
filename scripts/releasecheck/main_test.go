package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// helloPkg is the main package of the small program the tests build in place of turnout: it
// prints "turnout VERSION" for `version`, as turnout does.
const helloPkg = "example.com/hello"

// buildHello builds helloPkg with env (GOARCH=..., CGO_ENABLED=...) and ldflags into dir as
// name; extra are more go build flags.
func buildHello(t *testing.T, dir, name, ldflags string, env []string, extra ...string) string {
	t.Helper()
	src := t.TempDir()
	write := func(f, text string) {
		if err := os.WriteFile(filepath.Join(src, f), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module "+helloPkg+"\n\ngo 1.26\n")
	write("main.go", `package main

import (
	"fmt"
	"os"
)

var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Printf("turnout %s\ngo: test\n", version)
	}
}
`)
	out := filepath.Join(dir, name)
	args := append([]string{"build", "-ldflags", ldflags, "-o", out}, extra...)
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), append([]string{"GOOS=linux", "GOFLAGS="}, env...)...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %v: %v\n%s", env, err, msg)
	}
	return out
}

var (
	amd64Target = Targets[0]
	arm64Target = Targets[1]
	armv7Target = Targets[2]
)

func TestCheckBinary(t *testing.T) {
	dir := t.TempDir()
	const stamp = "-s -w -X main.version=1.2.3"
	static := func(arch ...string) []string { return append([]string{"CGO_ENABLED=0"}, arch...) }
	tests := []struct {
		name    string
		build   func() string // returns the binary's path
		target  Target
		version string
		want    []string // substrings of the errors, one per error; none: accepted
	}{
		{"static amd64", func() string {
			return buildHello(t, dir, "amd64", stamp, static("GOARCH=amd64"), "-trimpath")
		}, amd64Target, "1.2.3", nil},
		{"static arm64", func() string {
			return buildHello(t, dir, "arm64", stamp, static("GOARCH=arm64"), "-trimpath")
		}, arm64Target, "1.2.3", nil},
		{"static armv7", func() string {
			return buildHello(t, dir, "armv7", stamp, static("GOARCH=arm", "GOARM=7"), "-trimpath")
		}, armv7Target, "1.2.3", nil},
		{"armv7 binary for arm64", func() string { return filepath.Join(dir, "armv7") },
			arm64Target, "1.2.3", []string{"built for EM_ARM ELFCLASS32, want EM_AARCH64 ELFCLASS64", `GOARCH="arm", want "arm64"`, `GOARM="7", want ""`}},
		{"armv6 for armv7", func() string {
			return buildHello(t, dir, "armv6", stamp, static("GOARCH=arm", "GOARM=6"), "-trimpath")
		}, armv7Target, "1.2.3", []string{`GOARM="6", want "7"`}},
		{"without trimpath", func() string {
			return buildHello(t, dir, "untrimmed", stamp, static("GOARCH=amd64"))
		}, amd64Target, "1.2.3", []string{`-trimpath="", want "true"`}},
		{"another version stamped", func() string { return filepath.Join(dir, "amd64") },
			amd64Target, "1.2.4", []string{"`version` prints \"turnout 1.2.3\", want \"turnout 1.2.4\""}},
		{"dynamic C program", func() string {
			if runtime.GOARCH != "amd64" {
				return "/no/amd64/C/program/here"
			}
			return "/bin/true"
		},
			amd64Target, "1.2.3", []string{"ELF type ET_DYN, want a static executable", "dynamically linked: it needs the program interpreter /lib", "has a dynamic section", "links shared libraries [libc.so.6]", "no Go build information"}},
		{"not ELF", func() string {
			p := filepath.Join(dir, "script")
			if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			return p
		}, amd64Target, "1.2.3", []string{"not an ELF file"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.build()
			if _, err := os.Stat(path); err != nil {
				t.Skipf("no %s on this machine: %v", path, err)
			}
			ran, errs := CheckBinary(path, tc.target, helloPkg, tc.version)
			if len(errs) != len(tc.want) {
				t.Fatalf("errors %q, want %d matching %q", errs, len(tc.want), tc.want)
			}
			for i, e := range errs {
				if !strings.Contains(e.Error(), tc.want[i]) || !strings.HasPrefix(e.Error(), filepath.Base(path)+": ") {
					t.Errorf("error %d = %q, want it to name %s and say %q", i, e, filepath.Base(path), tc.want[i])
				}
			}
			if len(tc.want) == 0 {
				_, canRun := runner(tc.target)
				switch {
				case tc.target.GOARCH == runtime.GOARCH && ran != "version checked natively":
					t.Errorf("ran = %q, want it checked natively", ran)
				case canRun && !strings.HasPrefix(ran, "version checked"):
					t.Errorf("ran = %q, want the version checked", ran)
				case !canRun && !strings.Contains(ran, "qemu-user-static"):
					t.Errorf("ran = %q, want it to say what to install", ran)
				}
			}
		})
	}
}

// TestCheckBinaryCgo checks that a Go program linked against the C library is refused.
func TestCheckBinaryCgo(t *testing.T) {
	if _, err := exec.LookPath("gcc"); err != nil || runtime.GOOS != "linux" {
		t.Skip("needs gcc on linux to build a cgo program")
	}
	path := buildHello(t, t.TempDir(), "cgo", "-linkmode=external -X main.version=1.2.3", []string{"CGO_ENABLED=1", "GOARCH=" + runtime.GOARCH}, "-trimpath")
	target := amd64Target
	for _, tg := range Targets {
		if tg.GOARCH == runtime.GOARCH {
			target = tg
		}
	}
	_, errs := CheckBinary(path, target, helloPkg, "1.2.3")
	joined := fmt.Sprint(errs)
	for _, want := range []string{"dynamically linked", `CGO_ENABLED="1", want "0"`} {
		if !strings.Contains(joined, want) {
			t.Errorf("errors %q do not say %q", errs, want)
		}
	}
}

// writeRelease writes fake binaries of version into dir and returns their SHA256SUMS text.
func writeRelease(t *testing.T, dir, version string) string {
	t.Helper()
	var sums strings.Builder
	for _, tg := range Targets {
		name := BinaryName(version, tg)
		data := []byte("binary " + name)
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o755); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		fmt.Fprintf(&sums, "%s  %s\n", hex.EncodeToString(sum[:]), name)
	}
	return sums.String()
}

func TestCheckSums(t *testing.T) {
	const v = "1.2.3"
	other := strings.Repeat("ab", 32)
	tests := []struct {
		name string
		sums func(good string) string
		want []string
	}{
		{"sha256sum output", func(good string) string { return good }, nil},
		{"wrong checksum", func(good string) string {
			lines := strings.SplitAfter(good, "\n")
			_, name, _ := strings.Cut(lines[1], "  ")
			return lines[0] + other + "  " + name + lines[2]
		}, []string{"SHA256SUMS: turnout-1.2.3-linux-arm64 has SHA-256 " + other + ", the file has "}},
		{"binary missing", func(good string) string {
			lines := strings.SplitAfter(good, "\n")
			return lines[0] + lines[2]
		}, []string{"SHA256SUMS: does not list turnout-1.2.3-linux-arm64"}},
		{"file of another release", func(good string) string {
			return good + other + "  turnout-1.2.2-linux-amd64\n"
		}, []string{"SHA256SUMS: lists turnout-1.2.2-linux-amd64, which is not a binary of release 1.2.3"}},
		{"not sha256sum format", func(good string) string {
			return "turnout-1.2.3-linux-amd64: OK\n" + good
		}, []string{`SHA256SUMS:1: "turnout-1.2.3-linux-amd64: OK" is not a sha256sum line`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			good := writeRelease(t, dir, v)
			if err := os.WriteFile(filepath.Join(dir, SumsFile), []byte(tc.sums(good)), 0o644); err != nil {
				t.Fatal(err)
			}
			errs := CheckSums(dir, v)
			if len(errs) != len(tc.want) {
				t.Fatalf("errors %q, want %d matching %q", errs, len(tc.want), tc.want)
			}
			for i, e := range errs {
				if !strings.Contains(e.Error(), tc.want[i]) {
					t.Errorf("error %d = %q, want %q", i, e, tc.want[i])
				}
			}
		})
	}
}

// TestCheckDirLeftovers checks that a directory holding files of another release is refused,
// naming them, and that each missing binary is named.
func TestCheckDirLeftovers(t *testing.T) {
	dir := t.TempDir()
	sums := writeRelease(t, dir, "1.2.2")
	if err := os.WriteFile(filepath.Join(dir, SumsFile), []byte(sums), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errs := CheckDir(dir, "1.2.3")
	joined := fmt.Sprint(errs)
	for _, want := range []string{
		"release binary turnout-1.2.3-linux-armv7: stat",
		"turnout-1.2.2-linux-amd64: not part of release 1.2.3",
		"SHA256SUMS: does not list turnout-1.2.3-linux-arm64",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("errors %q do not say %q", errs, want)
		}
	}
}

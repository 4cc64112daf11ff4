package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/reliability"
)

// TestDataDirLock runs two turnout processes on one data directory: the second exits 1 at once
// with an error naming the first one's pid and the lock file, without opening its admin port;
// validate and dlq list on that directory still work beside the first. Once the first stops
// (SIGTERM), or is killed (SIGKILL), the next one starts.
func TestDataDirLock(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the turnout binary; run without -short")
	}
	bin := reliability.TurnoutBinary(t)
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	config := func(name string) (path, admin string) {
		admin = testutil.FreeAddr(t)
		sub := filepath.Join(dir, name)
		if err := os.Mkdir(sub, 0o750); err != nil {
			t.Fatal(err)
		}
		return writeConfig(t, sub, fmt.Sprintf(`
data_dir: %q
admin: { listen: %q }
inputs:
  webhook: { type: http, listen: %q }
outputs:
  log: { type: file, path: %q }
routes:
  r: { inputs: [webhook], outputs: [log] }
`, dataDir, admin, testutil.FreeAddr(t), filepath.Join(sub, "events.jsonl"))), admin
	}
	pathA, adminA := config("a")
	pathB, adminB := config("b")

	first := startBinary(t, bin, pathA, adminA)
	pid := first.cmd.Process.Pid
	lock := filepath.Join(dataDir, "LOCK")
	if b, err := os.ReadFile(lock); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(pid) {
		t.Errorf("%s = %q %v, want the first process's pid %d", lock, b, err, pid)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "run", "-c", pathB).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("second turnout on the same data_dir: %v, want exit 1; output:\n%s", err, out)
	}
	want := fmt.Sprintf("data directory %s is in use by another turnout (pid %d holds %s)", dataDir, pid, lock)
	if !strings.Contains(string(out), want) {
		t.Errorf("second turnout's output lacks %q:\n%s", want, out)
	}
	if strings.Contains(string(out), "admin server listening") {
		t.Errorf("the second turnout opened its admin port before finding the lock:\n%s", out)
	}

	// Neither validate nor dlq list takes the lock.
	if code, stdout, stderr := runCLI(context.Background(), "validate", "-c", pathB); code != 0 {
		t.Errorf("validate beside a running turnout = %d %s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := runCLI(context.Background(), "dlq", "list", "-c", pathB); code != 0 || stdout != "no dead-letter entries\n" {
		t.Errorf("dlq list beside a running turnout = %d %q %s", code, stdout, stderr)
	}

	if code := first.stop(t); code != 0 {
		t.Fatalf("first turnout exit %d; output:\n%s", code, first.stderr.String())
	}
	second := startBinary(t, bin, pathB, adminB)
	if b, _ := os.ReadFile(lock); strings.TrimSpace(string(b)) != strconv.Itoa(second.cmd.Process.Pid) {
		t.Errorf("%s = %q after the second start, want its pid %d", lock, b, second.cmd.Process.Pid)
	}
	// SIGKILL leaves the file, but not the lock.
	_ = second.cmd.Process.Kill()
	<-second.done
	third := startBinary(t, bin, pathA, adminA)
	if code := third.stop(t); code != 0 {
		t.Errorf("third turnout exit %d; output:\n%s", code, third.stderr.String())
	}
}

package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnout-router/turnout/cmd/turnout/internal/rulestore"
	"github.com/turnout-router/turnout/internal/rulebuild"
	"github.com/turnout-router/turnout/internal/testutil"
)

// TestRulesHotSwapUnderLoad posts a steady stream of events to a running turnout while another
// goroutine switches the route between two versions of its rule through the admin API, again
// and again: every event arrives exactly once, and the per-version call counts add up to the
// number of events, so each event was decided by exactly one version. The slowest event's
// round trip with and without swaps is logged, not asserted (docs/benchmarks.md has the
// engine's own measurement).
func TestRulesHotSwapUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Wasm rules with the Go toolchain; run without -short")
	}
	dir := t.TempDir()
	v1, err := rulebuild.Build("filters/rules/attrroute")
	if err != nil {
		t.Fatalf("build rule: %v", err)
	}
	v2 := withCustomSection(v1, "turnout-test-swap")
	id1, id2 := rulestore.Sum(v1), rulestore.Sum(v2)
	for name, b := range map[string][]byte{"v1.wasm": v1, "v2.wasm": v2, "token": []byte("swap-token-0123456789abcdef\n")} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	httpAddr, adminAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	out := filepath.Join(dir, "alarms.jsonl")
	path := writeConfig(t, dir, fmt.Sprintf(`
data_dir: "%s"
admin: { listen: "%s", token_file: "%s" }
inputs:
  webhook: { type: http, listen: "%s" }
outputs:
  alarms: { type: file, path: "%s", fsync: false }
routes:
  care:
    inputs: [webhook]
    outputs: [alarms]
    rule:
      file: v1.wasm
      config:
        filters: [{ attribute: type, prefix: care.alarm., outputs: [alarms] }]
`, filepath.Join(dir, "data"), adminAddr, filepath.Join(dir, "token"), httpAddr, out))
	t.Setenv(envAdmin, adminAddr)
	t.Setenv(envAdminToken, "")
	t.Setenv(envAdminCA, "")
	rules := func(args ...string) {
		t.Helper()
		args = append(append([]string{"rules"}, args...), "--token-file", filepath.Join(dir, "token"))
		if code, stdout, stderr := runCLI(context.Background(), args...); code != 0 {
			t.Fatalf("turnout %s = exit %d\n%s%s", strings.Join(args, " "), code, stdout, stderr)
		}
	}
	r := startRun(t, path, adminAddr)
	rules("push", filepath.Join(dir, "v2.wasm"), "--route", "care")

	// stream posts events from 4 goroutines until stop is closed and returns how many were
	// confirmed (204) and the slowest round trip.
	var seq sync.Mutex
	next := 0
	stream := func(stop <-chan struct{}) (int, time.Duration) {
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			n       int
			slowest time.Duration
		)
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					seq.Lock()
					id := "e" + strconv.Itoa(next)
					next++
					seq.Unlock()
					start := time.Now()
					if code := postEvent(t, "http://"+httpAddr+"/", id, "care.alarm.fall"); code != http.StatusNoContent {
						t.Errorf("POST %s = %d, want 204", id, code)
						return
					}
					d := time.Since(start)
					mu.Lock()
					n++
					slowest = max(slowest, d)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return n, slowest
	}

	stop := make(chan struct{})
	time.AfterFunc(time.Second, func() { close(stop) })
	quiet, quietSlowest := stream(stop)

	stop = make(chan struct{})
	done := make(chan int)
	go func() {
		swaps := 0
		for i := range 40 {
			if i%2 == 0 {
				rules("activate", id2, "--route", "care")
			} else {
				rules("rollback", "--route", "care")
			}
			swaps++
		}
		close(stop)
		done <- swaps
	}()
	busy, busySlowest := stream(stop)
	swaps := <-done
	total := quiet + busy
	c1, _ := strconv.Atoi(metricLine(t, adminAddr, fmt.Sprintf(`turnout_rule_calls_total{rule="care",version="%s"}`, id1[:12])))
	c2, _ := strconv.Atoi(metricLine(t, adminAddr, fmt.Sprintf(`turnout_rule_calls_total{rule="care",version="%s"}`, id2[:12])))
	if code := r.stop(t); code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, r.stderr.String())
	}
	t.Logf("%d events without swaps (slowest round trip %s), %d during %d swaps (slowest %s); decided by v1 %d, v2 %d",
		quiet, quietSlowest, busy, swaps, busySlowest, c1, c2)

	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		_, id, ok := strings.Cut(line, `"id":"`)
		if !ok {
			t.Fatalf("output line without an id: %s", line)
		}
		seen[id[:strings.IndexByte(id, '"')]]++
	}
	if next != total {
		t.Fatalf("%d events posted, %d confirmed", next, total)
	}
	for i := range total {
		if n := seen["e"+strconv.Itoa(i)]; n != 1 {
			t.Errorf("event e%d arrived %d times, want once", i, n)
		}
	}
	if len(seen) != total {
		t.Errorf("%d distinct events in the output, %d confirmed", len(seen), total)
	}
	if c1+c2 != total || c2 == 0 || busy == 0 {
		t.Errorf("decisions: v1 %d + v2 %d, want %d in all, with v2 deciding some of the %d posted during swaps", c1, c2, total, busy)
	}
}

package reliability

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/mqtt/mqtttest"
)

// The footprint benchmark (make bench-footprint) measures what turnout costs a small device, for
// a configuration of N routes, each MQTT -> stock attrroute rule (a Go guest) -> MQTT with an
// input and an output of its own, on a private mosquitto. Definitions, written down once:
//
//   - start cold: from exec to /readyz answering 200, with an empty data directory, so the rule
//     module is compiled (nothing under data_dir/cache/wasm). start warm: the same after
//     turnout was killed, with the compilation cache it left.
//   - idle RSS: turnout's resident set size after it has been ready for the idle period with
//     nothing flowing (the highest of the readings over the last second of it).
//   - under load: the generator offers rate events/s of 300 bytes in all, spread evenly over
//     the routes, for the load duration. peak is the kernel's high-water mark (VmHWM, reset at
//     the start of the load); steady is the mean of the readings over the second half.
//   - rule instances: turnout_rule_instances at the end of the load (Go guests are >= 3.4 MiB
//     each; a rule's pool holds up to pool_size, GOMAXPROCS by default).
//   - delivered: events the consumer received out of those the generator published, and the
//     rate that is over the load duration.
//
// It asserts nothing about memory or time: it prints a table for docs/benchmarks.md.

// footprintSettings are the knobs of one invocation, from the environment.
type footprintSettings struct {
	load       time.Duration // TURNOUT_FOOTPRINT_DURATION
	idle       time.Duration // TURNOUT_FOOTPRINT_IDLE
	rate       int           // TURNOUT_FOOTPRINT_RATE, events/s over all routes
	routes     []int         // TURNOUT_FOOTPRINT_ROUTES
	pools      []int         // TURNOUT_FOOTPRINT_POOL_SIZES; 0 is the default (key absent)
	memLimits  []string      // TURNOUT_FOOTPRINT_MEMORY_LIMITS; "" is none (key absent)
	gomaxprocs string        // TURNOUT_FOOTPRINT_GOMAXPROCS, given to turnout as GOMAXPROCS
	binary     string        // TURNOUT_FOOTPRINT_BINARY; "" builds cmd/turnout for the test
}

func footprintSettingsFromEnv(t *testing.T) footprintSettings {
	t.Helper()
	dur := func(name string, def time.Duration) time.Duration {
		v := os.Getenv(name)
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("%s=%q: want a positive duration such as 60s", name, v)
		}
		return d
	}
	ints := func(name, def string, allowZero bool) []int {
		var out []int
		for _, f := range strings.Split(cmp.Or(os.Getenv(name), def), ",") {
			if f == "default" && allowZero {
				out = append(out, 0)
				continue
			}
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				t.Fatalf("%s: %q is not a positive integer%s", name, f, map[bool]string{true: " or default"}[allowZero])
			}
			out = append(out, n)
		}
		return out
	}
	s := footprintSettings{
		load:       dur("TURNOUT_FOOTPRINT_DURATION", 10*time.Second),
		idle:       dur("TURNOUT_FOOTPRINT_IDLE", 5*time.Second),
		rate:       ints("TURNOUT_FOOTPRINT_RATE", "2000", false)[0],
		routes:     ints("TURNOUT_FOOTPRINT_ROUTES", "1,5,20", false),
		pools:      ints("TURNOUT_FOOTPRINT_POOL_SIZES", "default", true),
		memLimits:  []string{""},
		gomaxprocs: os.Getenv("TURNOUT_FOOTPRINT_GOMAXPROCS"),
		binary:     os.Getenv("TURNOUT_FOOTPRINT_BINARY"),
	}
	if s.binary != "" {
		if _, err := os.Stat(s.binary); err != nil {
			t.Fatalf("TURNOUT_FOOTPRINT_BINARY: %v", err)
		}
	}
	if v := os.Getenv("TURNOUT_FOOTPRINT_MEMORY_LIMITS"); v != "" {
		s.memLimits = nil
		for _, f := range strings.Split(v, ",") {
			s.memLimits = append(s.memLimits, strings.TrimPrefix(strings.TrimSpace(f), "none"))
		}
	}
	return s
}

// footprintRow is one configuration's line of the table.
type footprintRow struct {
	routes         int
	pool           int    // 0: default
	memLimit       string // "": none
	cold, warm     time.Duration
	idleRSS        int64
	peakRSS        int64
	steadyRSS      int64
	instances      float64
	heapInuse      float64 // go_memstats_heap_inuse_bytes at the end of the load
	sent, received int
	dups           int
	cpu            float64 // turnout's CPU over the load, % of one core
}

// TestBenchFootprint is the footprint benchmark (make bench-footprint). It asserts nothing about
// memory or time: it prints a table for docs/benchmarks.md.
func TestBenchFootprint(t *testing.T) {
	if os.Getenv("TURNOUT_BENCH_FOOTPRINT") == "" {
		t.Skip("footprint benchmark: run it with `make bench-footprint` (sets TURNOUT_BENCH_FOOTPRINT=1; needs mosquitto, see scripts/brokers.sh)")
	}
	s := footprintSettingsFromEnv(t)
	rule := writeRule(t, t.TempDir(), "filters/rules/attrroute")
	if s.binary == "" {
		s.binary = TurnoutBinary(t) // built before the first start is timed
	}
	var rows []footprintRow
	for _, n := range s.routes {
		for _, pool := range s.pools {
			for _, ml := range s.memLimits {
				name := fmt.Sprintf("routes=%d/pool=%s/memory_limit=%s", n, poolName(pool), cmp.Or(ml, "none"))
				t.Run(name, func(t *testing.T) {
					r := footprintRun(t, s, rule, n, pool, ml)
					t.Logf("%s: start cold %v warm %v, idle %s, load peak %s steady %s, %v instances, heap in use %s, delivered %d/%d (dups %d), cpu %.0f%%",
						name, r.cold.Round(time.Millisecond), r.warm.Round(time.Millisecond), mibf(r.idleRSS), mibf(r.peakRSS), mibf(r.steadyRSS),
						r.instances, mibf(int64(r.heapInuse)), r.received, r.sent, r.dups, r.cpu)
					rows = append(rows, r)
				})
			}
		}
	}
	if len(rows) == 0 {
		return
	}
	procs := cmp.Or(s.gomaxprocs, strconv.Itoa(runtime.NumCPU()))
	fmt.Printf("\nfootprint benchmark: MQTT -> attrroute (Go guest) -> MQTT per route on a private mosquitto, %d events/s of %d bytes over all routes for %v, idle %v; GOMAXPROCS %s on %d CPUs, %s/%s, %s; turnout binary %s\n\n%s\n",
		s.rate, benchEventSize, s.load, s.idle, procs, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), s.binary, footprintTable(rows))
}

func poolName(p int) string {
	if p == 0 {
		return "default"
	}
	return strconv.Itoa(p)
}

func mibf(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// footprintConfig is turnout's configuration of n routes.
func footprintConfig(dir, admin, broker, rule string, n, pool int, memLimit string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "data_dir: %s/data\nadmin: { listen: %s }\nlog: { level: warn }\n", dir, admin)
	if memLimit != "" {
		fmt.Fprintf(&b, "memory_limit: %s\n", memLimit)
	}
	b.WriteString("inputs:\n")
	for i := range n {
		fmt.Fprintf(&b, "  in%[1]d: { type: mqtt, brokers: [%[2]q], client_id: turnout-fp-in%[1]d, topics: [\"fp/in/r%[1]d/#\"] }\n", i, broker)
	}
	b.WriteString("outputs:\n")
	for i := range n {
		fmt.Fprintf(&b, "  out%[1]d: { type: mqtt, brokers: [%[2]q], client_id: turnout-fp-out%[1]d, topic: fp/out/r%[1]d }\n", i, broker)
	}
	b.WriteString("routes:\n")
	for i := range n {
		fmt.Fprintf(&b, `  r%[1]d:
    inputs: [in%[1]d]
    outputs: [out%[1]d]
    rule:
      file: %[2]s
      config: { filters: [{ attribute: type, prefix: "care.alarm.", outputs: [out%[1]d] }] }
`, i, rule)
		if pool > 0 {
			fmt.Fprintf(&b, "      pool_size: %d\n", pool)
		}
	}
	return b.String()
}

// footprintRun measures one configuration: cold start, idle, load, warm start.
func footprintRun(t *testing.T, s footprintSettings, rule string, n, pool int, memLimit string) footprintRow {
	r := footprintRow{routes: n, pool: pool, memLimit: memLimit}
	broker := mqtttest.StartWithConfig(t, "autosave_on_changes false", "autosave_interval 3600")
	dir := t.TempDir()
	admin := testutil.FreeAddr(t)
	path := filepath.Join(dir, "turnout.yaml")
	writeFile(t, path, footprintConfig(dir, admin, broker.URL(), rule, n, pool, memLimit))
	var env []string
	if s.gomaxprocs != "" {
		env = append(env, "GOMAXPROCS="+s.gomaxprocs)
	}

	start := time.Now()
	tr := StartTurnoutBinary(t, s.binary, path, admin, env...)
	r.cold = time.Since(start)
	pid := tr.cmd.Process.Pid

	// Idle: nothing flows; the highest reading over the last second of the idle period.
	time.Sleep(s.idle - time.Second)
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		st, err := ReadProcStat(pid)
		if err != nil {
			t.Fatal(err)
		}
		r.idleRSS = max(r.idleRSS, st.RSS)
	}

	// Load: rate events/s over all routes, one paced producer per route.
	run := fmt.Sprintf("fp%d-%d", n, time.Now().UnixNano())
	c, err := NewMQTTConsumer(broker.URL(), "fp-consumer-"+run, "fp/out/#")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	perRoute := max(s.rate/n, 1)
	events := int(float64(perRoute) * s.load.Seconds())
	producers := make([]Producer, n)
	for i := range n {
		p, err := NewMQTTProducer(broker.URL(), fmt.Sprintf("fp-gen-%s-%d", run, i), fmt.Sprintf("fp/in/r%d/%s", i, EventType))
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		producers[i] = p
	}
	sampler, err := StartSampler(pid, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	loadStart := time.Now()
	deadline := loadStart.Add(s.load + 2*time.Minute)
	flows := make([]*flow, n)
	for i, p := range producers {
		flows[i] = pacedFlow(p, fmt.Sprintf("%s-r%d", run, i), 0, events, benchEventSize, perRoute, deadline)
	}
	var steady []int64
	for time.Since(loadStart) < s.load {
		time.Sleep(250 * time.Millisecond)
		if u := sampler.Snapshot(); u.Err == nil && time.Since(loadStart) > s.load/2 {
			steady = append(steady, u.LastRSS)
		}
	}
	var seqs [][]int
	for _, f := range flows {
		seqs = append(seqs, f.wait(t, events))
	}
	for i := range n {
		rep := c.WaitFor(fmt.Sprintf("%s-r%d", run, i), seqs[i], 2*time.Minute)
		r.sent += rep.Sent
		r.received += rep.Received
		r.dups += rep.Duplicates
	}
	r.instances = scrape(t, admin, "turnout_rule_instances")
	r.heapInuse = scrape(t, admin, "go_memstats_heap_inuse_bytes")
	u := sampler.Stop()
	if u.Err != nil {
		t.Fatalf("turnout exited during the load: %v", u.Err)
	}
	r.peakRSS, r.cpu = u.PeakRSS, u.CPUPercent()
	var sum int64
	for _, v := range steady {
		sum += v
	}
	if len(steady) > 0 {
		r.steadyRSS = sum / int64(len(steady))
	}

	// Warm start: killed, started again on the data directory with the compilation cache.
	tr.Kill()
	if files, _ := filepath.Glob(filepath.Join(dir, "data", "cache", "wasm", "*", "*")); len(files) == 0 {
		t.Logf("the compilation cache under %s/data/cache/wasm is empty: the warm start compiles again", dir)
	}
	start = time.Now()
	tr.Start("/readyz")
	r.warm = time.Since(start)
	tr.Kill()
	return r
}

// footprintTable formats rows as a Markdown table.
func footprintTable(rows []footprintRow) string {
	cells := [][]string{{"routes", "pool_size", "memory_limit", "start cold", "start warm", "idle RSS", "load peak RSS", "load steady RSS", "rule instances", "Go heap in use", "delivered", "turnout CPU"}}
	slices.SortStableFunc(rows, func(a, b footprintRow) int { return cmp.Compare(a.routes, b.routes) })
	for _, r := range rows {
		delivered := fmt.Sprintf("%d/%d", r.received, r.sent)
		if r.dups > 0 {
			delivered += fmt.Sprintf(" (%d dups)", r.dups)
		}
		cells = append(cells, []string{strconv.Itoa(r.routes), poolName(r.pool), cmp.Or(r.memLimit, "none"),
			fmtStart(r.cold), fmtStart(r.warm), mibf(r.idleRSS), mibf(r.peakRSS), mibf(r.steadyRSS),
			fmt.Sprintf("%.0f", r.instances), mibf(int64(r.heapInuse)), delivered, fmt.Sprintf("%.0f%%", r.cpu)})
	}
	return markdownTable(cells)
}

func fmtStart(d time.Duration) string {
	return fmt.Sprintf("%.2f s", d.Seconds())
}

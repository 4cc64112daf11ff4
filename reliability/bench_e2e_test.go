package reliability

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/amqp/amqptest"
	"github.com/turnout-router/turnout/transports/mqtt/mqtttest"
	"github.com/turnout-router/turnout/transports/nats/natstest"
)

// The end-to-end benchmark (make bench-e2e) measures, for each pipeline, what the brokers
// sustain alone and what turnout sustains between them. Definitions, written down once:
//
//   - A run publishes a fixed number of 300-byte events with many awaiting the broker's
//     confirmation, and a consumer receives them. Its rate is received events divided by the
//     span from the first publish to the last first receipt. Latency is the first receipt of an
//     event minus its first publish, over the whole run: the brokers' queues fill while the
//     producer runs ahead, so these are latencies at saturation, not on an idle system.
//   - (a) brokers alone: a pipeline crosses two legs, generator -> input broker -> turnout and
//     turnout -> output broker -> consumer. Both legs run at the same time with the same
//     generator and consumer connected straight through, gen -> input destination -> drain and
//     gen -> output destination -> consumer, so that the machine carries both brokers' load at
//     once, as it does under turnout. The pipeline's limit is the lower of the two leg rates,
//     and its latencies are those of that leg. An HTTP input has no broker: its leg is the
//     HTTP generator posting to an HTTPReceiver in this process, which answers 204 once it
//     recorded the event, the cheapest receiver the protocol allows.
//   - (b) turnout at-least-once and (c) turnout best-effort: gen -> input destination ->
//     turnout (stock attrroute rule) -> output destination -> consumer. turnout's CPU time and
//     peak RSS are measured over the run (from the first publish to the last receipt).
//
// Every run is preceded by a warm-up of its own (connections, queues, the rule's instances).

// benchEventSize is the size of a structured event; the rule matches the prefix of EventType.
const benchEventSize = 300

// benchSettings are the knobs of one benchmark invocation, from the environment.
type benchSettings struct {
	events    int      // events per run (TURNOUT_BENCH_EVENTS)
	warmup    int      // events of each warm-up
	window    int      // producer publishes awaiting confirmation (TURNOUT_BENCH_WINDOW)
	httpWin   int      // HTTP producer's requests in flight, one connection each (TURNOUT_BENCH_HTTP_WINDOW)
	repeat    int      // runs per variant, the median is reported (TURNOUT_BENCH_REPEAT)
	pipelines []string // which pipelines (TURNOUT_BENCH_PIPELINES)
	variants  string   // which variants, letters of "abc" (TURNOUT_BENCH_VARIANTS)
	tuning    benchTuning
}

// benchTuning is turnout's configuration for throughput, recorded in docs/benchmarks.md.
type benchTuning struct {
	maxInFlight   int    // route max_in_flight (TURNOUT_BENCH_MAX_IN_FLIGHT)
	credit        int    // AMQP input credit, NATS input max_ack_pending, Kafka input max_in_flight (TURNOUT_BENCH_CREDIT)
	receiveBuffer int    // MQTT input receive_buffer (TURNOUT_BENCH_RECEIVE_BUFFER)
	consumerCred  int    // the AMQP consumer's credit
	ruleTimeout   string // rule.timeout, the rule's CPU guard; "" keeps the default (TURNOUT_BENCH_RULE_TIMEOUT)
}

func benchSettingsFromEnv(t *testing.T) benchSettings {
	t.Helper()
	num := func(name string, def int) int {
		v := os.Getenv(name)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("%s=%q: want a positive integer", name, v)
		}
		return n
	}
	s := benchSettings{
		events:    num("TURNOUT_BENCH_EVENTS", 30000),
		window:    num("TURNOUT_BENCH_WINDOW", 1000),
		httpWin:   num("TURNOUT_BENCH_HTTP_WINDOW", 100),
		repeat:    num("TURNOUT_BENCH_REPEAT", 1),
		pipelines: benchPipelines,
		variants:  cmp.Or(os.Getenv("TURNOUT_BENCH_VARIANTS"), "abc"),
		tuning: benchTuning{
			maxInFlight:   num("TURNOUT_BENCH_MAX_IN_FLIGHT", 4096),
			credit:        num("TURNOUT_BENCH_CREDIT", 4096),
			receiveBuffer: num("TURNOUT_BENCH_RECEIVE_BUFFER", 4096),
			consumerCred:  1024,
			ruleTimeout:   os.Getenv("TURNOUT_BENCH_RULE_TIMEOUT"),
		},
	}
	s.warmup = max(s.events/20, 200)
	if v := os.Getenv("TURNOUT_BENCH_PIPELINES"); v != "" {
		s.pipelines = strings.Split(v, ",")
	}
	for _, p := range s.pipelines {
		in, out, ok := strings.Cut(p, "-")
		if !ok || !slices.Contains(benchInputs, in) || !slices.Contains(benchOutputs, out) {
			t.Fatalf("TURNOUT_BENCH_PIPELINES: %q is not INPUT-OUTPUT with an input of %v and an output of %v (e.g. %s)",
				p, benchInputs, benchOutputs, strings.Join(benchPipelines, ","))
		}
	}
	if strings.Trim(s.variants, "abc") != "" {
		t.Fatalf("TURNOUT_BENCH_VARIANTS=%q: want letters of abc", s.variants)
	}
	return s
}

// windowFor is the producer window for a generator publishing to a broker of kind.
func (s benchSettings) windowFor(kind string) int {
	if kind == "http" {
		return s.httpWin
	}
	return s.window
}

// The pipelines the benchmark knows: any input kind to any output kind, and the default list.
var (
	benchInputs    = []string{"mqtt", "amqp", "nats", "kafka", "http"}
	benchOutputs   = []string{"mqtt", "amqp", "nats", "kafka"}
	benchPipelines = []string{"mqtt-amqp", "amqp-mqtt", "amqp-amqp", "mqtt-mqtt", "http-nats", "nats-kafka", "http-amqp"}
)

// benchBroker is one side of a pipeline: a broker that producers, consumers and turnout reach.
// MQTT sides are private mosquitto processes (max_queued_messages 0); AMQP sides are the
// shared RabbitMQ, with a fresh queue for every destination; NATS sides the shared nats-server
// with a fresh file-backed stream for every destination; Kafka sides a kfake cluster in a
// process of its own (see startKfake) with a fresh topic for every destination. An HTTP input
// side has no broker: its destination is an address, where turnout's HTTP input listens, or in
// variant a an HTTPReceiver.
type benchBroker struct {
	kind    string // one of benchInputs
	mqtt    *mqtttest.Mosquitto
	amqp    *amqptest.Node
	natsURL string
	kafka   *kfakeProc
	pid     int // the broker's process, for its CPU time (0: unknown or none)
}

func newBenchBroker(t *testing.T, kind string) *benchBroker {
	t.Helper()
	b := &benchBroker{kind: kind}
	var addr string
	switch kind {
	case "mqtt":
		// Save the persistence file every 30 minutes, as a stock mosquitto does, not after
		// every change as restart tests need: the benchmark measures the broker's forwarding.
		b.mqtt = mqtttest.StartWithConfig(t, "autosave_on_changes false", "autosave_interval 1800")
		addr = b.mqtt.Addr()
	case "amqp":
		b.amqp = amqptest.Shared(t)
		addr = amqptest.SharedAddr
	case "nats":
		b.natsURL = natstest.Shared(t)
		addr = natstest.SharedAddr
	case "kafka":
		b.kafka = startKfake(t)
		b.pid = b.kafka.cmd.Process.Pid
		return b
	case "http":
		return b
	}
	_, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	if pid, err := ListenerPID(n); err == nil {
		b.pid = pid
	} else {
		t.Logf("the broker's CPU time will not be shown: %v", err)
	}
	return b
}

// benchBrokerNames are the names cpuTable gives the brokers' processes, in column order.
var benchBrokerNames = []string{"mosquitto", "RabbitMQ", "nats-server", "kfake"}

// proc names the broker's process for a cpuMeter; side is "in" or "out".
func (b *benchBroker) proc(side string) benchProc {
	switch b.kind {
	case "mqtt":
		return benchProc{"mosquitto " + side, b.pid}
	case "amqp":
		return benchProc{"RabbitMQ (shared)", b.pid}
	case "nats":
		return benchProc{"nats-server (shared)", b.pid}
	case "kafka":
		return benchProc{"kfake", b.pid}
	}
	return benchProc{"none", 0}
}

// dest names a fresh destination on the broker: an MQTT topic prefix, an AMQP queue, a NATS
// stream (capturing the subject "bench.<stream>"), a Kafka topic or an HTTP listen address.
// Queues and streams are deleted when the test ends.
func (b *benchBroker) dest(t *testing.T, prefix string) string {
	t.Helper()
	switch b.kind {
	case "mqtt":
		return fmt.Sprintf("bench/%s%d", prefix, time.Now().UnixNano())
	case "amqp":
		q := amqptest.QueueName(t, "bench-"+prefix)
		t.Cleanup(func() { _, _ = b.amqp.Ctl("delete_queue", q) })
		return q
	case "nats":
		name := natstest.Name("BENCH_" + strings.Trim(prefix, "-"))
		natstest.Stream(t, b.natsURL, name, "bench."+name)
		return name
	case "kafka":
		return b.kafka.topic(t, "bench-"+prefix)
	}
	return testutil.FreeAddr(t)
}

// producer connects a generator that publishes to dest.
func (b *benchBroker) producer(t *testing.T, dest, id string) Producer {
	t.Helper()
	var (
		p   Producer
		err error
	)
	switch b.kind {
	case "mqtt":
		p, err = NewMQTTProducer(b.mqtt.URL(), "gen-"+id, dest+"/"+EventType)
	case "amqp":
		p, err = NewAMQPProducer(b.amqp.URL(), "/queue/"+dest, "binary")
	case "nats":
		p, err = NewNATSProducer(b.natsURL, "bench."+dest, "binary")
	case "kafka":
		p, err = NewKafkaProducer([]string{b.kafka.addr}, dest, "binary")
	default:
		p = NewHTTPProducer("http://" + dest + "/")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// consumer connects a consumer that receives from dest.
func (b *benchBroker) consumer(t *testing.T, dest, id string, tun benchTuning) Consumer {
	t.Helper()
	var (
		c   Consumer
		err error
	)
	switch b.kind {
	case "mqtt":
		c, err = NewMQTTConsumer(b.mqtt.URL(), "consumer-"+id, dest+"/#")
	case "amqp":
		c, err = NewAMQPConsumer(b.amqp.URL(), "/queue/"+dest, tun.consumerCred)
	case "nats":
		c, err = NewNATSConsumer(b.natsURL, dest, "consumer-"+id, "", tun.consumerCred)
	case "kafka":
		c, err = NewKafkaConsumer([]string{b.kafka.addr}, dest, "consumer-"+id)
	default:
		c, err = NewHTTPReceiver(dest)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// inputYAML is turnout's input reading dest, indented for the inputs block.
func (b *benchBroker) inputYAML(dest, id string, tun benchTuning) string {
	switch b.kind {
	case "mqtt":
		return fmt.Sprintf(`    type: mqtt
    brokers: [%q]
    client_id: turnout-bench-%s
    topics: [%q]
    receive_buffer: %d
`, b.mqtt.URL(), id, dest+"/#", tun.receiveBuffer)
	case "amqp":
		return fmt.Sprintf(`    type: amqp
    url: %s
    address: /queue/%s
    credit: %d
`, b.amqp.URL(), dest, tun.credit)
	case "nats":
		return fmt.Sprintf(`    type: nats
    url: %s
    stream: %s
    consumer: turnout-bench-%s
    max_ack_pending: %d
`, b.natsURL, dest, id, tun.credit)
	case "kafka":
		return fmt.Sprintf(`    type: kafka
    brokers: [%q]
    group: turnout-bench-%s
    topics: [%q]
    max_in_flight: %d
`, b.kafka.addr, id, dest, tun.credit)
	}
	return fmt.Sprintf(`    type: http
    listen: %s
`, dest)
}

// outputYAML is turnout's output writing to dest, indented for the outputs block.
func (b *benchBroker) outputYAML(dest string) string {
	switch b.kind {
	case "mqtt":
		return fmt.Sprintf(`    type: mqtt
    brokers: [%q]
    topic_template: %q
`, b.mqtt.URL(), dest+"/{type}")
	case "amqp":
		return fmt.Sprintf(`    type: amqp
    url: %s
    address: /queue/%s
    mode: binary
`, b.amqp.URL(), dest)
	case "nats":
		return fmt.Sprintf(`    type: nats
    url: %s
    subject: bench.%s
    mode: binary
`, b.natsURL, dest)
	}
	return fmt.Sprintf(`    type: kafka
    brokers: [%q]
    topic: %s
    mode: binary
`, b.kafka.addr, dest)
}

// kfakeProc is a kfake cluster (one broker, data in a temporary directory, written through the
// page cache as a stock Kafka broker does) in a process of its own: the test binary run again as
// TestBenchKfake, so that its CPU time is measured apart from the generators and consumers.
type kfakeProc struct {
	cmd  *exec.Cmd
	addr string // host:port of the broker
	mu   sync.Mutex
	in   io.Writer      // commands: "topic NAME PARTITIONS"
	out  *bufio.Scanner // answers: "ok" or an error
}

// benchKfakeDir is the variable that makes TestBenchKfake run a kfake cluster with its data in
// the directory it names.
const benchKfakeDir = "TURNOUT_BENCH_KFAKE_DIR"

func startKfake(t *testing.T) *kfakeProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestBenchKfake$", "-test.count", "1")
	cmd.Env = append(os.Environ(), benchKfakeDir+"="+t.TempDir())
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	k := &kfakeProc{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(func() {
		_ = in.Close() // the cluster closes and the process exits
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	if !k.out.Scan() || !strings.HasPrefix(k.out.Text(), "listening ") {
		t.Fatalf("kfake did not start: %q %v", k.out.Text(), k.out.Err())
	}
	k.addr = strings.TrimPrefix(k.out.Text(), "listening ")
	return k
}

// topic creates a topic with a fresh name starting with prefix, with 4 partitions.
func (k *kfakeProc) topic(t *testing.T, prefix string) string {
	t.Helper()
	name := fmt.Sprintf("%s%d", prefix, time.Now().UnixNano())
	k.mu.Lock()
	defer k.mu.Unlock()
	fmt.Fprintf(k.in, "topic %s 4\n", name)
	if !k.out.Scan() || k.out.Text() != "ok" {
		t.Fatalf("kfake: create topic %s: %q %v", name, k.out.Text(), k.out.Err())
	}
	return name
}

// TestBenchKfake is the kfake process of the end-to-end benchmark (see startKfake); it skips
// unless started by it. It prints "listening HOST:PORT", then creates the topics named on its
// standard input ("topic NAME PARTITIONS", answered "ok" or the error) until that closes.
func TestBenchKfake(t *testing.T) {
	dir := os.Getenv(benchKfakeDir)
	if dir == "" {
		t.Skip("the kfake process of the end-to-end benchmark (make bench-e2e starts it)")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Printf("listening %s\n", c.ListenAddrs()[0])
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var (
			name string
			n    int32
		)
		if _, err := fmt.Sscanf(sc.Text(), "topic %s %d", &name, &n); err != nil {
			fmt.Printf("bad command %q: %v\n", sc.Text(), err)
			continue
		}
		if err := c.CreateTopic(name, n, nil); err != nil {
			fmt.Printf("create topic %s: %v\n", name, err)
			continue
		}
		fmt.Println("ok")
	}
}

// benchConfig is the turnout configuration of variants b and c.
func benchConfig(dir, admin, rule, mode, input, output string, tun benchTuning) string {
	ruleTimeout := ""
	if tun.ruleTimeout != "" {
		ruleTimeout = "\n      timeout: " + tun.ruleTimeout
	}
	return fmt.Sprintf(`
data_dir: %[1]s/data
admin: { listen: %[2]s }
log: { level: warn }
inputs:
  in:
%[3]s
outputs:
  out:
%[4]s
routes:
  bench:
    mode: %[5]s
    inputs: [in]
    outputs: [out]
    max_in_flight: %[6]d
    rule:
      file: %[7]s%[8]s
      config:
        filters: [{ attribute: type, prefix: "care.alarm.", outputs: [out] }]
`, dir, admin, strings.TrimSuffix(input, "\n"), strings.TrimSuffix(output, "\n"), mode, tun.maxInFlight, rule, ruleTimeout)
}

// flowResult is what one producer -> consumer run measured.
type flowResult struct {
	sent, received, dups int
	span                 time.Duration // first publish to last receipt
	rate                 float64       // received / span
	p50, p99             time.Duration
}

// runFlow publishes events 0..n-1 of run through p and waits until c received them all or
// nothing new arrived for 10 s (best effort may lose some). It may run on any goroutine.
func runFlow(p Producer, c Consumer, run string, n, window int) (flowResult, error) {
	base, _ := c.Count()
	seqs, err := p.Publish(run, 0, n, benchEventSize, window, time.Now().Add(5*time.Minute))
	if err != nil {
		return flowResult{}, fmt.Errorf("generator %s: %w", run, err)
	}
	waitQuiet(c, base+len(seqs), 10*time.Second, 5*time.Minute)
	rep := c.Report(run, seqs)
	r := flowResult{sent: len(seqs), received: rep.Received, dups: rep.Duplicates}
	var first, last time.Time
	for _, s := range seqs {
		if at := p.SentAt(s); !at.IsZero() && (first.IsZero() || at.Before(first)) {
			first = at
		}
		if at := c.ReceivedAt(EventID(run, s)); at.After(last) {
			last = at
		}
	}
	if r.received > 0 && last.After(first) {
		r.span = last.Sub(first)
		r.rate = float64(r.received) / r.span.Seconds()
	}
	r.p50, r.p99 = Latencies(p, c, run, seqs)
	return r, nil
}

// waitQuiet returns once c has seen want distinct ids, or nothing new for idle, or max passed.
// It polls Count, which is cheap next to Report, so that waiting does not steal the CPU the
// brokers and turnout need.
func waitQuiet(c Consumer, want int, idle, max time.Duration) {
	end := time.Now().Add(max)
	last, lastChange := -1, time.Now()
	for time.Now().Before(end) {
		n, _ := c.Count()
		if n >= want {
			return
		}
		if n != last {
			last, lastChange = n, time.Now()
		} else if time.Since(lastChange) > idle {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// benchRow is one line of the table.
type benchRow struct {
	pipeline, variant string
	flow              flowResult
	legs              string        // variant a: both legs' rates
	usage             *Usage        // variants b and c: turnout's CPU and memory
	cpu               cpuSplit      // where the machine's CPU went during the run
	ratio             float64       // rate / rate of a (0: not applicable)
	config            string        // variants b and c: turnout's configuration
	elapsed           time.Duration // wall time of the whole run
}

// TestBenchE2E is the end-to-end benchmark (make bench-e2e). It asserts nothing about speed:
// it prints a table for docs/benchmarks.md.
func TestBenchE2E(t *testing.T) {
	if os.Getenv("TURNOUT_BENCH_E2E") == "" {
		t.Skip("end-to-end benchmark: run it with `make bench-e2e` (sets TURNOUT_BENCH_E2E=1; needs mosquitto and RabbitMQ, see scripts/brokers.sh)")
	}
	s := benchSettingsFromEnv(t)
	rule := writeRule(t, t.TempDir(), "filters/rules/attrroute")
	TurnoutBinary(t) // build before the first measurement
	t.Logf("settings: %d events of %d bytes per run (+%d warm-up), producer window %d (http %d), %d run(s) per variant (median); turnout: max_in_flight %d, amqp credit, nats max_ack_pending and kafka max_in_flight %d, mqtt receive_buffer %d, rule.timeout %s",
		s.events, benchEventSize, s.warmup, s.window, s.httpWin, s.repeat, s.tuning.maxInFlight, s.tuning.credit, s.tuning.receiveBuffer, cmp.Or(s.tuning.ruleTimeout, "default"))

	var rows []benchRow
	for _, p := range s.pipelines {
		t.Run(p, func(t *testing.T) {
			inKind, outKind, _ := strings.Cut(p, "-")
			in := newBenchBroker(t, inKind)
			out := in // AMQP -> AMQP, NATS -> NATS, Kafka -> Kafka: one broker, two destinations
			if inKind != outKind || inKind == "mqtt" {
				out = newBenchBroker(t, outKind) // MQTT -> MQTT: two mosquitto processes
			}
			name := strings.ReplaceAll(p, "-", "->")
			runs := map[string][]benchRow{}
			for i := range s.repeat {
				for _, v := range s.variants {
					var r benchRow
					switch v {
					case 'a':
						r = benchBrokersAlone(t, s, in, out, i)
					case 'b':
						r = benchTurnout(t, s, in, out, rule, "at-least-once", i)
					case 'c':
						r = benchTurnout(t, s, in, out, rule, "best-effort", i)
					}
					r.pipeline = name
					t.Logf("%s %s run %d: %.0f events/s, p50 %v p99 %v, received %d/%d (dups %d) %s in %v",
						name, r.variant, i+1, r.flow.rate, r.flow.p50, r.flow.p99, r.flow.received, r.flow.sent, r.flow.dups, r.legs, r.elapsed.Round(time.Millisecond))
					if r.usage != nil {
						t.Logf("  turnout %s", r.usage)
					}
					t.Logf("  %s", r.cpu)
					runs[string(v)] = append(runs[string(v)], r)
				}
			}
			if rs := runs["b"]; len(rs) > 0 {
				t.Logf("turnout configuration (%s, at-least-once):\n%s", name, rs[0].config)
			}
			var a float64
			for _, v := range s.variants {
				r := median(runs[string(v)])
				if v == 'a' {
					a = r.flow.rate
				} else if a > 0 {
					r.ratio = r.flow.rate / a
				}
				rows = append(rows, r)
			}
		})
	}
	if len(rows) == 0 {
		return
	}
	// The tables go to standard output as they are, to be pasted into docs/benchmarks.md.
	fmt.Printf("\nend-to-end benchmark: %d events of %d bytes per run, producer window %d (http: %d requests), median of %d run(s); %d CPUs, %s\n"+
		"turnout: max_in_flight %d, amqp input credit, nats input max_ack_pending and kafka input max_in_flight %d, mqtt input receive_buffer %d, rule.timeout %s\n\n%s\n",
		s.events, benchEventSize, s.window, s.httpWin, s.repeat, runtime.NumCPU(), runtime.Version(),
		s.tuning.maxInFlight, s.tuning.credit, s.tuning.receiveBuffer, cmp.Or(s.tuning.ruleTimeout, "default"), benchTable(rows))
	fmt.Printf("CPU time per 10,000 events, by process:\n\n%s\n", cpuTable(rows))
}

// median returns the run with the median rate.
func median(rs []benchRow) benchRow {
	slices.SortFunc(rs, func(x, y benchRow) int { return cmp.Compare(x.flow.rate, y.flow.rate) })
	return rs[len(rs)/2]
}

// cpuMeter measures where the machine's CPU went during a run: the CPU time of each process
// taking part (turnout, the brokers, this process with the generators and consumers) and of the
// whole machine, so that what is left is other load.
type cpuMeter struct {
	procs []benchProc
	start []time.Duration
	host  HostCPU
	at    time.Time
}

// benchProc is one process whose CPU a run accounts for.
type benchProc struct {
	name string
	pid  int
}

func startCPUMeter(t *testing.T, procs ...benchProc) *cpuMeter {
	t.Helper()
	m := &cpuMeter{at: time.Now()}
	seen := map[int]bool{}
	for _, p := range append([]benchProc{{"generators and consumers", os.Getpid()}}, procs...) {
		if p.pid == 0 || seen[p.pid] {
			continue
		}
		seen[p.pid] = true
		st, err := ReadProcStat(p.pid)
		if err != nil {
			continue
		}
		m.procs, m.start = append(m.procs, p), append(m.start, st.CPU)
	}
	var err error
	if m.host, err = ReadHostCPU(); err != nil {
		t.Fatal(err)
	}
	return m
}

// cpuSplit is what a cpuMeter measured.
type cpuSplit struct {
	names    []string
	cpu      []time.Duration
	busy     float64       // machine busy, % of all cores
	busyTime time.Duration // machine busy, CPU time summed over cores
	wall     time.Duration
}

func (m *cpuMeter) stop(t *testing.T) cpuSplit {
	t.Helper()
	h, err := ReadHostCPU()
	if err != nil {
		t.Fatal(err)
	}
	c := cpuSplit{busy: h.BusyPercentSince(m.host), busyTime: h.Busy - m.host.Busy, wall: time.Since(m.at)}
	for i, p := range m.procs {
		if st, err := ReadProcStat(p.pid); err == nil {
			c.names, c.cpu = append(c.names, p.name), append(c.cpu, st.CPU-m.start[i])
		}
	}
	return c
}

// of sums the CPU time of the processes whose name starts with prefix.
func (c cpuSplit) of(prefix string) time.Duration {
	var d time.Duration
	for i, n := range c.names {
		if strings.HasPrefix(n, prefix) {
			d += c.cpu[i]
		}
	}
	return d
}

// has reports whether a process whose name starts with prefix was measured.
func (c cpuSplit) has(prefix string) bool {
	return slices.ContainsFunc(c.names, func(n string) bool { return strings.HasPrefix(n, prefix) })
}

// String reads "machine 97% busy over 3.1s on 2 cores: turnout 1.40s, mosquitto 0.62s, ...".
func (c cpuSplit) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "machine %.0f%% busy over %v on %d cores:", c.busy, c.wall.Round(10*time.Millisecond), runtime.NumCPU())
	rest := c.busyTime
	for i, n := range c.names {
		fmt.Fprintf(&b, " %s %.2fs,", n, c.cpu[i].Seconds())
		rest -= c.cpu[i]
	}
	fmt.Fprintf(&b, " everything else %.2fs", max(rest, 0).Seconds())
	return b.String()
}

// benchBrokersAlone runs variant a: both legs at the same time, each producer -> broker ->
// consumer with no turnout, and reports the slower leg.
func benchBrokersAlone(t *testing.T, s benchSettings, in, out *benchBroker, i int) benchRow {
	t.Helper()
	start := time.Now()
	id := fmt.Sprintf("a%d-%d", i, time.Now().UnixNano())
	type leg struct {
		p      Producer
		c      Consumer
		window int
		res    flowResult
		err    error
	}
	var legs [2]*leg
	for j, b := range []*benchBroker{in, out} {
		dest := b.dest(t, fmt.Sprintf("a%d-leg%d-", i, j))
		lid := fmt.Sprintf("%s-leg%d", id, j)
		c := b.consumer(t, dest, lid, s.tuning)
		legs[j] = &leg{p: b.producer(t, dest, lid), c: c, window: s.windowFor(b.kind)}
	}
	both := func(run string, n int) {
		var wg sync.WaitGroup
		for j, l := range legs {
			wg.Go(func() { l.res, l.err = runFlow(l.p, l.c, fmt.Sprintf("%s-%s%d", id, run, j), n, l.window) })
		}
		wg.Wait()
		for _, l := range legs {
			if l.err != nil {
				t.Fatal(l.err)
			}
		}
	}
	both("w", s.warmup)
	meter := startCPUMeter(t, in.proc("in"), out.proc("out"))
	both("m", s.events)
	r := benchRow{variant: "a brokers alone", cpu: meter.stop(t), elapsed: time.Since(start)}
	r.flow = legs[0].res
	if legs[1].res.rate < r.flow.rate {
		r.flow = legs[1].res
	}
	r.legs = fmt.Sprintf("(in leg %s %.0f, out leg %s %.0f)", in.kind, legs[0].res.rate, out.kind, legs[1].res.rate)
	return r
}

// benchTurnout runs variant b or c: producer -> in broker -> turnout -> out broker -> consumer.
func benchTurnout(t *testing.T, s benchSettings, in, out *benchBroker, rule, mode string, i int) benchRow {
	t.Helper()
	start := time.Now()
	short := map[string]string{"at-least-once": "alo", "best-effort": "be"}[mode]
	id := fmt.Sprintf("%s%d-%d", short, i, time.Now().UnixNano())
	inDest, outDest := in.dest(t, "in-"+short+"-"), out.dest(t, "out-"+short+"-")
	c := out.consumer(t, outDest, id, s.tuning)
	dir := t.TempDir()
	admin := testutil.FreeAddr(t)
	cfg := benchConfig(dir, admin, rule, mode, in.inputYAML(inDest, id, s.tuning), out.outputYAML(outDest), s.tuning)
	path := filepath.Join(dir, "turnout.yaml")
	writeFile(t, path, cfg)
	tr := StartTurnout(t, path, admin)
	defer tr.Kill()
	p := in.producer(t, inDest, id)

	if _, err := runFlow(p, c, id+"-w", s.warmup, s.windowFor(in.kind)); err != nil {
		t.Fatal(err)
	}
	const ackLatency = "turnout_ack_latency_seconds" // Dispatch to settlement of each input message
	ackSum, ackCount := scrape(t, admin, ackLatency+"_sum"), scrape(t, admin, ackLatency+"_count")
	meter := startCPUMeter(t, benchProc{"turnout", tr.cmd.Process.Pid}, in.proc("in"), out.proc("out"))
	sampler, err := StartSampler(tr.cmd.Process.Pid, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	res, err := runFlow(p, c, id+"-m", s.events, s.windowFor(in.kind))
	u := sampler.Stop()
	split := meter.stop(t)
	if err != nil {
		t.Fatal(err)
	}
	if u.Err != nil {
		t.Fatalf("turnout exited during the run: %v", u.Err)
	}
	if res.received < res.sent {
		// Best effort may lose events, or they come after the 10 s runFlow waits for; say what
		// turnout's own account has to say.
		b, _ := os.ReadFile(tr.log.Name())
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		t.Logf("  turnout %s: %d of %d events missing; its log (tail):\n%s\n  its metrics:\n%s", mode, res.sent-res.received, res.sent, b, MetricsDump(admin))
	}
	// Little's law: the messages turnout held on average are its rate times how long it held
	// each. Close to the configured bound, the bound limits the rate.
	if n := scrape(t, admin, ackLatency+"_count") - ackCount; n > 0 {
		held := time.Duration((scrape(t, admin, ackLatency+"_sum") - ackSum) / n * float64(time.Second))
		t.Logf("  turnout %s: held each input message %v on average, so %.0f in flight on average (bound: max_in_flight %d%s)",
			mode, held.Round(100*time.Microsecond), res.rate*held.Seconds(), s.tuning.maxInFlight,
			map[string]string{"amqp": fmt.Sprintf(", credit %d", s.tuning.credit), "nats": fmt.Sprintf(", max_ack_pending %d", s.tuning.credit),
				"kafka": fmt.Sprintf(", input max_in_flight %d", s.tuning.credit)}[in.kind])
	}
	variant := "b at-least-once"
	if mode == "best-effort" {
		variant = "c best-effort"
	}
	return benchRow{variant: variant, flow: res, usage: &u, cpu: split,
		config: strings.TrimLeft(cfg, "\n"), elapsed: time.Since(start)}
}

// benchTable formats rows as a Markdown table with aligned columns.
func benchTable(rows []benchRow) string {
	cells := [][]string{{"pipeline", "variant", "events/s", "p50", "p99", "turnout CPU s / 10k events", "turnout CPU (% of a core)", "turnout peak RSS", "host CPU busy", "b/a"}}
	for _, r := range rows {
		cpu, pct, rss, ratio := "-", "-", "-", "-"
		if u := r.usage; u != nil && r.flow.received > 0 {
			cpu = fmt.Sprintf("%.2f", u.CPU.Seconds()*10000/float64(r.flow.received))
			pct = fmt.Sprintf("%.0f%%", u.CPUPercent())
			rss = fmt.Sprintf("%.0f MiB", float64(u.PeakRSS)/(1<<20))
		}
		if r.ratio > 0 {
			ratio = fmt.Sprintf("%.2f", r.ratio)
		}
		rate := fmt.Sprintf("%.0f", r.flow.rate)
		if r.flow.received < r.flow.sent {
			rate += fmt.Sprintf(" (%d missing)", r.flow.sent-r.flow.received)
		}
		if r.legs != "" {
			rate += " " + r.legs
		}
		cells = append(cells, []string{r.pipeline, r.variant, rate, fmtLatency(r.flow.p50), fmtLatency(r.flow.p99),
			cpu, pct, rss, fmt.Sprintf("%.0f%%", r.cpu.busy), ratio})
	}
	return markdownTable(cells)
}

// cpuTable formats where the machine's CPU went in each run, per 10,000 events through the
// pipeline: turnout, the brokers, this process (generators and consumers), and everything else
// (other load on the machine, the kernel's share not charged to a process). A broker that takes
// part in no row gets no column.
func cpuTable(rows []benchRow) string {
	cols := []string{"turnout"}
	for _, b := range benchBrokerNames {
		if slices.ContainsFunc(rows, func(r benchRow) bool { return r.cpu.has(b) }) {
			cols = append(cols, b)
		}
	}
	cols = append(cols, "generators")
	cells := [][]string{append(append([]string{"pipeline", "variant"}, cols[:len(cols)-1]...), "generators + consumers", "everything else", "machine busy")}
	for _, r := range rows {
		if r.flow.received == 0 {
			continue
		}
		c := r.cpu
		row := []string{r.pipeline, r.variant}
		var known time.Duration
		for _, name := range cols {
			if !c.has(name) {
				row = append(row, "-")
				continue
			}
			known += c.of(name)
			row = append(row, fmt.Sprintf("%.2f s", c.of(name).Seconds()*10000/float64(r.flow.received)))
		}
		rest := max(c.busyTime-known, 0)
		cells = append(cells, append(row, fmt.Sprintf("%.2f s", rest.Seconds()*10000/float64(r.flow.received)), fmt.Sprintf("%.0f%%", c.busy)))
	}
	return markdownTable(cells)
}

// markdownTable aligns cells (the first row is the header) into a Markdown table.
func markdownTable(cells [][]string) string {
	width := make([]int, len(cells[0]))
	for _, row := range cells {
		for i, c := range row {
			width[i] = max(width[i], len(c))
		}
	}
	var b strings.Builder
	line := func(row []string) {
		for i, c := range row {
			fmt.Fprintf(&b, "| %-*s ", width[i], c)
		}
		b.WriteString("|\n")
	}
	line(cells[0])
	sep := make([]string, len(width))
	for i, w := range width {
		sep[i] = strings.Repeat("-", w)
	}
	line(sep)
	for _, row := range cells[1:] {
		line(row)
	}
	return b.String()
}

func fmtLatency(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
}

// TestKfakeProcess checks the benchmark's Kafka side: a kfake cluster in a process of its own
// whose topics carry events from the Kafka generator to the Kafka consumer, and whose CPU time
// can be read apart from this process's.
func TestKfakeProcess(t *testing.T) {
	k := startKfake(t)
	if pid := k.cmd.Process.Pid; pid == os.Getpid() {
		t.Fatal("kfake runs in the test process")
	}
	if _, err := ReadProcStat(k.cmd.Process.Pid); err != nil {
		t.Fatalf("kfake's CPU time cannot be read: %v", err)
	}
	topic := k.topic(t, "kfake-process-")
	c, err := NewKafkaConsumer([]string{k.addr}, topic, "consumer")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p, err := NewKafkaProducer([]string{k.addr}, topic, "binary")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	checkFlow(t, p, c, fmt.Sprintf("kfake%d", time.Now().UnixNano()), 300)
}

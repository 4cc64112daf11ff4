package reliability

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/amqp/amqptest"
	"github.com/turnout-router/turnout/transports/mqtt/mqtttest"
)

// The reliability suite: every pair of input and output protocols, through the real turnout
// binary and the stock attrroute rule, under each way the world can fail (see
// docs/reliability.md). TestReliability runs the short plan; RELIABILITY=full (make reliability)
// runs the full one.

// plan sizes one run of the suite.
type plan struct {
	name string
	// Scenarios 1 and 4: turnout killed with SIGKILL and restarted while events flow.
	killEvents int
	rate       int             // events per second the generator offers in a paced flow
	killEvery  []time.Duration // pauses between kills, used in turn: some land while turnout catches up
	maxKills   int
	killOutage time.Duration // how long the output refuses before a kill in an outage
	// Scenario 2: the output refuses for a while.
	refuseEvents int
	refuseSize   int           // bytes per event, so that a buffered backlog would show in the RSS
	outage       time.Duration // at least this long, and until the generator has published everything
	queueMax     int           // AMQP: max-length of the output queue
	rssBound     int64         // turnout's peak RSS must stay below
	// Scenario 3: the output's broker restarts during the flow.
	restartEvents int
	restarts      int
	down          time.Duration
	// How long the validator may wait for the last events once the generator is done.
	settle time.Duration
}

var (
	shortPlan = plan{
		name:       "short",
		killEvents: 6000, rate: 2000, maxKills: 3, killOutage: 300 * time.Millisecond,
		killEvery:    []time.Duration{250 * time.Millisecond, 500 * time.Millisecond},
		refuseEvents: 2000, refuseSize: 1024, outage: 2 * time.Second, queueMax: 500,
		rssBound:      128 << 20,
		restartEvents: 1500, restarts: 1, down: time.Second,
		settle: 90 * time.Second,
	}
	fullPlan = plan{
		name:       "full",
		killEvents: 40000, rate: 3000, maxKills: 40, killOutage: 2 * time.Second,
		killEvery: []time.Duration{2 * time.Second, 400 * time.Millisecond, 3 * time.Second,
			time.Second, 250 * time.Millisecond},
		refuseEvents: 20000, refuseSize: 8192, outage: 15 * time.Second, queueMax: 1000,
		rssBound:      128 << 20,
		restartEvents: 20000, restarts: 3, down: 3 * time.Second,
		settle: 5 * time.Minute,
	}
)

// endpoint is one side of a pair: which protocol turnout reads from or writes to.
type endpoint string

const (
	mqttEnd endpoint = "mqtt"
	amqpEnd endpoint = "amqp"
)

type pair struct{ in, out endpoint }

func (p pair) String() string { return string(p.in) + "->" + string(p.out) }

var pairs = []pair{{mqttEnd, amqpEnd}, {amqpEnd, mqttEnd}, {amqpEnd, amqpEnd}, {mqttEnd, mqttEnd}}

const (
	atLeastOnce = "at-least-once"
	bestEffort  = "best-effort"
)

// scenario is one row of the matrix for every pair.
type scenario struct {
	name string
	mode string
	run  func(s *setup, pl plan) row
}

var scenarios = []scenario{
	{"kill", atLeastOnce, killScenario},
	{"refuse", atLeastOnce, refuseScenario},
	{"broker-restart", atLeastOnce, restartScenario},
	{"kill-best-effort", bestEffort, killScenario},
}

// row is one line of the table a run prints.
type row struct {
	pair, scenario, mode string
	rep                  Report // with turnout's peak RSS
}

// TestReliability runs every scenario for every pair through the turnout binary, prints the
// table, and fails on any lost event in at-least-once mode.
func TestReliability(t *testing.T) {
	pl := shortPlan
	if v := os.Getenv("RELIABILITY"); v == "full" {
		pl = fullPlan
	} else if v != "" && v != "short" {
		t.Fatalf("RELIABILITY=%q: want short or full", v)
	}
	m := &matrix{cache: t.TempDir()}
	// The private RabbitMQ nodes belong to this test, not to a pair's: started once (a few
	// seconds each), shared through unique queue names. The AMQP input's node is never
	// restarted; the output's restarts in scenario 3.
	for _, p := range pairs {
		if p.in == amqpEnd || p.out == amqpEnd {
			m.amqpIn, m.amqpOut = amqptest.Start(t), amqptest.Start(t)
			break
		}
	}
	for _, p := range pairs {
		t.Run(strings.ReplaceAll(p.String(), "->", "-"), func(t *testing.T) {
			for _, sc := range scenarios {
				t.Run(sc.name, func(t *testing.T) {
					s := m.setup(t, p, sc.mode)
					r := sc.run(s, pl)
					r.pair, r.mode = p.String(), sc.mode
					if r.rep.PeakRSS == 0 {
						r.rep.PeakRSS = s.turnout.PeakRSS()
					}
					m.add(r)
					t.Logf("%s %s %s: %s", r.pair, r.scenario, r.mode, r.rep)
					s.check(r, pl)
				})
			}
		})
	}
	t.Logf("reliability suite, %s plan:\n%s", pl.name, m.table())
}

// matrix holds what the scenarios of one run share: the private AMQP nodes, the rule's
// compilation cache and the rows.
type matrix struct {
	cache           string
	amqpIn, amqpOut *amqptest.Node

	mu   sync.Mutex
	rows []row
}

func (m *matrix) add(r row) {
	m.mu.Lock()
	m.rows = append(m.rows, r)
	m.mu.Unlock()
}

func (m *matrix) table() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "%-11s %-28s %-14s %7s %9s %8s %6s %9s %9s\n",
		"pair", "scenario", "mode", "sent", "received", "missing", "dups", "time", "peak RSS")
	for _, r := range m.rows {
		fmt.Fprintf(&b, "%-11s %-28s %-14s %7d %9d %8d %6d %9s %9s\n", r.pair, r.scenario, r.mode,
			r.rep.Sent, r.rep.Received, r.rep.Missing, r.rep.Duplicates,
			r.rep.Elapsed.Round(100*time.Millisecond), mib(r.rep.PeakRSS))
	}
	return b.String()
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

// setup is one scenario's world: fresh brokers or queues on each side, a generator, a
// validator and a running turnout.
type setup struct {
	t        *testing.T
	pair     pair
	mode     string
	run      string
	dir      string
	admin    string
	dlq      string
	turnout  *Process
	producer Producer
	consumer Consumer

	mqttOut  *mqtttest.Mosquitto // output broker of an MQTT output
	amqpOut  *amqptest.Node      // output node of an AMQP output
	outQueue string              // output queue of an AMQP output
}

func (m *matrix) setup(t *testing.T, p pair, mode string) *setup {
	t.Helper()
	s := &setup{t: t, pair: p, mode: mode, dir: t.TempDir(), admin: testutil.FreeAddr(t)}
	s.run = fmt.Sprintf("%s%s%d", p.in, p.out, time.Now().UnixNano()%1e9)
	s.dlq = filepath.Join(s.dir, "dead-letter.jsonl")

	var input, output string
	switch p.in {
	case mqttEnd:
		b := startMosquitto(t, "max_inflight_messages 1000")
		input = fmt.Sprintf(`
    type: mqtt
    brokers: [%q]
    client_id: turnout-reliability-in
    topics: ["devices/#"]
    reconnect_min_backoff: 100ms
    reconnect_max_backoff: 500ms`, b.URL())
		pr, err := NewMQTTProducer(b.URL(), "generator-"+s.run, "devices/pendant")
		if err != nil {
			t.Fatal(err)
		}
		s.producer = pr
	case amqpEnd:
		q := amqptest.QueueName(t, "in")
		input = fmt.Sprintf(`
    type: amqp
    url: %q
    address: /queue/%s
    credit: 256
    reconnect_min_backoff: 100ms
    reconnect_max_backoff: 500ms`, m.amqpIn.URL(), q)
		pr, err := NewAMQPProducer(m.amqpIn.URL(), "/queue/"+q, "binary")
		if err != nil {
			t.Fatal(err)
		}
		s.producer = pr
	}
	t.Cleanup(s.producer.Close)

	switch p.out {
	case mqttEnd:
		s.mqttOut = startMosquitto(t)
		output = fmt.Sprintf(`
    type: mqtt
    brokers: [%q]
    client_id: turnout-reliability-out
    topic_template: "alarms/{type}"
    reconnect_min_backoff: 100ms
    reconnect_max_backoff: 500ms`, s.mqttOut.URL())
		c, err := NewMQTTConsumer(s.mqttOut.URL(), "validator-"+s.run, "alarms/#")
		if err != nil {
			t.Fatal(err)
		}
		s.consumer = c
	case amqpEnd:
		s.amqpOut, s.outQueue = m.amqpOut, amqptest.QueueName(t, "out")
		output = fmt.Sprintf(`
    type: amqp
    url: %q
    address: /queue/%s
    mode: binary
    reconnect_min_backoff: 100ms
    reconnect_max_backoff: 500ms`, s.amqpOut.URL(), s.outQueue)
		c, err := NewAMQPConsumer(s.amqpOut.URL(), "/queue/"+s.outQueue, 200)
		if err != nil {
			t.Fatal(err)
		}
		s.consumer = c
	}
	t.Cleanup(s.consumer.Close)

	rule := writeRule(t, s.dir, "filters/rules/attrroute")
	config := filepath.Join(s.dir, "turnout.yaml")
	// Retries outlast every outage the scenarios cause (1000 attempts, at least minutes), so
	// nothing may reach the dead-letter file.
	writeFile(t, config, fmt.Sprintf(`
data_dir: %[1]s
admin: { listen: %[2]s }
log: { level: info }
shutdown: { drain_timeout: 2s }
inputs:
  devices:%[3]s
outputs:
  alarms:%[4]s
  dlq:
    type: file
    path: %[5]s
routes:
  care:
    inputs: [devices]
    outputs: [alarms]
    dead_letter: dlq
    mode: %[6]s
    max_in_flight: 128
    retry: { max_attempts: 1000, initial_backoff: 50ms, max_backoff: 500ms, timeout: 5s }
    rule:
      file: %[7]s
      config:
        filters: [{ attribute: type, prefix: "care.alarm.", outputs: [alarms] }]
`, m.cache, s.admin, input, output, s.dlq, mode, rule))
	s.turnout = StartTurnout(t, config, s.admin)
	return s
}

// startMosquitto runs a private mosquitto (max_queued_messages 0, see mqtttest) that saves its
// state only when it stops cleanly, not after every change: the suite stops mosquitto with
// SIGTERM only (see restartScenario), and saving a growing backlog after every message made the
// broker, not turnout, the bottleneck (about 12 times slower).
func startMosquitto(t *testing.T, extra ...string) *mqtttest.Mosquitto {
	return mqtttest.StartWithConfig(t, append([]string{"autosave_on_changes false", "autosave_interval 3600"}, extra...)...)
}

// check applies the assertions every scenario shares: nothing lost in at-least-once mode,
// nothing dead-lettered, and in the full plan, that best-effort did lose something.
func (s *setup) check(r row, pl plan) {
	t := s.t
	t.Helper()
	if dl := readDeadLetters(t, s.dlq); len(dl) != 0 {
		t.Errorf("%d events dead-lettered; retries should have outlasted every outage", len(dl))
	}
	switch {
	case s.mode == atLeastOnce && r.rep.Missing != 0:
		t.Errorf("%d events lost (first missing seqs %v)", r.rep.Missing, r.rep.MissingIDs)
	case s.mode == bestEffort && pl.name == "full" && r.rep.Missing == 0:
		t.Errorf("best-effort lost nothing under %s: the scenario did not show the difference", r.scenario)
	}
}

// flow is a generator publishing in the background.
type flow struct {
	done chan struct{}
	mu   sync.Mutex
	seqs []int
	err  error
}

// startFlow publishes events first..last-1 of the setup's run through its producer (see
// pacedFlow).
func (s *setup) startFlow(first, last, size, rate int, deadline time.Time) *flow {
	return pacedFlow(s.producer, s.run, first, last, size, rate, deadline)
}

// pacedFlow publishes events first..last-1 of run through p in chunks of a tenth of rate every
// 100 ms (rate 0: as fast as the broker confirms), retrying unconfirmed ones until deadline.
func pacedFlow(p Producer, run string, first, last, size, rate int, deadline time.Time) *flow {
	f := &flow{done: make(chan struct{})}
	chunk, tick := last-first, time.Duration(0)
	if rate > 0 {
		chunk, tick = max(rate/10, 1), 100*time.Millisecond
	}
	go func() {
		defer close(f.done)
		next := time.Now()
		for lo := first; lo < last; lo += chunk {
			time.Sleep(time.Until(next))
			next = next.Add(tick)
			seqs, err := p.Publish(run, lo, min(lo+chunk, last), size, 20, deadline)
			f.mu.Lock()
			f.seqs = append(f.seqs, seqs...)
			f.err = err
			f.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return f
}

// wait waits for the generator and fails the test if it could not publish everything.
func (f *flow) wait(t *testing.T, want int) []int {
	t.Helper()
	<-f.done
	if f.err != nil {
		t.Fatalf("generator: %v", f.err)
	}
	if len(f.seqs) != want {
		t.Fatalf("generator: broker confirmed %d of %d events", len(f.seqs), want)
	}
	return f.seqs
}

func (f *flow) finished() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// settle waits for the validator: for every event in at-least-once mode, and in best-effort
// mode until nothing new has arrived for a few seconds. The report's Elapsed runs from start to
// the last event seen.
func (s *setup) settle(start time.Time, seqs []int, pl plan) Report {
	if s.mode == atLeastOnce {
		rep := s.consumer.WaitFor(s.run, seqs, pl.settle)
		rep.Elapsed = time.Since(start)
		return rep
	}
	last, since := -1, time.Now()
	for end := time.Now().Add(pl.settle); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		distinct, _ := s.consumer.Count()
		if distinct != last {
			last, since = distinct, time.Now()
		}
		if distinct >= len(seqs) || time.Since(since) > 5*time.Second {
			break
		}
	}
	rep := s.consumer.Report(s.run, seqs)
	rep.Elapsed = since.Sub(start)
	return rep
}

// killScenario (1 and 4): a paced flow while turnout is killed with SIGKILL and restarted, the
// pauses in between taken from the plan in turn, for as long as events are on their way.
// Each kill waits for a moment when turnout holds events in flight, and every third kill (the
// second, fifth, ...) lands while the output refuses, when turnout holds a full in-flight window
// of events it is retrying: redelivered in at-least-once mode, lost in best-effort mode, which
// acknowledged them on receipt.
func killScenario(s *setup, pl plan) row {
	s.limit(pl)
	start := time.Now()
	f := s.startFlow(0, pl.killEvents, 300, pl.rate, time.Now().Add(pl.settle))
	kills, outages, seen := 0, 0, -1
	for kills < pl.maxKills {
		time.Sleep(pl.killEvery[kills%len(pl.killEvery)])
		// Kill while the generator publishes, then while events still arrive: all of them in
		// at-least-once mode, until arrivals stop in best-effort mode.
		distinct, _ := s.consumer.Count()
		if f.finished() && (distinct >= pl.killEvents || distinct == seen) {
			break
		}
		seen = distinct
		var restore func()
		if kills%3 == 1 {
			restore = s.refuse()
			if s.waitRefused(15 * time.Second) {
				outages++
			}
			time.Sleep(pl.killOutage)
		}
		s.waitBusy(time.Second)
		s.turnout.Kill()
		s.turnout.Start("/healthz")
		if restore != nil {
			restore()
		}
		kills++
	}
	seqs := f.wait(s.t, pl.killEvents)
	rep := s.settle(start, seqs, pl)
	return row{scenario: fmt.Sprintf("kill -9 x%d (%d in outage)", kills, outages), rep: rep}
}

// limit gives an AMQP output's queue a max-length with reject-publish (policy), so that it
// refuses once its consumer pauses (refuse). It does nothing for an MQTT output.
func (s *setup) limit(pl plan) {
	if s.pair.out == amqpEnd {
		s.amqpOut.SetPolicy("limit-"+s.outQueue, "^"+s.outQueue+"$",
			fmt.Sprintf(`{"max-length":%d,"overflow":"reject-publish"}`, pl.queueMax))
	}
}

// refuse makes the output refuse until the returned function is called: an MQTT output's
// broker stops (SIGTERM, see restartScenario); an AMQP output's consumer pauses, so that its
// queue fills up to the max-length limit set and RabbitMQ refuses more.
func (s *setup) refuse() (restore func()) {
	if s.pair.out == mqttEnd {
		s.mqttOut.Stop()
		return s.mqttOut.Restart
	}
	c := s.consumer.(*AMQPConsumer)
	c.Pause()
	return c.Resume
}

// waitRefused waits, up to limit, until turnout counts a failed delivery, and reports whether
// it did: the output refuses, and turnout holds the events it retries.
func (s *setup) waitRefused(limit time.Duration) bool {
	base := scrape(s.t, s.admin, "turnout_delivery_failures_total")
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if scrape(s.t, s.admin, "turnout_delivery_failures_total") > base {
			return true
		}
	}
	return false
}

// refuseScenario (2): a first part of the events goes through, then the output refuses while
// the generator publishes the rest as fast as it can; the output recovers once it has refused
// for the plan's outage and the generator is done. turnout must hold no more than its in-flight
// bound: the backlog waits in the input broker, and turnout's peak RSS stays below the plan's
// bound.
func refuseScenario(s *setup, pl plan) row {
	t := s.t
	s.limit(pl)
	start := time.Now()
	warm := pl.refuseEvents / 10
	first := s.startFlow(0, warm, pl.refuseSize, 0, time.Now().Add(pl.settle)).wait(t, warm)
	if rep := s.consumer.WaitFor(s.run, first, pl.settle); rep.Missing != 0 {
		t.Fatalf("before the outage: %s", rep)
	}
	restore := s.refuse()
	f := s.startFlow(warm, pl.refuseEvents, pl.refuseSize, 0, time.Now().Add(pl.settle))
	if !s.waitRefused(30 * time.Second) {
		t.Errorf("the output did not refuse within 30s: turnout counted no failed delivery")
	}
	refused := time.Now()
	rest := f.wait(t, pl.refuseEvents-warm)
	time.Sleep(time.Until(refused.Add(pl.outage)))
	outage := time.Since(refused)
	restore()
	rep := s.settle(start, append(first, rest...), pl)
	rep.PeakRSS = s.turnout.PeakRSS()
	if rep.PeakRSS > pl.rssBound {
		t.Errorf("turnout's peak RSS %s above %s while %d events of %d bytes waited",
			mib(rep.PeakRSS), mib(pl.rssBound), pl.refuseEvents-warm, pl.refuseSize)
	}
	label := "output down"
	if s.pair.out == amqpEnd {
		label = "queue full"
	}
	return row{scenario: fmt.Sprintf("%s %s", label, outage.Round(time.Second)), rep: rep}
}

// waitBusy waits, up to limit, until turnout has events in flight, so that a kill catches
// events it took from the input and has not yet delivered: the case at-least-once exists for,
// and the one where best-effort loses.
func (s *setup) waitBusy(limit time.Duration) {
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		if scrape(s.t, s.admin, "turnout_events_in_flight") > 0 {
			return
		}
	}
}

// restartScenario (3): a paced flow while the output's broker restarts: RabbitMQ stop_app and
// start_app; mosquitto stopped cleanly (SIGTERM) and started again. Not SIGKILL: a mosquitto
// killed loses the QoS 1 messages it had sent to a subscriber but not yet seen acknowledged
// (docs/RATIONALE.md), a loss no router can repair. While the broker is down, turnout is also
// killed and restarted: it must come back with its output unreachable and lose nothing.
func restartScenario(s *setup, pl plan) row {
	start := time.Now()
	f := s.startFlow(0, pl.restartEvents, 300, pl.rate, time.Now().Add(pl.settle))
	flowTime := time.Duration(pl.restartEvents/pl.rate) * time.Second
	gap := flowTime / time.Duration(pl.restarts+1)
	for range pl.restarts {
		time.Sleep(gap)
		stop, start := s.mqttOut.Stop, s.mqttOut.Restart
		if s.pair.out == amqpEnd {
			stop, start = s.amqpOut.StopApp, s.amqpOut.StartApp
		}
		stop()
		time.Sleep(pl.down / 2)
		s.turnout.Kill()
		s.turnout.Start("/healthz")
		time.Sleep(pl.down / 2)
		start()
	}
	seqs := f.wait(s.t, pl.restartEvents)
	rep := s.settle(start, seqs, pl)
	return row{scenario: fmt.Sprintf("output broker restart x%d", pl.restarts), rep: rep}
}

// scrape returns the sum of every series of the metric name on turnout's admin endpoint.
func scrape(t *testing.T, admin, name string) float64 {
	t.Helper()
	r, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	defer r.Body.Close()
	var sum float64
	sc := bufio.NewScanner(r.Body)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, name+" ") && !strings.HasPrefix(l, name+"{") {
			continue
		}
		if v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64); err == nil {
			sum += v
		}
	}
	return sum
}

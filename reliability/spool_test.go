package reliability

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/amqp/amqptest"
)

// spoolPlan sizes one run of TestSpoolOutage.
type spoolPlan struct {
	name     string
	rate     int           // events per second the pendants publish, throughout
	outage   time.Duration // how long the uplink's broker is down
	kills    int           // SIGKILLs of turnout during the outage
	rssBound int64
	settle   time.Duration
}

var (
	spoolShort = spoolPlan{name: "short", rate: 1000, outage: 15 * time.Second, kills: 2, rssBound: 128 << 20, settle: 90 * time.Second}
	spoolFull  = spoolPlan{name: "full", rate: 2000, outage: 60 * time.Second, kills: 2, rssBound: 128 << 20, settle: 5 * time.Minute}
)

// TestSpoolOutage is the gateway's uplink outage (docs/reliability.md): pendants publish over
// MQTT at a steady rate, turnout's attrroute rule sends every alarm to the uplink, an AMQP 1.0
// output with a spool. The uplink's broker (a private RabbitMQ node) is stopped for the plan's
// outage, and turnout is killed with SIGKILL twice while it is down. The input must go on being
// acknowledged throughout (the events wait in the spool, not in the pendants' broker), turnout
// must restart ready, its memory must stay bounded, and once the broker is back every event must
// arrive.
func TestSpoolOutage(t *testing.T) {
	pl := spoolShort
	if os.Getenv("RELIABILITY") == "full" {
		pl = spoolFull
	}
	node := amqptest.Start(t)
	in := startMosquitto(t, "max_inflight_messages 1000")
	dir := t.TempDir()
	s := &setup{t: t, dir: dir, admin: testutil.FreeAddr(t), mode: atLeastOnce,
		run: fmt.Sprintf("spool%d", time.Now().UnixNano()%1e9), dlq: filepath.Join(dir, "dead-letter.jsonl")}
	queue := amqptest.QueueName(t, "uplink")
	pr, err := NewMQTTProducer(in.URL(), "pendants-"+s.run, "devices/pendant")
	if err != nil {
		t.Fatal(err)
	}
	s.producer = pr
	t.Cleanup(pr.Close)
	c, err := NewAMQPConsumer(node.URL(), "/queue/"+queue, 200)
	if err != nil {
		t.Fatal(err)
	}
	s.consumer = c
	t.Cleanup(c.Close)

	config := filepath.Join(dir, "turnout.yaml")
	writeFile(t, config, fmt.Sprintf(`
data_dir: %[1]s/data
admin: { listen: %[2]s }
shutdown: { drain_timeout: 2s }
inputs:
  pendants:
    type: mqtt
    brokers: [%[3]q]
    client_id: turnout-gateway-in
    topics: ["devices/#"]
outputs:
  uplink:
    type: amqp
    url: %[4]q
    address: /queue/%[5]s
    reconnect_min_backoff: 100ms
    reconnect_max_backoff: 1s
    spool:
      dir: spool/uplink
      max_bytes: 512MiB
  dlq:
    type: file
    path: %[6]s
routes:
  care:
    inputs: [pendants]
    outputs: [uplink]
    dead_letter: dlq
    max_in_flight: 128
    rule:
      file: %[7]s
      config:
        filters: [{ attribute: type, prefix: "care.alarm.", outputs: [uplink] }]
`, dir, s.admin, in.URL(), node.URL(), queue, s.dlq, writeRule(t, dir, "filters/rules/attrroute")))
	s.turnout = StartTurnout(t, config, s.admin)
	start := time.Now()

	// A first stretch with the uplink up.
	warm := pl.rate * 2
	first := s.startFlow(0, warm, 300, pl.rate, time.Now().Add(pl.settle)).wait(t, warm)
	if rep := s.consumer.WaitFor(s.run, first, pl.settle); rep.Missing != 0 {
		t.Fatalf("before the outage: %s", rep)
	}

	// The outage: the broker goes, the pendants go on, turnout is killed twice.
	baseline := scrape(t, s.admin, "turnout_events_acked_total")
	node.StopApp()
	down := time.Now()
	total := warm + pl.rate*int(pl.outage/time.Second)
	f := s.startFlow(warm, total, 300, pl.rate, time.Now().Add(pl.outage+pl.settle))
	acked := -baseline // acknowledgements to the input during the outage, summed over the runs
	for k := 1; k <= pl.kills; k++ {
		time.Sleep(time.Until(down.Add(pl.outage * time.Duration(k) / time.Duration(pl.kills+1))))
		acked += scrape(t, s.admin, "turnout_events_acked_total")
		s.turnout.Kill()
		// Ready although the uplink is down: the spool takes the events.
		s.turnout.Start("/readyz")
	}
	rest := f.wait(t, total-warm)
	time.Sleep(time.Until(down.Add(pl.outage)))
	acked += scrape(t, s.admin, "turnout_events_acked_total")
	waiting := scrape(t, s.admin, "turnout_spool_events")
	spoolBytes := scrape(t, s.admin, "turnout_spool_bytes")
	outage := time.Since(down)
	if received, _ := s.consumer.Count(); received > warm {
		t.Fatalf("%d events arrived while the uplink's broker was down", received-warm)
	}
	// Every event published during the outage was acknowledged to the input, but for the
	// route's in-flight window (128) at each kill and at the end.
	if slack := float64(128 * (pl.kills + 1)); acked < float64(len(rest))-slack {
		t.Errorf("the input acknowledged %.0f events during the outage, for %d published: it stopped acknowledging", acked, len(rest))
	}
	if waiting < float64(len(rest))-128 {
		t.Errorf("the spool holds %.0f events after the outage, for %d published during it", waiting, len(rest))
	}

	// A SIGKILL leaves the log whole: nothing may have been cut off at the restarts.
	if v := scrape(t, s.admin, "turnout_spool_discarded_bytes_total"); v != 0 {
		t.Errorf("the spool discarded %v bytes as damaged after a SIGKILL", v)
	}
	node.StartApp()
	back := time.Now()
	rep := s.consumer.WaitFor(s.run, append(first, rest...), pl.settle)
	rep.Elapsed = time.Since(start)
	drain := time.Since(back)
	rep.PeakRSS = s.turnout.PeakRSS()
	t.Logf("spool outage, %s plan: uplink down %v at %d events/s, turnout killed %d times during it; "+
		"%.0f events acknowledged to the input and %.0f waiting in the spool (%.1f MiB) when the uplink came back; "+
		"all delivered %v later; %s",
		pl.name, outage.Round(time.Second), pl.rate, pl.kills, acked, waiting, spoolBytes/(1<<20), drain.Round(100*time.Millisecond), rep)
	s.check(row{scenario: "spool outage", rep: rep}, plan{name: pl.name})
	if rep.PeakRSS > pl.rssBound {
		t.Errorf("turnout's peak RSS %s above %s while %d events waited in its spool", mib(rep.PeakRSS), mib(pl.rssBound), len(rest))
	}
	for end := time.Now().Add(30 * time.Second); scrape(t, s.admin, "turnout_spool_events") != 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("every event arrived, but the spool still counts %.0f waiting", scrape(t, s.admin, "turnout_spool_events"))
		}
	}
}

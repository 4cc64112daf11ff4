package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/turnout-router/turnout/cmd/turnout/internal/config"
	"github.com/turnout-router/turnout/internal/rulebuild"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/reliability"
	"github.com/turnout-router/turnout/transports/amqp/amqptest"
)

// exampleEnv returns the variables of examples/NAME/turnout.env (NAME=value lines; # comments),
// or nil when the example has none.
func exampleEnv(t *testing.T, name string) map[string]string {
	t.Helper()
	root, err := rulebuild.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(root, "examples", name, "turnout.env"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("examples/%s/turnout.env: %q is not NAME=value", name, line)
		}
		env[k] = v
	}
	return env
}

// TestGateway runs examples/gateway as docs/device.md installs it, with its turnout.env, and goes
// through an uplink outage: a pendant's alarms reach the alarm centre's queue; while the alarm
// centre's broker (a private RabbitMQ node) is down, the pendant's alarms are still acknowledged
// and wait in the spool, through a restart of turnout; once the broker is back every alarm
// arrives. A client without the pendants' credentials is refused.
func TestGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the stock Wasm rules with the Go toolchain; run without -short")
	}
	node := amqptest.Start(t)
	queue := amqptest.QueueName(t, "care-alarms")
	pendants, adminAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	env := exampleEnv(t, "gateway")
	env["PENDANT_LISTEN"] = pendants
	env["UPLINK_URL"] = node.URL()
	env["UPLINK_ADDRESS"] = "/queue/" + queue
	env["TURNOUT_DATA_DIR"] = t.TempDir()
	env["TURNOUT_ADMIN"] = adminAddr
	for k, v := range env {
		t.Setenv(k, v)
	}
	path := exampleTree(t, "gateway")
	r := startRun(t, path, adminAddr)

	centre, err := reliability.NewAMQPConsumer(node.URL(), "/queue/"+queue, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer centre.Close()
	run := fmt.Sprintf("gw%d", time.Now().UnixNano()%1e9)
	pendant := func() paho.Client {
		o := paho.NewClientOptions().AddBroker("tcp://" + pendants).SetClientID("pendant-17-" + run).
			SetUsername("pendant").SetPassword(env["PENDANT_PASSWORD"]).SetCleanSession(true).
			SetProtocolVersion(4).SetConnectTimeout(5 * time.Second)
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("pendant connect: %v", tok.Error())
		}
		return c
	}
	publish := func(c paho.Client, from, to int) []int {
		t.Helper()
		var seqs []int
		for i := from; i < to; i++ {
			tok := c.Publish("pendants/p17/events", 1, false, reliability.EventJSON(run, i, 300))
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publish alarm %d: not acknowledged (%v)", i, tok.Error())
			}
			seqs = append(seqs, i)
		}
		return seqs
	}
	spooled := func() float64 {
		_, body, _ := httpGet("http://" + adminAddr + "/metrics")
		for _, l := range strings.Split(body, "\n") {
			if strings.HasPrefix(l, "turnout_spool_events{") {
				v, _ := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
				return v
			}
		}
		return -1
	}

	p := pendant()
	seqs := publish(p, 0, 10)
	if rep := centre.WaitFor(run, seqs, 60*time.Second); rep.Missing != 0 {
		t.Fatalf("with the uplink up: %s; stderr:\n%s", rep, r.stderr.String())
	}

	node.StopApp()
	seqs = append(seqs, publish(p, 10, 60)...)
	for end := time.Now().Add(15 * time.Second); spooled() != 50; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("turnout_spool_events = %v with 50 alarms acknowledged during the outage, want 50", spooled())
		}
	}
	p.Disconnect(100)
	if code := r.stop(t); code != 0 {
		t.Fatalf("turnout stopped during the outage with exit code %d; stderr:\n%s", code, r.stderr.String())
	}
	r = startRun(t, path, adminAddr) // ready: the spool takes events while the uplink is down
	defer func() {
		if code := r.stop(t); code != 0 {
			t.Errorf("exit code %d, want 0; stderr:\n%s", code, r.stderr.String())
		}
	}()
	if n := spooled(); n != 50 {
		t.Errorf("after the restart the spool holds %v alarms, want the 50 of the outage", n)
	}
	p = pendant()
	defer p.Disconnect(100)
	seqs = append(seqs, publish(p, 60, 70)...)
	if received, _ := centre.Count(); received != 10 {
		t.Errorf("%d alarms reached the alarm centre while its broker was down", received-10)
	}
	node.StartApp()
	if rep := centre.WaitFor(run, seqs, 60*time.Second); rep.Missing != 0 {
		t.Fatalf("after the outage: %s (missing %v); stderr:\n%s", rep, rep.MissingIDs, r.stderr.String())
	}

	anon := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + pendants).SetClientID("intruder-" + run).
		SetProtocolVersion(4).SetConnectTimeout(5 * time.Second))
	if tok := anon.Connect(); tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
		anon.Disconnect(100)
		t.Error("a client without credentials connected to the pendants' broker")
	}
}

// TestGatewayUnit checks examples/gateway/turnout.service with systemd's own verifier and
// against the example's configuration: an unprivileged user, restarted whatever way turnout
// ends, and a stop timeout longer than turnout's drain, so that systemd never kills a drain.
func TestGatewayUnit(t *testing.T) {
	verify, err := exec.LookPath("systemd-analyze")
	if err != nil {
		testutil.Unavailable(t, "apt-get install systemd", "systemd-analyze not found")
	}
	root, err := rulebuild.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile(filepath.Join(root, "examples", "gateway", "turnout.service"))
	if err != nil {
		t.Fatal(err)
	}
	// systemd-analyze checks that the programs exist: point them at a turnout that does.
	bin, err := rulebuild.Command("cmd/turnout")
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "turnout.service")
	if err := os.WriteFile(copyPath, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/turnout", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(verify, "verify", copyPath).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	keys := map[string][]string{}
	for _, line := range strings.Split(string(unit), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(line, "#") {
			keys[k] = append(keys[k], v)
		}
	}
	one := func(k string) string {
		if len(keys[k]) != 1 {
			t.Fatalf("turnout.service sets %s %d times, want once", k, len(keys[k]))
		}
		return keys[k][0]
	}
	if u := one("User"); u == "" || u == "root" {
		t.Errorf("User=%s: turnout must run unprivileged", u)
	}
	if r := one("Restart"); r != "always" {
		t.Errorf("Restart=%s, want always", r)
	}
	if !strings.HasSuffix(one("ExecStart"), "run -c /etc/turnout/turnout.yaml") {
		t.Errorf("ExecStart=%s does not run /etc/turnout/turnout.yaml", one("ExecStart"))
	}
	stop, err := time.ParseDuration(one("TimeoutStopSec"))
	if err != nil {
		t.Fatalf("TimeoutStopSec: %v", err)
	}
	for k, v := range exampleEnv(t, "gateway") {
		t.Setenv(k, v)
	}
	cfg, err := config.Load(exampleTree(t, "gateway"), config.Options{}) // with the rule it names built
	if err != nil {
		t.Fatal(err)
	}
	if stop <= cfg.DrainTimeout+5*time.Second {
		t.Errorf("TimeoutStopSec=%v leaves too little above the drain_timeout of %v (turnout closes its parts after the drain)", stop, cfg.DrainTimeout)
	}
}

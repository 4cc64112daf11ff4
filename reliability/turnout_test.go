package reliability

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/turnout-router/turnout/internal/rulebuild"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/mqtt/mqtttest"
)

// turnoutBinary builds cmd/turnout from the checkout (cached while its sources stay the same).
func turnoutBinary(t *testing.T) string {
	t.Helper()
	bin, err := rulebuild.Command("cmd/turnout")
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// writeRule builds the rule package pkgDir and writes its module into dir.
func writeRule(t *testing.T, dir, pkgDir string) string {
	t.Helper()
	wasm, err := rulebuild.Build(pkgDir)
	if err != nil {
		t.Fatalf("build rule %s: %v", pkgDir, err)
	}
	path := filepath.Join(dir, filepath.Base(pkgDir)+".wasm")
	if err := os.WriteFile(path, wasm, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// process is one turnout process under test, restartable with the same configuration.
type process struct {
	t      *testing.T
	bin    string
	config string
	admin  string
	env    []string // added to turnout's environment, NAME=value
	log    *os.File
	cmd    *exec.Cmd
	exited chan struct{}
	peak   int64 // highest peak RSS (bytes) of the runs killed so far
}

// startTurnout runs turnout with config, whose admin endpoint listens on admin, with env
// (NAME=value) added to the test's environment, and waits until it is ready.
func startTurnout(t *testing.T, config, admin string, env ...string) *process {
	t.Helper()
	return startTurnoutBinary(t, turnoutBinary(t), config, admin, env...)
}

// startTurnoutBinary is startTurnout with the turnout executable bin.
func startTurnoutBinary(t *testing.T, bin, config, admin string, env ...string) *process {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), "turnout.log"))
	if err != nil {
		t.Fatal(err)
	}
	p := &process{t: t, bin: bin, config: config, admin: admin, env: env, log: logf}
	t.Cleanup(func() {
		if t.Failed() && p.alive() {
			t.Logf("turnout metrics:\n%s", metricsDump(p.admin))
		}
		p.kill()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("turnout log (tail):\n%s", b)
		}
	})
	p.start("/readyz")
	return p
}

// metricsDump returns turnout's non-zero metrics from its admin endpoint, histogram buckets
// left out, one per line ("" if the endpoint does not answer).
func metricsDump(admin string) string {
	r, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		return ""
	}
	defer r.Body.Close()
	var lines []string
	sc := bufio.NewScanner(r.Body)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "turnout_") && !strings.HasSuffix(l, " 0") && !strings.Contains(l, "_bucket") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// start runs turnout and waits until the admin endpoint answers 200: /readyz on a first start
// (the input's session must exist before anything is published), /healthz on a restart, which
// may rightly be unready while an output is down.
func (p *process) start(endpoint string) {
	p.t.Helper()
	p.cmd = exec.Command(p.bin, "run", "-c", p.config)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if len(p.env) > 0 {
		p.cmd.Env = append(os.Environ(), p.env...)
	}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start turnout: %v", err)
	}
	p.exited = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(p.cmd, p.exited)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			p.t.Fatalf("turnout exited during start: %v", p.cmd.ProcessState)
		default:
		}
		if r, err := http.Get("http://" + p.admin + endpoint); err == nil {
			r.Body.Close()
			if r.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(10 * time.Millisecond) // fine enough for the footprint benchmark's start-up times
	}
	p.t.Fatalf("turnout: %s not 200 after 30s", endpoint)
}

// kill ends the process with SIGKILL, as a crash or an out-of-memory killer would.
func (p *process) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	p.peakRSS()
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	p.cmd = nil
}

// peakRSS returns the highest resident set size, in bytes, that any run of this process reached
// (the kernel's high-water mark of the current run, read while it is alive, and of each run
// before it was killed).
func (p *process) peakRSS() int64 {
	if p.alive() {
		if st, err := ReadProcStat(p.cmd.Process.Pid); err == nil && st.PeakRSS > p.peak {
			p.peak = st.PeakRSS
		}
	}
	return p.peak
}

func (p *process) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return p.cmd != nil
	}
}

// TestFaultyRule sends events that make the rule trap, loop forever and exhaust its memory,
// between ordinary ones: turnout keeps serving, the ordinary events arrive, and each faulty
// one is dead-lettered with the reason.
func TestFaultyRule(t *testing.T) {
	broker := mqtttest.Start(t)
	dir := t.TempDir()
	rule := writeRule(t, dir, "hostabi/testdata/misbehave")
	admin := testutil.FreeAddr(t)
	config := filepath.Join(dir, "turnout.yaml")
	dlq := filepath.Join(dir, "dead-letter.jsonl")
	writeFile(t, config, fmt.Sprintf(`
data_dir: %[1]s/data
admin: { listen: %[2]s }
inputs:
  devices:
    type: mqtt
    brokers: [%[3]q]
    client_id: turnout-faulty-in
    topics: ["devices/#"]
outputs:
  ok:
    type: mqtt
    brokers: [%[3]q]
    client_id: turnout-faulty-out
    topic: delivered
  dlq:
    type: file
    path: %[4]s
routes:
  care:
    inputs: [devices]
    outputs: [ok]
    dead_letter: dlq
    rule:
      file: %[5]s
      timeout: 300ms
      memory_limit_pages: 1024
      config: { outputs: [ok] }
`, dir, admin, broker.URL(), dlq, rule))

	run := fmt.Sprintf("faulty%d", time.Now().UnixNano())
	v, err := NewMQTTConsumer(broker.URL(), "validator-"+run, "delivered")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	tr := startTurnout(t, config, admin)

	pub, err := NewMQTTProducer(broker.URL(), "generator-"+run, "devices/x")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	faults := []string{"trap", "loop", "grow"}
	var good []int
	faulty := map[string]string{} // id -> fault
	for i := range 30 {
		typ := "care.alarm.raised"
		if i%5 == 2 {
			typ = faults[(i/5)%len(faults)]
		}
		id := fmt.Sprintf("%s-%d", run, i)
		ev := fmt.Sprintf(`{"specversion":"1.0","id":%q,"source":"/test","type":%q,"data":{"i":%d}}`, id, typ, i)
		if tok := pub.Client().Publish("devices/x", 1, false, ev); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
		if typ == "care.alarm.raised" {
			good = append(good, i)
		} else {
			faulty[id] = typ
		}
	}
	rep := v.WaitFor(run, good, 60*time.Second)
	if rep.Missing != 0 {
		t.Fatalf("ordinary events lost behind faulty ones: %s (missing %v)", rep, rep.MissingIDs)
	}
	// Every faulty event is dead-lettered, with the reason.
	deadline := time.Now().Add(30 * time.Second)
	var got map[string]map[string]any
	for {
		got = readDeadLetters(t, dlq)
		if len(got) >= len(faulty) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for id, fault := range faulty {
		ev, ok := got[id]
		if !ok {
			t.Errorf("%s event %s not dead-lettered", fault, id)
			continue
		}
		if s, _ := ev["turnouterror"].(string); s == "" {
			t.Errorf("%s event %s dead-lettered without turnouterror: %v", fault, id, ev)
		}
		if r, _ := ev["turnouterrorroute"].(string); r != "care" {
			t.Errorf("%s event %s: turnouterrorroute = %q, want care", fault, id, r)
		}
	}
	if !tr.alive() {
		t.Fatal("turnout exited")
	}
	t.Logf("faulty rule: %d ordinary delivered, %d faulty dead-lettered", rep.Received, len(got))
}

func readDeadLetters(t *testing.T, path string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	f, err := os.Open(path)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("dead-letter file has a line that is not JSON: %q", sc.Text())
		}
		id, _ := ev["id"].(string)
		out[id] = ev
	}
	return out
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.TrimLeft(content, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
}

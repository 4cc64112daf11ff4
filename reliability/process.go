package reliability

import (
	"bufio"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/turnout-router/turnout/internal/rulebuild"
)

// The turnout binary as the suites run it: a process of its own, killed with SIGKILL and
// started again on the same configuration and data directory. Tests of other packages (the
// embedded broker's crash test in cmd/turnout) use it too.

// TurnoutBinary builds cmd/turnout from the checkout (cached while its sources stay the same).
func TurnoutBinary(t *testing.T) string {
	t.Helper()
	bin, err := rulebuild.Command("cmd/turnout")
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// Process is one turnout process under test, restartable with the same configuration.
type Process struct {
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

// StartTurnout runs turnout with config, whose admin endpoint listens on admin, with env
// (NAME=value) added to the test's environment, and waits until it is ready.
func StartTurnout(t *testing.T, config, admin string, env ...string) *Process {
	t.Helper()
	return StartTurnoutBinary(t, TurnoutBinary(t), config, admin, env...)
}

// StartTurnoutBinary is StartTurnout with the turnout executable bin.
func StartTurnoutBinary(t *testing.T, bin, config, admin string, env ...string) *Process {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), "turnout.log"))
	if err != nil {
		t.Fatal(err)
	}
	p := &Process{t: t, bin: bin, config: config, admin: admin, env: env, log: logf}
	t.Cleanup(func() {
		if t.Failed() && p.Alive() {
			t.Logf("turnout metrics:\n%s", MetricsDump(p.admin))
		}
		p.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("turnout log (tail):\n%s", b)
		}
	})
	p.Start("/readyz")
	return p
}

// MetricsDump returns turnout's non-zero metrics from its admin endpoint, histogram buckets
// left out, one per line ("" if the endpoint does not answer).
func MetricsDump(admin string) string {
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

// Start runs turnout and waits until the admin endpoint answers 200: /readyz on a first start
// (the input's session must exist before anything is published), /healthz on a restart, which
// may rightly be unready while an output is down.
func (p *Process) Start(endpoint string) {
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

// Kill ends the process with SIGKILL, as a crash or an out-of-memory killer would.
func (p *Process) Kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	p.PeakRSS()
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	p.cmd = nil
}

// PeakRSS returns the highest resident set size, in bytes, that any run of this process reached
// (the kernel's high-water mark of the current run, read while it is alive, and of each run
// before it was killed).
func (p *Process) PeakRSS() int64 {
	if p.Alive() {
		if st, err := ReadProcStat(p.cmd.Process.Pid); err == nil && st.PeakRSS > p.peak {
			p.peak = st.PeakRSS
		}
	}
	return p.peak
}

// Alive reports whether the current run has not exited.
func (p *Process) Alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return p.cmd != nil
	}
}

// Package mqtttest runs MQTT brokers for tests: a private mosquitto process per test, configured
// so that it never drops a message it acknowledged (max_queued_messages 0) and persists its state
// after every change, and a check for the shared mosquitto on 127.0.0.1:1883.
//
// Invariant: every broker a test starts here is stopped by the test's cleanup, and a broker that
// cannot run makes the test skip (fail when $CI is set), with a message saying how to run it.
package mqtttest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/turnout-router/turnout/internal/testutil"
)

// MosquittoBinary is the mosquitto executable the private brokers run.
var MosquittoBinary = "/usr/sbin/mosquitto"

// SharedAddr is the shared mosquitto the integration tests use.
const SharedAddr = "127.0.0.1:1883"

// unavailable skips the test, or fails it under CI, because a broker is missing.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	testutil.Unavailable(t, "run scripts/brokers.sh, which installs and starts mosquitto, then rerun the tests", format, args...)
}

// Shared returns the URL of the shared mosquitto on 127.0.0.1:1883 after checking it answers;
// unreachable: t.Fatal under CI, t.Skip otherwise.
func Shared(t testing.TB) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", SharedAddr, 2*time.Second)
	if err != nil {
		unavailable(t, "mosquitto not reachable on %s: %v", SharedAddr, err)
	}
	_ = c.Close()
	return "tcp://" + SharedAddr
}

// Mosquitto is a private mosquitto process on a free loopback port, with its persistence in a
// temporary directory. Its methods are safe for concurrent use.
type Mosquitto struct {
	t    testing.TB
	dir  string
	port int

	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{} // closed when cmd exited
}

// Start runs a private mosquitto and waits until it accepts connections. The test's cleanup
// stops it. Its configuration: listener on 127.0.0.1:<free port>, anonymous clients,
// max_queued_messages 0 (no limit: mosquitto otherwise drops messages it already acknowledged),
// persistence in a temporary directory saved after every change, so that a Restart after Kill
// keeps sessions and queued messages.
func Start(t testing.TB) *Mosquitto {
	t.Helper()
	return StartWithConfig(t)
}

// StartWithConfig is Start with extra mosquitto.conf lines appended to the configuration (for
// example "max_inflight_messages 100"); a later line overrides an earlier one.
func StartWithConfig(t testing.TB, extra ...string) *Mosquitto {
	t.Helper()
	if _, err := os.Stat(MosquittoBinary); err != nil {
		unavailable(t, "mosquitto binary %s: %v", MosquittoBinary, err)
	}
	m := &Mosquitto{t: t, dir: t.TempDir(), port: testutil.FreePort(t)}
	conf := fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
max_queued_messages 0
persistence true
persistence_location %s/
autosave_on_changes true
autosave_interval 1
log_dest stderr
log_type error
log_type warning
`, m.port, m.dir)
	if os.Geteuid() == 0 {
		// Started as root, mosquitto switches to the "mosquitto" user, which cannot write the
		// test's temporary directory.
		conf += "user root\n"
	}
	for _, l := range extra {
		conf += l + "\n"
	}
	if err := os.WriteFile(m.confPath(), []byte(conf), 0o600); err != nil {
		t.Fatalf("mqtttest: write config: %v", err)
	}
	t.Cleanup(m.Kill)
	m.Restart()
	return m
}

func (m *Mosquitto) confPath() string { return filepath.Join(m.dir, "mosquitto.conf") }

// Addr returns host:port of the broker.
func (m *Mosquitto) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port)) }

// URL returns the broker URL for turnout's configuration (tcp://127.0.0.1:<port>).
func (m *Mosquitto) URL() string { return "tcp://" + m.Addr() }

// Kill stops the broker with SIGKILL, as a crash would, and waits until it exited. State not yet
// saved is lost (it saves after every change). Killing a stopped broker does nothing.
func (m *Mosquitto) Kill() { m.signal(syscall.SIGKILL) }

// Stop stops the broker with SIGTERM: it saves its state and exits.
func (m *Mosquitto) Stop() { m.signal(syscall.SIGTERM) }

func (m *Mosquitto) signal(sig syscall.Signal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGCONT) // a paused broker cannot handle SIGTERM
	_ = m.cmd.Process.Signal(sig)
	select {
	case <-m.exit:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.exit
	}
	m.cmd = nil
}

// Pause freezes the broker (SIGSTOP): connections stay open but nothing is answered, as with a
// hung broker. Resume undoes it.
func (m *Mosquitto) Pause() { m.signalOnly(syscall.SIGSTOP) }

// Resume continues a paused broker (SIGCONT).
func (m *Mosquitto) Resume() { m.signalOnly(syscall.SIGCONT) }

func (m *Mosquitto) signalOnly(sig syscall.Signal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		_ = m.cmd.Process.Signal(sig)
	}
}

// Restart starts the broker again on the same port with the same persistence directory (after
// Kill or Stop; a running broker is killed first) and waits until it accepts connections.
func (m *Mosquitto) Restart() {
	m.t.Helper()
	m.Kill()
	m.mu.Lock()
	defer m.mu.Unlock()
	var out bytes.Buffer
	cmd := exec.Command(MosquittoBinary, "-c", m.confPath())
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		unavailable(m.t, "mqtttest: start mosquitto: %v", err)
	}
	exit := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exit) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", m.Addr(), 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			break
		}
		select {
		case <-exit:
			m.t.Fatalf("mqtttest: mosquitto exited at start: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exit
			m.t.Fatalf("mqtttest: mosquitto did not listen on %s: %s", m.Addr(), out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.cmd, m.exit = cmd, exit
}

// Package amqptest runs AMQP 1.0 brokers for tests: a private RabbitMQ node per test, on free
// loopback ports with the AMQP 1.0 plugin enabled, which a test may stop and start at will, and a
// check for the shared RabbitMQ on 127.0.0.1:5672.
//
// Invariant: every node a test starts here is stopped, and its directory removed, by the test's
// cleanup; a broker that cannot run makes the test skip (fail when $CI is set), with a message
// saying how to run it. Nothing here stops or reconfigures the shared node beyond the policies a
// test sets on its own queues.
package amqptest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/turnout-router/turnout/internal/testutil"
)

// SharedAddr is the shared RabbitMQ the integration tests use.
const SharedAddr = "127.0.0.1:5672"

// SharedURL is the AMQP URL of the shared RabbitMQ, with the default guest account.
const SharedURL = "amqp://guest:guest@" + SharedAddr

// RabbitBin is the directory of RabbitMQ's own scripts, which private nodes run directly (the
// wrappers in /usr/sbin switch to the rabbitmq user and its home, where a private node's Erlang
// cookie would not be).
var RabbitBin = "/usr/lib/rabbitmq/bin"

// sharedCtl is the wrapper that talks to the shared node with the node's own cookie.
const sharedCtl = "/usr/sbin/rabbitmqctl"

// unavailable skips the test, or fails it under CI, because a broker is missing.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	testutil.Unavailable(t, "run scripts/brokers.sh, which installs RabbitMQ, enables rabbitmq_amqp1_0 and starts it, then rerun the tests", format, args...)
}

// Node is a RabbitMQ node a test talks to: the shared one or a private one.
type Node struct {
	t    testing.TB
	name string // Erlang node name, e.g. rabbit@localhost
	addr string // host:port of the AMQP listener
	dir  string // private nodes: their base directory (also $HOME, for the cookie)
	ctl  string // rabbitmqctl to use
	env  []string
}

// Shared returns the shared RabbitMQ on 127.0.0.1:5672 after checking that it answers AMQP 1.0
// (the rabbitmq_amqp1_0 plugin answers the AMQP 1.0 protocol header in kind); unreachable or
// without the plugin: t.Fatal under CI, t.Skip otherwise.
func Shared(t testing.TB) *Node {
	t.Helper()
	if err := probeAMQP10(SharedAddr); err != nil {
		unavailable(t, "RabbitMQ with AMQP 1.0 not reachable on %s: %v", SharedAddr, err)
	}
	return &Node{t: t, name: "rabbit@localhost", addr: SharedAddr, ctl: sharedCtl}
}

// probeAMQP10 sends the AMQP 1.0 SASL protocol header and checks that the peer answers with an
// AMQP 1.0 header [AMQP 1.0 §5.3.1]; RabbitMQ without the plugin answers "AMQP 0 0 9 1".
func probeAMQP10(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte{'A', 'M', 'Q', 'P', 3, 1, 0, 0}); err != nil {
		return err
	}
	var hdr [8]byte
	if _, err := readFull(c, hdr[:]); err != nil {
		return fmt.Errorf("reading the protocol header: %w", err)
	}
	if !bytes.Equal(hdr[:5], []byte("AMQP\x03")) || hdr[5] != 1 {
		return fmt.Errorf("the broker answered protocol header %q, not AMQP 1.0 (is rabbitmq_amqp1_0 enabled?)", hdr[:])
	}
	return nil
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

var nodeSeq atomic.Int64

// Start runs a private RabbitMQ node with the AMQP 1.0 plugin on free loopback ports, its data
// in a temporary directory, and waits until it accepts AMQP 1.0 connections (a few seconds). The
// test's cleanup stops the node and removes its directory. guest/guest can log in from loopback.
func Start(t testing.TB) *Node {
	t.Helper()
	server := filepath.Join(RabbitBin, "rabbitmq-server")
	if _, err := os.Stat(server); err != nil {
		unavailable(t, "RabbitMQ server %s: %v", server, err)
	}
	// A short directory: Erlang limits the length of some paths below it.
	dir, err := os.MkdirTemp("", "tr-rmq-")
	if err != nil {
		t.Fatal(err)
	}
	port, dist := testutil.FreePort(t), testutil.FreePort(t)
	n := &Node{
		t:    t,
		name: fmt.Sprintf("turnout-test-%d-%d@localhost", os.Getpid(), nodeSeq.Add(1)),
		addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		dir:  dir,
		ctl:  filepath.Join(RabbitBin, "rabbitmqctl"),
	}
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("enabled_plugins", "[rabbitmq_amqp1_0].\n")
	write("rabbitmq.conf", fmt.Sprintf("listeners.tcp.local = %s\nloopback_users = none\n", n.addr))
	write("rabbitmq-env.conf", "")
	n.env = append(os.Environ(),
		"HOME="+dir, // the Erlang cookie is created and read here
		"RABBITMQ_NODENAME="+n.name,
		"RABBITMQ_NODE_PORT="+strconv.Itoa(port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(dist),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_PID_FILE="+filepath.Join(dir, "pid"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(dir, "rabbitmq"),
		"RABBITMQ_CONF_ENV_FILE="+filepath.Join(dir, "rabbitmq-env.conf"),
		"RABBITMQ_PLUGINS_EXPAND_DIR="+filepath.Join(dir, "plugins-expand"),
		"ERL_EPMD_ADDRESS=127.0.0.1",
	)
	cmd := exec.Command(server, "-detached")
	cmd.Dir, cmd.Env = dir, n.env
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		unavailable(t, "start private RabbitMQ node: %v: %s", err, out)
	}
	t.Cleanup(n.stop)
	n.awaitAMQP(60 * time.Second)
	return n
}

// stop halts a private node and removes its directory.
func (n *Node) stop() {
	if n.dir == "" {
		return
	}
	if out, err := n.Ctl("stop"); err != nil {
		n.t.Logf("stop private RabbitMQ node %s: %v: %s", n.name, err, out)
		// The pid file names the Erlang VM: make sure it does not outlive the test.
		if b, err := os.ReadFile(filepath.Join(n.dir, "pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				if p, err := os.FindProcess(pid); err == nil {
					_ = p.Kill()
				}
			}
		}
	}
	os.RemoveAll(n.dir)
}

// awaitAMQP waits until the node's application runs and its listener speaks AMQP 1.0.
func (n *Node) awaitAMQP(timeout time.Duration) {
	n.t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if _, err := n.Ctl("await_startup", "--timeout", "10"); err != nil {
			last = err
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if last = probeAMQP10(n.addr); last == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(n.dir, "log", n.name+".log"))
	if len(log) > 4000 {
		log = log[len(log)-4000:]
	}
	n.t.Fatalf("RabbitMQ node %s not serving AMQP 1.0 on %s after %s: %v\nnode log (tail):\n%s", n.name, n.addr, timeout, last, log)
}

// URL is the node's AMQP URL with the guest account.
func (n *Node) URL() string { return "amqp://guest:guest@" + n.addr }

// Addr is the node's AMQP listener, host:port.
func (n *Node) Addr() string { return n.addr }

// Ctl runs rabbitmqctl against the node and returns its combined output.
func (n *Node) Ctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, n.ctl, append([]string{"-n", n.name}, args...)...)
	if n.dir != "" {
		cmd.Dir, cmd.Env = n.dir, n.env
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("rabbitmqctl %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// StopApp stops the RabbitMQ application on a private node (the Erlang VM stays up), as a broker
// restart does: every connection is closed. The queues' durable messages survive.
func (n *Node) StopApp() {
	n.t.Helper()
	n.mustPrivate("StopApp")
	if out, err := n.Ctl("stop_app"); err != nil {
		n.t.Fatalf("%v: %s", err, out)
	}
}

// StartApp starts the application again and waits until AMQP 1.0 is served.
func (n *Node) StartApp() {
	n.t.Helper()
	n.mustPrivate("StartApp")
	if out, err := n.Ctl("start_app"); err != nil {
		n.t.Fatalf("%v: %s", err, out)
	}
	n.awaitAMQP(60 * time.Second)
}

func (n *Node) mustPrivate(op string) {
	n.t.Helper()
	if n.dir == "" {
		n.t.Fatalf("amqptest: %s on the shared node: start a private node with amqptest.Start", op)
	}
}

// SetPolicy sets a policy on the node's default virtual host that applies to queues whose name
// matches pattern, e.g. SetPolicy("full", "^q-full-", `{"max-length":10,"overflow":"reject-publish"}`).
// On the shared node the policy is removed by the test's cleanup.
func (n *Node) SetPolicy(name, pattern, definitionJSON string) {
	n.t.Helper()
	if out, err := n.Ctl("set_policy", "--apply-to", "queues", name, pattern, definitionJSON); err != nil {
		n.t.Fatalf("%v: %s", err, out)
	}
	if n.dir == "" {
		n.t.Cleanup(func() { _, _ = n.Ctl("clear_policy", name) })
	}
}

// QueueName returns a queue name unique to this test and process, starting with prefix.
func QueueName(t testing.TB, prefix string) string {
	name := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, t.Name())
	if len(name) > 60 {
		name = name[:60]
	}
	return fmt.Sprintf("%s%s-%d-%d", prefix, name, os.Getpid(), nodeSeq.Add(1))
}

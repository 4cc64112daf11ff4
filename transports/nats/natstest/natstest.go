// Package natstest runs NATS servers with JetStream for tests: a private nats-server process
// per test (file storage in a temporary directory, so a restart keeps streams, consumers and
// messages), a check for the shared server on 127.0.0.1:4222, and streams named per test.
//
// Invariant: every server a test starts here and every stream it creates is stopped or deleted
// by the test's cleanup, and a server that cannot run makes the test skip (fail when $CI is
// set), with a message saying how to run it.
package natstest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnout-router/turnout/internal/testutil"
)

// Binary is the nats-server executable the private servers run.
var Binary = "nats-server"

// SharedAddr is the shared nats-server with JetStream the integration tests use.
const SharedAddr = "127.0.0.1:4222"

func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	testutil.Unavailable(t, "run scripts/brokers.sh, which installs and starts nats-server with JetStream, then rerun the tests", format, args...)
}

// Shared returns the URL of the shared server after checking it answers; unreachable: t.Fatal
// under CI, t.Skip otherwise.
func Shared(t testing.TB) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", SharedAddr, 2*time.Second)
	if err != nil {
		unavailable(t, "nats-server not reachable on %s: %v", SharedAddr, err)
	}
	_ = c.Close()
	return "nats://" + SharedAddr
}

// Server is a private nats-server with JetStream on a free loopback port. Its methods are safe
// for concurrent use.
type Server struct {
	t    testing.TB
	dir  string
	port int

	args []string // extra nats-server arguments

	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{}
}

// Start runs a private nats-server (-js, storage in a temporary directory) and waits until it
// accepts connections; the test's cleanup stops it.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWithArgs(t)
}

// StartWithArgs is Start with extra nats-server arguments, e.g. "--auth", TOKEN or "--user",
// U, "--pass", P.
func StartWithArgs(t testing.TB, args ...string) *Server {
	t.Helper()
	if _, err := exec.LookPath(Binary); err != nil {
		unavailable(t, "nats-server binary: %v", err)
	}
	s := &Server{t: t, dir: t.TempDir(), port: testutil.FreePort(t), args: args}
	t.Cleanup(s.Kill)
	s.Restart()
	return s
}

// Addr returns host:port of the server.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL returns the server's URL (nats://127.0.0.1:<port>).
func (s *Server) URL() string { return "nats://" + s.Addr() }

// Kill stops the server with SIGKILL, as a crash would, and waits until it exited.
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

// Stop stops the server with SIGTERM and waits until it exited.
func (s *Server) Stop() { s.signal(syscall.SIGTERM) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.exit:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exit
	}
	s.cmd = nil
}

// Restart starts the server again on the same port with the same storage (a running server is
// killed first) and waits until it accepts connections.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out bytes.Buffer
	args := append([]string{"-js", "-sd", s.dir, "-p", strconv.Itoa(s.port), "-a", "127.0.0.1"}, s.args...)
	cmd := exec.Command(Binary, args...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		unavailable(s.t, "natstest: start nats-server: %v", err)
	}
	exit := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exit) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.Addr(), 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			break
		}
		select {
		case <-exit:
			s.t.Fatalf("natstest: nats-server exited at start: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exit
			s.t.Fatalf("natstest: nats-server did not listen on %s: %s", s.Addr(), out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.cmd, s.exit = cmd, exit
}

var seq atomic.Int64

// Name returns a stream or consumer name unique to this process: prefix, then a number.
func Name(prefix string) string {
	return fmt.Sprintf("%s_%d_%d", prefix, time.Now().UnixNano()%1e9, seq.Add(1))
}

// JetStream connects a JetStream client to the server at url and closes it in the test's
// cleanup; an unreachable server goes through testutil.Unavailable.
func JetStream(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		unavailable(t, "natstest: connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return js
}

// Stream creates a file-backed stream capturing subjects on the server at url and deletes it
// in the test's cleanup.
func Stream(t testing.TB, url, name string, subjects ...string) {
	t.Helper()
	js := JetStream(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: subjects, Storage: jetstream.FileStorage}); err != nil {
		t.Fatalf("natstest: create stream %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = js.DeleteStream(ctx, name)
	})
}

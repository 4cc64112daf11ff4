package kafka

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/transports/kafka/kafkatest"
)

// crashEnv names the environment of the crashing input process: seeds, topic and group.
const crashEnv = "TURNOUT_KAFKA_CRASH"

// TestCrashedInputProcess runs an input in a process of its own that settles every record but
// the fourth and is then killed with SIGKILL (no Close, no final commit, no leave): the group
// committed only up to the unsettled record, and once the dead member's session expired a new
// member reads again from that record on, duplicates of the settled ones after it included.
func TestCrashedInputProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a group session to expire")
	}
	c := kafkatest.Start(t)
	topic, group := c.Topic(t, "crash", 1), kafkatest.Name("g")
	ids := produceIDs(t, c, topic, "k", 10, oneKey)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCrashingInput$", "-test.v")
	cmd.Env = append(os.Environ(), crashEnv+"="+strings.Join([]string{strings.Join(c.Seeds(), ","), topic, group}, " "))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	seen := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if id, ok := strings.CutPrefix(sc.Text(), "dispatched "); ok {
				seen <- id
			}
		}
		close(seen)
	}()
	for range ids {
		select {
		case <-seen:
		case <-time.After(30 * time.Second):
			t.Fatal("the input process did not dispatch every record")
		}
	}
	waitCommitted(t, c, group, topic, 0, 3)
	time.Sleep(300 * time.Millisecond) // commit intervals pass; nothing may move past offset 3
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if o := committed(t, c, group, topic)[0]; o != 3 {
		t.Fatalf("after the crash the group has %d committed, want 3", o)
	}
	cfg := inputConfig(c, topic, group)
	cfg.SessionTimeout = 6 * time.Second
	_, d, _ := startInput(t, cfg)
	for _, want := range ids[3:] {
		x := d.Next(t, 60*time.Second) // after the dead member's session expired
		if id := idOf(t, x); id != want {
			t.Fatalf("after the crash the group read %s, want %s", id, want)
		}
		x.Settle(nil)
	}
	waitCommitted(t, c, group, topic, 0, 10)
}

// TestHelperCrashingInput is the input process of TestCrashedInputProcess; it runs only there.
func TestHelperCrashingInput(t *testing.T) {
	env := os.Getenv(crashEnv)
	if env == "" {
		t.Skip("runs as the input process of TestCrashedInputProcess")
	}
	var seeds, topic, group string
	if _, err := fmt.Sscan(env, &seeds, &topic, &group); err != nil {
		t.Fatal(err)
	}
	cfg := InputConfig{ConnectionConfig: ConnectionConfig{Brokers: strings.Split(seeds, ",")}, Group: group, Topics: []string{topic},
		CommitInterval: 50 * time.Millisecond, SessionTimeout: 6 * time.Second}
	in, err := newInput("crash", cfg, testDeps())
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Start(context.Background(), crashDispatcher{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Minute) // killed long before; a bound in case its parent died first
}

// crashDispatcher settles every event but k-003 and reports each on stdout.
type crashDispatcher struct{}

func (crashDispatcher) Dispatch(_ context.Context, m *engine.Message, settle engine.SettleFunc) error {
	fmt.Printf("dispatched %s\n", m.Event.ID())
	if m.Event.ID() != "k-003" {
		go settle(nil)
	}
	return nil
}

package kafkatest

import (
	"context"
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func consume(t *testing.T, c *Cluster, topic, group string, n int) []string {
	t.Helper()
	cl := c.Client(t, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got []string
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(got), n, err)
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	if err := cl.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	cl.Close()
	return got
}

func TestTopicPartitionsAndSeeds(t *testing.T) {
	c := Start(t, Brokers(2))
	seeds := c.Seeds()
	if len(seeds) != 2 || c.Addr() != seeds[0] {
		t.Fatalf("seeds %v, addr %s", seeds, c.Addr())
	}
	for _, s := range seeds {
		host, port, err := net.SplitHostPort(s)
		if p, _ := strconv.Atoi(port); err != nil || host != "127.0.0.1" || p == 0 {
			t.Fatalf("seed %q is not a loopback port", s)
		}
		conn, err := net.DialTimeout("tcp", s, time.Second)
		if err != nil {
			t.Fatalf("dial %s: %v", s, err)
		}
		_ = conn.Close()
	}
	topic := c.Topic(t, "parts", 3)
	if got := len(c.Kfake().PartitionInfos(topic)); got != 3 {
		t.Fatalf("topic %s has %d partitions, want 3", topic, got)
	}
}

func TestRestartKeepsRecordsAndOffsets(t *testing.T) {
	c := Start(t)
	topic := c.Topic(t, "life", 2)
	group := Name("g")
	c.Produce(t, topic, &kgo.Record{Value: []byte("a")}, &kgo.Record{Value: []byte("b")})
	if got := consume(t, c, topic, group, 2); len(got) != 2 {
		t.Fatalf("before restart: %v", got)
	}
	addr := c.Addr()
	c.Restart(t)
	if c.Addr() != addr {
		t.Fatalf("restart moved the cluster from %s to %s", addr, c.Addr())
	}
	c.Produce(t, topic, &kgo.Record{Value: []byte("c")})
	// The group committed a and b before the restart: only c comes.
	if got := consume(t, c, topic, group, 1); len(got) != 1 || got[0] != "c" {
		t.Fatalf("after restart the group read %v, want [c]", got)
	}
	c.Stop()
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		_ = conn.Close()
		t.Fatal("a stopped cluster still accepts connections")
	}
}

func TestProduceToStoppedClusterFails(t *testing.T) {
	c := Start(t)
	topic := c.Topic(t, "stopped", 1)
	c.Stop()
	ft := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Produce(ft, topic, &kgo.Record{Value: []byte("x")})
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Produce to a stopped cluster hangs")
	}
	if !ft.failed {
		t.Fatal("Produce to a stopped cluster did not fail the test")
	}
}

// fatalRecorder records Fatalf instead of failing, for checking a helper's failure.
type fatalRecorder struct {
	testing.TB
	failed bool
}

func (f *fatalRecorder) Fatalf(string, ...any) {
	f.failed = true
	runtime.Goexit()
}

func (f *fatalRecorder) Helper() {}

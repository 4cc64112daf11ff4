// Package kafkatest runs in-process Kafka clusters for tests: franz-go's kfake, listening on real
// TCP loopback ports, so that the test's own clients and separate turnout processes started by
// the test can all connect to it. A cluster keeps its data in a temporary directory, so Restart
// stops it and starts it again on the same ports with its topics, records and committed group
// offsets.
//
// Invariant: every cluster a test starts here is closed by the test's cleanup, and every client
// made with Client is closed before its cluster. No Kafka broker is needed: the cluster runs in
// the test process, so nothing here ever skips.
//
// Typical use:
//
//	c := kafkatest.Start(t)                      // one broker on 127.0.0.1:<free port>
//	topic := c.Topic(t, "orders", 4)             // a fresh topic with 4 partitions
//	cfg.Brokers = c.Seeds()                      // or c.Addr() for a single host:port
//	cl := c.Client(t)                            // a kgo.Client for producing or checking
package kafkatest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Option changes how Start runs a cluster.
type Option func(*config)

type config struct {
	brokers int
	kfake   []kfake.Opt
}

// Brokers sets the number of brokers (default 1); each listens on its own loopback port.
func Brokers(n int) Option { return func(c *config) { c.brokers = n } }

// With passes options to kfake as they are, e.g. kfake.EnableSASL() with kfake.Superuser(...),
// or kfake.TLS(cfg). They apply again on Restart.
func With(opts ...kfake.Opt) Option { return func(c *config) { c.kfake = append(c.kfake, opts...) } }

// Cluster is one in-process Kafka cluster. Its methods are safe for concurrent use.
type Cluster struct {
	t     testing.TB
	cfg   config
	dir   string
	ports []int

	mu      sync.Mutex
	c       *kfake.Cluster // nil while stopped
	clients []*kgo.Client
}

// Start starts a cluster on free loopback ports, with its data in a temporary directory, and
// closes it in the test's cleanup. Topics are not created on first use: make them with Topic or
// CreateTopic.
func Start(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	cfg := config{brokers: 1}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.brokers < 1 {
		t.Fatalf("kafkatest: Brokers(%d): need at least 1", cfg.brokers)
	}
	c := &Cluster{t: t, cfg: cfg, dir: t.TempDir()}
	t.Cleanup(c.close)
	c.start(t, nil)
	return c
}

func (c *Cluster) start(t testing.TB, ports []int) {
	t.Helper()
	opts := append([]kfake.Opt{kfake.DataDir(c.dir)}, c.cfg.kfake...)
	if ports == nil {
		opts = append(opts, kfake.NumBrokers(c.cfg.brokers))
	} else {
		opts = append(opts, kfake.Ports(ports...))
	}
	var (
		k   *kfake.Cluster
		err error
	)
	// A port just released by Stop can still be taken by another test for a moment.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if k, err = kfake.NewCluster(opts...); err == nil || ports == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("kafkatest: start cluster: %v", err)
	}
	c.mu.Lock()
	c.c = k
	if c.ports == nil {
		for _, a := range k.ListenAddrs() {
			_, p, _ := net.SplitHostPort(a)
			n, _ := strconv.Atoi(p)
			c.ports = append(c.ports, n)
		}
	}
	c.mu.Unlock()
}

// Seeds returns the host:port of every broker, for kgo.SeedBrokers or a transport's brokers key.
func (c *Cluster) Seeds() []string {
	out := make([]string, len(c.ports))
	for i, p := range c.ports {
		out[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	return out
}

// Addr returns the host:port of the first broker; any broker serves as a seed.
func (c *Cluster) Addr() string { return c.Seeds()[0] }

// Kfake returns the running kfake cluster, for what this package does not cover (group state,
// faults, moving partition leaders). It is replaced by Restart and nil after Stop.
func (c *Cluster) Kfake() *kfake.Cluster {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.c
}

// CreateTopic creates topic with the given number of partitions.
func (c *Cluster) CreateTopic(t testing.TB, topic string, partitions int32) {
	t.Helper()
	k := c.Kfake()
	if k == nil {
		t.Fatalf("kafkatest: create topic %s: cluster stopped", topic)
	}
	if err := k.CreateTopic(topic, partitions, nil); err != nil {
		t.Fatalf("kafkatest: create topic %s: %v", topic, err)
	}
}

var seq atomic.Int64

// Name returns a topic or group name unique to this process: prefix, then a number.
func Name(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano()%1e9, seq.Add(1))
}

// Topic creates a topic with a name unique to this process (see Name) and the given number of
// partitions, and returns its name.
func (c *Cluster) Topic(t testing.TB, prefix string, partitions int32) string {
	t.Helper()
	name := Name(prefix)
	c.CreateTopic(t, name, partitions)
	return name
}

// Client returns a franz-go client seeded with the cluster's brokers and the given options; it is
// closed in the test's cleanup, before the cluster.
func (c *Cluster) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Seeds()...)}, opts...)...)
	if err != nil {
		t.Fatalf("kafkatest: client: %v", err)
	}
	c.mu.Lock()
	c.clients = append(c.clients, cl)
	c.mu.Unlock()
	return cl
}

// Produce writes the records with a client of its own and returns once every one is
// acknowledged by all in-sync replicas; a record without a Topic goes to topic. A stopped
// cluster, or records not acknowledged within 20s, fail the test.
func (c *Cluster) Produce(t testing.TB, topic string, rs ...*kgo.Record) {
	t.Helper()
	if c.Kfake() == nil {
		t.Fatalf("kafkatest: produce to %s: cluster stopped", topic)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Seeds()...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatalf("kafkatest: client: %v", err)
	}
	defer cl.Close()
	// Not ProduceSync: an idempotent record that reached a broker is kept until the brokers
	// answer, whatever its context says, and a test must fail rather than hang.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, len(rs))
	for _, r := range rs {
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) { done <- err })
	}
	for range rs {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("kafkatest: produce to %s: %v", topic, err)
			}
		case <-ctx.Done():
			t.Fatalf("kafkatest: produce to %s: not acknowledged within 20s", topic)
		}
	}
}

// Stop closes the cluster, saving its data; clients and turnout processes connected to it see
// the brokers go away. Restart starts it again.
func (c *Cluster) Stop() {
	c.mu.Lock()
	k := c.c
	c.c = nil
	c.mu.Unlock()
	if k != nil {
		k.Close()
	}
}

// Restart stops the cluster (if it runs) and starts it again on the same ports with the same
// data: topics, records and committed group offsets survive; group memberships do not.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	c.Stop()
	c.start(t, c.ports)
}

func (c *Cluster) close() {
	c.mu.Lock()
	clients := c.clients
	c.clients = nil
	c.mu.Unlock()
	for _, cl := range clients {
		cl.Close()
	}
	c.Stop()
}

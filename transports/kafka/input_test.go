package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/kafka/kafkatest"
	"github.com/turnout-router/turnout/transports/transporttest"
)

func inputConfig(c *kafkatest.Cluster, topic, group string) InputConfig {
	return InputConfig{ConnectionConfig: fastConn(c), Group: group, Topics: []string{topic},
		CommitInterval: 50 * time.Millisecond, RetryMinDelay: 50 * time.Millisecond, RetryMaxDelay: 200 * time.Millisecond}
}

// produceIDs writes one binary-mode event per id, in order, each keyed by its partitionkey
// (key(i)), and returns the ids.
func produceIDs(t *testing.T, c *kafkatest.Cluster, topic, prefix string, n int, key func(int) string) []string {
	t.Helper()
	ids := make([]string, n)
	recs := make([]*kgo.Record, n)
	for i := range n {
		ids[i] = fmt.Sprintf("%s-%03d", prefix, i)
		e := transporttest.Event(ids[i])
		e.SetExtension("partitionkey", key(i))
		recs[i] = confEncode(t, transporttest.Binary, e)
	}
	c.Produce(t, topic, recs...)
	return ids
}

func oneKey(int) string { return "k" }

// committed returns the group's committed offset of each partition of topic (absent: none).
func committed(t *testing.T, c *kafkatest.Cluster, group, topic string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	os, err := kadm.NewClient(c.Client(t)).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatalf("fetch offsets of %s: %v", group, err)
	}
	out := map[int32]int64{}
	os.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.Err == nil && o.At >= 0 {
			out[o.Partition] = o.At
		}
	})
	return out
}

// waitCommitted waits until partition p of topic has offset want committed for group.
func waitCommitted(t *testing.T, c *kafkatest.Cluster, group, topic string, p int32, want int64) {
	t.Helper()
	var got map[int32]int64
	deadline := time.Now().Add(20 * time.Second)
	for {
		got = committed(t, c, group, topic)
		if o, ok := got[p]; ok && o == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s committed %v on %s, want %d on partition %d", group, got, topic, want, p)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func idOf(t *testing.T, x testutil.Dispatched) string {
	t.Helper()
	if x.M.Event == nil {
		t.Fatalf("undecodable record: %v", x.M.DecodeErr)
	}
	return x.M.Event.ID()
}

// TestInputCommitsOnlySettledPrefix settles records out of order and leaves one unsettled: the
// commit stops before it, and a new consumer of the group reads again from it.
func TestInputCommitsOnlySettledPrefix(t *testing.T) {
	c := kafkatest.Start(t)
	topic, group := c.Topic(t, "prefix", 1), kafkatest.Name("g")
	ids := produceIDs(t, c, topic, "p", 10, oneKey)
	_, d, stop := startInput(t, inputConfig(c, topic, group))
	got := make([]testutil.Dispatched, 10)
	for i := range got {
		got[i] = d.Next(t, 20*time.Second)
		if id := idOf(t, got[i]); id != ids[i] {
			t.Fatalf("dispatch %d is %s, want %s (partition order)", i, id, ids[i])
		}
	}
	for _, i := range []int{9, 7, 8, 5, 6, 4, 2, 0, 1} { // all but 3, out of order
		got[i].Settle(nil)
	}
	waitCommitted(t, c, group, topic, 0, 3)
	time.Sleep(300 * time.Millisecond) // several commit intervals
	if o := committed(t, c, group, topic)[0]; o != 3 {
		t.Fatalf("committed %d past the unsettled record at offset 3", o)
	}
	stop() // record 3 is still unsettled: as a crash of the engine would leave it
	if o := committed(t, c, group, topic)[0]; o != 3 {
		t.Fatalf("after Close committed %d, want 3", o)
	}
	_, d2, _ := startInput(t, inputConfig(c, topic, group))
	for i := 3; i < 10; i++ {
		x := d2.Next(t, 20*time.Second)
		if id := idOf(t, x); id != ids[i] {
			t.Fatalf("the new consumer read %s, want %s: it starts at the first unsettled record", id, ids[i])
		}
		x.Settle(nil)
	}
	d2.None(t, 500*time.Millisecond)
	waitCommitted(t, c, group, topic, 0, 10)
}

// TestInputRetriesTransientFailures: a record failed transiently is dispatched again (Kafka has
// no redelivery of its own) and holds the commit until it succeeds; a permanent failure settles
// its record.
func TestInputRetriesTransientFailures(t *testing.T) {
	c := kafkatest.Start(t)
	topic, group := c.Topic(t, "retry", 1), kafkatest.Name("g")
	ids := produceIDs(t, c, topic, "r", 3, oneKey)
	deps := testDeps()
	in, err := newInput("retry", inputConfig(c, topic, group), deps)
	if err != nil {
		t.Fatal(err)
	}
	d := testutil.NewDispatcher()
	if err := in.Start(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = in.Close(ctx)
	})
	metric := func(name string) float64 {
		return testutil.Metric(t, deps.Registerer.(prometheus.Gatherer), name, map[string]string{"name": "retry"})
	}
	first := []testutil.Dispatched{d.Next(t, 20*time.Second), d.Next(t, 20*time.Second), d.Next(t, 20*time.Second)}
	first[0].Settle(errors.New("output down"))
	first[1].Settle(nil)
	first[2].Settle(engine.Permanent(errors.New("dead-lettered")))
	for round := 1; round <= 2; round++ {
		x := d.Next(t, 20*time.Second)
		if id := idOf(t, x); id != ids[0] {
			t.Fatalf("retry %d dispatched %s, want %s", round, id, ids[0])
		}
		if o, ok := committed(t, c, group, topic)[0]; ok && o > 0 {
			t.Fatalf("committed %d while the record at offset 0 is failing", o)
		}
		if n := metric("turnout_kafka_input_held"); n != 3 {
			t.Errorf("turnout_kafka_input_held = %v while the first record fails, want 3", n)
		}
		if round == 1 {
			x.Settle(errors.New("output still down"))
		} else {
			x.Settle(nil)
		}
	}
	waitCommitted(t, c, group, topic, 0, 3)
	d.None(t, 500*time.Millisecond) // the settled and the dead-lettered record do not come back
	if n := metric("turnout_kafka_input_retries_total"); n != 2 {
		t.Errorf("turnout_kafka_input_retries_total = %v, want 2", n)
	}
	if n := metric("turnout_kafka_input_held"); n != 0 {
		t.Errorf("turnout_kafka_input_held = %v once everything is committable, want 0", n)
	}
}

// TestInputMaxInFlight: max_in_flight bounds the records read and not yet committable; a record
// settled behind an unsettled one still counts.
func TestInputMaxInFlight(t *testing.T) {
	c := kafkatest.Start(t)
	topic, group := c.Topic(t, "bound", 1), kafkatest.Name("g")
	produceIDs(t, c, topic, "b", 10, oneKey)
	cfg := inputConfig(c, topic, group)
	cfg.MaxInFlight = 4
	_, d, _ := startInput(t, cfg)
	var got []testutil.Dispatched
	for range 4 {
		got = append(got, d.Next(t, 20*time.Second))
	}
	d.None(t, 500*time.Millisecond)
	got[1].Settle(nil)
	d.None(t, 500*time.Millisecond)
	got[0].Settle(nil) // 0 and 1 are committable now: two records may come
	got = append(got, d.Next(t, 20*time.Second), d.Next(t, 20*time.Second))
	d.None(t, 500*time.Millisecond)
	for _, x := range got[2:] {
		x.Settle(nil)
	}
	for range 4 {
		d.Next(t, 20*time.Second).Settle(nil)
	}
	waitCommitted(t, c, group, topic, 0, 10)
}

// TestInputCloseWaitsForSettlements: Close stops reading, waits for the records the engine
// holds, commits them and leaves the group, so a new member reads nothing again.
func TestInputCloseWaitsForSettlements(t *testing.T) {
	c := kafkatest.Start(t)
	topic, group := c.Topic(t, "close", 1), kafkatest.Name("g")
	produceIDs(t, c, topic, "c", 5, oneKey)
	in, d, _ := startInput(t, inputConfig(c, topic, group))
	var held []testutil.Dispatched
	for range 5 {
		held = append(held, d.Next(t, 20*time.Second))
	}
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		closed <- in.Close(ctx)
	}()
	waitFor(t, "Close begun", func() bool {
		in.mu.Lock()
		defer in.mu.Unlock()
		return in.closed
	})
	produceIDs(t, c, topic, "late", 3, oneKey)
	time.Sleep(200 * time.Millisecond) // Close is waiting for the settlements now
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) before the engine settled what it holds", err)
	default:
	}
	for _, x := range held {
		x.Settle(nil)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("close: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return after the last settlement")
	}
	d.None(t, 200*time.Millisecond) // nothing read after Close began
	if o := committed(t, c, group, topic)[0]; o != 5 {
		t.Fatalf("committed %d after Close, want 5", o)
	}
	_, d2, _ := startInput(t, inputConfig(c, topic, group))
	for i := range 3 {
		if id := idOf(t, d2.Next(t, 20*time.Second)); id != fmt.Sprintf("late-%03d", i) {
			t.Fatalf("the next member read %s, want the records after the commit", id)
		}
	}
}

// autoSettle is an engine.Dispatcher that settles every record with nil at once and counts the
// events it saw.
type autoSettle struct {
	mu   sync.Mutex
	seen map[string]int
}

func (a *autoSettle) Dispatch(_ context.Context, m *engine.Message, settle engine.SettleFunc) error {
	a.mu.Lock()
	if m.Event != nil {
		a.seen[m.Event.ID()]++
	}
	a.mu.Unlock()
	go settle(nil)
	return nil
}

func (a *autoSettle) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.seen)
}

// TestInputRebalance runs two members of one group over a topic of 4 partitions, the second
// joining while the first is consuming: every record is dispatched (duplicates allowed), both
// members get partitions, and once both closed the group's commits reach the end of every
// partition.
func TestInputRebalance(t *testing.T) {
	c := kafkatest.Start(t)
	topic, group := c.Topic(t, "rebalance", 4), kafkatest.Name("g")
	key := func(i int) string { return fmt.Sprintf("k%d", i%16) }
	ids := produceIDs(t, c, topic, "x", 200, key)
	start := func(name string) (*Input, *autoSettle) {
		in, err := newInput(name, inputConfig(c, topic, group), testDeps())
		if err != nil {
			t.Fatal(err)
		}
		a := &autoSettle{seen: map[string]int{}}
		if err := in.Start(t.Context(), a); err != nil {
			t.Fatal(err)
		}
		return in, a
	}
	closeIn := func(in *Input) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := in.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	}
	inA, a := start("a")
	waitFor(t, "the first member consuming", func() bool { return a.count() > 0 })
	inB, b := start("b")
	held := func(in *Input) int {
		in.mu.Lock()
		defer in.mu.Unlock()
		return len(in.parts)
	}
	waitFor(t, "partitions moved to the second member", func() bool { return held(inB) > 0 && held(inA)+held(inB) == 4 })
	ids = append(ids, produceIDs(t, c, topic, "y", 200, key)...)
	waitFor(t, "every record dispatched", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, id := range ids {
			if a.seen[id]+b.seen[id] == 0 {
				return false
			}
		}
		return true
	})
	if b.count() == 0 {
		t.Error("the second member got no records: the group did not rebalance")
	}
	closeIn(inB)
	closeIn(inA)
	got := committed(t, c, group, topic)
	for p, end := range endOffsets(t, c, topic) {
		if got[p] != end {
			t.Errorf("partition %d: committed %d, end %d", p, got[p], end)
		}
	}
}

// endOffsets returns the end offset of each partition of topic.
func endOffsets(t *testing.T, c *kafkatest.Cluster, topic string) map[int32]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(c.Client(t)).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// TestInputBrokerRestart restarts the cluster while the input holds unsettled records: the
// input keeps working, their settlements after the restart are committed, and a new consumer
// of the group reads none of them again.
func TestInputBrokerRestart(t *testing.T) {
	c := kafkatest.Start(t)
	topic, group := c.Topic(t, "restart", 1), kafkatest.Name("g")
	produceIDs(t, c, topic, "before", 3, oneKey)
	_, d, stop := startInput(t, inputConfig(c, topic, group))
	held := []testutil.Dispatched{d.Next(t, 20*time.Second), d.Next(t, 20*time.Second), d.Next(t, 20*time.Second)}
	c.Restart(t)
	for _, x := range held {
		x.Settle(nil)
	}
	after := produceIDs(t, c, topic, "after", 2, oneKey)
	seen := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for !seen[after[0]] || !seen[after[1]] {
		if time.Now().After(deadline) {
			t.Fatalf("after the restart the input dispatched %v, want %v", seen, after)
		}
		// A member that lost its partitions in the restart reads the held records again.
		for _, x := range d.Collect(200*time.Millisecond, time.Second) {
			seen[idOf(t, x)] = true
			x.Settle(nil)
		}
	}
	waitCommitted(t, c, group, topic, 0, 5)
	stop()
	_, d2, _ := startInput(t, inputConfig(c, topic, group))
	d2.None(t, 2*time.Second)
}

// TestInputOrderWithMaxInFlightOne: with max_in_flight 1 the records of a partition reach the
// engine in order, a failed one again before any later one.
func TestInputOrderWithMaxInFlightOne(t *testing.T) {
	c := kafkatest.Start(t)
	topic, group := c.Topic(t, "order", 1), kafkatest.Name("g")
	ids := produceIDs(t, c, topic, "o", 4, oneKey)
	cfg := inputConfig(c, topic, group)
	cfg.MaxInFlight = 1
	_, d, _ := startInput(t, cfg)
	var order []string
	for i := 0; len(order) < 5; i++ {
		x := d.Next(t, 20*time.Second)
		order = append(order, idOf(t, x))
		if i == 1 { // the second record fails once
			x.Settle(errors.New("output down"))
			continue
		}
		x.Settle(nil)
	}
	want := []string{ids[0], ids[1], ids[1], ids[2], ids[3]}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("dispatch order %v, want %v", order, want)
	}
}

// TestInputStartsWhileBrokersDown: an input started while no broker answers starts, is not
// ready, and reads once the cluster is up.
func TestInputStartsWhileBrokersDown(t *testing.T) {
	c := kafkatest.Start(t)
	topic, group := c.Topic(t, "late", 1), kafkatest.Name("g")
	c.Stop()
	in, err := newInput("in", inputConfig(c, topic, group), testDeps())
	if err != nil {
		t.Fatal(err)
	}
	d := testutil.NewDispatcher()
	if err := in.Start(t.Context(), d); err != nil {
		t.Fatalf("start with the brokers down: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = in.Close(ctx)
	})
	if in.Ready() {
		t.Error("input ready while no broker answers")
	}
	c.Restart(t)
	ids := produceIDs(t, c, topic, "l", 2, oneKey)
	for _, id := range ids {
		x := d.Next(t, 30*time.Second)
		if got := idOf(t, x); got != id {
			t.Fatalf("read %s, want %s", got, id)
		}
		x.Settle(nil)
	}
	waitFor(t, "input ready once the cluster is up", in.Ready)
}

// TestInputStaticMember stops a static member (instance_id) as a crash or a restart would: it
// does not leave the group, so its partitions stay its own (no rebalance, the other member keeps
// its share). Started again with the same instance_id, it gets them back at once, well within
// the long session timeout, and reads their records from the last commit.
func TestInputStaticMember(t *testing.T) {
	c := kafkatest.Start(t)
	topic, group := c.Topic(t, "static", 4), kafkatest.Name("g")
	const sessionTimeout = time.Minute
	start := func(name string) (*Input, *autoSettle) {
		cfg := inputConfig(c, topic, group)
		cfg.InstanceID, cfg.SessionTimeout = "turnout-"+name, sessionTimeout
		in, err := newInput(name, cfg, testDeps())
		if err != nil {
			t.Fatal(err)
		}
		a := &autoSettle{seen: map[string]int{}}
		if err := in.Start(t.Context(), a); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = in.Close(ctx)
		})
		return in, a
	}
	held := func(in *Input) int {
		in.mu.Lock()
		defer in.mu.Unlock()
		return len(in.parts)
	}
	inA, a := start("a")
	inB, _ := start("b")
	waitFor(t, "both members holding partitions", func() bool { return held(inA) > 0 && held(inB) > 0 && held(inA)+held(inB) == 4 })
	heldA := held(inA)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := inB.Close(ctx); err != nil { // a static member does not leave the group
		t.Fatal(err)
	}
	cancel()

	key := func(i int) string { return fmt.Sprintf("k%d", i%16) }
	ids := produceIDs(t, c, topic, "s", 100, key)
	time.Sleep(2 * time.Second) // a dynamic member's leave would have moved b's partitions by now
	if held(inA) != heldA {
		t.Fatalf("a holds %d partitions after b stopped, %d before: the group rebalanced, as for a dynamic member", held(inA), heldA)
	}
	began := time.Now()
	inB2, b2 := start("b")
	seenAll := func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		b2.mu.Lock()
		defer b2.mu.Unlock()
		for _, id := range ids {
			if a.seen[id]+b2.seen[id] == 0 {
				return false
			}
		}
		return true
	}
	for !seenAll() {
		if time.Since(began) > sessionTimeout/2 {
			t.Fatalf("the restarted static member did not get its partitions back within %v (session timeout %v): it holds %d",
				sessionTimeout/2, sessionTimeout, held(inB2))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if b2.count() == 0 || held(inA)+held(inB2) != 4 {
		t.Errorf("after the restart: a holds %d partitions, b %d with %d records", held(inA), held(inB2), b2.count())
	}
	t.Logf("the restarted member had its partitions back and every record read %v after its start", time.Since(began).Round(time.Millisecond))
}

package kafka

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/ce"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/kafka/kafkatest"
	"github.com/turnout-router/turnout/transports/transporttest"
)

// readAll reads n records of topic from its start with a client of its own.
func readAll(t *testing.T, c *kafkatest.Cluster, topic string, n int) []*kgo.Record {
	t.Helper()
	cl := c.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeStartOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records of %s", len(out), n, topic)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

// TestOutputConcurrentSendsAcked sends events from many goroutines at once: every Send that
// returned nil left its event in the topic, each once, readable as the event that was sent.
func TestOutputConcurrentSendsAcked(t *testing.T) {
	for _, mode := range []string{modeBinary, modeStructured} {
		t.Run(mode, func(t *testing.T) {
			c := kafkatest.Start(t)
			topic := c.Topic(t, "out", 4)
			o := startOutput(t, OutputConfig{ConnectionConfig: fastConn(c), Topic: topic, Mode: mode})
			const n = 200
			sent := make([]*event.Event, n)
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				sent[i] = transporttest.Event(fmt.Sprintf("c-%03d", i))
				sent[i].SetExtension("partitionkey", fmt.Sprintf("k%d", i%7))
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := o.Send(t.Context(), sent[i]); err != nil {
						errs <- err
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatalf("send: %v", err)
			}
			got := map[string]*event.Event{}
			for _, r := range readAll(t, c, topic, n) {
				e, m := confDecode(t, r)
				if string(m) != mode {
					t.Errorf("record in %s mode, want %s", m, mode)
				}
				if got[e.ID()] != nil {
					t.Errorf("event %s twice", e.ID())
				}
				got[e.ID()] = e
			}
			for _, e := range sent {
				if d := ce.Diff(e, got[e.ID()]); d != nil {
					t.Errorf("%s: %s", e.ID(), strings.Join(d, "; "))
				}
			}
		})
	}
}

// TestOutputPartitionKey checks the record key [CE-Kafka-3.1]: the partitionkey extension with
// key "partitionkey" (so events of one key share a partition), none without the extension, by
// default or with key "none".
func TestOutputPartitionKey(t *testing.T) {
	c := kafkatest.Start(t)
	cases := []struct {
		name, key, pk string
		wantKey       []byte
	}{
		{"partitionkey", keyPartition, "order-17", []byte("order-17")},
		{"no extension", keyPartition, "", nil},
		{"default: no key", "", "order-17", nil},
		{"key none", keyNone, "order-17", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			topic := c.Topic(t, "key", 8)
			o := startOutput(t, OutputConfig{ConnectionConfig: fastConn(c), Topic: topic, Key: tc.key})
			for i := range 20 {
				e := transporttest.Event(fmt.Sprintf("k-%d", i))
				e.SetExtension("partitionkey", nil) // removes it
				if tc.pk != "" {
					e.SetExtension("partitionkey", tc.pk)
				}
				if err := o.Send(t.Context(), e); err != nil {
					t.Fatal(err)
				}
			}
			parts := map[int32]bool{}
			for _, r := range readAll(t, c, topic, 20) {
				if !bytes.Equal(r.Key, tc.wantKey) {
					t.Fatalf("record key %q, want %q", r.Key, tc.wantKey)
				}
				parts[r.Partition] = true
			}
			if tc.wantKey != nil && len(parts) != 1 {
				t.Errorf("events of one key went to partitions %v", parts)
			}
		})
	}
}

// TestOutputBrokersDown: while the cluster is down Send fails within ack_timeout with a
// retryable error, and once it is back the same output delivers again.
func TestOutputBrokersDown(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.Topic(t, "down", 1)
	deps := testDeps()
	o, err := newOutput("down", OutputConfig{ConnectionConfig: fastConn(c), Topic: topic, AckTimeout: time.Second}, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer o.Close(t.Context())
	gauge := func() float64 {
		return testutil.Metric(t, deps.Registerer.(prometheus.Gatherer), "turnout_transport_connected",
			map[string]string{"transport": "kafka", "name": "down"})
	}
	if err := o.Send(t.Context(), transporttest.Event("before")); err != nil {
		t.Fatal(err)
	}
	if g := gauge(); g != 1 {
		t.Errorf("turnout_transport_connected = %v while connected, want 1", g)
	}
	c.Stop()
	err = o.Send(t.Context(), transporttest.Event("while-down"))
	if err == nil || engine.IsPermanent(err) {
		t.Fatalf("send while the cluster is down: %v, want a retryable error", err)
	}
	waitFor(t, "output not ready while the cluster is down", func() bool { return !o.Ready() && gauge() == 0 })
	c.Restart(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := o.Send(t.Context(), transporttest.Event("after"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("send after the restart: %v", err)
		}
	}
	// "while-down" may or may not have been written: the engine retries it either way.
	readIDs(t, c, topic, "before", "after")
}

// readIDs reads topic from its start until every id in want was seen.
func readIDs(t *testing.T, c *kafkatest.Cluster, topic string, want ...string) {
	t.Helper()
	cl := c.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeStartOffset(kgo.NewOffset().AtStart()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	seen := map[string]bool{}
	for {
		missing := 0
		for _, id := range want {
			if !seen[id] {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %v from %s, want %v", seen, topic, want)
		}
		for _, r := range fs.Records() {
			e, _ := confDecode(t, r)
			seen[e.ID()] = true
		}
	}
}

// TestOutputRecordTooLarge: a record the producer refuses for its size fails permanently (the
// engine dead-letters it instead of retrying for ever).
func TestOutputRecordTooLarge(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.Topic(t, "big", 1)
	o := startOutput(t, OutputConfig{ConnectionConfig: fastConn(c), Topic: topic})
	e := transporttest.Event("huge")
	_ = e.SetData("text/plain", bytes.Repeat([]byte("x"), 2<<20))
	err := o.Send(t.Context(), e)
	if !engine.IsPermanent(err) {
		t.Fatalf("send of a 2 MiB record: %v, want a permanent error", err)
	}
}

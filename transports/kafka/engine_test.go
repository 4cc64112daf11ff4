package kafka

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/transports/kafka/kafkatest"
	"github.com/turnout-router/turnout/transports/transporttest"
)

// TestThroughEngine routes events from a Kafka input (binary mode, 3 partitions) through the
// engine to a Kafka output (structured mode), and a malformed record to a Kafka dead-letter
// output: every event arrives once, and the group's commits reach the end of every partition.
func TestThroughEngine(t *testing.T) {
	s := &confServer{t: t, c: kafkatest.Start(t), fetchers: map[string]*kgo.Client{}}
	inDest, outDest, dlDest := s.Dest(t), s.Dest(t), s.Dest(t)
	in := s.Input(t, inDest)
	out := s.Output(t, outDest, transporttest.Structured)
	dl := s.Output(t, dlDest, transporttest.Binary)
	e := engine.New(engine.Options{Logger: testDeps().Logger})
	if err := e.AddRoute(engine.Route{
		Config:         engine.RouteConfig{Name: "r", DefaultOutputs: []string{"out"}, MaxInFlight: 64},
		Inputs:         map[string]engine.Source{"in": in},
		Outputs:        map[string]engine.Sink{"out": out},
		DeadLetter:     dl,
		DeadLetterName: "dl",
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = e.Shutdown(ctx)
	}()
	const n = 200
	for i := range n {
		ev := transporttest.Event(fmt.Sprintf("e-%03d", i))
		ev.SetExtension("partitionkey", fmt.Sprintf("k%d", i%10))
		s.Publish(t, inDest, transporttest.Binary, ev)
	}
	s.PublishRaw(t, inDest, "", []byte("not an event"))
	seen := map[string]bool{}
	for range n {
		got, mode := s.Fetch(t, outDest, 20*time.Second)
		if mode != transporttest.Structured {
			t.Fatalf("output wrote %s mode", mode)
		}
		if seen[got.ID()] {
			t.Errorf("event %s twice", got.ID())
		}
		seen[got.ID()] = true
	}
	if _, mode := s.Fetch(t, dlDest, 20*time.Second); mode != transporttest.Binary {
		t.Errorf("dead letter in %s mode", mode)
	}
	for p, end := range endOffsets(t, s.c, inDest) {
		waitCommitted(t, s.c, "g-"+inDest, inDest, p, end)
	}
}

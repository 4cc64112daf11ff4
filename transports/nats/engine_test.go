package nats

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/transports/nats/natstest"
	"github.com/turnout-router/turnout/transports/transporttest"
)

// TestThroughEngine routes events from a NATS input (binary mode) through the engine to a NATS
// output (structured mode), and a malformed message to a NATS dead-letter output: every event
// arrives once the input acknowledged it, and nothing stays unacknowledged.
func TestThroughEngine(t *testing.T) {
	s := &confServer{url: natstest.Shared(t)}
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
		s.Publish(t, inDest, transporttest.Binary, transporttest.Event(fmt.Sprintf("e-%03d", i)))
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
	cons, err := s.js(t).Consumer(t.Context(), streamOf(inDest), "conf")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every input message acknowledged", func() bool {
		ci, err := cons.Info(t.Context())
		return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0
	})
}

package mqtt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/transports/mqtt/mqtttest"
)

// observer subscribes a plain client to filter and collects what arrives.
type observer struct {
	mu   sync.Mutex
	msgs []paho.Message
}

func observe(t testing.TB, url, filter string) *observer {
	t.Helper()
	o := &observer{}
	c := rawClient(t, url)
	tok := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) {
		o.mu.Lock()
		o.msgs = append(o.msgs, m)
		o.mu.Unlock()
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return o
}

func (o *observer) wait(t testing.TB, n int) []paho.Message {
	t.Helper()
	testutil.WaitFor(t, fmt.Sprintf("%d messages", n), 10*time.Second, func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return len(o.msgs) >= n
	})
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]paho.Message(nil), o.msgs...)
}

func TestOutputPublishesStructuredJSON(t *testing.T) {
	url := mqtttest.Shared(t)
	base := "turnout-test/" + uniq(t)
	obs := observe(t, url, base+"/#")
	out := startOutput(t, url, OutputConfig{TopicTemplate: base + "/{type}/{room}"})
	testutil.WaitFor(t, "output ready", 10*time.Second, out.Ready)

	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() { // Send is called concurrently by the engine
			defer wg.Done()
			e := newEvent(fmt.Sprintf("e%d", i), map[string]string{"room": fmt.Sprintf("r%d", i%3)})
			errs <- out.Send(t.Context(), e)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Send: %v", err)
		}
	}
	got := obs.wait(t, n)
	seen := map[string]bool{}
	for _, m := range got {
		x := decode(m.Topic(), m.Payload())
		if x.DecodeErr != nil {
			t.Fatalf("published payload is not a structured event: %v", x.DecodeErr)
		}
		var i int
		fmt.Sscanf(x.Event.ID(), "e%d", &i)
		if want := fmt.Sprintf("%s/test.event/r%d", base, i%3); m.Topic() != want {
			t.Errorf("event %s went to %q, want %q", x.Event.ID(), m.Topic(), want)
		}
		if m.Retained() {
			t.Errorf("event %s published with retain", x.Event.ID())
		}
		seen[x.Event.ID()] = true
	}
	if len(seen) != n {
		t.Errorf("observed %d distinct events, want %d", len(seen), n)
	}
}

func TestOutputNotConnectedFailsFast(t *testing.T) {
	deps, _ := testDeps(t)
	cfg := OutputConfig{ConnectionConfig: fastConn("tcp://127.0.0.1:1", ""), Topic: "x"}
	out, err := newOutput("down", cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := out.Start(t.Context()); err != nil {
		t.Fatalf("Start with the broker down: %v (want nil, retry in the background)", err)
	}
	defer out.Close(context.Background())
	if out.Ready() {
		t.Error("Ready() with no broker")
	}
	// A generous deadline: Send must give up on its own, not wait for it.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	err = out.Send(ctx, newEvent("1", nil))
	if !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Send while disconnected = %v, want ErrNotConnected", err)
	}
	if engine.IsPermanent(err) {
		t.Error("not connected must be retryable, not permanent")
	}
}

func TestOutputTopicTooLongIsPermanent(t *testing.T) {
	url := mqtttest.Shared(t)
	out := startOutput(t, url, OutputConfig{TopicTemplate: "turnout-test/{subject}"})
	e := newEvent("1", nil)
	e.SetSubject(strings.Repeat("s", 70000))
	if err := out.Send(t.Context(), e); !engine.IsPermanent(err) {
		t.Fatalf("Send = %v, want a permanent error", err)
	}
}

// TestOutputConfirmsOnlyOnPuback freezes the broker: Send must not return nil without the
// PUBACK, and must return when its context ends.
func TestOutputConfirmsOnlyOnPuback(t *testing.T) {
	m := mqtttest.Start(t)
	out := startOutput(t, m.URL(), OutputConfig{Topic: "t"})
	testutil.WaitFor(t, "output ready", 10*time.Second, out.Ready)
	if err := out.Send(t.Context(), newEvent("before", nil)); err != nil {
		t.Fatalf("Send with the broker up: %v", err)
	}

	m.Pause()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	err := out.Send(ctx, newEvent("paused", nil))
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send to a frozen broker = %v, want the context's deadline", err)
	}
	m.Resume()
	testutil.WaitFor(t, "a confirmed Send after resume", 10*time.Second, func() bool {
		return out.Send(t.Context(), newEvent("after", nil)) == nil
	})
}

func TestOutputConfigErrorsNameTheKey(t *testing.T) {
	deps, _ := testDeps(t)
	cases := []struct {
		name, key string
		cfg       OutputConfig
	}{
		{"neither topic", "topic", OutputConfig{}},
		{"both", "topic_template", OutputConfig{Topic: "a", TopicTemplate: "a/{type}"}},
		{"wildcard topic", "topic", OutputConfig{Topic: "a/#"}},
		{"bad template", "topic_template", OutputConfig{TopicTemplate: "a/{Type}"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.ConnectionConfig = ConnectionConfig{Brokers: []string{"tcp://127.0.0.1:1883"}}
			_, err := newOutput("o", c.cfg, deps)
			if err == nil || !strings.Contains(err.Error(), c.key) {
				t.Fatalf("error %v does not name %q", err, c.key)
			}
		})
	}
}

func TestRegisteredWithTheEngine(t *testing.T) {
	if _, err := engine.LookupInput("mqtt"); err != nil {
		t.Error(err)
	}
	if _, err := engine.LookupOutput("mqtt"); err != nil {
		t.Error(err)
	}
}

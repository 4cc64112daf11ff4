package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestServerRestartKeepsStreams(t *testing.T) {
	s := Start(t)
	name := Name("LIFE")
	Stream(t, s.URL(), name, "life."+name)
	s.Restart()
	js := JetStream(t, s.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.Stream(ctx, name); err != nil {
		t.Fatalf("stream %s after restart: %v", name, err)
	}
	s.Kill()
	if _, err := nats.Connect(s.URL(), nats.Timeout(time.Second)); err == nil {
		t.Fatal("connected to a killed server")
	}
}

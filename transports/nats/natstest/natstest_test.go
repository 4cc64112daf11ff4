package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestServerRestartKeepsStreams(t *testing.T) {
	s := Start(t)
	name := Name("LIFE")
	Stream(t, s.URL(), name, "life."+name)
	s.Restart()
	nc, err := nats.Connect(s.URL(), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
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

package nats

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/transports/nats/natstest"
)

// TestOutputWindowBound sends many events at once through an output with a small window and
// watches nats.go's own count of publishes awaiting a PubAck: it never exceeds max_pending,
// every Send is confirmed, and every event is in the stream once.
func TestOutputWindowBound(t *testing.T) {
	f := sharedFixture(t)
	cfg := f.outputConfig(modeBinary)
	cfg.MaxPending = 8
	o := startOutput(t, cfg)
	o.mu.Lock()
	js := o.js
	o.mu.Unlock()

	const n = 600
	var peak atomic.Int64
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if p := int64(js.PublishAsyncPending()); p > peak.Load() {
				peak.Store(p)
			}
		}
	}()
	sendConcurrently(t, o, n)
	close(stop)
	<-watched
	if p := peak.Load(); p > int64(cfg.MaxPending) || p < 2 {
		t.Errorf("at most %d publishes awaited their PubAck at once, want 2 to max_pending %d", p, cfg.MaxPending)
	}
	info, err := natstest.JetStream(t, f.url).Stream(t.Context(), f.stream)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().State.Msgs; got != n {
		t.Errorf("stream holds %d messages, want %d", got, n)
	}
}

// TestOutputFailedPubAckFailsItsEventOnly publishes concurrently to a stream that refuses
// messages above 1 KiB: the Sends of the large events return an error, the others nil, and
// only the small events are in the stream.
func TestOutputFailedPubAckFailsItsEventOnly(t *testing.T) {
	url := natstest.Shared(t)
	js := natstest.JetStream(t, url)
	stream := natstest.Name("T")
	subject := "turnout.test." + stream
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{subject}, MaxMsgSize: 1024}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), stream) })
	o := startOutput(t, OutputConfig{ConnectionConfig: fastConn(url), Subject: subject, Stream: stream, MaxPending: 16})

	const n = 100
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		data := []byte("small")
		if i%5 == 0 {
			data = []byte(strings.Repeat("L", 2048))
		}
		wg.Go(func() { errs[i] = o.Send(t.Context(), fullEvent(eventID(i), data, "text/plain", true)) })
	}
	wg.Wait()
	small := 0
	for i, err := range errs {
		switch {
		case i%5 == 0 && err == nil:
			t.Errorf("event %d, too large for the stream, was confirmed", i)
		case i%5 == 0 && engine.IsPermanent(err):
			t.Errorf("event %d: %v is permanent, want retryable", i, err)
		case i%5 != 0 && err != nil:
			t.Errorf("event %d: %v", i, err)
		case i%5 != 0:
			small++
		}
	}
	info, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().State.Msgs; got != uint64(small) {
		t.Errorf("stream holds %d messages, want the %d small ones", got, small)
	}
}

// TestOutputSendGivesUpWithItsContext: a Send waiting for room in a full window returns when
// its context ends.
func TestOutputSendGivesUpWithItsContext(t *testing.T) {
	url := natstest.Shared(t)
	// No stream captures this subject: the one publish allowed in flight waits for its
	// retries on no responders, long enough for the second Send to find no room.
	cfg := OutputConfig{ConnectionConfig: fastConn(url), Subject: "turnout.nostream." + natstest.Name("x"), MaxPending: 1}
	o := startOutput(t, cfg)
	first := make(chan error, 1)
	go func() { first <- o.Send(t.Context(), fullEvent("1", nil, "", true)) }()
	waitFor(t, "first publish in flight", func() bool { return len(o.window) == 1 })
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err := o.Send(ctx, fullEvent("2", nil, "", true))
	if err == nil || !strings.Contains(err.Error(), "waiting for room") {
		t.Errorf("second Send = %v, want an error waiting for room", err)
	}
	if err := <-first; err == nil {
		t.Error("publish to a subject no stream captures was confirmed")
	}
}

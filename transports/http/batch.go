package httpin

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/internal/ce"
)

// batcher gathers the events of concurrent Sends into batched-mode requests [CE-HTTP-3.3]: a
// batch closes when it holds batch_size events or batch_linger after its first event. Every
// Send waits for the outcome of its batch's request, so the at-least-once contract holds per
// event: nil only when the receiver confirmed the whole batch.
//
// Goroutines: run (one, started by the first batched Send) forms batches; each batch is posted
// on a goroutine of its own, so several batches are in flight together.
type batcher struct {
	once  sync.Once
	queue chan queued
	stop  chan struct{}
	done  sync.WaitGroup // run and the posting goroutines
	close sync.Once
}

// queued is one event waiting for its batch; done receives the batch's outcome (capacity 1).
type queued struct {
	json []byte
	done chan error
}

// sendBatched is Send in batch mode.
func (o *Output) sendBatched(ctx context.Context, e *event.Event) error {
	b, err := ce.EncodeStructured(e)
	if err != nil {
		return engine.Permanent(fmt.Errorf("http output %s: encode event %s: %w", o.name, e.ID(), err))
	}
	bt := &o.batches
	bt.once.Do(func() {
		bt.queue = make(chan queued)
		bt.stop = make(chan struct{})
		bt.done.Add(1)
		go o.runBatcher()
	})
	q := queued{json: b, done: make(chan error, 1)}
	select {
	case bt.queue <- q:
	case <-bt.stop:
		return fmt.Errorf("http output %s: closed", o.name)
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-q.done:
		return err
	case <-ctx.Done():
		return ctx.Err() // the batch may still be delivered: at-least-once
	}
}

// runBatcher forms batches until stopBatcher.
func (o *Output) runBatcher() {
	bt := &o.batches
	defer bt.done.Done()
	for {
		var batch []queued
		select {
		case q := <-bt.queue:
			batch = append(batch, q)
		case <-bt.stop:
			return
		}
		linger := time.NewTimer(o.cfg.BatchLinger)
	fill:
		for len(batch) < o.cfg.BatchSize {
			select {
			case q := <-bt.queue:
				batch = append(batch, q)
			case <-linger.C:
				break fill
			case <-bt.stop:
				break fill
			}
		}
		linger.Stop()
		bt.done.Add(1)
		go func() {
			defer bt.done.Done()
			err := o.postBatch(batch)
			for _, q := range batch {
				q.done <- err
			}
		}()
	}
}

// postBatch sends one batch as a JSON array [CE-JSON-4] within the per-request timeout (the
// handshake and the receiver's pauses included).
func (o *Output) postBatch(batch []queued) error {
	var body bytes.Buffer
	body.WriteByte('[')
	for i, q := range batch {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(q.json)
	}
	body.WriteByte(']')
	h := http.Header{}
	h.Set("Content-Type", event.ApplicationCloudEventsBatchJSON+"; charset=utf-8")
	req, err := o.newPost(h, body.Bytes())
	if err != nil {
		return engine.Permanent(fmt.Errorf("http output %s: %w", o.name, err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.cfg.Timeout)
	defer cancel()
	if err := o.post(ctx, req); err != nil {
		return fmt.Errorf("batch of %d events: %w", len(batch), err)
	}
	return nil
}

// stopBatcher ends run and waits for the batches in flight. Safe to call more than once and
// when batch mode never started.
func (o *Output) stopBatcher() {
	bt := &o.batches
	bt.once.Do(func() {}) // no batcher may start after this
	bt.close.Do(func() {
		if bt.stop != nil {
			close(bt.stop)
		}
	})
	bt.done.Wait()
}

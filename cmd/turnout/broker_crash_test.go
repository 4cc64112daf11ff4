package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/turnout-router/turnout/internal/testutil"
	"github.com/turnout-router/turnout/reliability"
)

// brokerClient connects a paho client (MQTT 3.1.1) to the embedded broker: a persistent
// session with the messages it receives sent to got when got is set, a clean one otherwise.
func brokerClient(t *testing.T, url, id string, got chan string) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(got == nil).
		SetProtocolVersion(4).SetConnectTimeout(2 * time.Second).SetAutoReconnect(false).
		SetMaxResumePubInFlight(1000)
	if got != nil {
		o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) })
	}
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s to %s: %v", id, url, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

// publishWindow publishes the messages ids with QoS 1, keeping up to window PUBLISHes
// unacknowledged, and returns the ids whose PUBACK arrived and those whose did not (the
// connection was lost: a publisher publishes them again). acked counts PUBACKs as they come.
func publishWindow(c paho.Client, topic string, ids []int, window int, acked *atomic.Int64) (ok, failed []int) {
	type inflight struct {
		id  int
		tok paho.Token
	}
	var mu sync.Mutex
	queue := make(chan inflight, window)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for f := range queue {
			if f.tok.WaitTimeout(10*time.Second) && f.tok.Error() == nil {
				acked.Add(1)
				mu.Lock()
				ok = append(ok, f.id)
				mu.Unlock()
			} else {
				mu.Lock()
				failed = append(failed, f.id)
				mu.Unlock()
			}
		}
	}()
	for _, id := range ids {
		queue <- inflight{id, c.Publish(topic, 1, false, strconv.Itoa(id))}
	}
	close(queue)
	<-done
	return ok, failed
}

// receiveAll reads got until every id of want arrived, and returns how many arrived twice or
// more (allowed: at least once). It fails the test with the ids still missing after within.
func receiveAll(t *testing.T, got chan string, want []int, within time.Duration) (duplicates int) {
	t.Helper()
	missing := map[string]bool{}
	for _, id := range want {
		missing[strconv.Itoa(id)] = true
	}
	seen := map[string]bool{}
	deadline := time.After(within)
	for len(missing) > 0 {
		select {
		case p := <-got:
			if seen[p] {
				duplicates++
			}
			seen[p] = true
			delete(missing, p)
		case <-deadline:
			t.Fatalf("%d of %d acknowledged messages missing after %v, e.g. %v", len(missing), len(want), within, firstKeys(missing, 10))
		}
	}
	// Duplicates still on their way.
	for {
		select {
		case p := <-got:
			if seen[p] {
				duplicates++
			}
			seen[p] = true
		case <-time.After(500 * time.Millisecond):
			return duplicates
		}
	}
}

func firstKeys(m map[string]bool, n int) []string {
	var out []string
	for k := range m {
		if len(out) == n {
			break
		}
		out = append(out, k)
	}
	return out
}

func seq(from, to int) []int {
	out := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// TestEmbeddedBrokerSurvivesSIGKILL runs the turnout binary with the embedded broker and
// broker.persistence, and kills it with SIGKILL: every QoS 1 message whose PUBACK a publisher
// received reaches the persistent subscriber after turnout is started again, whether it was
// queued before the kill or published while turnout was being killed (the publisher publishes
// again what was not acknowledged). Duplicates are allowed and reported.
func TestEmbeddedBrokerSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the turnout binary; run without -short")
	}
	dir := t.TempDir()
	brokerAddr, adminAddr, httpAddr := testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)
	path := writeConfig(t, dir, fmt.Sprintf(`
data_dir: "%s"
log: { level: info, format: text }
admin: { listen: "%s" }
broker: { enabled: true, listen: "%s", persistence: broker }
inputs:
  webhook: { type: http, listen: "%s" }
outputs:
  log: { type: file, path: "%s" }
routes:
  r: { inputs: [webhook], outputs: [log] }
`, filepath.Join(dir, "data"), adminAddr, brokerAddr, httpAddr, filepath.Join(dir, "events.jsonl")))
	p := reliability.StartTurnout(t, path, adminAddr)
	url := "tcp://" + brokerAddr

	t.Run("queued", func(t *testing.T) {
		const n = 500
		got := make(chan string, 4*n)
		sub := brokerClient(t, url, "crash-queued", got)
		if tok := sub.Subscribe("crash/queued", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		sub.Disconnect(50)
		var acked atomic.Int64
		ok, failed := publishWindow(brokerClient(t, url, "crash-queued-pub", nil), "crash/queued", seq(0, n), 100, &acked)
		if len(failed) > 0 {
			t.Fatalf("%d publications not acknowledged before the kill", len(failed))
		}
		p.Kill()
		p.Start("/readyz")
		brokerClient(t, url, "crash-queued", got)
		dups := receiveAll(t, got, ok, 30*time.Second)
		t.Logf("%d messages queued, turnout killed and restarted: all %d delivered, %d duplicates", n, len(ok), dups)
	})

	t.Run("mid-stream", func(t *testing.T) {
		const n = 5000
		got := make(chan string, 4*n)
		sub := brokerClient(t, url, "crash-stream", got)
		if tok := sub.Subscribe("crash/stream", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		sub.Disconnect(50)
		var acked atomic.Int64
		type result struct{ ok, failed []int }
		res := make(chan result, 1)
		pub := brokerClient(t, url, "crash-stream-pub", nil)
		go func() {
			ok, failed := publishWindow(pub, "crash/stream", seq(0, n), 100, &acked)
			res <- result{ok, failed}
		}()
		for acked.Load() < n/3 {
			time.Sleep(time.Millisecond)
		}
		p.Kill()
		r := <-res
		if len(r.failed) == 0 {
			t.Fatal("every publication was acknowledged before the kill: nothing was in flight")
		}
		p.Start("/readyz")
		// The publisher publishes again what was not acknowledged.
		again, failed := publishWindow(brokerClient(t, url, "crash-stream-pub", nil), "crash/stream", r.failed, 100, &acked)
		if len(failed) > 0 {
			t.Fatalf("%d publications not acknowledged after the restart", len(failed))
		}
		brokerClient(t, url, "crash-stream", got)
		dups := receiveAll(t, got, append(r.ok, again...), 60*time.Second)
		t.Logf("%d published, %d acknowledged before SIGKILL, %d published again after it: none missing, %d duplicates",
			n, len(r.ok), len(again), dups)
	})
}

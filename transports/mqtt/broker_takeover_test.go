package mqtt

import (
	"sync"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"

	"github.com/turnout-router/turnout/internal/testutil"
)

// TestBrokerReconnectDuringFanOut holds a publication between the broker library's lookup of
// a subscriber's session and the queueing of the message on it, reconnects the subscriber
// (the new connection takes the session over and the library copies its queue), then lets the
// publication go on: it lands on the old connection's object. The subscriber must still get
// it, with and without persistence.
func TestBrokerReconnectDuringFanOut(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  func(t *testing.T) BrokerConfig
	}{
		{"memory", func(*testing.T) BrokerConfig { return BrokerConfig{} }},
		{"persistence", func(t *testing.T) BrokerConfig { return BrokerConfig{Persistence: t.TempDir()} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, reg := startBroker(t, c.cfg(t))
			url := "tcp://" + b.Addr()
			id := uniq(t)
			sub, _ := persistentSubscriber(t, url, id, "fan/out")
			sub.Disconnect(50)

			held, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			hold := func(cl *mochi.Client, topic string) {
				if cl.ID == id && topic == "fan/out" {
					once.Do(func() { close(held); <-release })
				}
			}
			b.beforeDelivery.Store(&hold)
			pub := rawClient(t, url)
			published := make(chan error, 1)
			go func() {
				tok := pub.Publish("fan/out", 1, false, []byte("during-the-takeover"))
				tok.WaitTimeout(10 * time.Second)
				published <- tok.Error()
			}()
			select {
			case <-held:
			case <-time.After(10 * time.Second):
				t.Fatal("the publication did not reach the subscriber's session")
			}
			_, got := persistentSubscriber(t, url, id, "") // takes the session over
			close(release)
			if err := <-published; err != nil {
				t.Fatalf("publish: %v", err)
			}
			expectPayloads(t, got, []string{"during-the-takeover"})
			if v := testutil.Metric(t, reg, "turnout_broker_messages_requeued_total", nil); v != 1 {
				t.Errorf("turnout_broker_messages_requeued_total = %v, want 1", v)
			}
		})
	}
}

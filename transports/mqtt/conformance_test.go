package mqtt

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/transports/mqtt/mqtttest"
	"github.com/turnout-router/turnout/transports/transporttest"
)

// TestConformance runs the transport conformance suite against mosquitto: structured mode only
// (MQTT 3.1.1 has no binary mode); restarts use a private mosquitto.
func TestConformance(t *testing.T) {
	transporttest.Run(t, transporttest.Harness{
		Modes:      []transporttest.Mode{transporttest.Structured},
		CanRestart: true,
		Server: func(t *testing.T, restartable bool) transporttest.Server {
			if restartable {
				m := mqtttest.Start(t)
				return &confServer{url: m.URL(), restart: m.Restart}
			}
			return &confServer{url: mqtttest.Shared(t)}
		},
	})
}

// confServer is the conformance harness for one mosquitto. Each destination is a topic with an
// observer: a paho client with a persistent session subscribed at QoS 1 from the moment the
// topic is made, so Fetch sees what outputs published even across a broker restart.
type confServer struct {
	url     string
	restart func()

	mu  sync.Mutex
	obs map[string]chan []byte
}

var (
	_ transporttest.Server      = (*confServer)(nil)
	_ transporttest.WireFetcher = (*confServer)(nil)
)

func (s *confServer) Dest(t *testing.T) string {
	topic := "conf/" + uniq(t)
	ch := make(chan []byte, 1000)
	o := paho.NewClientOptions().AddBroker(s.url).SetClientID("obs-" + uniq(t)).SetCleanSession(false).
		SetProtocolVersion(4).SetConnectTimeout(2 * time.Second).SetAutoReconnect(true).
		SetMaxReconnectInterval(200 * time.Millisecond).SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond)
	o.SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { ch <- m.Payload() })
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("observer connect %s: %v", s.url, tok.Error())
	}
	if tok := c.Subscribe(topic, 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("observer subscribe %s: %v", topic, tok.Error())
	}
	id := o.ClientID
	t.Cleanup(func() { c.Disconnect(100); dropSession(t, s.url, id) })
	s.mu.Lock()
	if s.obs == nil {
		s.obs = map[string]chan []byte{}
	}
	s.obs[topic] = ch
	s.mu.Unlock()
	return topic
}

func (s *confServer) Input(t *testing.T, dest string) engine.Source {
	// One client id per destination: a second input resumes the first one's session.
	id := "in-" + strings.ReplaceAll(dest, "/", "-")
	t.Cleanup(func() { dropSession(t, s.url, id) })
	deps, _ := testDeps(t)
	in, err := newInput("conf", InputConfig{ConnectionConfig: fastConn(s.url, id), Topics: []string{dest}}, deps)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func (s *confServer) Output(t *testing.T, dest string, mode transporttest.Mode) engine.Sink {
	if mode != transporttest.Structured {
		t.Fatalf("mqtt has no %s mode", mode)
	}
	deps, _ := testDeps(t)
	o, err := newOutput("conf", OutputConfig{ConnectionConfig: fastConn(s.url, "out-"+uniq(t)), Topic: dest}, deps)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func (s *confServer) Publish(t *testing.T, dest string, mode transporttest.Mode, e *event.Event) {
	t.Helper()
	if mode != transporttest.Structured {
		t.Fatalf("mqtt has no %s mode", mode)
	}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	s.PublishRaw(t, dest, "", b)
}

func (s *confServer) PublishRaw(t *testing.T, dest, _ string, body []byte) {
	t.Helper()
	publish(t, rawClient(t, s.url), dest, body)
}

func (s *confServer) Fetch(t *testing.T, dest string, within time.Duration) (*event.Event, transporttest.Mode) {
	t.Helper()
	f := s.FetchWire(t, dest, within)
	return f.Event, f.Mode
}

func (s *confServer) FetchWire(t *testing.T, dest string, within time.Duration) transporttest.Fetched {
	t.Helper()
	s.mu.Lock()
	ch := s.obs[dest]
	s.mu.Unlock()
	select {
	case b := <-ch:
		e := event.New()
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("fetch %s: not a structured event: %v: %q", dest, err, b)
		}
		return transporttest.Fetched{Event: &e, Mode: transporttest.Structured, Body: b}
	case <-time.After(within):
		t.Fatalf("fetch %s: nothing within %v", dest, within)
		return transporttest.Fetched{}
	}
}

func (s *confServer) Restart(t *testing.T) {
	if s.restart == nil {
		t.Fatal("restart of the shared mosquitto")
	}
	s.restart()
}

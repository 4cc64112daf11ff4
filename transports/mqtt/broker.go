package mqtt

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/transports/internal/tmetrics"
)

// BrokerConfig configures the embedded MQTT broker (the broker: block of the configuration).
//
// The embedded broker keeps everything in memory: sessions, subscriptions and queued messages
// do not survive a restart of turnout. It queues at most max_queued unacknowledged QoS 1
// messages per persistent session; a PUBLISH that would exceed that for any subscriber is
// refused (no PUBACK, and the publisher is disconnected, so it publishes again later) instead
// of being accepted and dropped.
type BrokerConfig struct {
	// Enabled starts the embedded broker with turnout.
	Enabled bool `yaml:"enabled"`
	// Listen is the TCP address the broker listens on (default 127.0.0.1:1883). Port 0 picks a
	// free port.
	Listen string `yaml:"listen"`
	// Username, when set, is required of every client, with Password. Default: anonymous
	// clients are allowed.
	Username string `yaml:"username"`
	// Password goes with Username.
	Password string `yaml:"password"`
	// MaxQueued is the most unacknowledged QoS 1/2 messages one client session may hold
	// (default and maximum 60000).
	MaxQueued int `yaml:"max_queued"`
}

const (
	defaultBrokerListen = "127.0.0.1:1883"
	maxBrokerQueued     = 60000
	// brokerInflightCap is the broker's hard per-session limit; the gap to max_queued absorbs
	// publications that race past the max_queued check.
	brokerInflightCap = math.MaxUint16
)

// Broker is the embedded MQTT broker.
type Broker struct {
	cfg     BrokerConfig
	log     *slog.Logger
	srv     *mochi.Server
	lis     *listeners.TCP
	dropped prometheus.Counter
	refused prometheus.Counter

	seq atomic.Int64 // publish sequence, see brokerHook.OnPublish

	mu      sync.Mutex
	started bool
	closed  bool
}

// NewBroker validates cfg and builds the broker; it does not listen yet (Start does).
func NewBroker(cfg BrokerConfig, deps engine.Deps) (*Broker, error) {
	if cfg.Listen == "" {
		cfg.Listen = defaultBrokerListen
	}
	if cfg.MaxQueued == 0 {
		cfg.MaxQueued = maxBrokerQueued
	}
	if cfg.MaxQueued < 0 || cfg.MaxQueued > maxBrokerQueued {
		return nil, fmt.Errorf("broker.max_queued: %d is outside 1..%d", cfg.MaxQueued, maxBrokerQueued)
	}
	if cfg.Password != "" && cfg.Username == "" {
		return nil, errors.New("broker.password: set broker.username too")
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	b := &Broker{cfg: cfg, log: log.With("component", "broker")}
	var err error
	// Reused when already registered: a configuration check builds a broker before the real one.
	if b.dropped, err = tmetrics.RegisterOrReuse(deps.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "turnout_broker_messages_dropped_total",
		Help: "Messages the embedded MQTT broker dropped for a subscriber (queue limit or expiry).",
	})); err != nil {
		return nil, fmt.Errorf("mqtt broker %w", err)
	}
	if b.refused, err = tmetrics.RegisterOrReuse(deps.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "turnout_broker_publishes_refused_total",
		Help: "QoS 1/2 publications the embedded MQTT broker refused because a subscriber's queue was full.",
	})); err != nil {
		return nil, fmt.Errorf("mqtt broker %w", err)
	}

	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumInflight = brokerInflightCap            // per-session queue of QoS>0 messages
	caps.MaximumClientWritesPending = brokerInflightCap // a full write queue drops a message
	caps.MaximumMessageExpiryInterval = 0               // never expire queued messages
	caps.ReceiveMaximum = math.MaxUint16                // QoS>0 PUBLISHes a client may have unacked
	caps.MaximumSessionExpiryInterval = math.MaxUint32  // keep persistent sessions
	b.srv = mochi.New(&mochi.Options{
		Capabilities:           caps,
		Logger:                 slog.New(warnOnly{b.log.Handler()}),
		SysTopicResendInterval: 60,
	})
	if err := b.srv.AddHook(&brokerHook{b: b}, nil); err != nil {
		return nil, fmt.Errorf("mqtt broker hook: %w", err)
	}
	return b, nil
}

// Start listens on cfg.Listen and serves until Close. It returns once the listener is bound.
func (b *Broker) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started || b.closed {
		return errors.New("mqtt broker: started twice or after Close")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	b.lis = listeners.NewTCP(listeners.Config{Type: "tcp", ID: "turnout", Address: b.cfg.Listen})
	if err := b.srv.AddListener(b.lis); err != nil {
		return fmt.Errorf("mqtt broker listen %s: %w", b.cfg.Listen, err)
	}
	if err := b.srv.Serve(); err != nil {
		return fmt.Errorf("mqtt broker serve %s: %w", b.cfg.Listen, err)
	}
	b.started = true
	b.log.Info("mqtt broker listening", "addr", b.lis.Address(),
		"persistence", "none: sessions and queued messages are lost when turnout stops")
	return nil
}

// Addr returns the address the broker listens on (the bound port when Listen had port 0).
func (b *Broker) Addr() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lis == nil {
		return b.cfg.Listen
	}
	return b.lis.Address()
}

// Close disconnects every client and stops listening. Queued messages are lost (in-memory).
func (b *Broker) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	started := b.started
	b.mu.Unlock()
	if !started {
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- b.srv.Close() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("mqtt broker close: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("mqtt broker close: %w", ctx.Err())
	}
}

// brokerHook authenticates clients, refuses publications that would overflow a subscriber's
// queue, and counts drops. mochi calls it on client goroutines.
type brokerHook struct {
	mochi.HookBase
	b *Broker
}

func (h *brokerHook) ID() string { return "turnout" }

func (h *brokerHook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnPublish,
		mochi.OnPublishDropped, mochi.OnQosDropped,
	}, []byte{b})
}

func (h *brokerHook) OnConnectAuthenticate(_ *mochi.Client, pk packets.Packet) bool {
	if h.b.cfg.Username == "" {
		return true
	}
	u := subtle.ConstantTimeCompare(pk.Connect.Username, []byte(h.b.cfg.Username))
	p := subtle.ConstantTimeCompare(pk.Connect.Password, []byte(h.b.cfg.Password))
	return u&p == 1
}

func (h *brokerHook) OnACLCheck(*mochi.Client, string, bool) bool { return true }

// OnPublish refuses a QoS>0 publication when a subscriber's queue holds max_queued messages:
// no PUBACK is sent and the publisher is disconnected, so it publishes the message again after
// reconnecting [MQTT-4.4.0-1]. Accepting it would make the broker drop it later.
func (h *brokerHook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Qos == 0 || cl.Net.Inline {
		return pk, nil
	}
	subs := h.b.srv.Topics.Subscribers(pk.TopicName)
	full := func(id string) bool {
		sub, ok := h.b.srv.Clients.Get(id)
		return ok && sub.State.Inflight.Len() >= h.b.cfg.MaxQueued
	}
	for id := range subs.Subscriptions {
		if full(id) {
			return h.refuse(cl, pk, id)
		}
	}
	for _, group := range subs.Shared {
		for id := range group {
			if full(id) {
				return h.refuse(cl, pk, id)
			}
		}
	}
	// The broker library resends a session's queued messages sorted by Created, a time in
	// seconds, so messages of the same second came back in random order. A sequence number
	// restores publish order ([MQTT-4.6.0] ordering); Created serves nothing else here because
	// message expiry is off (MaximumMessageExpiryInterval 0). The library compares only its low
	// 16 bits: the order can still break where the sequence wraps, every 65536 messages.
	pk.Created = h.b.seq.Add(1)
	return pk, nil
}

func (h *brokerHook) refuse(cl *mochi.Client, pk packets.Packet, subscriber string) (packets.Packet, error) {
	h.b.refused.Inc()
	h.b.log.Warn("mqtt broker refused a publication: subscriber queue full",
		"publisher", cl.ID, "topic", pk.TopicName, "subscriber", subscriber, "max_queued", h.b.cfg.MaxQueued)
	if cl.Properties.ProtocolVersion == 5 {
		_ = h.b.srv.DisconnectClient(cl, packets.ErrQuotaExceeded)
	} else {
		cl.Stop(packets.ErrQuotaExceeded) // MQTT 3.1.1 has no server DISCONNECT: close the connection
	}
	return pk, packets.ErrRejectPacket
}

func (h *brokerHook) OnPublishDropped(cl *mochi.Client, pk packets.Packet) {
	h.b.dropped.Inc()
	h.b.log.Error("mqtt broker dropped a message", "client", cl.ID, "topic", pk.TopicName)
}

func (h *brokerHook) OnQosDropped(cl *mochi.Client, pk packets.Packet) {
	if cl.IsTakenOver() || cl.Properties.Clean {
		// Moved to the session's new connection, or a clean session ended as its client asked.
		return
	}
	h.b.dropped.Inc()
	h.b.log.Error("mqtt broker dropped a queued message", "client", cl.ID, "packet_id", pk.PacketID)
}

// warnOnly passes the broker library's records at Warn and above to turnout's logger; its Info
// records (one per client connection) would drown turnout's own.
type warnOnly struct{ slog.Handler }

func (w warnOnly) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && w.Handler.Enabled(ctx, l)
}

func (w warnOnly) WithAttrs(a []slog.Attr) slog.Handler { return warnOnly{w.Handler.WithAttrs(a)} }
func (w warnOnly) WithGroup(n string) slog.Handler      { return warnOnly{w.Handler.WithGroup(n)} }

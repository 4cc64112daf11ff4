package mqtt

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/engine"
	"github.com/turnout-router/turnout/transports/internal/tlsconf"
	"github.com/turnout-router/turnout/transports/internal/tmetrics"
)

// BrokerConfig configures the embedded MQTT broker (the broker: block of the configuration).
//
// Without Persistence the embedded broker keeps everything in memory: sessions, subscriptions,
// retained and queued messages are lost when turnout stops. With Persistence it keeps them in
// DIR/broker.db, written before they are acknowledged where the promise needs it, so they
// survive a restart and a crash (SIGKILL, power loss) of turnout; see broker_store.go.
//
// It queues at most max_queued unacknowledged QoS 1 messages per persistent session; a PUBLISH
// that would exceed that for any subscriber is refused (no PUBACK, and the publisher is
// disconnected, so it publishes again later) instead of being accepted and dropped.
//
// Listeners: a plain TCP listener on Listen (unless Listen is "none") and a TLS listener when
// TLS is set. Clients: anonymous unless Username/Password (one user allowed everything) or
// Users (each with its own topic filters) is set, never both.
type BrokerConfig struct {
	// Enabled starts the embedded broker with turnout.
	Enabled bool `yaml:"enabled"`
	// Listen is the plain TCP address the broker listens on (default 127.0.0.1:1883). Port 0
	// picks a free port. "none" turns the plain listener off (then TLS is required).
	Listen string `yaml:"listen"`
	// TLS adds a TLS listener.
	TLS BrokerTLSConfig `yaml:"tls"`
	// Username, when set, is required of every client, with Password; that one user may
	// publish and subscribe anywhere. Default: anonymous clients are allowed.
	Username string `yaml:"username"`
	// Password goes with Username.
	Password string `yaml:"password"`
	// Users, when set, are the only clients allowed, each to its own topic filters. Not together
	// with Username/Password.
	Users []BrokerUser `yaml:"users"`
	// MaxQueued is the most unacknowledged QoS 1/2 messages one client session may hold
	// (default and maximum 60000).
	MaxQueued int `yaml:"max_queued"`
	// Persistence is the directory of the broker's store (DIR/broker.db); a relative path is
	// resolved under turnout's data_dir. Empty: in memory only. One turnout at a time may use a
	// directory.
	Persistence string `yaml:"persistence"`
}

// BrokerTLSConfig is broker.tls: a TLS listener, with mutual TLS when client_ca_file is set.
type BrokerTLSConfig struct {
	// Listen is the TLS listener's address (default 127.0.0.1:8883). Port 0 picks a free port.
	Listen         string `yaml:"listen"`
	tlsconf.Server `yaml:",inline"`
}

// IsZero reports whether no TLS key is set (no TLS listener).
func (c BrokerTLSConfig) IsZero() bool { return c == BrokerTLSConfig{} }

const (
	defaultBrokerListen    = "127.0.0.1:1883"
	defaultBrokerTLSListen = "127.0.0.1:8883"
	brokerListenNone       = "none"
	maxBrokerQueued        = 60000
	// brokerInflightCap is the broker's hard per-session limit; the gap to max_queued absorbs
	// publications that race past the max_queued check.
	brokerInflightCap = math.MaxUint16
)

// Broker is the embedded MQTT broker.
type Broker struct {
	cfg     BrokerConfig
	log     *slog.Logger
	srv     *mochi.Server
	tlsConf *tls.Config   // nil without broker.tls
	users   []*brokerUser // nil: anonymous clients allowed
	byName  map[string]*brokerUser
	dbPath  string // DIR/broker.db, "" without persistence

	dropped  prometheus.Counter
	refused  prometheus.Counter
	requeued prometheus.Counter
	denied   *prometheus.CounterVec
	sm       *storeMetrics

	seq atomic.Int64 // publish sequence, see brokerHook.OnPublish

	// store is the open persistence file (nil without persistence); set by Start before the
	// library reads it and before any client connects.
	store *store
	// replayCl publishes the pending publications of the last run (Start, before the listeners
	// serve); replaying is the record it is publishing. Both are used on Start's goroutine only.
	replayCl  *mochi.Client
	replaying *storage.Message
	// afterPending, set by tests, runs once a pending publication is committed and before its
	// PUBACK is sent. beforeDelivery, set by tests, runs when the library is about to queue a
	// message on topic for cl (between its lookup of the session and the queueing).
	afterPending   atomic.Pointer[func()]
	beforeDelivery atomic.Pointer[func(cl *mochi.Client, topic string)]

	mu        sync.Mutex
	listeners map[string]net.Listener // by listener id: "tcp", "tls"
	started   bool
	closed    bool
}

// NewBroker validates cfg and builds the broker; it neither listens nor opens its store (Start
// does), so that `turnout validate` can build one beside a running turnout. Errors name the key
// ("broker.tls.key_file: ...").
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
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	b := &Broker{cfg: cfg, log: log.With("component", "broker")}
	var err error
	if b.users, err = brokerUsers(cfg); err != nil {
		return nil, err
	}
	b.byName = map[string]*brokerUser{}
	for _, u := range b.users {
		b.byName[string(u.name)] = u
	}
	if !cfg.TLS.IsZero() {
		if b.cfg.TLS.Listen == "" {
			b.cfg.TLS.Listen = defaultBrokerTLSListen
		}
		if b.tlsConf, err = cfg.TLS.Config(); err != nil {
			return nil, fmt.Errorf("broker.%w", err)
		}
	} else if cfg.Listen == brokerListenNone {
		return nil, errors.New("broker.listen: none turns the plain listener off, and broker.tls sets no other: the broker would have no listener")
	}
	if cfg.Persistence != "" {
		dir := cfg.Persistence
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(deps.DataDir, dir)
		}
		if err := checkStoreDir(dir); err != nil {
			return nil, fmt.Errorf("broker.persistence: %w", err)
		}
		b.dbPath = filepath.Join(dir, brokerDBFile)
	}

	// Reused when already registered: a configuration check builds a broker before the real one.
	if b.dropped, err = tmetrics.RegisterOrReuse(deps.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "turnout_broker_messages_dropped_total",
		Help: "Messages the embedded MQTT broker dropped for a subscriber (queue limit or expiry).",
	})); err != nil {
		return nil, fmt.Errorf("mqtt broker %w", err)
	}
	if b.refused, err = tmetrics.RegisterOrReuse(deps.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "turnout_broker_publishes_refused_total",
		Help: "QoS 1/2 publications the embedded MQTT broker refused (no PUBACK): a subscriber's queue was full, or the publication could not be written to its store.",
	})); err != nil {
		return nil, fmt.Errorf("mqtt broker %w", err)
	}
	if b.requeued, err = tmetrics.RegisterOrReuse(deps.Registerer, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "turnout_broker_messages_requeued_total",
		Help: "QoS 1/2 messages published to a session while a new connection took it over, queued again on the new connection (the broker library would have lost them).",
	})); err != nil {
		return nil, fmt.Errorf("mqtt broker %w", err)
	}
	if b.denied, err = tmetrics.RegisterOrReuse(deps.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "turnout_broker_access_denied_total",
		Help: "Connections (bad username or password), publications and subscriptions (topic not allowed for the user) the embedded MQTT broker refused, by action.",
	}, []string{"action"})); err != nil {
		return nil, fmt.Errorf("mqtt broker %w", err)
	}
	if b.dbPath != "" {
		if b.sm, err = newStoreMetrics(deps.Registerer); err != nil {
			return nil, fmt.Errorf("mqtt broker %w", err)
		}
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
	if b.dbPath != "" {
		if err := b.srv.AddHook(&storeHook{b: b}, nil); err != nil {
			return nil, fmt.Errorf("mqtt broker hook: %w", err)
		}
	}
	// After the store's hook: a message it re-queues is stored after the store saw it arrive.
	if err := b.srv.AddHook(newTakeoverHook(b), nil); err != nil {
		return nil, fmt.Errorf("mqtt broker hook: %w", err)
	}
	return b, nil
}

// Start binds the listeners, opens the store (restoring sessions, subscriptions, queued and
// retained messages, then publishing again the publications a crash interrupted), and serves
// until Close. It returns once the listeners are bound and serving. A store another process
// holds is an error naming its path.
func (b *Broker) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started || b.closed {
		return errors.New("mqtt broker: started twice or after Close")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	lns := map[string]net.Listener{}
	closeAll := func() {
		for _, l := range lns {
			l.Close()
		}
	}
	var lc net.ListenConfig
	if b.cfg.Listen != brokerListenNone {
		l, err := lc.Listen(ctx, "tcp", b.cfg.Listen)
		if err != nil {
			return fmt.Errorf("mqtt broker listen %s: %w", b.cfg.Listen, err)
		}
		lns["tcp"] = l
	}
	if b.tlsConf != nil {
		l, err := lc.Listen(ctx, "tcp", b.cfg.TLS.Listen)
		if err != nil {
			closeAll()
			return fmt.Errorf("mqtt broker listen %s (tls): %w", b.cfg.TLS.Listen, err)
		}
		lns["tls"] = tls.NewListener(l, b.tlsConf)
	}
	persistence := "none: sessions and queued messages are lost when turnout stops"
	if b.dbPath != "" {
		st, err := openStore(b.dbPath, b.log, b.sm)
		if err != nil {
			closeAll()
			return err
		}
		b.store = st
		persistence = b.dbPath
	}
	// Serve reads the store (the storeHook's Stored* methods) before it returns. No listener is
	// attached yet, so the pending publications go out before any client can publish.
	if err := b.srv.Serve(); err != nil {
		closeAll()
		_ = b.srv.Close() // stops the hooks, which closes the store
		return fmt.Errorf("mqtt broker start: %w", err)
	}
	if b.store != nil {
		if err := b.replayPending(); err != nil {
			closeAll()
			_ = b.srv.Close()
			return err
		}
	}
	for _, id := range []string{"tcp", "tls"} {
		l, ok := lns[id]
		if !ok {
			continue
		}
		if err := b.srv.AddListener(newBrokerListener(id, l, &b.srv.Listeners.ClientsWg)); err != nil {
			closeAll()
			_ = b.srv.Close()
			return fmt.Errorf("mqtt broker listener %s: %w", id, err)
		}
		b.srv.Listeners.Serve(id, b.srv.EstablishConnection)
	}
	b.listeners = lns
	b.started = true
	attrs := []any{"persistence", persistence, "users", len(b.users)}
	if l, ok := lns["tcp"]; ok {
		attrs = append(attrs, "addr", l.Addr().String())
	}
	if l, ok := lns["tls"]; ok {
		attrs = append(attrs, "tls_addr", l.Addr().String(), "client_certificates", b.tlsConf.ClientCAs != nil)
	}
	b.log.Info("mqtt broker listening", attrs...)
	return nil
}

// Addr returns the address of the plain listener (the bound port when Listen had port 0), or
// cfg.Listen before Start; "" when the plain listener is off.
func (b *Broker) Addr() string { return b.addr("tcp", b.cfg.Listen) }

// TLSAddr returns the address of the TLS listener, like Addr.
func (b *Broker) TLSAddr() string { return b.addr("tls", b.cfg.TLS.Listen) }

func (b *Broker) addr(id, configured string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if l, ok := b.listeners[id]; ok {
		return l.Addr().String()
	}
	if configured == brokerListenNone {
		return ""
	}
	return configured
}

// Close disconnects every client, stops listening and, with persistence, writes what is queued
// and closes the store. Without persistence queued messages are lost.
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

// brokerHook authenticates clients, checks their topics against their user's filters, refuses
// publications that would overflow a subscriber's queue or that cannot be stored, and counts
// drops. mochi calls it on client goroutines (and on Start's goroutine for replayed
// publications).
type brokerHook struct {
	mochi.HookBase
	b *Broker
}

func (h *brokerHook) ID() string { return "turnout" }

func (h *brokerHook) Provides(b byte) bool {
	return bytes.Contains([]byte{
		mochi.OnConnect, mochi.OnConnectAuthenticate, mochi.OnACLCheck, mochi.OnPublish, mochi.OnPublished,
		mochi.OnPublishDropped, mochi.OnQosDropped,
	}, []byte{b})
}

// OnConnect turns off topic aliases from the broker to this client (an MQTT 5 client's Topic
// Alias Maximum [MQTT-3.1.2-26] allows them, nothing requires them): a queued message that
// carries an alias instead of its topic would be resent on a new connection, or after a
// restart, where the alias means nothing.
func (h *brokerHook) OnConnect(cl *mochi.Client, _ packets.Packet) error {
	cl.Properties.Props.TopicAliasMaximum = 0
	return nil
}

// OnConnectAuthenticate accepts every client when no user is configured; otherwise only one
// whose username and password match a user [MQTT-3.1.4-2]. A refusal is logged without the
// password and counted.
func (h *brokerHook) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	if h.b.users == nil {
		return true
	}
	if authenticate(h.b.users, pk.Connect.Username, pk.Connect.Password) != nil {
		return true
	}
	h.b.denied.WithLabelValues("connect").Inc()
	h.b.log.Warn("mqtt broker refused a connection: bad username or password",
		"client", cl.ID, "username", string(pk.Connect.Username), "remote", cl.Net.Remote, "listener", cl.Net.Listener)
	return false
}

// OnACLCheck allows what the client's user may do: publish to topic (write), or subscribe to
// the filter topic / receive a message on topic (!write). A refused publication is answered
// as the library does (dropped at QoS 0, PUBACK 0x87 for MQTT 5, disconnect for 3.1.1); a
// refused subscription gets a failure return code in the SUBACK.
func (h *brokerHook) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	if f := h.b.beforeDelivery.Load(); f != nil && !write {
		(*f)(cl, topic)
	}
	if h.b.users == nil {
		return true
	}
	if u := h.b.byName[string(cl.Properties.Username)]; u != nil && u.allows(topic, write) {
		return true
	}
	action, what := "subscribe", "mqtt broker refused a subscription: filter not allowed for the user"
	if write {
		action, what = "publish", "mqtt broker refused a publication: topic not allowed for the user"
	}
	h.b.denied.WithLabelValues(action).Inc()
	h.b.log.Warn(what, "client", cl.ID, "username", string(cl.Properties.Username), "topic", topic)
	return false
}

// OnPublish refuses a QoS>0 publication when a subscriber's queue holds max_queued messages:
// no PUBACK is sent and the publisher is disconnected, so it publishes the message again after
// reconnecting [MQTT-4.4.0-1]. Accepting it would make the broker drop it later.
//
// With persistence, a QoS>0 publication that a persistent session subscribed to with QoS>0 (or
// that is retained) is written to the store as a pending publication, and OnPublish returns
// only once that is committed: the library sends the PUBACK after OnPublish returns but stores
// the subscribers' copies only after that, so without this record a crash in between would
// lose a message whose publisher was told it is safe [MQTT-4.3.2-2]. OnPublished deletes the
// record once the copies are queued for writing; Start publishes the records it finds again.
// A record that cannot be written refuses the publication like a full queue.
func (h *brokerHook) OnPublish(cl *mochi.Client, pk packets.Packet) (packets.Packet, error) {
	b := h.b
	if cl == b.replayCl && b.replaying != nil {
		// A publication of the last run, published again: after everything restored, and as
		// coming from its original publisher (for No Local [MQTT-3.8.3-3]).
		pk.Created = b.seq.Add(1)
		pk.Origin = b.replaying.Origin
		return pk, nil
	}
	if pk.FixedHeader.Qos == 0 || cl.Net.Inline {
		return pk, nil
	}
	subs := b.srv.Topics.Subscribers(pk.TopicName)
	durable := pk.FixedHeader.Retain
	full := func(id string, sub packets.Subscription) bool {
		s, ok := b.srv.Clients.Get(id)
		if !ok {
			return false
		}
		if sub.Qos > 0 && sessionOutlivesConnection(s) {
			durable = true
		}
		return s.State.Inflight.Len() >= b.cfg.MaxQueued
	}
	for id, sub := range subs.Subscriptions {
		if full(id, sub) {
			return h.refuse(cl, pk, "subscriber queue full", "subscriber", id, "max_queued", b.cfg.MaxQueued)
		}
	}
	for _, group := range subs.Shared {
		for id, sub := range group {
			if full(id, sub) {
				return h.refuse(cl, pk, "subscriber queue full", "subscriber", id, "max_queued", b.cfg.MaxQueued)
			}
		}
	}
	// The broker library resends a session's queued messages sorted by Created, a time in
	// seconds, so messages of the same second came back in random order. A sequence number
	// restores publish order ([MQTT-4.6.0] ordering); Created serves nothing else here because
	// message expiry is off (MaximumMessageExpiryInterval 0). The library compares only its low
	// 16 bits: the order can still break where the sequence wraps, every 65536 messages. With
	// persistence the sequence goes on above the highest one restored.
	pk.Created = b.seq.Add(1)
	if b.store != nil && durable {
		if err := b.store.putPending(pk); err != nil {
			return h.refuse(cl, pk, "persistence failed", "err", err)
		}
		if f := b.afterPending.Load(); f != nil {
			(*f)()
		}
	}
	return pk, nil
}

// OnPublished runs once the library queued the subscribers' copies (whose records the store
// writes in that order): the pending record of the publication, if any, can go.
func (h *brokerHook) OnPublished(cl *mochi.Client, pk packets.Packet) {
	b := h.b
	if b.store == nil {
		return
	}
	if cl == b.replayCl && b.replaying != nil {
		b.store.donePending(b.replaying.Created)
		return
	}
	if pk.FixedHeader.Qos > 0 && !cl.Net.Inline {
		b.store.donePending(pk.Created)
	}
}

func (h *brokerHook) refuse(cl *mochi.Client, pk packets.Packet, reason string, attrs ...any) (packets.Packet, error) {
	h.b.refused.Inc()
	h.b.log.Warn("mqtt broker refused a publication: "+reason,
		append([]any{"publisher", cl.ID, "topic", pk.TopicName}, attrs...)...)
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

// sessionOutlivesConnection reports whether cl's session is kept after its connection ends:
// MQTT 3.1.1 CleanSession=0 [MQTT-3.1.2-4], MQTT 5 Session Expiry Interval > 0 [MQTT-3.1.2-23].
// Only such sessions are stored.
func sessionOutlivesConnection(cl *mochi.Client) bool {
	if cl.Net.Inline {
		return false
	}
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

// warnOnly passes the broker library's records at Warn and above to turnout's logger; its Info
// records (one per client connection) would drown turnout's own. It also drops the warning
// without a message the library's listener logs for the connection it closes itself at
// shutdown ("use of closed network connection"), which reads like a fault on every stop.
type warnOnly struct{ slog.Handler }

func (w warnOnly) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && w.Handler.Enabled(ctx, l)
}

func (w warnOnly) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "" {
		closed := false
		r.Attrs(func(a slog.Attr) bool {
			if err, ok := a.Value.Any().(error); ok && errors.Is(err, net.ErrClosed) {
				closed = true
			}
			return !closed
		})
		if closed {
			return nil
		}
	}
	return w.Handler.Handle(ctx, r)
}

func (w warnOnly) WithAttrs(a []slog.Attr) slog.Handler { return warnOnly{w.Handler.WithAttrs(a)} }
func (w warnOnly) WithGroup(n string) slog.Handler      { return warnOnly{w.Handler.WithGroup(n)} }

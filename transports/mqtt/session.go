package mqtt

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/transports/internal/reconnect"
	"github.com/turnout-router/turnout/transports/internal/tmetrics"
)

// disconnectQuiesce is how long a deliberate disconnect waits for queued packets (PUBACKs) to
// reach the network, in milliseconds.
const disconnectQuiesce = 250

// stableConnection is how long a connection must have lasted for its end to restart the
// reconnect backoff at its minimum.
const stableConnection = 10 * time.Second

// session owns one paho client and keeps it connected: it connects, reconnects with backoff
// after a lost connection, and reconnects on request (an input's rejected message). paho's own
// reconnect logic is off.
//
// Every connection attempt gets a new generation number, and so does the moment a connection
// ends: a message received on generation g may be acknowledged only while gen() == g, as a
// PUBACK for a message from an ended connection is meaningless on the next one.
type session struct {
	name   string
	kind   string // "input" or "output", for logs
	cfg    ConnectionConfig
	client paho.Client
	log    *slog.Logger
	gauge  prometheus.Gauge

	// onConnect runs after each successful CONNACK on the run goroutine (the input subscribes
	// there). first is true for the first connection of this process. An error drops the
	// connection and counts as a failed attempt.
	onConnect func(ctx context.Context, sessionPresent, first bool) error

	generation atomic.Uint64
	connected  atomic.Bool
	healthy    atomic.Bool   // an input acknowledged a message since the last reconnect request
	lost       chan error    // connection lost (from paho's handler)
	kickGen    atomic.Uint64 // the generation a reconnect was last requested for
	kick       chan struct{} // signals a reconnect request (capacity 1)
	stop       context.CancelFunc
	done       chan struct{}
	startOnce  sync.Once
}

func newSession(name, kind string, cfg ConnectionConfig, opts *paho.ClientOptions, log *slog.Logger, gauge prometheus.Gauge) *session {
	s := &session{
		name:  name,
		kind:  kind,
		cfg:   cfg,
		log:   log,
		gauge: gauge,
		lost:  make(chan error, 1),
		kick:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	opts.SetConnectionLostHandler(func(_ paho.Client, err error) {
		select {
		case s.lost <- err:
		default:
		}
	})
	s.client = paho.NewClient(opts)
	gauge.Set(0)
	return s
}

// gen returns the current connection generation.
func (s *session) gen() uint64 { return s.generation.Load() }

// ready reports whether the connection is up (and, for an input, subscribed).
func (s *session) ready() bool { return s.connected.Load() }

func (s *session) setConnected(up bool) {
	s.connected.Store(up)
	if up {
		s.gauge.Set(1)
	} else {
		s.gauge.Set(0)
	}
}

// requestReconnect asks the run loop to drop and resume the connection of generation g; it
// never blocks, and requests for an ended generation are ignored.
func (s *session) requestReconnect(g uint64) {
	s.kickGen.Store(g)
	select {
	case s.kick <- struct{}{}:
	default: // a signal is pending; the run loop reads kickGen when it takes it
	}
}

// start launches the run loop and waits until the first connection attempt ended (connected or
// failed), or ctx ends. A failed first attempt is logged and retried in the background: turnout
// starts even when a broker is down, and Ready() tells.
func (s *session) start(ctx context.Context) {
	s.startOnce.Do(func() {
		runCtx, cancel := context.WithCancel(context.Background())
		s.stop = cancel
		first := make(chan struct{})
		go s.run(runCtx, first)
		select {
		case <-first:
		case <-ctx.Done():
		}
	})
}

// close stops the run loop and disconnects. It waits for the loop to end or ctx.
func (s *session) close(ctx context.Context) error {
	started := false
	s.startOnce.Do(func() {}) // a session that never started has nothing to stop
	if s.stop != nil {
		started = true
		s.stop()
	}
	if !started {
		return nil
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("mqtt %s %s close: %w", s.kind, s.name, ctx.Err())
	}
}

// run is the connection loop; it runs on its own goroutine until ctx ends.
func (s *session) run(ctx context.Context, first chan struct{}) {
	defer close(s.done)
	backoff := s.cfg.ReconnectMinBackoff
	isFirst := true
	signalFirst := func() {
		if first != nil {
			close(first)
			first = nil
		}
	}
	defer signalFirst()
	// ended returns the wait before reconnecting after a connection that began at t ended: the
	// minimum after a stable connection, else the next step of the backoff (a flapping broker).
	ended := func(t time.Time) time.Duration {
		if time.Since(t) >= stableConnection {
			backoff = s.cfg.ReconnectMinBackoff
		}
		w := backoff
		backoff = min(2*backoff, s.cfg.ReconnectMaxBackoff)
		return w
	}
	for {
		// Drop a stale loss report of the previous connection.
		select {
		case <-s.lost:
		default:
		}
		s.generation.Add(1)
		g := s.gen()
		err := s.connect(ctx, isFirst)
		if ctx.Err() != nil {
			s.generation.Add(1)
			s.setConnected(false)
			s.client.Disconnect(disconnectQuiesce)
			return
		}
		if err != nil {
			s.generation.Add(1)
			s.log.Warn("mqtt connect failed", "error", err, "retry_in", backoff)
			signalFirst()
			if !reconnect.Sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, s.cfg.ReconnectMaxBackoff)
			continue
		}
		isFirst = false
		s.setConnected(true)
		s.log.Info("mqtt connected")
		signalFirst()
		connectedAt := time.Now()

		wait := s.cfg.ReconnectMinBackoff
		// A safety net in case paho ended a connection without reporting it.
		check := time.NewTicker(time.Second)
	connected:
		for {
			select {
			case <-check.C:
				if s.client.IsConnectionOpen() {
					continue
				}
				s.generation.Add(1)
				s.setConnected(false)
				wait = ended(connectedAt)
				s.log.Warn("mqtt connection ended", "retry_in", wait)
				break connected
			case <-ctx.Done():
				check.Stop()
				s.generation.Add(1)
				s.setConnected(false)
				s.client.Disconnect(disconnectQuiesce)
				return
			case err := <-s.lost:
				if s.client.IsConnectionOpen() {
					continue // a stale report
				}
				s.generation.Add(1)
				s.setConnected(false)
				wait = ended(connectedAt)
				s.log.Warn("mqtt connection lost", "error", err, "retry_in", wait)
				break connected
			case <-s.kick:
				if s.kickGen.Load() != g {
					continue // for a connection that already ended
				}
				if s.healthy.Swap(false) {
					backoff = s.cfg.ReconnectMinBackoff // messages were acked since the last rejection
				}
				s.generation.Add(1)
				s.setConnected(false)
				s.client.Disconnect(disconnectQuiesce)
				wait = backoff
				backoff = min(2*backoff, s.cfg.ReconnectMaxBackoff)
				s.log.Info("mqtt reconnecting to have rejected messages redelivered", "retry_in", wait)
				break connected
			}
		}
		check.Stop()
		if !reconnect.Sleep(ctx, wait) {
			return
		}
	}
}

// resetBackoff is called by an input once a message was acknowledged: the session works, so the
// next rejection reconnects after the minimum backoff. Safe from any goroutine.
func (s *session) resetBackoff() {
	if !s.healthy.Load() {
		s.healthy.Store(true)
	}
}

// connect makes one connection attempt (over every configured broker) and runs onConnect.
func (s *session) connect(ctx context.Context, first bool) error {
	tok := s.client.Connect()
	if err := waitToken(ctx, tok); err != nil {
		return fmt.Errorf("mqtt connect %v: %w", s.cfg.Brokers, err)
	}
	ct, _ := tok.(*paho.ConnectToken)
	present := ct != nil && ct.SessionPresent()
	if s.onConnect != nil {
		if err := s.onConnect(ctx, present, first); err != nil {
			s.client.Disconnect(disconnectQuiesce)
			return err
		}
	}
	return nil
}

// waitToken waits for tok or ctx and returns the token's error.
func waitToken(ctx context.Context, tok paho.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// redeliveredCounter returns the turnout_mqtt_redelivered_total counter of input name.
func redeliveredCounter(reg prometheus.Registerer, name string) (prometheus.Counter, error) {
	vec, err := tmetrics.RegisterOrReuse(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "turnout_mqtt_redelivered_total",
		Help: "Messages an MQTT input received with DUP=1: redeliveries after a reconnect.",
	}, []string{"name"}))
	if err != nil {
		return nil, fmt.Errorf("mqtt %w", err)
	}
	return vec.WithLabelValues(name), nil
}

// connectedGauge returns the turnout_transport_connected{transport="mqtt",name} gauge.
func connectedGauge(reg prometheus.Registerer, name string) (prometheus.Gauge, error) {
	g, err := tmetrics.ConnectedGauge(reg, "mqtt", name)
	if err != nil {
		return nil, fmt.Errorf("mqtt %w", err)
	}
	return g, nil
}

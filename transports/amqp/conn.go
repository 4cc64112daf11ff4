package amqp

import (
	"context"
	"errors"
	"fmt"

	"github.com/Azure/go-amqp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/transports/internal/tmetrics"
)

// ErrNotConnected is returned (wrapped) by Output.Send while the output has no link; the engine
// retries.
var ErrNotConnected = errors.New("not connected")

// link is one connection with one session carrying one link (sender or receiver). A failed
// attach ends the whole session and every link on it, and RabbitMQ answers a link detach with
// closed=false, so that a Receiver.Close or Sender.Close never returns: every link gets a
// session of its own, and a link is always ended by closing its connection (which ends the
// session and the link with it) [AMQP 1.0 §2.6.3, §2.7.6].
type link struct {
	conn *amqp.Conn
	sess *amqp.Session
}

// dial opens a connection and a session, bounded by cfg.ConnectTimeout. The caller attaches
// the link and owns the result: close it with close.
func dial(ctx context.Context, cfg *ConnectionConfig) (*link, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	addr, opts, err := cfg.dialTarget()
	if err != nil {
		return nil, err
	}
	c, err := amqp.Dial(ctx, addr, opts)
	if err != nil {
		return nil, fmt.Errorf("amqp connect %s: %w", addr, err)
	}
	s, err := c.NewSession(ctx, nil)
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("amqp begin session on %s: %w", addr, err)
	}
	return &link{conn: c, sess: s}, nil
}

// close ends the connection, and with it the session and the link. It does not wait for the
// broker's answer to a detach (see link), only for the connection's close handshake, which
// go-amqp bounds.
func (l *link) close() {
	_ = l.conn.Close()
}

// connectedGauge returns turnout_transport_connected{transport="amqp",name}.
func connectedGauge(reg prometheus.Registerer, name string) (prometheus.Gauge, error) {
	g, err := tmetrics.ConnectedGauge(reg, "amqp", name)
	if err != nil {
		return nil, fmt.Errorf("amqp %s: %w", name, err)
	}
	return g, nil
}

// redeliveredCounter returns turnout_amqp_redelivered_total{name}.
func redeliveredCounter(reg prometheus.Registerer, name string) (prometheus.Counter, error) {
	vec, err := tmetrics.RegisterOrReuse(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "turnout_amqp_redelivered_total",
		Help: "Messages an AMQP input received that the broker had delivered before (delivery-count > 0 or not first-acquirer).",
	}, []string{"name"}))
	if err != nil {
		return nil, fmt.Errorf("amqp %s: %w", name, err)
	}
	return vec.WithLabelValues(name), nil
}

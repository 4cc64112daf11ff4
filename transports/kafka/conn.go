package kafka

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/turnout-router/turnout/transports/internal/tmetrics"
)

// newClient builds a franz-go client from cfg plus extra options. franz-go connects lazily, and
// on its own goroutines: it dials brokers when it needs them, retries failed requests with the
// configured backoff and reconnects for ever, so a cluster that is down makes no error here.
// conn follows the outcome of the latest connection attempt.
func newClient(cfg *ConnectionConfig, conn *connState, extra ...kgo.Opt) (*kgo.Client, error) {
	opts, err := cfg.options()
	if err != nil {
		return nil, err
	}
	opts = append(opts, kgo.WithHooks(conn))
	opts = append(opts, extra...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return cl, nil
}

// connState is the connection state of one input or output: Ready, the
// turnout_transport_connected{transport="kafka",name} gauge, and a log line on each transition
// between up and down. franz-go calls it from its connection goroutines.
type connState struct {
	log   *slog.Logger
	gauge prometheus.Gauge
	up    atomic.Bool
	mu    sync.Mutex // serialises transitions
}

var _ kgo.HookBrokerConnect = (*connState)(nil)

func newConnState(reg prometheus.Registerer, name string, log *slog.Logger) (*connState, error) {
	g, err := tmetrics.ConnectedGauge(reg, "kafka", name)
	if err != nil {
		return nil, fmt.Errorf("kafka %s: %w", name, err)
	}
	return &connState{log: log, gauge: g}, nil
}

// Ready reports whether the latest connection attempt to a broker succeeded.
func (c *connState) Ready() bool { return c.up.Load() }

// OnBrokerConnect implements kgo.HookBrokerConnect. A connection closed for being idle does not
// make the client unready; a failed attempt does, until one succeeds.
func (c *connState) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	up := err == nil
	broker := net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port)))
	switch {
	case up && !c.up.Load():
		c.log.Info("kafka connected", "broker", broker)
		c.gauge.Set(1)
	case !up && c.up.Load():
		c.log.Warn("kafka connection failed; the client keeps retrying", "broker", broker, "error", err)
		c.gauge.Set(0)
	}
	c.up.Store(up)
}

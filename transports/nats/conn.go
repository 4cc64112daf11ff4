package nats

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/turnout-router/turnout/transports/internal/tmetrics"
)

// connect opens a connection that retries the first attempt and reconnects forever in the
// background; ready follows the connection's state. jsOpts configure the JetStream context.
// The caller closes the connection.
func connect(cfg *ConnectionConfig, name string, log *slog.Logger, ready func(bool), jsOpts ...jetstream.JetStreamOpt) (*nats.Conn, jetstream.JetStream, error) {
	opts, err := cfg.options(name)
	if err != nil {
		return nil, nil, err
	}
	opts = append(opts,
		nats.ConnectHandler(func(*nats.Conn) { ready(true); log.Info("nats connected") }),
		nats.ReconnectHandler(func(*nats.Conn) { ready(true); log.Info("nats reconnected") }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			ready(false)
			if err != nil {
				log.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { ready(false) }),
		// Each failed attempt, the first connection's included: without it a server that is
		// not there would go unmentioned until a consume or publish timed out.
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats connect failed; the client keeps trying", "error", err)
		}),
	)
	servers := cfg.servers()
	nc, err := nats.Connect(strings.Join(servers, ","), opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("nats connect: %w", err)
	}
	if nc.IsConnected() {
		ready(true)
	}
	js, err := jetstream.New(nc, jsOpts...)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("nats jetstream: %w", err)
	}
	return nc, js, nil
}

// readyFunc returns a function that records the connection state in ready and in the
// turnout_transport_connected{transport="nats",name} gauge.
func readyFunc(reg prometheus.Registerer, name string, set func(bool)) (func(bool), error) {
	g, err := tmetrics.ConnectedGauge(reg, "nats", name)
	if err != nil {
		return nil, fmt.Errorf("nats %s: %w", name, err)
	}
	return func(up bool) {
		set(up)
		if up {
			g.Set(1)
		} else {
			g.Set(0)
		}
	}, nil
}

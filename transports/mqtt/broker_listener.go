package mqtt

import (
	"log/slog"
	"net"
	"sync"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// brokerListener serves one of the embedded broker's listening sockets, as mochi's listeners.Net
// does, and also counts each accepted connection in the server's ClientsWg before handing it
// over. mochi counts a client only in attachClient, on the connection's own goroutine, so a
// connection accepted just before Close could call ClientsWg.Add with the count at zero while
// Close waits on it: a WaitGroup misuse the race detector reports (it made TestBrokerTLS fail).
// Here every Add happens under mu before Close marks the listener closed, and holds the count
// above zero while mochi's own Add runs; Close is called by mochi before its Wait.
type brokerListener struct {
	id  string
	ln  net.Listener
	wg  *sync.WaitGroup // the server's Listeners.ClientsWg
	log *slog.Logger

	mu     sync.Mutex
	closed bool // mu
}

var _ listeners.Listener = (*brokerListener)(nil)

func newBrokerListener(id string, ln net.Listener, wg *sync.WaitGroup) *brokerListener {
	return &brokerListener{id: id, ln: ln, wg: wg}
}

// ID returns the listener's id (tcp or tls).
func (l *brokerListener) ID() string { return l.id }

// Address returns the address listened on.
func (l *brokerListener) Address() string { return l.ln.Addr().String() }

// Protocol returns the network of the listener.
func (l *brokerListener) Protocol() string { return l.ln.Addr().Network() }

// Init keeps the logger; mochi calls it from AddListener.
func (l *brokerListener) Init(log *slog.Logger) error {
	l.log = log
	return nil
}

// Serve accepts connections until the listener is closed, each handed to establish on a
// goroutine of its own; mochi calls it on a goroutine of its own.
func (l *brokerListener) Serve(establish listeners.EstablishFn) {
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = conn.Close()
			return
		}
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			if err := establish(l.id, conn); err != nil {
				l.log.Warn("", "error", err) // as the library's own listener logs it (warnOnly filters)
			}
		}()
	}
}

// Close stops accepting, closes the listener's clients (once) and the socket; mochi calls it
// from Server.Close before it waits for the clients.
func (l *brokerListener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	first := !l.closed
	l.closed = true
	l.mu.Unlock()
	if first {
		closeClients(l.id)
	}
	_ = l.ln.Close()
}

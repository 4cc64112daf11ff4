package reliability

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"time"
)

// concurrently publishes first..last-1 from window goroutines, each with one publish awaiting
// confirmation at a time. send publishes seq and returns nil only once it was confirmed; a
// failed seq is sent again after 100 ms until deadline passes. It returns the confirmed seqs in
// ascending order and the first seq given up, as an error naming what (proto) failed.
func concurrently(proto string, first, last, window int, deadline time.Time, send func(seq int) error) ([]int, error) {
	seqs := make(chan int)
	var (
		mu        sync.Mutex
		confirmed []int
		firstErr  error
		wg        sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	for range max(window, 1) {
		wg.Go(func() {
			for seq := range seqs {
				for {
					if time.Now().After(deadline) {
						fail(fmt.Errorf("%s publish seq %d: deadline passed", proto, seq))
						break
					}
					err := send(seq)
					if err == nil {
						mu.Lock()
						confirmed = append(confirmed, seq)
						mu.Unlock()
						break
					}
					if time.Now().After(deadline) {
						fail(fmt.Errorf("%s publish seq %d not confirmed before deadline: %w", proto, seq, err))
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
	}
	for seq := first; seq < last; seq++ {
		seqs <- seq
	}
	close(seqs)
	wg.Wait()
	sort.Ints(confirmed)
	return confirmed, firstErr
}

// HTTPProducer POSTs structured-mode events (Content-Type application/cloudevents+json
// [CE-HTTP-3.2]) to one URL, one event per request, and counts an event as sent only once the
// answer was a 2xx status. Any other answer or a failed request is a failure, and the event is
// posted again. Connections are kept alive, one per request in flight.
type HTTPProducer struct {
	sentLog
	url    string
	client *http.Client
}

var _ Producer = (*HTTPProducer)(nil)

// NewHTTPProducer posts to url (http://host:port/path).
func NewHTTPProducer(url string) *HTTPProducer {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0, // no limit
		MaxIdleConnsPerHost: 1 << 16,
		IdleConnTimeout:     90 * time.Second,
	}
	return &HTTPProducer{url: url, client: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
}

// post sends event seq and reads the whole answer, so that the connection is reused.
func (p *HTTPProducer) post(run string, seq, size int) error {
	p.record(seq)
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, p.url, bytes.NewReader(EventJSON(run, seq, size)))
	if err != nil {
		return fmt.Errorf("http post %s: %w", p.url, err)
	}
	req.Header.Set("Content-Type", "application/cloudevents+json")
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("http post %s: %w", p.url, err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("http post %s: %s: %s", p.url, resp.Status, body)
	}
	return nil
}

// Publish implements Producer: window requests are in flight at once.
func (p *HTTPProducer) Publish(run string, first, last, size, window int, deadline time.Time) ([]int, error) {
	return concurrently("http", first, last, window, deadline, func(seq int) error { return p.post(run, seq, size) })
}

// Close implements Producer.
func (p *HTTPProducer) Close() { p.client.CloseIdleConnections() }

// HTTPReceiver is an HTTP server that takes CloudEvents posted to it (structured mode, or
// binary mode with a ce-id header [CE-HTTP-3.1]), records each event id and answers 204 once
// recorded: the receiving end of an HTTP leg without a broker. Any path is accepted.
type HTTPReceiver struct {
	recvLog
	ln  net.Listener
	srv *http.Server
}

var _ Consumer = (*HTTPReceiver)(nil)

// NewHTTPReceiver listens on addr (host:port; port 0 picks a free one) and serves in the
// background.
func NewHTTPReceiver(addr string) (*HTTPReceiver, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http receiver listen %s: %w", addr, err)
	}
	r := &HTTPReceiver{ln: ln}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// URL is where to post: http://host:port/.
func (r *HTTPReceiver) URL() string {
	return (&url.URL{Scheme: "http", Host: r.ln.Addr().String(), Path: "/"}).String()
}

// ServeHTTP records the event of a POST and answers 204; a request whose body cannot be read
// gets 400 and is not recorded.
func (r *HTTPReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		http.Error(w, "reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.record(headerEventID(req.Header.Get("ce-id"), body))
	w.WriteHeader(http.StatusNoContent)
}

// Close implements Consumer: it stops listening and ends the open connections.
func (r *HTTPReceiver) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := r.srv.Shutdown(ctx); err != nil {
		_ = r.srv.Close()
	}
}

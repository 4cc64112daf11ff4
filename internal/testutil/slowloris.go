package testutil

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// Slowloris plays a client that never finishes its headers: it connects to addr and sends
// "POST path HTTP/1.1", then header lines without end, one byte every 20 ms. It returns how
// long the server took to close the connection, counted from before the dial (the server's
// header timeout starts at its accept, which may run before Dial returns here), and fails the
// test when the connection is still open after within.
func Slowloris(t *testing.T, addr, path string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stop := make(chan struct{})
	defer close(stop)
	head := "POST " + path + " HTTP/1.1\r\nHost: " + addr + "\r\n" + strings.Repeat("X-Slow: drip\r\n", 1000)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := conn.Write([]byte{head[i%len(head)]}); err != nil {
				return
			}
		}
	}()
	_ = conn.SetReadDeadline(start.Add(within))
	_, err = io.ReadAll(conn) // the server may answer 400 before it closes
	took := time.Since(start)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("slowloris: connection to %s still open after %v", addr, took)
	}
	return took
}

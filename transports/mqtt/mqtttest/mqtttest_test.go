package mqtttest

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func canDial(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func TestMosquittoLifecycle(t *testing.T) {
	m := StartWithConfig(t, "max_inflight_messages 50")
	if !strings.HasPrefix(m.URL(), "tcp://127.0.0.1:") {
		t.Fatalf("URL() = %q", m.URL())
	}
	conf, err := os.ReadFile(filepath.Join(m.dir, "mosquitto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"max_queued_messages 0", "max_inflight_messages 50"} {
		if !strings.Contains(string(conf), line+"\n") {
			t.Errorf("configuration lacks %q", line)
		}
	}
	if !canDial(m.Addr()) {
		t.Fatal("not listening after Start")
	}
	m.Kill()
	if canDial(m.Addr()) {
		t.Fatal("still listening after Kill")
	}
	m.Restart()
	if !canDial(m.Addr()) {
		t.Fatal("not listening after Restart")
	}
	m.Stop()
	if _, err := os.Stat(filepath.Join(m.dir, "mosquitto.db")); err != nil {
		t.Errorf("no persistence file after a graceful Stop: %v", err)
	}
	m.Restart()
	m.Pause()
	m.Resume()
	if !canDial(m.Addr()) {
		t.Fatal("not listening after Pause and Resume")
	}
}

package config

import (
	"net"
	"testing"
)

// TestAdminDefaultsToLoopback: without admin.listen the admin server (metrics, profiles when
// enabled, the rules API) is reachable from this host only.
func TestAdminDefaultsToLoopback(t *testing.T) {
	addr := AdminConfig{}.Addr()
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("default admin.listen %q: %v", addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		t.Errorf("default admin.listen %q is not a loopback address", addr)
	}
}

package spool

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/turnout-router/turnout/engine"
)

func TestConfigErrors(t *testing.T) {
	dataDir := t.TempDir()
	file := filepath.Join(dataDir, "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		cfg  Config
		key  string // the key the error names
		want string // in the message
	}{
		{"missing dir", Config{}, "dir", "missing"},
		{"max_bytes 0", Config{Dir: "s", MaxBytes: size(0)}, "max_bytes", "below the minimum of 1MiB"},
		{"max_bytes tiny", Config{Dir: "s", MaxBytes: size(4096)}, "max_bytes", "below the minimum"},
		{"dir is a file", Config{Dir: file}, "dir", "is not a directory"},
		{"dir under a file", Config{Dir: filepath.Join(file, "spool")}, "dir", "a-file is not a directory"},
		{"dir not writable", Config{Dir: "/proc/sys/turnout-spool"}, "dir", "not writable"},
		{"dir is data_dir", Config{Dir: "."}, "dir", "data_dir itself"},
		{"dir in the rule store", Config{Dir: "rules/x"}, "dir", "turnout keeps its rules in"},
		{"dir is the cache", Config{Dir: dataDir + "/cache"}, "dir", "keeps its cache in"},
		{"unknown fsync", Config{Dir: "s", Fsync: "sometimes"}, "fsync", `unknown value "sometimes" (known: always, batch)`},
		{"fsync_interval without batch", Config{Dir: "s", FsyncInterval: time.Second}, "fsync_interval", "only used with fsync: batch"},
		{"negative max_age", Config{Dir: "s", MaxAge: -time.Second}, "max_age", "must not be negative"},
		{"unknown when_full", Config{Dir: "s", WhenFull: "drop"}, "when_full", `unknown value "drop" (known: block, dead_letter)`},
		{"negative in_flight", Config{Dir: "s", InFlight: -1}, "in_flight", "must not be negative"},
		{"negative timeout", Config{Dir: "s", Timeout: -1}, "timeout", "must not be negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New("uplink", tt.cfg, newSwitchSink(), engine.Deps{DataDir: dataDir})
			if err == nil {
				t.Fatal("accepted")
			}
			var ke *KeyError
			if !errors.As(err, &ke) || ke.Key != tt.key {
				t.Fatalf("error %q does not name the key %s", err, tt.key)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
	t.Run("every problem at once", func(t *testing.T) {
		_, err := New("uplink", Config{MaxBytes: size(0), Fsync: "x", WhenFull: "y"}, newSwitchSink(), engine.Deps{DataDir: dataDir})
		for _, k := range []string{"spool.dir", "spool.max_bytes", "spool.fsync", "spool.when_full"} {
			if !strings.Contains(err.Error(), k+":") {
				t.Errorf("error %q does not report %s", err, k)
			}
		}
	})
	t.Run("valid: nothing created", func(t *testing.T) {
		s, err := New("uplink", Config{Dir: "spool/uplink"}, newSwitchSink(), engine.Deps{DataDir: dataDir})
		if err != nil {
			t.Fatal(err)
		}
		if s.Dir() != filepath.Join(dataDir, "spool", "uplink") {
			t.Errorf("Dir() = %s, want it under data_dir", s.Dir())
		}
		if _, err := os.Stat(s.Dir()); !os.IsNotExist(err) {
			t.Errorf("New created %s (validation must not write): %v", s.Dir(), err)
		}
	})
}

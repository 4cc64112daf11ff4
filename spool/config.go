package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/turnout-router/turnout/internal/bytesize"
)

// Config is an output's spool: block, as written in turnout's configuration file.
type Config struct {
	// Dir holds the spool's segment files. A relative path is under turnout's data_dir.
	// Required; every spooled output needs a directory of its own.
	Dir string `yaml:"dir"`
	// MaxBytes bounds the spool's files on disk (default 256MiB, at least 1MiB).
	MaxBytes *bytesize.Size `yaml:"max_bytes"`
	// MaxAge bounds how old the oldest event waiting may grow: beyond it the spool counts as
	// full. 0 (the default) sets no bound.
	MaxAge time.Duration `yaml:"max_age"`
	// Fsync is "always" (the default: an event is confirmed once an fsync covering it returned)
	// or "batch" (confirmed once written; fsync every FsyncInterval).
	Fsync string `yaml:"fsync"`
	// FsyncInterval is how often "batch" fsyncs (default 1s).
	FsyncInterval time.Duration `yaml:"fsync_interval"`
	// WhenFull is "block" (the default) or "dead_letter".
	WhenFull string `yaml:"when_full"`
	// InFlight is how many events the spool forwards to the output at once (default 64; 1
	// keeps the strict order of the log at the output, retries included).
	InFlight int `yaml:"in_flight"`
	// Timeout bounds one forwarding attempt (default 30s).
	Timeout time.Duration `yaml:"timeout"`
}

// The values of Config.Fsync and Config.WhenFull.
const (
	FsyncAlways        = "always"
	FsyncBatch         = "batch"
	WhenFullBlock      = "block"
	WhenFullDeadLetter = "dead_letter"
)

// Defaults and bounds of Config.
const (
	DefaultMaxBytes      = 256 << 20
	MinMaxBytes          = 1 << 20
	DefaultInFlight      = 64
	DefaultFsyncInterval = time.Second
	DefaultTimeout       = 30 * time.Second
)

// reservedDirs are the directories below data_dir that turnout itself owns.
var reservedDirs = []string{"rules", "cache"}

// KeyError is a configuration error of one key of the spool block. The configuration loader
// turns Key into the full dotted path and the line.
type KeyError struct {
	Key string // e.g. "max_bytes"
	Msg string
}

func (e *KeyError) Error() string { return "spool." + e.Key + ": " + e.Msg }

// settings is a checked Config with its defaults applied.
type settings struct {
	dir           string
	maxBytes      int64
	segmentBytes  int64
	maxAge        time.Duration
	fsyncAlways   bool
	fsyncInterval time.Duration
	deadLetter    bool
	inFlight      int
	timeout       time.Duration
}

// check validates c against dataDir and applies the defaults. It reports every bad key, each as
// a *KeyError (joined). It touches nothing on disk: whether the directory can be created and
// written is judged from its nearest existing parent.
func (c Config) check(dataDir string) (settings, error) {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &KeyError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	s := settings{
		maxBytes: DefaultMaxBytes, maxAge: c.MaxAge, fsyncAlways: true, fsyncInterval: DefaultFsyncInterval,
		inFlight: DefaultInFlight, timeout: DefaultTimeout,
	}
	if c.Dir == "" {
		bad("dir", "missing (a directory of its own for this output's spool, e.g. spool/<output>; relative to data_dir)")
	} else {
		s.dir = c.Dir
		if !filepath.IsAbs(s.dir) {
			s.dir = filepath.Join(dataDir, s.dir)
		}
		s.dir = filepath.Clean(s.dir)
		if msg := reserved(s.dir, dataDir); msg != "" {
			bad("dir", "%s", msg)
		} else if err := writable(s.dir); err != nil {
			bad("dir", "%v", err)
		}
	}
	if c.MaxBytes != nil {
		s.maxBytes = int64(*c.MaxBytes)
		if s.maxBytes < MinMaxBytes {
			bad("max_bytes", "%s is below the minimum of %s (the spool needs room for several segments)", c.MaxBytes, bytesize.Size(MinMaxBytes))
		}
	}
	// Segments of a sixteenth of the spool, so that space comes back in small steps, between
	// 64KiB and 16MiB (a segment is read whole at recovery, through a 256KiB buffer).
	s.segmentBytes = min(max(s.maxBytes/16, 64<<10), 16<<20)
	if c.MaxAge < 0 {
		bad("max_age", "must not be negative (0 sets no bound)")
	}
	switch c.Fsync {
	case "", FsyncAlways:
	case FsyncBatch:
		s.fsyncAlways = false
	default:
		bad("fsync", "unknown value %q (known: %s, %s)", c.Fsync, FsyncAlways, FsyncBatch)
	}
	if c.FsyncInterval < 0 {
		bad("fsync_interval", "must not be negative")
	} else if c.FsyncInterval > 0 {
		if s.fsyncAlways {
			bad("fsync_interval", "only used with fsync: %s", FsyncBatch)
		}
		s.fsyncInterval = c.FsyncInterval
	}
	switch c.WhenFull {
	case "", WhenFullBlock:
	case WhenFullDeadLetter:
		s.deadLetter = true
	default:
		bad("when_full", "unknown value %q (known: %s, %s)", c.WhenFull, WhenFullBlock, WhenFullDeadLetter)
	}
	if c.InFlight < 0 {
		bad("in_flight", "must not be negative (0 picks the default, %d)", DefaultInFlight)
	} else if c.InFlight > 0 {
		s.inFlight = c.InFlight
	}
	if c.Timeout < 0 {
		bad("timeout", "must not be negative (0 picks the default, %v)", DefaultTimeout)
	} else if c.Timeout > 0 {
		s.timeout = c.Timeout
	}
	return s, errors.Join(errs...)
}

// reserved explains why dir cannot be a spool directory, or returns "".
func reserved(dir, dataDir string) string {
	if dataDir == "" {
		return ""
	}
	dataDir = filepath.Clean(dataDir)
	if dir == dataDir {
		return fmt.Sprintf("%s is data_dir itself; give the spool a directory of its own below it", dir)
	}
	for _, r := range reservedDirs {
		own := filepath.Join(dataDir, r)
		if rel, err := filepath.Rel(own, dir); err == nil && !startsWithDotDot(rel) {
			return fmt.Sprintf("%s is inside %s, which turnout keeps its %s in", dir, own, r)
		}
	}
	return ""
}

func startsWithDotDot(rel string) bool {
	return rel == ".." || len(rel) > 2 && rel[:3] == ".."+string(filepath.Separator)
}

// writable reports why dir could not be used as a spool directory: it, or its nearest existing
// parent when it does not exist yet, must be a directory that this process may write.
func writable(dir string) error {
	p := dir
	for {
		st, err := os.Stat(p)
		if err == nil {
			if !st.IsDir() {
				if p == dir {
					return fmt.Errorf("%s is not a directory", dir)
				}
				return fmt.Errorf("cannot create %s: %s is not a directory", dir, p)
			}
			if err := syscall.Access(p, 0x2|0x1); err != nil { // W_OK|X_OK
				if p == dir {
					return fmt.Errorf("%s is not writable: %v", dir, err)
				}
				return fmt.Errorf("cannot create %s: %s is not writable: %v", dir, p, err)
			}
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			return fmt.Errorf("%s: %v", dir, err)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return fmt.Errorf("%s: no existing parent directory", dir)
		}
		p = parent
	}
}

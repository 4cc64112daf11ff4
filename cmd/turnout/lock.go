package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockName is the lock file of a data directory.
const lockName = "LOCK"

// lockDataDir takes an exclusive lock on dir's LOCK file (creating dir), so that one turnout at
// a time uses a data directory: its rule store, dead-letter files, spools and broker state
// assume a single writer. The file holds the holder's pid, which a second process names in its
// error. The lock lasts until the returned file is closed or the process ends (even by SIGKILL:
// the kernel releases it).
func lockDataDir(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid := strings.TrimSpace(string(holder))
			if pid == "" {
				pid = "unknown"
			}
			return nil, fmt.Errorf("data directory %s is in use by another turnout (pid %s holds %s): stop it, or give this one its own data_dir", dir, pid, path)
		}
		return nil, fmt.Errorf("lock data directory: flock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

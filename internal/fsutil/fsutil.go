// Package fsutil holds the file-system steps that turnout's durable stores share. Invariant:
// each returns only once what it promises is on stable storage, as far as the kernel reports.
package fsutil

import (
	"fmt"
	"os"
)

// SyncDir fsyncs the directory dir, making its entries durable: a file created, renamed or
// removed in it survives a power cut once SyncDir returned nil.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

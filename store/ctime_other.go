//go:build !linux

package store

import (
	"io/fs"
	"time"
)

// changeTime approximates when fi's file got its name by its modification time.
func changeTime(fi fs.FileInfo) time.Time { return fi.ModTime() }

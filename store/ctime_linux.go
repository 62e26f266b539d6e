//go:build linux

package store

import (
	"io/fs"
	"syscall"
	"time"
)

// changeTime is when fi's file last changed its name or metadata: a rename or link
// sets it, so for a blob it is when the blob got its name.
func changeTime(fi fs.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
	}
	return fi.ModTime()
}

//go:build linux

package store

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// openDirect opens path for writing with O_DIRECT.
func openDirect(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
}

// isDirectRefused reports whether err is a file system's refusal of an O_DIRECT write
// (rather than a failure of the disk).
func isDirectRefused(err error) bool { return errors.Is(err, unix.EINVAL) }

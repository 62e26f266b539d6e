//go:build linux

package scratch

import (
	"os"

	"golang.org/x/sys/unix"
)

// Unnamed opens an unnamed file in dir (O_TMPFILE): it has no name to clean up, and the
// kernel frees it if the process dies. A file system without them is an error.
func Unnamed(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_RDWR|unix.O_TMPFILE|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, &os.PathError{Op: "open O_TMPFILE", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), dir+"/(unnamed)"), nil
}

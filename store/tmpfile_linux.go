//go:build linux

package store

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openTmpfile opens an unnamed file in dir (O_TMPFILE): it has no name to clean up, and
// the kernel frees it if the process dies.
func openTmpfile(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_RDWR|unix.O_TMPFILE|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, &os.PathError{Op: "open O_TMPFILE", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), dir+"/(unnamed)"), nil
}

// linkTmpfile gives the unnamed file f the name dst. An existing dst is left as is and
// reported as fs.ErrExist.
func linkTmpfile(f *os.File, dst string) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) {
		lerr = unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, dst, unix.AT_SYMLINK_FOLLOW)
		if errors.Is(lerr, unix.ENOENT) {
			// No /proc: AT_EMPTY_PATH works with CAP_DAC_READ_SEARCH.
			if err := unix.Linkat(int(fd), "", unix.AT_FDCWD, dst, unix.AT_EMPTY_PATH); err == nil || errors.Is(err, unix.EEXIST) {
				lerr = err
			}
		}
	}); err != nil {
		return err
	}
	if lerr != nil {
		return &os.LinkError{Op: "link", Old: f.Name(), New: dst, Err: lerr}
	}
	return nil
}

//go:build linux

package store

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

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

//go:build linux

package unpack

import (
	"errors"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
)

// fsError is a failure of the file system being written. It wraps the operating
// system's error, as the module does for its local file systems (errors.Is(err,
// syscall.ENOSPC) and errors.Is(err, fs.ErrPermission) work), and, when the error says
// the file system cannot represent what the layer holds (a name too long, a feature it
// lacks), pullkit.ErrUnsupported too.
type fsError struct {
	op   string
	path string // inside the tree
	err  error
}

func (e *fsError) Error() string {
	return e.op + " " + text.Clean(e.path, 200) + ": " + e.err.Error()
}

func (e *fsError) Unwrap() []error {
	switch {
	case errors.Is(e.err, unix.ENAMETOOLONG), errors.Is(e.err, unix.EOPNOTSUPP), errors.Is(e.err, unix.ENOTSUP),
		errors.Is(e.err, unix.EMLINK), errors.Is(e.err, unix.EXDEV), errors.Is(e.err, unix.EINVAL):
		return []error{pullkit.ErrUnsupported, e.err}
	}
	return []error{e.err}
}

func fsErr(op, path string, err error) error { return &fsError{op: op, path: path, err: err} }

// openat opens name under dirfd; flags get O_CLOEXEC.
func openat(dirfd int, name string, flags int, mode uint32) (*os.File, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags|unix.O_CLOEXEC, mode)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		return os.NewFile(uintptr(fd), name), nil
	}
}

// procPath names, through /proc/self/fd, the file fd refers to, or name in the directory
// fd refers to. The kernel resolves the fd's magic link to the very inode, so a path
// swapped meanwhile does not matter; with name, the l* calls do not follow name itself.
func procPath(fd int, name string) string {
	p := "/proc/self/fd/" + strconv.Itoa(fd)
	if name != "" {
		p += "/" + name
	}
	return p
}

// chmodAt changes the mode of name under dirfd without following it (it is never a
// symbolic link: those have no mode of their own).
func chmodAt(dirfd int, name string, mode uint32) error {
	err := unix.Fchmodat(dirfd, name, mode, unix.AT_SYMLINK_NOFOLLOW)
	if err != unix.EOPNOTSUPP && err != unix.ENOSYS {
		return err
	}
	// Before fchmodat2 (Linux 6.6): through an O_PATH handle of the node itself.
	f, err := openat(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return nil
	}
	return unix.Chmod(procPath(int(f.Fd()), ""), mode)
}

// chmodFd changes the mode of the file fd refers to, O_PATH handles included.
func chmodFd(fd int, mode uint32) error {
	err := unix.Fchmod(fd, mode)
	if err != unix.EBADF {
		return err
	}
	return unix.Chmod(procPath(fd, ""), mode)
}

// emptyPathTimes sets the times of the file fd refers to (an O_PATH handle too).
func emptyPathTimes(fd int, ts []unix.Timespec) error {
	return unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH)
}

// listXattrs lists the extended attributes of fd's file.
func listXattrs(fd int) ([]string, error) {
	size, err := unix.Flistxattr(fd, nil)
	if err != nil || size == 0 {
		return nil, err
	}
	buf := make([]byte, size)
	n, err := unix.Flistxattr(fd, buf)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	return names, nil
}

// getXattrPath reads a short attribute of the file at p without following p.
func getXattrPath(p, name string) (string, bool) {
	var buf [16]byte
	n, err := unix.Lgetxattr(p, name, buf[:])
	if err != nil {
		return "", false
	}
	return string(buf[:n]), true
}

// isNotExist says whether err means that a path, or one of its parents, is not there.
func isNotExist(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)
}

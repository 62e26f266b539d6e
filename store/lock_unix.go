//go:build unix

package store

import (
	"errors"
	"os"
	"syscall"
)

// flockWorks reports whether flock keeps other processes out on this system.
const flockWorks = true

// tryLock takes an advisory lock on f (shared or exclusive) without waiting. It reports
// false when another open file, in this process or another, holds a conflicting lock.
// Locks are per open file: two descriptors of one file in one process exclude each
// other, and closing the descriptor releases the lock. On a file system without flock
// support it reports true with errNoFlock: a writer goes on (the digest check at commit
// still keeps the store sound), but nothing is taken for abandoned.
func tryLock(f *os.File, shared bool) (bool, error) {
	how := syscall.LOCK_EX
	if shared {
		how = syscall.LOCK_SH
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return false, err
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) {
		for {
			lerr = syscall.Flock(int(fd), how|syscall.LOCK_NB)
			if !errors.Is(lerr, syscall.EINTR) {
				return
			}
		}
	}); err != nil {
		return false, err
	}
	switch {
	case lerr == nil:
		return true, nil
	case errors.Is(lerr, syscall.EWOULDBLOCK):
		return false, nil
	case errors.Is(lerr, syscall.ENOLCK), errors.Is(lerr, syscall.ENOTSUP), errors.Is(lerr, syscall.EINVAL):
		return true, errNoFlock
	}
	return false, &os.PathError{Op: "flock", Path: f.Name(), Err: lerr}
}

// sameFile reports whether f is still the file that path names: a lock taken on a file
// that was renamed or removed meanwhile protects nothing.
func sameFile(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Lstat(path)
	if err != nil {
		return false
	}
	return os.SameFile(a, b)
}

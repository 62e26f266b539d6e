//go:build unix

package layers

import (
	"errors"
	"os"
	"syscall"
)

// tryLock takes an exclusive advisory lock on f without waiting. It reports false when
// another open file (in this or another process) holds it. File systems without flock
// support count as locked by us: the final digest check still keeps the store sound.
func tryLock(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return true
	}
	var lerr error
	if err := rc.Control(func(fd uintptr) {
		lerr = syscall.Flock(int(fd), syscall.LOCK_EX|syscall.LOCK_NB)
	}); err != nil {
		return true
	}
	if errors.Is(lerr, syscall.EWOULDBLOCK) {
		return false
	}
	return true
}

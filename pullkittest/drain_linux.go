package pullkittest

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// drained waits until the kernel holds no byte of c's that the peer has not
// acknowledged (SIOCOUTQ is 0), so that a reset sent next cannot discard bytes already
// written: ResetAfter(n) then delivers exactly n. It gives up after limit, for a peer
// that stopped reading.
func drained(c net.Conn, limit time.Duration) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return
	}
	deadline := time.Now().Add(limit)
	for sleep := 50 * time.Microsecond; time.Now().Before(deadline); sleep = min(sleep*2, 10*time.Millisecond) {
		queued := -1
		if err := rc.Control(func(fd uintptr) { queued, _ = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil || queued <= 0 {
			return
		}
		time.Sleep(sleep)
	}
}

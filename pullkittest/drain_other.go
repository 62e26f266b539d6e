//go:build !linux

package pullkittest

import (
	"net"
	"time"
)

// drained cannot see the send queue here: it gives the peer a moment to take what was
// written before the reset.
func drained(c net.Conn, limit time.Duration) {
	time.Sleep(min(limit, 50*time.Millisecond))
}

// Package loopback holds the one check the bench's servers make before they listen or
// forward: every address they use is on loopback, so a bench never sends traffic to any
// other address.
package loopback

import "net"

// Addr reports whether host:port names a loopback address ("localhost" or a loopback
// IP); anything else, a malformed address included, is not.
func Addr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

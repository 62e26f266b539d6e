package loopback

import "testing"

func TestAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:5000": true, "127.9.8.7:1": true, "[::1]:80": true, "localhost:1": true,
		"10.0.0.1:5000": false, "192.168.1.1:80": false, "example.com:80": false,
		"0.0.0.0:80": false, "[::]:80": false, "127.0.0.1": false, "": false,
	} {
		if got := Addr(addr); got != want {
			t.Errorf("Addr(%q) = %v, want %v", addr, got, want)
		}
	}
}

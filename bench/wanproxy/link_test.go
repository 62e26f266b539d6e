package main

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"
)

func TestBucketSpacesReservationsAtItsRate(t *testing.T) {
	b := newBucket(1000, 100) // 1000 bytes/s, burst 100
	t0 := time.Unix(0, 0)
	if d := b.reserve(t0, 100); d != 0 {
		t.Fatalf("the burst should pass at once, waited %v", d)
	}
	if d := b.reserve(t0, 100); d != 100*time.Millisecond {
		t.Fatalf("100 bytes past the burst: wait %v, want 100ms", d)
	}
	// The debt carries: the next 100 bytes wait for the first debt and their own.
	if d := b.reserve(t0, 100); d != 200*time.Millisecond {
		t.Fatalf("second 100 bytes: wait %v, want 200ms", d)
	}
	// After a long idle time the bucket holds the burst, no more.
	if d := b.reserve(t0.Add(10*time.Second), 150); d != 50*time.Millisecond {
		t.Fatalf("after idle: wait %v, want 50ms", d)
	}
	var unlimited *bucket
	if d := unlimited.reserve(t0, 1<<30); d != 0 {
		t.Fatalf("nil bucket waited %v", d)
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]float64{
		"12.5MB": 12.5e6, "125MB/s": 125e6, "5MB": 5e6, "0": 0, "": 0,
		"4MiB": 4 << 20, "64KiB": 64 << 10, "1Gbit": 125e6, "1000": 1000,
	} {
		got, err := parseRate(in)
		if err != nil || got != want {
			t.Errorf("parseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseRate("fast"); err == nil {
		t.Error("parseRate(fast) should fail")
	}
}

// TestProxyCarriesBothWaysAndDelays sends data through the proxy to an echo server and
// checks that it comes back intact, that a half-close is passed on, and that the first
// reply takes at least the handshake's round trip plus the request's.
func TestProxyCarriesBothWaysAndDelays(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
				c.Close()
			}()
		}
	}()
	const rtt = 30 * time.Millisecond
	cfg := config{rtt: rtt, connRate: 50e6, burst: 64 << 10, chunk: 32 << 10, inflight: 64}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p := newProxy(cfg, echo.Addr().String())
	go p.serve(l)

	// The delays are lower bounds the proxy enforces (it sleeps them); how much longer a
	// loaded machine takes is not the proxy's to promise, so the upper bounds only catch
	// a hang. The clock starts before the dial: the proxy counts the handshake's round
	// trip from its accept.
	const hang = 10 * time.Second
	t0 := time.Now()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	one := make([]byte, 1)
	if _, err := io.ReadFull(c, one); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < 2*rtt*9/10 || d > hang {
		t.Errorf("first echo on a new connection took %v, want about %v", d, 2*rtt)
	}
	t0 = time.Now()
	c.Write([]byte("y"))
	if _, err := io.ReadFull(c, one); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < rtt*9/10 || d > hang {
		t.Errorf("echo on the open connection took %v, want about %v", d, rtt)
	}

	data := make([]byte, 4<<20)
	rand.Read(data)
	go func() {
		c.Write(data)
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echoed %d bytes, not the %d sent", len(got), len(data))
	}
}

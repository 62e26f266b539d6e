// Command wanproxy is a TCP proxy on loopback that makes a registry look as if it were
// across a WAN, for the benchmark of issue 14 (bench/wan.sh):
//
//   - every chunk, in both directions, reaches the other end half a round trip after it
//     left, on a delay line per direction: a request and its response cost the full RTT,
//     and data keeps flowing while earlier data is in flight (rate x delay is in flight);
//   - a new connection's first bytes are held for one more round trip, the TCP handshake;
//   - each connection passes a token bucket per direction (-conn-rate, burst -burst), and
//     all connections share an optional bucket per direction (-total-rate).
//
// TCP slow start, loss and receive windows are not emulated: a connection runs at its
// cap from its first byte. It listens and dials on loopback only.
//
//	wanproxy -listen 127.0.0.1:0 -upstream 127.0.0.1:5000 -rtt 40ms -conn-rate 12.5MB -total-rate 125MB
//
// prints its listen address on stdout once it accepts, and serves until SIGINT or SIGTERM;
// SIGUSR1 prints its counters (connections, bytes up and down) on stderr.
//
//	wanproxy -check -rtt 40ms -conn-rate 12.5MB -total-rate 125MB
//
// measures what the emulation really gives, against an upstream of its own: the time of a
// request on a new connection and on a kept one, the rate of one stream and of 16.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/pullkit/pullkit/bench/internal/loopback"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (loopback)")
	upstream := flag.String("upstream", "127.0.0.1:5000", "upstream host:port (loopback)")
	rtt := flag.Duration("rtt", 40*time.Millisecond, "round-trip time to emulate")
	connRate := flag.String("conn-rate", "12.5MB", "bytes/s per connection and direction (0: unlimited)")
	totalRate := flag.String("total-rate", "0", "bytes/s shared by all connections, per direction (0: unlimited)")
	burst := flag.String("burst", "64KiB", "bytes a bucket lets through at once after being idle")
	chunk := flag.Int("chunk", 32<<10, "largest read and delay-line chunk, bytes")
	inflight := flag.Int("inflight", 256, "largest number of chunks in flight per direction and connection (memory bound)")
	check := flag.Bool("check", false, "measure the emulated link against an upstream of our own, print it, and exit")
	flag.Parse()

	cfg := config{rtt: *rtt, chunk: *chunk, inflight: *inflight}
	var err error
	if cfg.connRate, err = parseRate(*connRate); err != nil {
		fail(err)
	}
	if cfg.totalRate, err = parseRate(*totalRate); err != nil {
		fail(err)
	}
	if cfg.burst, err = parseRate(*burst); err != nil {
		fail(err)
	}
	if cfg.rtt < 0 || cfg.chunk < 512 || cfg.inflight < 1 {
		fail(errors.New("-rtt must be >= 0, -chunk >= 512, -inflight >= 1"))
	}
	if *check {
		ok, err := runCheck(cfg, os.Stdout)
		if err != nil {
			fail(err)
		}
		if !ok {
			os.Exit(1)
		}
		return
	}
	if !loopback.Addr(*listen) || !loopback.Addr(*upstream) {
		fail(errors.New("-listen and -upstream must be loopback addresses"))
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fail(err)
	}
	p := newProxy(cfg, *upstream)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGUSR1)
	go func() {
		for s := range sig {
			if s == syscall.SIGUSR1 {
				fmt.Fprintln(os.Stderr, time.Now().Format(time.RFC3339Nano), p.stats.String())
				continue
			}
			fmt.Fprintln(os.Stderr, "wanproxy: exit,", p.stats.String())
			l.Close()
			return
		}
	}()
	fmt.Println(l.Addr().String())
	if err := p.serve(l); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "wanproxy:", err)
	os.Exit(2)
}

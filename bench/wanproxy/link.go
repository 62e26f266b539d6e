package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// bucket is a token bucket of bytes. A reservation may take the level below zero; the
// caller then waits until the debt has been refilled, so consecutive reservations are
// spaced at the bucket's rate whatever their sizes. A nil bucket is unlimited.
type bucket struct {
	mu    sync.Mutex
	rate  float64 // bytes per second
	burst float64 // bytes
	level float64
	last  time.Time
}

func newBucket(rate, burst float64) *bucket {
	if rate <= 0 {
		return nil
	}
	return &bucket{rate: rate, burst: burst, level: burst}
}

// reserve takes n bytes at time now and returns how long the caller must wait before
// they may pass.
func (b *bucket) reserve(now time.Time, n int) time.Duration {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() {
		if dt := now.Sub(b.last).Seconds(); dt > 0 {
			b.level = min(b.burst, b.level+dt*b.rate)
		}
	}
	if now.After(b.last) {
		b.last = now
	}
	b.level -= float64(n)
	if b.level >= 0 {
		return 0
	}
	return time.Duration(-b.level / b.rate * float64(time.Second))
}

// wait reserves n bytes and sleeps as long as the bucket says.
func (b *bucket) wait(n int) {
	if d := b.reserve(time.Now(), n); d > 0 {
		time.Sleep(d)
	}
}

// config is one emulated link.
type config struct {
	rtt       time.Duration
	connRate  float64 // bytes/s per connection and direction; 0: unlimited
	totalRate float64 // bytes/s shared by all connections, per direction; 0: unlimited
	burst     float64 // bytes a bucket lets through at once after being idle
	chunk     int     // largest read, bytes
	inflight  int     // largest number of chunks queued per direction and connection
}

// stats counts what the proxy has carried.
type stats struct {
	conns, active, up, down atomic.Int64
}

func (s *stats) String() string {
	return fmt.Sprintf("conns=%d active=%d up=%d down=%d", s.conns.Load(), s.active.Load(), s.up.Load(), s.down.Load())
}

// proxy carries connections from a listener to the upstream through the emulated link.
type proxy struct {
	cfg      config
	upstream string
	// totalUp and totalDown are the buckets shared by all connections, one per direction.
	totalUp, totalDown *bucket
	pool               sync.Pool
	stats              stats
}

func newProxy(cfg config, upstream string) *proxy {
	p := &proxy{
		cfg:       cfg,
		upstream:  upstream,
		totalUp:   newBucket(cfg.totalRate, max(cfg.burst, float64(cfg.chunk))),
		totalDown: newBucket(cfg.totalRate, max(cfg.burst, float64(cfg.chunk))),
	}
	p.pool.New = func() any { b := make([]byte, cfg.chunk); return &b }
	return p
}

// serve accepts connections until the listener is closed.
func (p *proxy) serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		go p.handle(c.(*net.TCPConn), time.Now())
	}
}

// handle carries one connection. The client's first bytes are held for one round trip,
// the cost of the TCP handshake that loopback does not have; after that, every chunk in
// either direction is delayed by half the round trip.
func (p *proxy) handle(client *net.TCPConn, accepted time.Time) {
	p.stats.conns.Add(1)
	p.stats.active.Add(1)
	defer p.stats.active.Add(-1)
	up, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
	if err != nil {
		client.SetLinger(0)
		client.Close()
		return
	}
	server := up.(*net.TCPConn)
	var abort sync.Once
	kill := func() {
		abort.Do(func() {
			client.SetLinger(0)
			server.SetLinger(0)
			client.Close()
			server.Close()
		})
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		p.pipe(server, client, p.cfg.connRate, p.totalUp, accepted.Add(p.cfg.rtt), &p.stats.up, kill)
	}()
	go func() {
		defer wg.Done()
		p.pipe(client, server, p.cfg.connRate, p.totalDown, time.Time{}, &p.stats.down, kill)
	}()
	wg.Wait()
	client.Close()
	server.Close()
}

// chunk is a piece of the stream on the delay line.
type chunk struct {
	buf *[]byte
	n   int
	at  time.Time // when it reaches the other end
	end error     // set on the last chunk: io.EOF for an orderly close, else the read error
}

// pipe carries one direction: a reader admits chunks through the buckets and stamps each
// with its arrival time at the far end; a writer delivers them at that time. The queue
// between them holds what is in flight (rate x one-way delay), bounded by cfg.inflight
// chunks, so a slow receiver stops the reader and, through TCP, the sender.
func (p *proxy) pipe(dst, src *net.TCPConn, rate float64, total *bucket, gate time.Time, count *atomic.Int64, kill func()) {
	conn := newBucket(rate, max(p.cfg.burst, float64(p.cfg.chunk)))
	oneWay := p.cfg.rtt / 2
	q := make(chan chunk, p.cfg.inflight)
	go func() {
		defer close(q)
		for {
			bp := p.pool.Get().(*[]byte)
			n, err := src.Read(*bp)
			if n > 0 {
				conn.wait(n)
				total.wait(n)
				at := time.Now()
				if at.Before(gate) {
					at = gate
				}
				q <- chunk{buf: bp, n: n, at: at.Add(oneWay)}
			} else {
				p.pool.Put(bp)
			}
			if err != nil {
				at := time.Now()
				if at.Before(gate) {
					at = gate
				}
				q <- chunk{at: at.Add(oneWay), end: err}
				return
			}
		}
	}()
	var (
		bufs    net.Buffers
		held    []*[]byte
		next    chunk
		hasNext bool
		failed  bool
	)
	release := func() {
		for _, b := range held {
			p.pool.Put(b)
		}
		held, bufs = held[:0], bufs[:0]
	}
	for {
		if !hasNext {
			c, ok := <-q
			if !ok {
				return
			}
			next, hasNext = c, true
		}
		if failed { // drain until the reader, whose socket is closed, gives up
			if next.buf != nil {
				p.pool.Put(next.buf)
			}
			hasNext = false
			continue
		}
		if d := time.Until(next.at); d > 0 {
			time.Sleep(d)
		}
		// Deliver this chunk and every queued one that is also due, in one write.
		now := time.Now()
		var end error
		for hasNext && !next.at.After(now) {
			if next.buf != nil {
				bufs = append(bufs, (*next.buf)[:next.n])
				held = append(held, next.buf)
			}
			if next.end != nil {
				end = next.end
				hasNext = false
				break
			}
			select {
			case c, ok := <-q:
				next, hasNext = c, ok
			default:
				hasNext = false
			}
		}
		var n int64
		for _, b := range bufs {
			n += int64(len(b))
		}
		if len(bufs) > 0 {
			if _, err := bufs.WriteTo(dst); err != nil {
				release()
				kill()
				failed = true
				continue
			}
			count.Add(n)
		}
		release()
		switch {
		case end == io.EOF:
			dst.CloseWrite()
		case end != nil:
			kill()
			failed = true
		}
	}
}

// parseRate reads a rate such as 12.5MB, 125MB/s, 100Mbit or 4MiB; "0" or "" is unlimited.
func parseRate(s string) (float64, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "/s")
	if t == "" || t == "0" {
		return 0, nil
	}
	units := []struct {
		suffix string
		mult   float64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
		{"kbit", 1e3 / 8}, {"Mbit", 1e6 / 8}, {"Gbit", 1e9 / 8},
		{"KB", 1e3}, {"kB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1},
	}
	mult := 1.0
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("rate %q: want a number with an optional unit (B, KB, MB, GB, KiB, MiB, GiB, kbit, Mbit, Gbit)", s)
	}
	return v * mult, nil
}

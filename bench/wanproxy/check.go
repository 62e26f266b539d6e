package main

import (
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// runCheck starts an upstream HTTP server and the proxy in front of it, both on loopback,
// and measures through the proxy what a client gets: a GET on a new connection (two round
// trips: the handshake and the request), a GET on a kept connection (one), the rate of one
// stream, and the rate of 16 at once. It prints each against what cfg says and reports
// whether all are within 10%.
func runCheck(cfg config, w io.Writer) (bool, error) {
	ul, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return false, err
	}
	defer ul.Close()
	block := make([]byte, 1<<20)
	for i := range block {
		block[i] = byte(i * 7)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/small", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/blob/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.PathValue("n"), 10, 64)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		for n > 0 {
			k := min(n, int64(len(block)))
			if _, err := w.Write(block[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	go http.Serve(ul, mux)

	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return false, err
	}
	defer pl.Close()
	p := newProxy(cfg, ul.Addr().String())
	go p.serve(pl)
	base := "http://" + pl.Addr().String()

	get := func(c *http.Client, path string) (int64, error) {
		resp, err := c.Get(base + path)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("%s: %s", path, resp.Status)
		}
		return io.Copy(io.Discard, resp.Body)
	}
	ok := true
	report := func(what string, got, want float64, unit string) {
		verdict := "ok"
		if want > 0 && math.Abs(got-want)/want > 0.10 {
			verdict, ok = "OFF BY MORE THAN 10%", false
		}
		fmt.Fprintf(w, "%-34s %9.2f %-4s (set: %9.2f)  %s\n", what, got, unit, want, verdict)
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	fmt.Fprintf(w, "wanproxy check: rtt %v, conn-rate %s, total-rate %s, burst %.0f bytes\n",
		cfg.rtt, fmtRate(cfg.connRate), fmtRate(cfg.totalRate), cfg.burst)

	// A GET on a new connection: the handshake's round trip, then the request's.
	var fresh []time.Duration
	for range 5 {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		t0 := time.Now()
		if _, err := get(c, "/small"); err != nil {
			return false, err
		}
		fresh = append(fresh, time.Since(t0))
	}
	report("GET, new connection (median of 5)", ms(median(fresh)), 2*ms(cfg.rtt), "ms")

	// GETs on one kept connection: one round trip each.
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	if _, err := get(c, "/small"); err != nil {
		return false, err
	}
	var kept []time.Duration
	for range 10 {
		t0 := time.Now()
		if _, err := get(c, "/small"); err != nil {
			return false, err
		}
		kept = append(kept, time.Since(t0))
	}
	report("GET, kept connection (median of 10)", ms(median(kept)), ms(cfg.rtt), "ms")

	// One stream: its rate is the smaller cap. The request's round trip is taken out.
	one := minRate(cfg.connRate, cfg.totalRate)
	size := int64(64 << 20)
	if one > 0 {
		size = max(4<<20, int64(3*one))
	}
	t0 := time.Now()
	if _, err := get(c, fmt.Sprintf("/blob/%d", size)); err != nil {
		return false, err
	}
	dt := time.Since(t0) - cfg.rtt
	fmt.Fprintf(w, "one stream: %d bytes in %v\n", size, dt.Round(time.Millisecond))
	report("one stream, MB/s", float64(size)/dt.Seconds()/1e6, one/1e6, "MB/s")

	// Sixteen streams at once, each on its own connection.
	const n = 16
	all := minRate(n*cfg.connRate, cfg.totalRate)
	each := int64(16 << 20)
	if all > 0 {
		each = max(1<<20, int64(3*all/n))
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	t0 = time.Now()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			if _, err := get(c, fmt.Sprintf("/blob/%d", each)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return false, err
	}
	dt = time.Since(t0) - 2*cfg.rtt
	fmt.Fprintf(w, "%d streams: %d bytes in %v\n", n, n*each, dt.Round(time.Millisecond))
	report(fmt.Sprintf("%d streams, MB/s in all", n), float64(n*each)/dt.Seconds()/1e6, all/1e6, "MB/s")
	fmt.Fprintf(w, "proxy carried: %s\n", p.stats.String())
	return ok, nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// minRate is the smaller of two rates where 0 is unlimited.
func minRate(a, b float64) float64 {
	switch {
	case a <= 0:
		return b
	case b <= 0:
		return a
	}
	return min(a, b)
}

func fmtRate(r float64) string {
	if r <= 0 {
		return "unlimited"
	}
	s := strconv.FormatFloat(r/1e6, 'f', 3, 64)
	return strings.TrimRight(strings.TrimRight(s, "0"), ".") + "MB/s"
}

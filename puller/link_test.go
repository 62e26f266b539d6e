package puller

import (
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/pullkit/pullkit/manifest"
)

func TestURLExpiry(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		name, u string
		want    time.Time
		ok      bool
	}{
		{"S3 SigV4", "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20260102T030405Z&X-Amz-Expires=600&X-Amz-Signature=ab", at("2026-01-02T03:14:05Z"), true},
		{"S3 SigV4, other case", "https://h/k?x-amz-date=20260102T030405Z&x-amz-expires=1200", at("2026-01-02T03:24:05Z"), true},
		{"GCS V4", "https://storage.googleapis.com/b/o?X-Goog-Date=20260102T030405Z&X-Goog-Expires=900&X-Goog-Signature=cd", at("2026-01-02T03:19:05Z"), true},
		{"Azure SAS", "https://a.blob.core.windows.net/c/b?sv=2020-08-04&se=2026-01-02T03%3A04%3A05Z&sp=r&sig=xyz", at("2026-01-02T03:04:05Z"), true},
		{"Azure se without a signature", "https://a/c?se=2026-01-02T03:04:05Z", time.Time{}, false},
		{"CloudFront", "https://d.cloudfront.net/b?Expires=1767323045&Signature=x&Key-Pair-Id=k", time.Unix(1767323045, 0), true},
		{"Docker Hub's CDN", "https://production.cloudflare.docker.com/registry-v2/docker/registry/v2/blobs/sha256/ab/abc/data?verify=1767323045-AbCdEf%2B", time.Unix(1767323045, 0), true},
		{"no query", "https://h/b", time.Time{}, false},
		{"nothing it knows", "https://h/b?token=abc", time.Time{}, false},
		{"amz date without expires", "https://h/b?X-Amz-Date=20260102T030405Z", time.Time{}, false},
		{"a bad date", "https://h/b?X-Amz-Date=yesterday&X-Amz-Expires=60", time.Time{}, false},
		{"a negative life", "https://h/b?X-Amz-Date=20260102T030405Z&X-Amz-Expires=-60", time.Time{}, false},
		{"expires not a number", "https://h/b?Expires=soon", time.Time{}, false},
		{"verify without a time", "https://h/b?verify=abc-def", time.Time{}, false},
		{"a bad escape is skipped", "https://h/b?x=%zz&Expires=1767323045", time.Unix(1767323045, 0), true},
	} {
		u, err := url.Parse(tc.u)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := urlExpiry(u)
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("%s: %v, %v; want %v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzURLExpiry(f *testing.F) {
	f.Add("X-Amz-Date=20260102T030405Z&X-Amz-Expires=600")
	f.Add("se=2026-01-02T03%3A04%3A05Z&sig=x")
	f.Add("verify=1767323045-abc&Expires=1")
	f.Add("X-Goog-Date=99991231T235959Z&X-Goog-Expires=2147483648")
	f.Fuzz(func(t *testing.T, q string) {
		u := &url.URL{Scheme: "https", Host: "h", Path: "/b", RawQuery: q}
		exp, ok := urlExpiry(u)
		if !ok && !exp.IsZero() {
			t.Fatalf("%q: no expiry, yet %v", q, exp)
		}
		l := &location{u: u, got: time.Unix(1_800_000_000, 0), expires: exp}
		l.usable(time.Unix(1_800_000_000, 0)) // must not panic, whatever the dates
	})
}

// TestLocationUsable: a signed URL is asked for again before it expires, by a margin of
// 5 s or a quarter of its life, whichever is less; one that says nothing is used until
// storage refuses it.
func TestLocationUsable(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	for _, tc := range []struct {
		life, at time.Duration
		want     bool
	}{
		{time.Hour, 0, true},
		{time.Hour, time.Hour - 6*time.Second, true},
		{time.Hour, time.Hour - 5*time.Second, false},
		{time.Hour, 2 * time.Hour, false},
		{8 * time.Second, 5 * time.Second, true},  // margin 2 s
		{8 * time.Second, 6 * time.Second, false}, // within it
		{time.Second, 800 * time.Millisecond, false},
	} {
		l := &location{got: t0, expires: t0.Add(tc.life)}
		if got := l.usable(t0.Add(tc.at)); got != tc.want {
			t.Errorf("life %v, at %v: usable %v, want %v", tc.life, tc.at, got, tc.want)
		}
	}
	if !(&location{got: t0}).usable(t0.Add(1000 * time.Hour)) {
		t.Errorf("a URL without a stated expiry is not used")
	}
}

// TestH2Window sizes HTTP/2 windows on made-up measurements: twice the bandwidth-delay
// product, within 256 KiB and laneWindows / maxLanes (1 MiB), the most while nothing is
// measured.
func TestH2Window(t *testing.T) {
	for _, tc := range []struct {
		rate float64
		rtt  time.Duration
		want int
	}{
		{0, 0, 1 << 20},
		{5e6, 0, 1 << 20},
		{1e6, 20 * time.Millisecond, 256 << 10},
		{2.5e6, 100 * time.Millisecond, 500e3},
		{12.5e6, 40 * time.Millisecond, 1e6},
		{50e6, 100 * time.Millisecond, 1 << 20},
		{1e9, 200 * time.Millisecond, 1 << 20},
	} {
		if got := h2Window(tc.rate, tc.rtt); got != tc.want {
			t.Errorf("h2Window(%.0f, %v) = %d, want %d", tc.rate, tc.rtt, got, tc.want)
		}
	}
}

func TestNeedsH1(t *testing.T) {
	for _, tc := range []struct {
		err  string
		want bool
	}{
		{"stream error: stream ID 3; HTTP_1_1_REQUIRED", true},
		{"http2: server sent GOAWAY and closed the connection; LastStreamID=1, ErrCode=HTTP_1_1_REQUIRED, debug=\"\"", true},
		{"http2: server sent GOAWAY and closed the connection; LastStreamID=1, ErrCode=PROTOCOL_ERROR, debug=\"\"", true},
		{"http2: server sent GOAWAY and closed the connection; LastStreamID=1, ErrCode=NO_ERROR, debug=\"\"", false},
		{"connection reset by peer", false},
	} {
		if got, _ := needsH1(errors.New(tc.err)); got != tc.want {
			t.Errorf("needsH1(%q) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestPickLane chooses lanes for blob requests on made-up states: an idle lane (the
// stream's own, then one no stream holds, then any), else a new one while there are
// fewer than maxLanes (a stream's next request does not share the capped connection its
// last one is ending on), and the least loaded one after that, the stream's own on a tie.
func TestPickLane(t *testing.T) {
	a, b, c := new(int), new(int), new(int) // streams
	lanes := func(specs ...any) []*lane {   // active, stream, active, stream, ...
		var ls []*lane
		for i := 0; i < len(specs); i += 2 {
			ls = append(ls, &lane{active: specs[i].(int), stream: specs[i+1]})
		}
		return ls
	}
	full := func(active int, extra ...*lane) []*lane {
		ls := append([]*lane(nil), extra...)
		for len(ls) < maxLanes {
			ls = append(ls, &lane{active: active, stream: new(int)})
		}
		return ls
	}
	for _, tc := range []struct {
		name  string
		lanes []*lane
		id    any
		want  int // index of the lane chosen, -1 for a new lane
	}{
		{"no lane yet", nil, a, -1},
		{"not the stream's own lane while its last request ends there", lanes(1, b, 1, a), a, -1},
		{"the stream's own lane, idle", lanes(0, nil, 0, a), a, 1},
		{"the stream's own idle lane before one no stream holds", lanes(0, nil, 0, c, 0, a), a, 2},
		{"another stream's idle lane when no other is idle", lanes(1, a, 0, c), a, 1},
		{"its own lane carries two already: like any other", lanes(1, b, 2, a), a, -1},
		{"another stream's lane is not taken while a new one may open", lanes(1, b, 1, c), a, -1},
		{"an idle lane before a new one", lanes(1, b, 0, c), a, 1},
		{"an idle lane no stream holds before one a stream left", lanes(0, b, 0, nil), a, 1},
		{"no stream named: an idle lane", lanes(1, b, 0, c), nil, 1},
		{"no stream named: a new lane rather than a busy one", lanes(1, b), nil, -1},
		{"at maxLanes: the least loaded", full(2, &lane{active: 1, stream: b}), a, 0},
		{"at maxLanes, its own lane on a tie", full(1, &lane{active: 1, stream: b}, &lane{active: 1, stream: a}), a, 1},
		{"at maxLanes, a less loaded lane before its own", full(2, &lane{active: 2, stream: a}, &lane{active: 1, stream: b}), a, 1},
	} {
		got := pickLane(tc.lanes, tc.id)
		idx := -1
		for i, ln := range tc.lanes {
			if ln == got {
				idx = i
			}
		}
		if got != nil && idx < 0 {
			t.Fatalf("%s: a lane that is not one of the host's", tc.name)
		}
		if idx != tc.want {
			t.Errorf("%s: lane %d, want %d", tc.name, idx, tc.want)
		}
	}
}

// TestLaneWindowsBounded: whatever a host's link was measured to be, and however many
// blob requests are in flight, the receive windows of all its lanes add up to
// laneWindows at most (the bytes HTTP/2 may hold in the process for bodies nobody reads
// yet), each stream's window within its connection's.
func TestLaneWindowsBounded(t *testing.T) {
	for _, l := range []struct {
		rate float64
		rtt  time.Duration
	}{{0, 0}, {5e6, 100 * time.Millisecond}, {125e6, 40 * time.Millisecond}, {1e9, time.Second}, {1e3, time.Millisecond}} {
		c, err := New()
		if err != nil {
			t.Fatal(err)
		}
		hl := c.link("blobs.example:443")
		hl.link.ConnRate, hl.link.RTT = l.rate, l.rtt
		for range 2 * maxLanes { // every request held: a lane each while they may open
			if _, err := hl.acquire(c.route, nil, nil, new(int)); err != nil {
				t.Fatal(err)
			}
		}
		if len(hl.lanes) != maxLanes {
			t.Errorf("%d lanes for %d requests in flight, want %d", len(hl.lanes), 2*maxLanes, maxLanes)
		}
		sum := 0
		for _, ln := range hl.lanes {
			h := ln.tr.HTTP2
			if h == nil || h.MaxReceiveBufferPerConnection < 64<<10 || h.MaxReceiveBufferPerStream > h.MaxReceiveBufferPerConnection {
				t.Fatalf("rate %.0f, rtt %v: a lane's windows %+v: want a connection window (64 KiB at least) that bounds its streams'", l.rate, l.rtt, h)
			}
			sum += h.MaxReceiveBufferPerConnection
		}
		if sum > laneWindows {
			t.Errorf("rate %.0f, rtt %v: the lanes' windows add up to %d, over %d", l.rate, l.rtt, sum, laneWindows)
		}
	}
}

// newLink makes a client and returns, for host (host:port), its profile, the
// profile's own transport and the host's link.
func newLink(t *testing.T, host string) (*Client, *hostProfile, *http.Transport, *hostLink) {
	t.Helper()
	c, err := New()
	if err != nil {
		t.Fatal(err)
	}
	p := c.hostProfile(host)
	own, err := c.route.base(p)
	if err != nil {
		t.Fatal(err)
	}
	return c, p, own, c.link(host)
}

// TestFirstLaneIsProfiles: a host's first lane is its profile's own transport, whose
// connection the manifest came over (no new handshake for the first blob request), with
// a lane's windows at most; the lanes after it are transports of their own.
func TestFirstLaneIsProfiles(t *testing.T) {
	c, p, own, hl := newLink(t, "reg.example:443")
	if h := own.HTTP2; h == nil || h.MaxReceiveBufferPerStream > laneWindows/maxLanes || h.MaxReceiveBufferPerConnection > laneWindows/maxLanes || h.MaxReceiveBufferPerConnection < 64<<10 {
		t.Fatalf("the profile's transport has windows %+v, want a lane's (at most %d)", h, laneWindows/maxLanes)
	}
	a, b := new(int), new(int)
	first, err := hl.acquire(c.route, p, own, a)
	if err != nil {
		t.Fatal(err)
	}
	if first.tr != own {
		t.Errorf("the first lane is a new transport, want the profile's own")
	}
	second, err := hl.acquire(c.route, p, own, b) // the first lane is busy
	if err != nil {
		t.Fatal(err)
	}
	if second == first || second.tr == own {
		t.Errorf("a second lane while the first is busy shares the profile's transport")
	}
	hl.release(first)
	again, err := hl.acquire(c.route, p, own, a)
	if err != nil {
		t.Fatal(err)
	}
	if again != first {
		t.Errorf("the stream's idle first lane was not taken back")
	}
}

// TestH1HostKeepsEarlyLanes: lanes opened for a host before its protocol was known (a
// CDN's host meets a burst of redirected requests first) are taken while idle once the
// host is known to speak HTTP/1.1, for their open connections; with none idle a request
// goes to the profile's transport, and no lane is added.
func TestH1HostKeepsEarlyLanes(t *testing.T) {
	c, p, own, hl := newLink(t, "cdn.example:443")
	var early []*lane
	for range 3 { // before any answer: a lane each
		ln, err := hl.acquire(c.route, p, own, new(int))
		if err != nil || ln == nil {
			t.Fatalf("acquire before the protocol is known: %v, %v", ln, err)
		}
		early = append(early, ln)
	}
	hl.mu.Lock()
	hl.proto = "HTTP/1.1"
	hl.mu.Unlock()
	hl.release(early[1])
	ln, err := hl.acquire(c.route, p, own, new(int))
	if err != nil {
		t.Fatal(err)
	}
	if ln != early[1] {
		t.Fatalf("over HTTP/1.1 with lane 1 idle, acquire gave %p, want lane 1 (%p)", ln, early[1])
	}
	ln, err = hl.acquire(c.route, p, own, new(int))
	if err != nil {
		t.Fatal(err)
	}
	if ln != nil {
		t.Errorf("over HTTP/1.1 with every lane busy, acquire gave a lane, want none (the profile's transport)")
	}
	if len(hl.lanes) != len(early) {
		t.Errorf("%d lanes after HTTP/1.1 was learnt, want the %d opened before", len(hl.lanes), len(early))
	}
}

// TestLinkBuffered: what a blob fetcher tells the transfer it may hold of bodies in
// flight (layers.Link.Buffered): its lanes' windows for a host spoken to over TLS that
// is not known to speak HTTP/1.1 only (its blob GETs' redirect host's, when known);
// nothing over plain HTTP or HTTP/1.1, whose unread bytes wait in the kernel.
func TestLinkBuffered(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plain bool
		set   func(c *Client)
		want  int64
	}{
		{"TLS, nothing known yet", false, func(*Client) {}, laneWindows},
		{"TLS, answered over HTTP/2", false, func(c *Client) { c.link("reg.example:443").proto = "HTTP/2.0" }, laneWindows},
		{"TLS, answered over HTTP/1.1", false, func(c *Client) { c.link("reg.example:443").proto = "HTTP/1.1" }, 0},
		{"TLS, fallen back to HTTP/1.1", false, func(c *Client) { c.link("reg.example:443").h1 = true }, 0},
		{"redirected to storage speaking HTTP/1.1", false, func(c *Client) {
			c.link("reg.example:443").redirect = "cdn.example:443"
			c.link("cdn.example:443").proto = "HTTP/1.1"
		}, 0},
		{"redirected to storage speaking HTTP/2", false, func(c *Client) {
			c.link("reg.example:443").redirect = "cdn.example:443"
			c.link("reg.example:443").proto = "HTTP/1.1"
			c.link("cdn.example:443").proto = "HTTP/2.0"
		}, laneWindows},
		{"plain HTTP", true, func(*Client) {}, 0},
	} {
		opts := []Option{}
		if tc.plain {
			opts = append(opts, WithPlainHTTP(true))
		}
		c, err := New(opts...)
		if err != nil {
			t.Fatal(err)
		}
		tc.set(c)
		b := &blobSource{eps: []*endpoint{{c: c, host: "reg.example"}}}
		if got := b.Link(manifest.Descriptor{}).Buffered; got != tc.want {
			t.Errorf("%s: Buffered %d, want %d", tc.name, got, tc.want)
		}
	}
}

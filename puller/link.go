package puller

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pullkit/pullkit/internal/stream"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
)

// Per-host links, learnt at run time and kept for the client's life: the protocol a
// host speaks, how blob requests spread over connections to it, whether it serves
// ranges, where its blob GETs redirect, and what transfers measured of it (round trip,
// rate per connection, the connections past which the rate per connection fell). This
// sits at the per-host seam (routeTransport): a request goes through the transport of
// its host's TLS profile, or through one of the host's lanes.
//
//   - HTTP/2 where a host offers it (ALPN), HTTP/1.1 otherwise; a host that answers 421
//     over HTTP/2, refuses a stream with HTTP_1_1_REQUIRED, or ends a connection with
//     a GOAWAY that carries an error is spoken to over HTTP/1.1 from then on, the
//     request that met it sent again over HTTP/1.1 when it can be.
//   - Over HTTP/2 every request shares one connection, so one connection's cap (a CDN's,
//     a proxy's) would cap the whole pull. Blob requests therefore go over lanes: each
//     lane is a transport of its own (its own connection), a request takes an idle lane
//     (see pickLane), and a new lane opens when every lane carries one, up to maxLanes.
//     So a pull uses as many connections under HTTP/2 as under HTTP/1.1: one per blob
//     request in flight, a stream's next request included, whose answer comes on a
//     connection of its own while its last one's ends (the transfer adds requests only
//     while they add throughput); and it keeps HTTP/2's reuse: a lane's connection
//     serves the next request without a new handshake. Manifests, configs' tokens and
//     other small requests share the profile's own transport, which is also the host's
//     first lane (its connection is open by the time the first blob is asked for).
//   - A lane's flow-control windows are sized for the host's bandwidth-delay product
//     as transfers measured it (see h2Window), so that a stream is not held back by its
//     window, nor given more memory than the link needs; and all of a host's lanes'
//     windows add up to laneWindows at most, however many lanes there are: what the
//     server may send ahead of a reader that waits (an unpack holding the transfer
//     back) is memory in the process, and it counts against the pull's bound.
//
// maxLanes is twice the transfer's default requests in flight (layers.DefaultJobs, 16):
// each of them with its next one overlapping its end; it is also the most requests a
// transfer keeps in flight by default, tiny blobs' included (layers.DefaultTinyJobs).
// With one lane per request in flight, and the next request on the lane its stream's
// last request was leaving (as this did before), a stream's two answers shared one
// capped connection, and 1 x 256 MiB over HTTP/2
// through a 5 MB/s-per-connection, 100 ms link took 5.1 s against 3.9 s over HTTP/1.1
// (bench/wan.sh, profile B); with a lane for each, 4.3 s.
const maxLanes = 32

// laneWindows is the most the receive windows of all of a host's lanes add up to: the
// bytes HTTP/2 may hold in the process for blob bodies nobody reads yet. The transfer
// takes what the lanes hold out of its own memory budget for received blocks (layers'
// memBudget, up to half of it), so that both together, with the runtime and an
// unpack's buffers, stay within the 64 MiB a pull's peak RSS is bound by: a part's
// window is full only while the writer keeps its reader waiting, and then its next
// request's window fills at most. Each lane gets laneWindows / maxLanes (1 MiB) at
// most, for its connection and for each of its streams alike.
const laneWindows = 32 << 20

// hostLink is what the client knows of one host (host:port).
type hostLink struct {
	host string

	mu       sync.Mutex
	proto    string // the protocol of its last answer ("HTTP/2.0", "HTTP/1.1"), "" before one
	h1       bool   // HTTP/1.1 only, from now on
	h1Why    string
	ranges   int8   // 1: ranges served; -1: a range was answered with the whole blob; 0: unknown
	redirect string // where its blob GETs were last redirected (host:port)
	link     layers.Link
	lanes    []*lane
}

// lane is a transport of a host's own, for blob requests.
type lane struct {
	tr     *http.Transport
	active int // blob requests in flight on it (under the host's mu)
	stream any // the stream (internal/stream) of the last request it took, nil for none
}

// link returns the client's hostLink for host (host:port), making it.
func (c *Client) link(host string) *hostLink {
	if v, ok := c.links.Load(host); ok {
		return v.(*hostLink)
	}
	v, _ := c.links.LoadOrStore(host, &hostLink{host: host})
	return v.(*hostLink)
}

// h2Window sizes an HTTP/2 lane's flow-control window (its connection's, and each of its
// streams'), from the rate one connection got and the round trip: twice the
// bandwidth-delay product, so that a stream is not held back by its window, between
// 256 KiB and laneWindows / maxLanes (1 MiB: at most what the lane may hold in the
// process while its reader waits; Go's default is 4 MiB per stream and 1 GiB per
// connection), the most before anything is measured. A link whose bandwidth-delay
// product is more than half of that gets more connections rather than larger windows:
// the transfer splits while its streams are what limit it.
func h2Window(rate float64, rtt time.Duration) int {
	const lo, hi = 256 << 10, laneWindows / maxLanes
	if rate <= 0 || rtt <= 0 {
		return hi
	}
	w := int(2 * rate * rtt.Seconds())
	return min(max(w, lo), hi)
}

// needsH1 reports an HTTP/2 failure after which a host is spoken to over HTTP/1.1: a
// stream or connection refused with HTTP_1_1_REQUIRED, or a GOAWAY carrying an error
// (not NO_ERROR, which is an orderly shutdown that net/http retries by itself).
func needsH1(err error) (bool, string) {
	if err == nil {
		return false, ""
	}
	s := err.Error()
	switch {
	case strings.Contains(s, "HTTP_1_1_REQUIRED"):
		return true, "HTTP_1_1_REQUIRED"
	case strings.Contains(s, "server sent GOAWAY") && !strings.Contains(s, "ErrCode=NO_ERROR"):
		code := "an error"
		if _, after, ok := strings.Cut(s, "ErrCode="); ok {
			code, _, _ = strings.Cut(after, ",")
		}
		return true, "GOAWAY " + code
	}
	return false, ""
}

// viaLink sends req through tr (its profile's transport) or a lane of its host, and
// learns from the answer.
func (rt *routeTransport) viaLink(p *hostProfile, tr *http.Transport, req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" {
		return tr.RoundTrip(req) // HTTP/2 needs TLS here: nothing to choose
	}
	hl := rt.c.link(canonicalHost(req.URL))
	if h1 := hl.http1(); h1 {
		h1tr, err := rt.variant(p, variantH1, 0)
		if err != nil {
			return nil, err
		}
		return h1tr.RoundTrip(req)
	}
	var ln *lane
	use := tr
	if infoOf(req.Context()).blob {
		var err error
		if ln, err = hl.acquire(rt, p, tr, stream.Of(req.Context())); err != nil {
			return nil, err
		}
		if ln != nil {
			use = ln.tr
		}
	}
	resp, err := use.RoundTrip(req)
	if err != nil {
		hl.release(ln)
		if ok, why := needsH1(err); ok && replayable(req) && req.Context().Err() == nil {
			hl.fallback(why)
			return rt.viaLink(p, tr, req)
		}
		return nil, err
	}
	hl.mu.Lock()
	hl.proto = resp.Proto
	hl.mu.Unlock()
	if resp.ProtoMajor == 2 && resp.StatusCode == http.StatusMisdirectedRequest && replayable(req) {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		resp.Body.Close()
		hl.release(ln)
		hl.fallback("421 Misdirected Request")
		return rt.viaLink(p, tr, req)
	}
	if ln != nil || resp.ProtoMajor == 2 {
		resp.Body = &linkBody{ReadCloser: resp.Body, hl: hl, ln: ln, h2: resp.ProtoMajor == 2}
	}
	return resp, nil
}

// http1 reports whether the host is spoken to over HTTP/1.1 only.
func (hl *hostLink) http1() bool {
	hl.mu.Lock()
	defer hl.mu.Unlock()
	return hl.h1
}

// fallback makes the host HTTP/1.1 only, for the client's life.
func (hl *hostLink) fallback(why string) {
	hl.mu.Lock()
	if !hl.h1 {
		hl.h1, hl.h1Why = true, why
	}
	lanes := hl.lanes
	hl.lanes = nil
	hl.mu.Unlock()
	for _, ln := range lanes {
		ln.tr.CloseIdleConnections()
	}
}

// acquire picks the lane for a blob request of stream id (nil: none): see pickLane. A
// host known to speak HTTP/1.1 needs none (nil): its transport opens a connection per
// request in flight by itself; an idle lane opened before the protocol was known is
// taken first, for its open connection. A host's first lane is own, the profile's
// transport (when given): the manifest and the config came over its connection, so the
// first blob request does not wait for a new connection's handshakes (two round trips
// with TLS), and the transfer judges its stream, and splits, that much sooner.
func (hl *hostLink) acquire(rt *routeTransport, p *hostProfile, own *http.Transport, id any) (*lane, error) {
	hl.mu.Lock()
	defer hl.mu.Unlock()
	if hl.proto != "" && !strings.HasPrefix(hl.proto, "HTTP/2") {
		// HTTP/1.1: lanes opened before the protocol was known (a CDN's host meets a
		// burst of redirected requests first) keep their connections, used first
		// while idle rather than left idle beside as many new ones.
		for _, ln := range hl.lanes {
			if ln.active == 0 {
				ln.active++
				ln.stream = id
				return ln, nil
			}
		}
		return nil, nil
	}
	best := pickLane(hl.lanes, id)
	if best == nil {
		tr := own
		if len(hl.lanes) > 0 || tr == nil {
			var err error
			if tr, err = rt.variant(p, variantLane, h2Window(hl.link.ConnRate, hl.link.RTT)); err != nil {
				return nil, err
			}
		}
		best = &lane{tr: tr}
		hl.lanes = append(hl.lanes, best)
	}
	best.active++
	best.stream = id
	return best, nil
}

// pickLane chooses among a host's lanes for a request of stream id, or returns nil for
// a new lane:
//
//   - an idle lane: the stream's own first (a stream between requests gets its
//     connection back), then one no stream has used last, then any;
//   - else a new lane, up to maxLanes: a stream's next request gets a connection of
//     its own rather than share the one its last request is ending on, which a
//     per-connection cap (a CDN's, a proxy's) would split between the two;
//   - else the lane with the fewest requests in flight, the stream's own on a tie: its
//     last request is ending there, and another stream's rate is not halved.
func pickLane(lanes []*lane, id any) *lane {
	var idle, busy *lane
	rank := func(ln *lane) int { // among idle lanes: lower is better
		switch {
		case id != nil && ln.stream == id:
			return 0
		case ln.stream == nil:
			return 1
		}
		return 2
	}
	for _, ln := range lanes {
		if ln.active == 0 {
			if idle == nil || rank(ln) < rank(idle) {
				idle = ln
			}
			continue
		}
		if busy == nil || ln.active < busy.active || (ln.active == busy.active && id != nil && ln.stream == id) {
			busy = ln
		}
	}
	switch {
	case idle != nil:
		return idle
	case len(lanes) < maxLanes:
		return nil
	}
	return busy
}

func (hl *hostLink) release(ln *lane) {
	if ln == nil {
		return
	}
	hl.mu.Lock()
	ln.active--
	hl.mu.Unlock()
}

// linkBody gives its lane back when it is closed, and makes its host HTTP/1.1 only
// when it breaks with an error that asks for it.
type linkBody struct {
	io.ReadCloser
	hl   *hostLink
	ln   *lane
	h2   bool
	once sync.Once
}

func (b *linkBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && b.h2 && !errors.Is(err, io.EOF) {
		if ok, why := needsH1(err); ok {
			b.hl.fallback(why)
		}
	}
	return n, err
}

func (b *linkBody) Close() error {
	b.once.Do(func() { b.hl.release(b.ln) })
	return b.ReadCloser.Close()
}

// Variants of a profile's transport.
const (
	variantH1   = iota // HTTP/1.1 only
	variantLane        // a lane: a connection of its own, windows sized for the link
)

// variant builds (variantLane: each time; variantH1: once per profile) a transport like
// the profile's own, with the same TLS settings, dialer, proxy and deadlines.
func (rt *routeTransport) variant(p *hostProfile, kind, window int) (*http.Transport, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if kind == variantH1 {
		if tr := rt.h1[p]; tr != nil {
			return tr, nil
		}
	}
	cfg, err := rt.tlsConfig(p)
	if err != nil {
		return nil, err
	}
	tr := newBaseTransport(rt.c.timeouts, cfg, rt.c.proxyFor, rt.c.proxyTrusted)
	switch kind {
	case variantH1:
		var ps http.Protocols
		ps.SetHTTP1(true)
		tr.Protocols = &ps
		if rt.h1 == nil {
			rt.h1 = map[*hostProfile]*http.Transport{}
		}
		rt.h1[p] = tr
	case variantLane:
		tr.HTTP2 = laneH2(window)
	}
	return tr, nil
}

// laneH2 is a lane's HTTP/2 configuration: window bytes of flow-control window for its
// connection and for each of its streams alike.
func laneH2(window int) *http.HTTP2Config {
	return &http.HTTP2Config{MaxReceiveBufferPerStream: window, MaxReceiveBufferPerConnection: window}
}

// LinkOf returns what a transfer should start from for desc's blobs: what transfers
// over the same host measured (layers.LinkMemory).
//
// Buffered is laneWindows unless the host is known not to speak HTTP/2 (plain HTTP, an
// answer over HTTP/1.1, a fallback to it): what its lanes may hold of bodies nobody
// reads yet counts against the transfer's memory budget. A transport given with
// WithTransport has no lanes, and what it holds is its own: nothing is said of it.
func (b *blobSource) Link(desc manifest.Descriptor) layers.Link {
	hl, tls := b.hostFor(desc)
	if hl == nil {
		return layers.Link{}
	}
	hl.mu.Lock()
	defer hl.mu.Unlock()
	l := hl.link
	l.NoRanges = hl.ranges < 0
	if tls && b.eps[0].c.route != nil && !hl.h1 && (hl.proto == "" || strings.HasPrefix(hl.proto, "HTTP/2")) {
		l.Buffered = laneWindows
	}
	return l
}

// Learnt records what a transfer measured of desc's link.
func (b *blobSource) Learnt(desc manifest.Descriptor, l layers.Link) {
	hl, _ := b.hostFor(desc)
	if hl == nil {
		return
	}
	hl.mu.Lock()
	defer hl.mu.Unlock()
	if l.RTT > 0 {
		hl.link.RTT = l.RTT
	}
	if l.ConnRate > 0 {
		hl.link.ConnRate = l.ConnRate
	}
	if l.MaxConns > 0 {
		hl.link.MaxConns = l.MaxConns
	}
}

// hostFor is the link desc's bytes come over: the host the endpoint's blob GETs redirect
// to, when they do, else the endpoint's; and whether the endpoint is spoken to over TLS.
func (b *blobSource) hostFor(desc manifest.Descriptor) (*hostLink, bool) {
	if len(b.eps) == 0 {
		return nil, false
	}
	ep := b.order(desc)[0]
	scheme := ep.c.scheme(ep.host)
	host := canonicalHostOf(scheme, ep.host)
	hl := ep.c.link(host)
	hl.mu.Lock()
	to := hl.redirect
	hl.mu.Unlock()
	if to != "" {
		return ep.c.link(to), scheme == "https"
	}
	return hl, scheme == "https"
}

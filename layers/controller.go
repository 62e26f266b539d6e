package layers

import (
	"sync"
	"sync/atomic"
	"time"
)

// The controller decides when more connections go to the large blobs of a Fetch: a
// queued blob started beside the streams running, or a part split off a blob. It treats
// the link as the resource, across all the blobs of the call:
//
//   - a queued blob before a split (a blob of its own is a better use of a connection
//     than a second one for a blob already moving);
//   - only for blobs whose writer is mostly idle and whose stream hardly waits for it: one
//     connection is then what limits them (a long or capped link), whereas on a fast link
//     one stream already delivers about what sha256 can hash, and more connections only
//     cost CPU and the server's work;
//   - a split starts a new part, which asks for the next stretch of the blob that no
//     request has asked for: requests are never cut short, so nothing the server sends
//     is thrown away, and no byte is asked for twice. Only a blob whose server has
//     answered a range with that range is split (its first request is a range);
//   - a split blob is received in chunks from the front (4 MiB, or eight round trips'
//     worth of bytes when that is more): each part that ends its request takes the next
//     chunk, so the parts advance together and the writer, which hashes in order, keeps
//     up with them instead of hashing most of the blob after its last byte;
//   - near the end a request asks for a share of what is left rather than a whole
//     chunk (two round trips' worth of bytes, 1 MiB at least), so the last parts end
//     together;
//   - a part whose blob has nothing left to ask for hands its connection to a new part
//     of another blob that a split would choose, asking for that part's first stretch
//     before its own last request ends (see engine.handOff), so that the connection
//     does not wait a round trip between two blobs;
//   - no more connections than add throughput: the rate one connection gets is measured
//     over steady stretches (half a second or more with the same connections flowing),
//     and once the rate per connection falls under 60% of the best one seen, the link
//     (or the registry) is full and the connections then flowing are the most the Fetch
//     uses from then on; a 429 on a new part halves them.
const (
	tickPeriod   = 20 * time.Millisecond
	minPartSize  = 1 << 20
	chunkSize    = 4 << 20
	fullShare    = 0.6
	minLook      = 100 * time.Millisecond
	steadyLook   = 500 * time.Millisecond
	sampleWindow = 4 * time.Second
)

type controller struct {
	judge judgement
	rtt   atomic.Int64 // the shortest request latency seen, in nanoseconds

	mu       sync.Mutex
	samples  []sample
	best     float64 // the best rate per connection over a steady stretch
	hint     float64 // the rate per connection an earlier call measured (LinkMemory)
	maxParts int     // the most connections worth using; 0 until the link is found full
}

type sample struct {
	t     time.Time
	n     int64 // bytes received so far
	parts int64 // parts flowing
}

func (c *controller) init(j judgement) {
	c.judge = j
	c.samples = make([]sample, 0, 256)
}

// start takes what an earlier call measured of the link: its round trip and rate per
// connection size the first requests and chunks until this call has measured its own.
// Pinned, the controller takes nothing.
func (c *controller) start(l Link) {
	if !c.measured() {
		return
	}
	if l.RTT > 0 {
		c.noteRTT(l.RTT)
	}
	c.mu.Lock()
	c.hint = l.ConnRate
	c.mu.Unlock()
}

// learnt is what this call measured of its link (nothing when pinned).
func (c *controller) learnt() (Link, bool) {
	if !c.measured() {
		return Link{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return Link{RTT: time.Duration(c.rtt.Load()), ConnRate: c.best, MaxConns: c.maxParts}, true
}

// measured reports whether the controller decides by measurement rather than as pinned.
func (c *controller) measured() bool { return c.judge == judgeMeasured }

// noteRTT records a request's latency (to its response headers).
func (c *controller) noteRTT(d time.Duration) {
	for {
		cur := c.rtt.Load()
		if cur != 0 && int64(d) >= cur {
			return
		}
		if c.rtt.CompareAndSwap(cur, int64(d)) {
			return
		}
	}
}

func (c *controller) rttNow() time.Duration {
	if d := time.Duration(c.rtt.Load()); d > 0 {
		return d
	}
	return time.Millisecond
}

// sample records the bytes received so far and the parts flowing, and looks at the
// last steady stretch: the best rate per connection, and whether the link is full.
func (c *controller) sample(now time.Time, n, parts int64) {
	if !c.measured() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.samples) > 0 && now.Sub(c.samples[0].t) > sampleWindow {
		c.samples = c.samples[1:]
	}
	c.samples = append(c.samples, sample{now, n, parts})
	if parts == 0 {
		return
	}
	look := max(6*c.rttNow(), steadyLook)
	// The stretch back to where the parts flowing last changed.
	i := len(c.samples) - 1
	for i > 0 && c.samples[i-1].parts == parts {
		i--
	}
	a := c.samples[i]
	el := now.Sub(a.t)
	if el < look {
		return
	}
	per := float64(n-a.n) / el.Seconds() / float64(parts)
	if per > c.best {
		c.best = per
	}
	if c.maxParts == 0 && parts >= 2 && per < fullShare*c.best {
		c.maxParts = int(parts)
	}
}

// backOff is the answer to a 429 on a new part (under e.mu).
func (c *controller) backOff(e *engine) {
	c.mu.Lock()
	c.maxParts = max(1, int(e.partsNow())/2)
	c.mu.Unlock()
	e.slots = max(1, e.slots/2)
}

// room reports whether another connection may go to large blobs now (under c.mu).
func (c *controller) room(e *engine, now time.Time) bool {
	return c.maxParts == 0 || int(e.partsNow()) < c.maxParts
}

// moreStreams reports whether another large blob should start beside those running
// (under e.mu): only when each one running long enough to tell is limited by its link,
// and the link has room.
func (c *controller) moreStreams(e *engine) bool {
	if c.judge == judgeNever {
		return false
	}
	now := time.Now()
	rtt := c.rttNow()
	measured := 0
	for _, x := range e.active {
		x.mu.Lock()
		young := x.since.IsZero() || c.measured() && now.Sub(x.since) < max(rtt, minLook)
		x.mu.Unlock()
		if young {
			continue
		}
		if !x.linkLimited(now, rtt) {
			return false
		}
		measured++
	}
	if measured == 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.room(e, now)
}

// sizes are the request sizes of a split blob: a chunk (4 MiB, or eight round trips'
// worth of bytes at the best rate one connection got, when that is more), and the least
// a request asks for (1 MiB, or two round trips' worth), so that each request takes
// longer than the round trip that starts it.
func (c *controller) sizes() (chunk, minPart int64) {
	rtt := c.rttNow()
	c.mu.Lock()
	perPart := c.best // 0 unless measured
	if perPart == 0 {
		perPart = c.hint
	}
	c.mu.Unlock()
	minPart = max(int64(minPartSize), int64(2*perPart*rtt.Seconds()))
	chunk = max(int64(chunkSize), int64(8*perPart*rtt.Seconds())) / requestUnit * requestUnit
	return chunk, minPart
}

// prefetchAt is how many bytes before the end of its request a part asks for its next
// one: twice what one connection receives in a round trip at the best rate seen, so
// that the next answer's first bytes come as the last ones of this answer are read, 1
// MiB at least; 2 MiB while nothing is measured, and when the judgement is pinned.
func (c *controller) prefetchAt() int64 {
	const unknown = 2 << 20
	if !c.measured() {
		return unknown
	}
	c.mu.Lock()
	rate := c.best
	if rate == 0 {
		rate = c.hint
	}
	c.mu.Unlock()
	if rate == 0 {
		return unknown
	}
	return max(requestUnit, int64(2*rate*c.rttNow().Seconds()))
}

// split returns a task that starts another part of a blob whose streams limit it, or nil
// (under e.mu). The new part asks for the next stretch nobody has asked for yet: no part
// is cut, so no byte is asked for twice. Only a blob whose server has answered a range
// with that range is split.
func (c *controller) split(e *engine) func() {
	if !e.o.ranges || len(e.active) == 0 {
		return nil
	}
	now := time.Now()
	rtt := c.rttNow()
	c.mu.Lock()
	room := c.room(e, now)
	c.mu.Unlock()
	if !room {
		return nil
	}
	for _, x := range e.active {
		if !x.linkLimited(now, rtt) {
			continue
		}
		if p := e.partOf(x); p != nil {
			return func() { p.run(x.ctx) }
		}
	}
	return nil
}

// partOf is a new part of x, counted at once, or nil when x's blob is not taken in
// ranges or has nothing left to split.
func (e *engine) partOf(x *xfer) *part {
	x.mu.Lock()
	var p *part
	if x.rangesOK && !x.noRanges {
		p = x.newPart()
	}
	x.mu.Unlock()
	if p != nil {
		e.partsAdd(1)
	}
	return p
}

// handOff is split for a part of from whose blob has nothing left to ask for, which
// is about to end (under e.mu): a new part of another blob whose streams limit it,
// counted at once, or nil. The room for it counts the ending part as gone.
func (c *controller) handOff(e *engine, from *xfer) *part {
	if !e.o.ranges {
		return nil
	}
	now := time.Now()
	rtt := c.rttNow()
	c.mu.Lock()
	room := c.maxParts == 0 || int(e.partsNow())-1 < c.maxParts
	c.mu.Unlock()
	if !room {
		return nil
	}
	for _, x := range e.active {
		if x == from || !x.linkLimited(now, rtt) {
			continue
		}
		if p := e.partOf(x); p != nil {
			return p
		}
	}
	return nil
}

// linkLimited reports whether the blob's streams, not its writer, limit it (see
// streamsLimit), as the controller's judgement says.
func (x *xfer) linkLimited(now time.Time, rtt time.Duration) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.limited(now, rtt)
}

// limited is linkLimited under x.mu.
func (x *xfer) limited(now time.Time, rtt time.Duration) bool {
	if x.noRanges || x.err != nil || x.finished || x.since.IsZero() {
		return false
	}
	switch x.e.ctl.judge {
	case judgeNever:
		return false
	case judgeAlways:
		return true
	}
	return streamsLimit(now.Sub(x.since), rtt, time.Duration(x.busy.Load()), time.Duration(x.waited.Load()), len(x.parts))
}

// streamsLimit is the measured judgement of a transfer receiving for el since its first
// response, whose writer spent busy in the store and whose parts waited for room in
// all: its streams limit it when it has received long enough to tell (half a round trip,
// 50 ms at least: a stream that has not filled a block by then is slow), its writer was
// busy less than half the time, and its receivers waited for the writer less than a
// tenth of it (each part adds its own waits: a tenth per part).
func streamsLimit(el, rtt, busy, waited time.Duration, parts int) bool {
	if el < max(rtt, minLook)/2 {
		return false
	}
	waited /= time.Duration(max(1, parts))
	return busy*2 < el && waited*10 < el
}

package layers

import (
	"errors"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pullkit/pullkit"
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
//   - the first split halves the part with the most left to receive: the new part asks
//     for the second half in one request, so that a server without ranges costs one
//     request and nothing is cut before it answers;
//   - once the server has served a range, the blob is received in chunks from the front
//     (4 MiB, or eight round trips' worth of bytes when that is more): every part keeps
//     its next chunk, the rest is queued, and each free connection takes the next chunk,
//     so the parts advance together and the writer, which hashes in order, keeps up with
//     them instead of hashing most of the blob after its last byte;
//   - when the queue is empty, a free connection halves the part with the most left, as
//     long as each half takes longer to receive than the round trip the new part waits
//     (two round trips' worth of bytes, 1 MiB at least), so the last parts end together;
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

// split returns a task that splits a part, or nil (under e.mu).
func (c *controller) split(e *engine) func() {
	if !e.o.ranges || len(e.active) == 0 {
		return nil
	}
	now := time.Now()
	rtt := c.rttNow()
	c.mu.Lock()
	perPart := c.best // 0 unless measured
	room := c.room(e, now)
	c.mu.Unlock()
	minPart := max(int64(minPartSize), int64(2*perPart*rtt.Seconds()))
	chunk := max(int64(chunkSize), int64(8*perPart*rtt.Seconds())) / blockSize * blockSize
	if !room {
		return nil
	}
	// The next chunk of a blob split already.
	for _, x := range e.active {
		x.mu.Lock()
		if p := x.nextChunk(chunk); p != nil {
			x.mu.Unlock()
			e.partsAdd(1)
			return func() { p.run(x.ctx) }
		}
		x.mu.Unlock()
	}
	// The part with the most left, of a blob that its one stream limits.
	var victim *part
	var vx *xfer
	var most int64
	for _, x := range e.active {
		if !x.linkLimited(now, rtt) {
			continue
		}
		x.mu.Lock()
		for _, p := range x.parts {
			if left := p.end.Load() - p.pos.Load(); left > most && !p.splitting {
				victim, vx, most = p, x, left
			}
		}
		x.mu.Unlock()
	}
	if victim == nil || most < 2*minPart+blockSize {
		return nil
	}
	vx.mu.Lock()
	defer vx.mu.Unlock()
	if vx.rangesOK {
		// The server serves ranges: the parts' stretches beyond a chunk go to the queue,
		// and every free connection (that there is room for) takes a chunk at once. Once
		// the queue is empty, a free connection halves the part with the most left.
		for _, p := range vx.parts {
			if !p.splitting {
				vx.enqueue(p, chunk)
			}
		}
		free := e.slots - e.busy
		if c.maxParts > 0 {
			free = min(free, c.maxParts-int(e.partsNow()))
		}
		var tasks []func()
		for ; free > 0; free-- {
			p := vx.nextChunk(chunk)
			if p == nil {
				if victim = vx.largest(2*minPart + blockSize); victim == nil {
					break
				}
				cut := vx.cut(victim, 1, minPart)
				if len(cut) == 0 {
					break
				}
				p = cut[0]
			}
			tasks = append(tasks, func() { p.run(vx.ctx) })
		}
		if len(tasks) == 0 {
			return nil
		}
		e.partsAdd(int64(len(tasks)))
		e.ready = append(e.ready, tasks[1:]...)
		return tasks[0]
	}
	victim.splitting = true
	return func() { vx.splitPart(victim, minPart) }
}

// enqueue leaves the part v its next block and a chunk after it, and queues the rest of
// its stretch, if that is a chunk or more (under x.mu).
func (x *xfer) enqueue(v *part, chunk int64) {
	pos, end := v.pos.Load(), v.end.Load()
	keep := (pos/blockSize+1)*blockSize + chunk // v may be receiving the block at pos
	if keep+chunk > end {
		return
	}
	v.end.Store(keep)
	i := sort.Search(len(x.rest), func(i int) bool { return x.rest[i][0] > keep })
	x.rest = slices.Insert(x.rest, i, [2]int64{keep, end})
	if !x.split {
		x.split, x.window = true, splitWindow
	}
}

// nextChunk returns a new part for the lowest chunk queued, or nil (under x.mu). A
// stretch of less than half a chunk after it goes with it.
func (x *xfer) nextChunk(chunk int64) *part {
	if len(x.rest) == 0 || x.err != nil || x.finished {
		return nil
	}
	r := &x.rest[0]
	from, to := r[0], min(r[1], r[0]+chunk)
	if r[1]-to < chunk/2 {
		to = r[1]
	}
	if r[0] = to; r[0] >= r[1] {
		x.rest = x.rest[1:]
	}
	p := &part{x: x}
	p.pos.Store(from)
	p.end.Store(to)
	x.parts = append(x.parts, p)
	return p
}

// largest returns the part with the most left to receive, if that is at least least
// bytes and it is not being split (under x.mu).
func (x *xfer) largest(least int64) *part {
	var best *part
	most := least - 1
	for _, p := range x.parts {
		if left := p.end.Load() - p.pos.Load(); left > most && !p.splitting {
			best, most = p, left
		}
	}
	return best
}

// cut gives the part v's stretch beyond its next block to k new parts, in equal pieces
// of at least minPart (fewer pieces when there is less), and returns them (under x.mu).
func (x *xfer) cut(v *part, k int, minPart int64) []*part {
	pos, end := v.pos.Load(), v.end.Load()
	from := (pos/blockSize + 1) * blockSize // v may be receiving the block at pos
	if k < 1 || from >= end {
		return nil
	}
	step := (end - from) / int64(k+1) / blockSize * blockSize
	for k > 0 && step < minPart {
		k--
		if k > 0 {
			step = (end - from) / int64(k+1) / blockSize * blockSize
		}
	}
	if k == 0 {
		return nil
	}
	cut := from + step
	v.end.Store(cut)
	out := make([]*part, k)
	for i := range out {
		p := &part{x: x}
		p.pos.Store(cut)
		next := cut + step
		if i == k-1 {
			next = end
		}
		p.end.Store(next)
		out[i] = p
		cut = next
	}
	x.parts = append(x.parts, out...)
	if !x.split {
		x.split, x.window = true, splitWindow
	}
	return out
}

// linkLimited reports whether the blob's streams, not its writer, limit it (see
// streamsLimit), as the controller's judgement says.
func (x *xfer) linkLimited(now time.Time, rtt time.Duration) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
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

// splitPart gives the second half of v's stretch to a new part, asked for in one request
// before anything is cut, so that a server that will not serve it costs nothing.
func (x *xfer) splitPart(v *part, minPart int64) {
	e := x.e
	defer func() {
		x.mu.Lock()
		v.splitting = false
		x.mu.Unlock()
	}()
	pos, end := v.pos.Load(), v.end.Load()
	cut := (pos + (end-pos)/2 + blockSize - 1) / blockSize * blockSize
	if cut < pos+blockSize || end-cut < minPart {
		return
	}
	body, err := e.f.Fetch(x.ctx, x.j.desc, cut, end-cut)
	if err != nil {
		switch {
		case errors.Is(err, pullkit.ErrUnsupported):
			x.mu.Lock()
			x.noRanges = true
			x.mu.Unlock()
		case errors.Is(err, pullkit.ErrTooManyRequests):
			e.mu.Lock()
			e.ctl.backOff(e)
			e.mu.Unlock()
		}
		return
	}
	x.mu.Lock()
	if x.err != nil || x.finished || v.end.Load() != end || v.pos.Load()+blockSize > cut {
		x.mu.Unlock()
		body.Close()
		return
	}
	v.end.Store(cut)
	x.rangesOK = true
	p := &part{x: x, body: body}
	p.pos.Store(cut)
	p.end.Store(end)
	x.parts = append(x.parts, p)
	if !x.split {
		x.split, x.window = true, splitWindow
	}
	v.splitting = false
	x.mu.Unlock()
	e.partsAdd(1)
	p.run(x.ctx)
}

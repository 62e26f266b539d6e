package layers

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pullkit/pullkit"
)

// The controller decides when a large blob's stream is split into parallel ranges. It
// treats the link as the resource, across all the blobs of a Fetch:
//
//   - only once no blob waits in the queue (a queued blob is a better use of a connection
//     than a second one for a blob already moving);
//   - only a blob whose writer is mostly idle and whose stream hardly waits for it: one
//     connection is then what limits it (a long or capped link), whereas on a fast link
//     one stream already delivers about what sha256 can hash and more connections only
//     cost CPU and the server's work;
//   - by halving the part with the most left to receive: the new part asks for the
//     second half in one request, so each part costs one round trip, whatever the rate;
//   - in rounds: a few parts first, then every free connection; after each round the
//     aggregate rate is measured for a few round trips, and when it did not grow by a
//     sixth, no more parts are added in this Fetch (the link, or the registry, is full);
//     a 429 on a new part halves the connections in use and stops the splitting.
const (
	tickPeriod   = 20 * time.Millisecond
	minPartSize  = 4 << 20
	firstRound   = 3
	minGain      = 1.15
	minLook      = 100 * time.Millisecond
	sampleWindow = 4 * time.Second
)

type controller struct {
	rtt atomic.Int64 // the shortest request latency seen, in nanoseconds

	mu        sync.Mutex
	samples   []sample
	saturated bool
	rounds    int
	quota     int       // parts the current round may still add
	evalFrom  time.Time // the current round's effect is measured from evalFrom
	evalAt    time.Time // to evalAt
	before    float64   // the aggregate rate before the round
}

type sample struct {
	t time.Time
	n int64
}

func (c *controller) init() { c.samples = make([]sample, 0, 256) }

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

// sample records the bytes received so far.
func (c *controller) sample(now time.Time, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.samples) > 0 && now.Sub(c.samples[0].t) > sampleWindow {
		c.samples = c.samples[1:]
	}
	c.samples = append(c.samples, sample{now, n})
}

// rate is the aggregate rate between from and to (bytes per second), from the samples
// (under c.mu).
func (c *controller) rate(from, to time.Time) float64 {
	var a, b *sample
	for i := range c.samples {
		s := &c.samples[i]
		if a == nil && !s.t.Before(from) {
			a = s
		}
		if !s.t.After(to) {
			b = s
		}
	}
	if a == nil || b == nil || !b.t.After(a.t) {
		return 0
	}
	return float64(b.n-a.n) / b.t.Sub(a.t).Seconds()
}

// backOff is the answer to a 429 on a new part (under e.mu).
func (c *controller) backOff(e *engine) {
	c.mu.Lock()
	c.saturated = true
	c.mu.Unlock()
	e.slots = max(1, e.slots/2)
}

// split returns a task that splits a part, or nil (under e.mu).
func (c *controller) split(e *engine) func() {
	if !e.o.ranges || len(e.active) == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.saturated {
		return nil
	}
	now := time.Now()
	rtt := c.rttNow()
	if c.quota == 0 && !c.evalAt.IsZero() {
		if now.Before(c.evalAt) {
			return nil
		}
		if after := c.rate(c.evalFrom, now); after < c.before*minGain {
			c.saturated = true
			return nil
		}
		c.evalAt = time.Time{}
	}
	// The part with the most left, of a blob that its one stream limits.
	var victim *part
	var vx *xfer
	var most int64
	parts := max(int(e.partsNow()), 1)
	perPart := c.rate(now.Add(-max(4*rtt, minLook)), now) / float64(parts)
	minPart := max(int64(minPartSize), int64(4*perPart*rtt.Seconds()))
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
	victim.splitting = true
	vx.mu.Unlock()
	if c.quota == 0 {
		c.rounds++
		free := e.slots - e.busy
		c.quota = free
		if c.rounds == 1 {
			c.quota = min(free, firstRound)
		}
		c.before = c.rate(now.Add(-max(4*rtt, minLook)), now)
	}
	c.quota--
	if c.quota == 0 {
		c.evalFrom = now.Add(3*rtt + tickPeriod)
		c.evalAt = c.evalFrom.Add(max(4*rtt, minLook+tickPeriod))
	}
	return func() { vx.splitPart(victim, minPart) }
}

// moreStreams reports whether another large blob should start beside those running
// (under e.mu): only when each one running long enough to tell is limited by its link.
func (c *controller) moreStreams(e *engine) bool {
	now := time.Now()
	rtt := c.rttNow()
	measured := 0
	for _, x := range e.active {
		x.mu.Lock()
		young := now.Sub(x.since) < max(3*rtt, minLook)
		x.mu.Unlock()
		if young {
			continue
		}
		if !x.linkLimited(now, rtt) {
			return false
		}
		measured++
	}
	return measured > 0
}

// linkLimited reports whether the blob's stream, not its writer, limits it: long enough
// under way to tell, its writer busy less than half the time, its receivers waiting for
// the writer less than a tenth of it.
func (x *xfer) linkLimited(now time.Time, rtt time.Duration) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.noRanges || x.err != nil || x.finished {
		return false
	}
	el := now.Sub(x.since)
	if el < max(3*rtt, minLook) {
		return false
	}
	return time.Duration(x.busy.Load())*2 < el && time.Duration(x.waited.Load())*10 < el
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

package layers

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// Bounds of the automatic chunk size of a parallel ranged transfer. A chunk is one
// request, and against a real registry each request may cost a redirect and a round trip
// or two, so chunks stay large; they are handed out in order, and every part must fit in
// the pipe's window (rangeWindow) at once, or the parts further ahead wait for the hash.
const (
	minChunk = 1 << 20
	maxChunk = rangeWindow / DefaultRangeParts
)

// chunk is one ranged request's share of a blob: bytes [start, end), of which the first
// done are written.
type chunk struct {
	start, end int64
	done       atomic.Int64
}

func (x *xfer) chunkSize(remaining int64) int64 {
	if x.t.o.chunkSize > 0 {
		return x.t.o.chunkSize
	}
	cs := min(max(remaining/int64(x.t.o.rangeParts*8), minChunk), maxChunk, rangeWindow/int64(x.t.o.rangeParts))
	return max(cs/int64(x.t.o.bufSize), 1) * int64(x.t.o.bufSize)
}

func (x *xfer) rangedEligible() bool {
	o := x.t.o
	if o.rangeParts < 2 || o.jobs < 2 || x.rangeMode == rangeNone || x.size < 0 || x.size < o.rangeMin || x.t.waiting.Load() > 0 {
		return false
	}
	rem := x.size - x.hashed
	return rem > x.chunkSize(rem)
}

// planChunks cuts [from, size) into chunks ending at multiples of cs, so that their
// blocks stay aligned in the file.
func (x *xfer) planChunks(from, cs int64) []*chunk {
	var chunks []*chunk
	for start := from; start < x.size; {
		end := min((start/cs+1)*cs, x.size)
		chunks = append(chunks, &chunk{start: start, end: end})
		start = end
	}
	return chunks
}

// parts is the ranged phase of one blob: its chunks, handed out in order to the workers,
// which write through one pipe.
type parts struct {
	x      *xfer
	p      *pipe
	chunks []*chunk
	next   atomic.Int64 // the next chunk to hand out
	g      *errgroup.Group
	ctx    context.Context
}

// newParts starts the ranged phase for chunks, of which chunks[0] is answered by first
// (an open 206). The goroutine that runs chunks[0] holds a request slot: the blob's own,
// kept for the whole phase (own), or one taken for chunks[0] alone, released after it
// (then it takes one per chunk like the others). extra more workers take a slot per
// chunk. A worker's failure is also the pipe's, so the hasher and a receiver waiting for
// room stop too.
func (x *xfer) newParts(ctx context.Context, p *pipe, chunks []*chunk, first *chunkResp, own bool, extra int) *parts {
	g, gctx := errgroup.WithContext(ctx)
	ps := &parts{x: x, p: p, chunks: chunks, g: g, ctx: gctx}
	ps.next.Store(1)
	fail := func(err error) error {
		if err != nil {
			p.fail(err)
		}
		return err
	}
	g.Go(func() error {
		err := x.runChunk(gctx, p, chunks[0], first)
		if !own {
			x.t.sem.Release(1)
		}
		if err == nil {
			err = ps.work(own)
		}
		return fail(err)
	})
	for range min(extra, len(chunks)-1) {
		g.Go(func() error { return fail(ps.work(false)) })
	}
	return ps
}

// work runs chunks until none is left. A worker without a request slot of its own takes
// one per chunk, so that other blobs of the Fetch get their turn.
func (ps *parts) work(holdsSlot bool) error {
	sem := ps.x.t.sem
	for {
		if !holdsSlot {
			if err := sem.Acquire(ps.ctx, 1); err != nil {
				return nil // cancelled: done, or another worker failed
			}
		}
		i := ps.next.Add(1) - 1
		var err error
		if i < int64(len(ps.chunks)) {
			err = ps.x.runChunk(ps.ctx, ps.p, ps.chunks[i], nil)
		}
		if !holdsSlot {
			sem.Release(1)
		}
		if err != nil || i >= int64(len(ps.chunks)) {
			return err
		}
	}
}

// fetchRanged downloads the rest of the blob as parallel ranged requests from the first
// byte (WithParallelRanges), written at their offsets through a pipe while this goroutine
// hashes them in order. It reports fallback when the server does not answer the first
// ranged request properly; the caller then uses one plain request.
func (x *xfer) fetchRanged(ctx context.Context) (fallback bool, err error) {
	cs := x.chunkSize(x.size - x.hashed)
	chunks := x.planChunks(x.hashed, cs)
	first, ae := x.openChunk(ctx, chunks[0])
	if ae != nil {
		if ae.retry {
			return true, nil
		}
		return false, blobErr(x.d, OpFetch, ae.err)
	}
	// From here on the file is written out of order: only the hashed prefix, kept in the
	// sidecar, is trusted if this process dies.
	if err := x.in.setSide(x.hashed); err != nil {
		first.close()
		return false, blobErr(x.d, OpStore, err)
	}
	p := x.newPipe(rangeWindow, x.size)
	p.side.Store(cs)
	defer p.close()
	ps := x.newParts(ctx, p, chunks, first, true, x.t.o.rangeParts-1)
	herr := p.hash(ctx)
	if herr == nil {
		if err := x.in.setSide(x.hashed); err != nil {
			herr = blobErr(x.d, OpStore, err)
		}
	}
	if herr != nil {
		p.fail(herr)
	}
	if werr := ps.g.Wait(); werr != nil {
		return false, werr
	}
	return false, herr
}

// Adaptive split of a sequential transfer (the default). The receiver looks every
// splitProbe bytes. Its first look only starts the clock; at the first look at least
// splitLook later (some 50 MiB into the blob on loopback, 16 MiB on a link of 100 MB/s),
// a stream that since then delivered less than half of what the hash and the disk could
// take one after the other (hashing and writing together took less than half the time),
// and hardly waited for them (less than 1/splitIdle of the time), is what limits the
// transfer: the rest of its blob is cut into chunks for parallel ranged requests, and the
// stream goes on to the next chunk boundary, then takes chunks like the other workers.
// Any other stream is left alone: on a fast link one connection already delivers about
// what sha256 can hash, and more connections would only cost the server work, this
// process CPU it does not have to spare, and the pipe memory. (On loopback against the
// distribution registry on 2 cores, a split 1 GiB pull took 1.08-1.52 s against
// 0.88-1.23 s for one stream, with twice the RSS.)
const (
	splitProbe = 8 << 20
	splitIdle  = 10
	splitLook  = 50 * time.Millisecond
)

// splitter decides, from a sequential pipe's receiver, whether and where to split.
type splitter struct {
	x   *xfer
	p   *pipe
	ctx context.Context
	// The clock and the counters at the first look; the decision is made on what
	// happened since, once at least splitLook has passed.
	t0             time.Time
	waited0, busy0 int64
	next           int64 // the offset of the next look
	ps             *parts
	end            int64 // where the sequential stream stops, once split
	start          int64
}

func (x *xfer) newSplitter(ctx context.Context, p *pipe, start int64) *splitter {
	return &splitter{x: x, p: p, ctx: ctx, next: start + x.t.o.splitProbe, start: start}
}

// check is called by the receiver at every block boundary off; it returns where the
// stream should stop.
func (sp *splitter) check(off int64) int64 {
	x := sp.x
	if sp.ps != nil {
		return sp.end
	}
	if off < sp.next {
		return x.size
	}
	sp.next = off + x.t.o.splitProbe
	now := time.Now()
	waited, busy := sp.p.waited.Load(), sp.p.busy.Load()+sp.p.wbusy.Load()
	if sp.t0.IsZero() {
		// The first look only starts the clock: the first bytes of a connection (slow
		// start, cold caches) say little about the stream.
		sp.t0, sp.waited0, sp.busy0 = now, waited, busy
		return x.size
	}
	el := now.Sub(sp.t0)
	if el < splitLook {
		return x.size
	}
	if time.Duration(waited-sp.waited0)*splitIdle > el || time.Duration(busy-sp.busy0)*2 > el {
		sp.next = x.size // the consumer is the limit: never split this stream
		return x.size
	}
	if x.t.waiting.Load() > 0 || x.rangeMode == rangeNone {
		return x.size
	}
	cs := x.chunkSize(x.size - off)
	at := (off/cs + 1) * cs
	if x.size-at < 2*cs || !x.t.sem.TryAcquire(1) {
		return x.size
	}
	chunks := x.planChunks(at, cs)
	first, ae := x.openChunk(sp.ctx, chunks[0])
	if ae != nil {
		// No (proper) ranges from this server: stay sequential.
		x.t.sem.Release(1)
		sp.next = x.size
		return x.size
	}
	if err := x.in.setSide(sp.p.frontier()); err != nil {
		first.close()
		x.t.sem.Release(1)
		sp.next = x.size
		return x.size
	}
	sp.p.widen(rangeWindow)
	sp.p.side.Store(cs)
	sp.ps = x.newParts(sp.ctx, sp.p, chunks, first, false, x.t.o.rangeParts-2)
	sp.end = at
	return at
}

// finish completes a split transfer after its sequential stream stopped (at sp.end, or
// earlier after receiving n bytes with the failure ae/rerr): the rest of the stream's
// share as a ranged chunk, then chunks like the other workers.
func (sp *splitter) finish(ctx, actx context.Context, n int64, ae *attemptErr, rerr error) error {
	x := sp.x
	if rerr != nil {
		ae = x.t.classify(ctx, actx, rerr, true)
	}
	var err error
	if ae != nil && !ae.retry {
		err = blobErr(x.d, OpFetch, ae.err)
	} else if got := sp.start + n; got < sp.end {
		c := &chunk{start: got, end: sp.end}
		err = x.runChunk(sp.ps.ctx, sp.p, c, nil)
	}
	if err == nil {
		err = sp.ps.work(true)
	}
	if err != nil {
		sp.p.fail(err)
	}
	if werr := sp.ps.g.Wait(); err == nil {
		err = werr
	}
	return err
}

// chunkResp is an open, checked answer to a chunk request.
type chunkResp struct {
	resp      *http.Response
	ctx, actx context.Context
	cancel    context.CancelCauseFunc
	w         *watchdog
}

func (cr *chunkResp) close() {
	cr.w.stop()
	cr.resp.Body.Close()
	cr.cancel(nil)
}

// openChunk requests what is left of chunk c and checks the answer: 206 with exactly the
// asked Content-Range (and the blob's size as total).
func (x *xfer) openChunk(ctx context.Context, c *chunk) (*chunkResp, *attemptErr) {
	rng := Range{Start: c.start + c.done.Load(), End: c.end - 1}
	actx, cancel := context.WithCancelCause(ctx)
	w := x.t.watch(cancel)
	resp, err := x.t.f.FetchBlob(actx, x.desc, &rng)
	if err != nil {
		ae := x.t.classify(ctx, actx, err, false)
		w.stop()
		cancel(nil)
		return nil, ae
	}
	cr := &chunkResp{resp: resp, ctx: ctx, actx: actx, cancel: cancel, w: w}
	fail := func(ae *attemptErr) (*chunkResp, *attemptErr) {
		cr.close()
		return nil, ae
	}
	h := resp.Header.Get("Content-Range")
	if resp.StatusCode != http.StatusPartialContent {
		return fail(retry(&ContentRangeError{Asked: rng, Header: h, Reason: "server answered " + resp.Status + " instead of 206"}))
	}
	start, end, total, err := parseContentRange(h)
	if err != nil {
		return fail(retry(&ContentRangeError{Asked: rng, Header: h, Reason: err.Error()}))
	}
	if start != rng.Start || end != rng.End {
		return fail(retry(&ContentRangeError{Asked: rng, Header: h, Reason: "not the range asked for"}))
	}
	if total >= 0 && total != x.size {
		return fail(final(&SizeMismatchError{Want: x.size, Got: total, Source: "Content-Range total"}))
	}
	if resp.ContentLength >= 0 && resp.ContentLength != end-start+1 {
		return fail(retry(&ContentRangeError{Asked: rng, Header: h,
			Reason: fmt.Sprintf("Content-Length %d does not match", resp.ContentLength)}))
	}
	return cr, nil
}

// runChunk completes chunk c, starting with the open answer first when given, resuming
// after interruptions.
func (x *xfer) runChunk(ctx context.Context, p *pipe, c *chunk, first *chunkResp) error {
	noProgress := 0
	for c.done.Load() < c.end-c.start {
		cr := first
		first = nil
		if cr == nil {
			var ae *attemptErr
			if cr, ae = x.openChunk(ctx, c); ae != nil {
				if !ae.retry {
					return blobErr(x.d, OpFetch, ae.err)
				}
				if err := x.again(ctx, 0, &noProgress, ae.err); err != nil {
					return err
				}
				continue
			}
		}
		n, ae, rerr := p.recv(cr.actx, cr.resp.Body, cr.w, c.start+c.done.Load(), c.end, &c.done, func(int64) *attemptErr {
			return final(&ContentRangeError{Asked: Range{Start: c.start, End: c.end - 1},
				Header: cr.resp.Header.Get("Content-Range"), Reason: "body longer than the range"})
		}, nil)
		if rerr != nil {
			ae = x.t.classify(cr.ctx, cr.actx, rerr, true)
		}
		cr.close()
		if ae == nil {
			continue
		}
		if !ae.retry {
			return blobErr(x.d, OpFetch, ae.err)
		}
		if err := x.again(ctx, n, &noProgress, ae.err); err != nil {
			return err
		}
	}
	return nil
}

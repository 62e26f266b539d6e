package layers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
)

// Bounds of the automatic chunk size of a parallel ranged transfer (a blob's remaining
// size / (8 x parts), clamped). A chunk is one request, and against a real registry each
// request may cost a redirect and a round trip or two, so chunks stay large; chunks are
// handed out in order, so the sequential hash follows the written prefix closely and is
// at most a few chunks behind when the last byte arrives. Measured on loopback, 8 to 32
// MiB chunks do equally well; 2 MiB ones cost 10-20% more.
const (
	minChunk = 8 << 20
	maxChunk = 32 << 20
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
	return min(max(remaining/int64(x.t.o.rangeParts*8), minChunk), maxChunk)
}

func (x *xfer) rangedEligible() bool {
	o := x.t.o
	if o.rangeParts < 2 || o.jobs < 2 || x.rangeMode == rangeNone || x.size < 0 || x.size < o.rangeMin || x.t.waiting.Load() > 0 {
		return false
	}
	rem := x.size - x.hashed
	return rem > x.chunkSize(rem)
}

// fetchRanged downloads the rest of the blob as parallel ranged requests written at their
// offsets, while this goroutine hashes the written prefix in order (reading it back from
// the page cache). It reports fallback when the server does not answer the first ranged
// request properly; the caller then uses one plain request.
func (x *xfer) fetchRanged(ctx context.Context) (fallback bool, err error) {
	cs := x.chunkSize(x.size - x.hashed)
	n := (x.size - x.hashed + cs - 1) / cs
	chunks := make([]chunk, n)
	for i := range chunks {
		chunks[i].start = x.hashed + int64(i)*cs
		chunks[i].end = min(chunks[i].start+cs, x.size)
	}

	first, ae := x.openChunk(ctx, &chunks[0])
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

	notify := make(chan struct{}, 1)
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	g, gctx := errgroup.WithContext(wctx)
	var next atomic.Int64
	next.Store(1)
	for w := range min(x.t.o.rangeParts, len(chunks)) {
		g.Go(func() error {
			if w == 0 {
				// Worker 0 uses the request slot of the blob itself, and the probe.
				if err := x.runChunk(gctx, &chunks[0], first, notify); err != nil {
					return err
				}
			}
			for {
				if w > 0 {
					if err := x.t.sem.Acquire(gctx, 1); err != nil {
						return nil // cancelled: done, or another worker failed
					}
				}
				i := next.Add(1) - 1
				var err error
				if i < int64(len(chunks)) {
					err = x.runChunk(gctx, &chunks[i], nil, notify)
				}
				if w > 0 {
					x.t.sem.Release(1)
				}
				if err != nil || i >= int64(len(chunks)) {
					return err
				}
			}
		})
	}

	herr := x.hashChunks(gctx, chunks, notify)
	wcancel()
	if werr := g.Wait(); werr != nil {
		return false, werr
	}
	if herr != nil {
		return false, herr
	}
	return false, nil
}

// hashChunks feeds the written prefix of the chunks to the hashed stream, in order.
func (x *xfer) hashChunks(ctx context.Context, chunks []chunk, notify <-chan struct{}) error {
	for i := range chunks {
		c := &chunks[i]
		for x.hashed < c.end {
			avail := c.start + c.done.Load()
			if avail <= x.hashed {
				select {
				case <-notify:
				case <-ctx.Done():
					return blobErr(x.d, OpFetch, ctx.Err())
				}
				continue
			}
			b := x.getBuf()
			n := int(min(int64(len(b)), avail-x.hashed))
			m, err := x.in.f.ReadAt(b[:n], x.hashed)
			if m < n {
				x.release(b)
				if err == nil {
					err = io.ErrUnexpectedEOF
				}
				return blobErr(x.d, OpStore, fmt.Errorf("reading back %s: %w", x.in.path, err))
			}
			x.absorb(b[:m])
		}
		if err := x.in.setSide(x.hashed); err != nil {
			return blobErr(x.d, OpStore, err)
		}
	}
	return nil
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
func (x *xfer) runChunk(ctx context.Context, c *chunk, first *chunkResp, notify chan<- struct{}) error {
	buf := x.t.pool.get()
	defer x.t.pool.put(buf)
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
		n, ae := x.copyChunk(cr, c, buf, notify)
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

// copyChunk writes the body of cr at its offset in the ingest file.
func (x *xfer) copyChunk(cr *chunkResp, c *chunk, buf []byte, notify chan<- struct{}) (int64, *attemptErr) {
	var n int64
	off := c.start + c.done.Load()
	zeroReads := 0
	for {
		rem := c.end - off
		m, rerr := readSome(cr.resp.Body, buf[:min(int64(len(buf)), rem+1)], cr.w)
		if m > 0 {
			zeroReads = 0
			if int64(m) > rem {
				return n, final(&ContentRangeError{Asked: Range{Start: c.start, End: c.end - 1},
					Header: cr.resp.Header.Get("Content-Range"), Reason: "body longer than the range"})
			}
			if _, err := x.in.f.WriteAt(buf[:m], off); err != nil {
				return n, final(fmt.Errorf("writing %s: %w", x.in.path, err))
			}
			off += int64(m)
			n += int64(m)
			c.done.Add(int64(m))
			select {
			case notify <- struct{}{}:
			default:
			}
			x.m.add(int64(m))
		} else if rerr == nil {
			if zeroReads++; zeroReads > 100 {
				rerr = io.ErrNoProgress
			}
		}
		if errors.Is(rerr, io.EOF) {
			if off < c.end {
				return n, retry(fmt.Errorf("range body ended at byte %d of %d-%d: %w", off, c.start, c.end-1, io.ErrUnexpectedEOF))
			}
			return n, nil
		}
		if rerr != nil {
			return n, x.t.classify(cr.ctx, cr.actx, rerr, true)
		}
	}
}

package layers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// A pipe carries the body of one blob of known size from its receivers (one for a
// sequential transfer, one per part of a ranged one) into the ingest file and, in order,
// into the hash. A receiver reads into a block and writes it at its offset, then hands
// it to the hasher, which hashes blocks in the order of the blob from memory: nothing is
// read back from the file, and hashing runs beside receiving rather than between reads.
//
// The blocks are aligned in memory and, apart from the first block after a resume and the
// last of the blob, cover whole aligned stretches of the file, so they can be written with
// O_DIRECT in one call each (see Layout.directOK), by a writer goroutine for a single
// stream so that the receiver goes on reading meanwhile. A large blob then goes to the
// disk without taking page-cache memory, which must first be allocated: on this project's
// 2-core VM, that cost more than receiving, hashing and writing together. Without
// O_DIRECT, each read is written at once, in small pieces (see cachedPiece).
//
// Memory is bounded by the window: a block may be received only when it starts less than
// window bytes after the hashed frontier, so out-of-order parts wait (the server is held
// by TCP flow control) rather than pile up. The block at the frontier always fits, so
// the pipe cannot deadlock.
type pipe struct {
	x      *xfer
	bs     int64
	window int64
	direct atomic.Pointer[os.File] // nil: buffered writes through x.in.f
	side   atomic.Int64            // > 0: the hasher records its prefix in the sidecar every side bytes
	waited atomic.Int64            // nanoseconds the receivers waited for the hasher or the writer
	busy   atomic.Int64            // nanoseconds the hasher spent hashing
	wbusy  atomic.Int64            // nanoseconds spent writing (by all writers together)

	mu      sync.Mutex
	front   int64            // hashed frontier, as receivers see it
	pending map[int64][]byte // written blocks by offset, waiting for the hasher
	moved   chan struct{}    // closed (and replaced) when front moves
	arrived chan struct{}    // a block was added, or end changed (one waiter: the hasher)
	end     int64            // the hasher stops here
	closed  bool
	free    [][]byte      // blocks to reuse
	err     error         // a failed write
	failed  chan struct{} // closed with err set

	// A sequential pipe has a writer goroutine, so that its one receiver goes on reading
	// while a block is written; the parts of a ranged one write their own blocks.
	wq    chan wblock
	wdone chan struct{}
}

// wblock is a received block on its way to the writer.
type wblock struct {
	off int64
	b   []byte
}

// Pipe windows: how far ahead of the hash a receiver may get. A sequential transfer
// needs only enough to let receiving and hashing overlap; a ranged one enough for every
// part to be receiving at once (parts x chunk).
const (
	seqWindow   = 4 << 20
	rangeWindow = 16 << 20
	// pipeMin is the smallest blob sent through a pipe; smaller ones (in unnamed files)
	// are written and hashed inline by their one goroutine, and go to the page cache.
	pipeMin = smallBlob
	// directAlign is the alignment O_DIRECT needs of memory, file offsets and lengths
	// (the largest logical block size in common use).
	directAlign = 4096
)

// usePipe reports whether the blob goes through a pipe: a blob of known size, at least
// pipeMin (its size never changes during the transfer).
func (x *xfer) usePipe() bool {
	return x.desc.Size >= pipeMin
}

func (x *xfer) newPipe(window, end int64) *pipe {
	p := &pipe{
		x:       x,
		bs:      int64(x.t.o.bufSize),
		window:  max(window, int64(x.t.o.bufSize)),
		front:   x.hashed,
		pending: make(map[int64][]byte),
		moved:   make(chan struct{}),
		arrived: make(chan struct{}, 1),
		end:     end,
		failed:  make(chan struct{}),
	}
	if x.t.o.direct && x.t.s.directOK() {
		if f, err := openDirect(x.in.path); err == nil {
			p.direct.Store(f)
		}
	}
	return p
}

// startWriter gives the pipe a writer goroutine.
func (p *pipe) startWriter() {
	p.wq = make(chan wblock, 2)
	p.wdone = make(chan struct{})
	go func() {
		defer close(p.wdone)
		for wb := range p.wq {
			if p.failure() != nil {
				p.put(wb.b)
				continue
			}
			if err := p.write(wb.b, wb.off); err != nil {
				p.fail(err)
				p.put(wb.b)
				continue
			}
			p.offer(wb.off, wb.b)
		}
	}()
}

// fail records the first write error; the receivers and the hasher stop on it.
func (p *pipe) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err == nil {
		p.err = err
		close(p.failed)
	}
}

func (p *pipe) failure() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// get returns a block to receive into. Blocks are recycled within the pipe (a
// sync.Pool may drop them at any GC, and does so at random under the race detector,
// which would make the heap churn rather than stay at the window's size).
func (p *pipe) get() []byte {
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free = p.free[:n-1]
		p.mu.Unlock()
		return b
	}
	p.mu.Unlock()
	return p.x.t.pool.get()
}

// put gives back a block from get.
func (p *pipe) put(b []byte) {
	p.mu.Lock()
	p.free = append(p.free, b[:cap(b)])
	p.mu.Unlock()
}

// close waits for the writer, then releases the pipe's file and the blocks the hasher
// did not take.
func (p *pipe) close() {
	if p.wq != nil {
		close(p.wq)
		<-p.wdone
	}
	p.mu.Lock()
	p.closed = true
	for off, b := range p.pending {
		p.free = append(p.free, b[:cap(b)])
		delete(p.pending, off)
	}
	for _, b := range p.free {
		p.x.t.pool.put(b)
	}
	p.free = nil
	p.mu.Unlock()
	if f := p.direct.Swap(nil); f != nil {
		f.Close()
	}
}

// frontier returns how far the hash has got.
func (p *pipe) frontier() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.front
}

// widen sets a larger window, for a transfer that turns parallel.
func (p *pipe) widen(window int64) {
	p.mu.Lock()
	p.window = max(p.window, window)
	p.mu.Unlock()
}

// room waits until a block starting at off may be received.
func (p *pipe) room(ctx context.Context, off int64) error {
	p.mu.Lock()
	if off >= p.front+p.window {
		t := time.Now()
		defer func() { p.waited.Add(int64(time.Since(t))) }()
	}
	for off >= p.front+p.window {
		ch := p.moved
		p.mu.Unlock()
		select {
		case <-ch:
		case <-p.failed:
		case <-ctx.Done():
			return ctx.Err()
		}
		p.mu.Lock()
		if p.err != nil {
			break
		}
	}
	err := p.err
	p.mu.Unlock()
	return err
}

// offer hands the hasher a written block.
func (p *pipe) offer(off int64, b []byte) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.x.t.pool.put(b)
		return
	}
	p.pending[off] = b
	p.mu.Unlock()
	select {
	case p.arrived <- struct{}{}:
	default:
	}
}

// finish tells the hasher where the received bytes end: it stops there instead of at the
// end given to newPipe.
func (p *pipe) finish(end int64) {
	p.mu.Lock()
	p.end = end
	p.mu.Unlock()
	select {
	case p.arrived <- struct{}{}:
	default:
	}
}

// hash absorbs the blocks in order until the hashed frontier reaches the end. Once p.side
// is set, it records the hashed prefix in the ingest sidecar every side bytes (a ranged
// transfer writes out of order, so only that prefix is trusted on resume).
func (p *pipe) hash(ctx context.Context) error {
	x := p.x
	lastSide := x.hashed
	for {
		p.mu.Lock()
		if x.hashed >= p.end {
			p.mu.Unlock()
			return nil
		}
		b, ok := p.pending[x.hashed]
		if ok {
			delete(p.pending, x.hashed)
		}
		p.mu.Unlock()
		if !ok {
			select {
			case <-p.arrived:
			case <-p.failed:
				return blobErr(x.d, OpStore, p.failure())
			case <-ctx.Done():
				return blobErr(x.d, OpFetch, ctx.Err())
			}
			continue
		}
		t := time.Now()
		x.absorbCopy(b)
		p.busy.Add(int64(time.Since(t)))
		p.put(b)
		p.mu.Lock()
		p.front = x.hashed
		close(p.moved)
		p.moved = make(chan struct{})
		p.mu.Unlock()
		if side := p.side.Load(); side > 0 && x.hashed-lastSide >= side {
			if err := x.in.setSide(x.hashed); err != nil {
				return blobErr(x.d, OpStore, err)
			}
			lastSide = x.hashed
		}
	}
}

// cachedPiece is the largest write made through the page cache. Measured on this
// project's 2-core VM (Linux 6.18, ext4), writing 1 GiB into a new file took 0.4-0.7 s
// of system time in 16 or 32 KiB writes and 0.5-3.6 s in 64 KiB to 1 MiB ones: larger
// writes get large folios, whose high-order pages the VM had handed back to its host
// (free page reporting), so every page faults in the host first. Small writes cost some
// more syscalls on machines where that does not happen.
const cachedPiece = 32 << 10

// writeCached writes b at off through the page cache, in pieces of cachedPiece.
func writeCached(f *os.File, b []byte, off int64) error {
	for len(b) > 0 {
		k := min(len(b), cachedPiece)
		if _, err := f.WriteAt(b[:k], off); err != nil {
			return err
		}
		b, off = b[k:], off+int64(k)
	}
	return nil
}

// directBytes counts the bytes written with O_DIRECT by this process (for tests).
var directBytes atomic.Int64

// write writes b at off: with O_DIRECT when it is aligned, through the page cache
// otherwise. A file system that refuses O_DIRECT writes (EINVAL) gets buffered writes
// from then on.
func (p *pipe) write(b []byte, off int64) error {
	t := time.Now()
	defer func() { p.wbusy.Add(int64(time.Since(t))) }()
	if f := p.direct.Load(); f != nil && off%directAlign == 0 && len(b)%directAlign == 0 {
		_, err := f.WriteAt(b, off)
		if err == nil {
			directBytes.Add(int64(len(b)))
			return nil
		}
		if !isDirectRefused(err) {
			return fmt.Errorf("writing %s: %w", p.x.in.path, err)
		}
		if f := p.direct.Swap(nil); f != nil {
			f.Close()
		}
	}
	if err := writeCached(p.x.in.f, b, off); err != nil {
		return fmt.Errorf("writing %s: %w", p.x.in.path, err)
	}
	return nil
}

// recv reads body into the file from off on, block by block, until it ends at end
// (exclusive); done, when not nil, is advanced as bytes are received. It returns how
// many bytes it received, and either an attempt error or the error of a read (for the
// caller to classify). A body that runs past end is a final error (long, built by the
// caller); one that ends early, or fails, is retried by the caller from where it
// stopped. split, when not nil, is asked at every block boundary where to stop instead
// of end; the body is then left unread from there.
func (p *pipe) recv(ctx context.Context, body io.Reader, w *watchdog, off, end int64, done *atomic.Int64, long func(got int64) *attemptErr, split func(off int64) int64) (int64, *attemptErr, error) {
	var n int64
	br := bodyReader{r: body, w: w}
	soft := false
	for {
		if split != nil && !soft {
			if e := split(off); e < end {
				end, soft = e, true
			}
		}
		if soft && off >= end {
			return n, nil, nil
		}
		if err := p.room(ctx, off); err != nil {
			if err == p.failure() {
				return n, final(err), nil
			}
			return n, nil, err
		}
		b := p.get()
		// The block ends at the next multiple of the block size (so the next one is
		// aligned), or one byte past end, to notice a body that runs long.
		lim := min(p.bs-off%p.bs, end-off+1)
		if soft {
			lim = min(lim, end-off)
		}
		// Without O_DIRECT and a writer, each read is written at once: a write into the
		// page cache is a copy, cheapest while the bytes are still in this CPU's cache.
		eager := p.wq == nil && p.direct.Load() == nil
		fill := int64(0)
		var rerr error
		for fill < lim && rerr == nil {
			var m int
			m, rerr = br.read(b[fill:lim])
			if m > 0 && eager && off+fill+int64(m) <= end {
				if err := p.write(b[fill:fill+int64(m)], off+fill); err != nil {
					p.put(b)
					return n, final(err), nil
				}
			}
			fill += int64(m)
		}
		if off+fill > end {
			p.put(b)
			return n, long(off + fill), nil
		}
		if fill > 0 {
			if eager {
				p.offer(off, b[:fill])
			} else if p.wq != nil {
				select {
				case p.wq <- wblock{off: off, b: b[:fill]}:
				default:
					t := time.Now()
					p.wq <- wblock{off: off, b: b[:fill]}
					p.waited.Add(int64(time.Since(t)))
				}
			} else if err := p.write(b[:fill], off); err != nil {
				p.put(b)
				return n, final(err), nil
			} else {
				p.offer(off, b[:fill])
			}
			off += fill
			n += fill
			if done != nil {
				done.Add(fill)
			}
			p.x.m.add(fill)
		} else {
			p.put(b)
		}
		if errors.Is(rerr, io.EOF) {
			if off < end {
				return n, retry(fmt.Errorf("body ended at byte %d of %d: %w", off, end, io.ErrUnexpectedEOF)), nil
			}
			return n, nil, nil
		}
		if rerr != nil {
			return n, nil, rerr
		}
	}
}

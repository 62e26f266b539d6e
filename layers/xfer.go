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

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/scratch"
	"github.com/pullkit/pullkit/store"
)

// A large blob's transfer. Its parts receive the blob's bytes into blocks of blockSize,
// aligned to the blob's offsets (so that the store can write them with O_DIRECT); its
// writer goroutine (write) hands the blocks, in order, to the store's writer, which
// hashes and writes them, and to the blob's taps. Only the writer goroutine touches the
// store's writer.
//
// Memory is bounded by the window: a single stream receives a block only when it starts
// less than the window past what was written (the server is held back by TCP flow
// control meanwhile); the parts of a split blob receive freely, and a block that arrives
// beyond the window is parked in a spill file until the bytes before it are written.
// Each part holds a few blocks at most, fewer when many parts share the memory budget.
const (
	blockSize   = 1 << 20
	seqWindow   = 4 << 20
	splitWindow = 16 << 20
	memBudget   = 32 << 20
)

type xfer struct {
	e      *engine
	j      *job
	ctx    context.Context
	cancel context.CancelFunc
	w      store.Writer
	size   int64
	taps   *taps

	mu       sync.Mutex
	next     int64            // bytes handed to the writer
	got      map[int64]*block // received blocks beyond next, by offset
	arrived  chan struct{}    // wakes the writer goroutine
	moved    chan struct{}    // closed (and replaced) when next moves or the transfer fails
	window   int64
	parts    []*part
	split    bool
	noRanges bool
	rangesOK bool // a ranged part was served: later splits need not try first
	// rest holds, once the blob is split with ranges, the stretches no part has yet,
	// lowest first: each new part takes the next chunk of them, so that the parts
	// advance together from the front and the writer keeps up with them.
	rest     [][2]int64
	spill    *os.File
	err      error
	finished bool
	recvd    int64 // bytes received (with what the writer had), for progress
	shown    int64 // the last progress reported

	// Measurements for the controller, from the first response.
	since  time.Time    // zero until the first response
	busy   atomic.Int64 // nanoseconds the writer goroutine spent in the store's writer
	waited atomic.Int64 // nanoseconds receivers waited for room
}

// block is a received stretch of the blob: in memory, or parked in the spill file.
type block struct {
	off int64
	n   int
	b   []byte // nil when parked
	p   *part  // whose block it is
}

// part receives the stretch [pos, end) of the blob over one request at a time.
type part struct {
	x         *xfer
	pos       atomic.Int64
	end       atomic.Int64
	held      int           // blocks out (under x.mu)
	splitting bool          // a split of it is being set up (under x.mu)
	flowing   bool          // it has received a byte (counted in engine.flowing)
	body      io.ReadCloser // a request opened for it before it started
}

// newXfer starts the transfer of a large blob, with one part for all of it (run by the
// caller), or returns nil after failing the job.
func (e *engine) newXfer(j *job, w store.Writer) *xfer {
	x := &xfer{e: e, j: j, w: w, size: j.desc.Size, got: map[int64]*block{},
		arrived: make(chan struct{}, 1), moved: make(chan struct{}), window: seqWindow}
	x.ctx, x.cancel = context.WithCancel(e.ctx)
	taps, err := e.openTaps(x.ctx, j, w)
	if err != nil {
		x.cancel()
		w.Close()
		e.failJob(j, err)
		return nil
	}
	x.taps = taps
	x.next = w.Offset()
	x.recvd = x.next
	p := &part{x: x}
	p.pos.Store(x.next)
	p.end.Store(x.size)
	x.parts = []*part{p}
	e.mu.Lock()
	e.active = append(e.active, x)
	e.mu.Unlock()
	e.partsAdd(1)
	e.started(j, x.next)
	e.writers.Add(1)
	go func() {
		defer e.writers.Done()
		x.write()
	}()
	return x
}

// fail stops the transfer with err (the first one counts).
func (x *xfer) fail(err error) {
	x.mu.Lock()
	if x.err == nil && !x.finished {
		x.err = err
		x.cancel()
		close(x.moved)
		x.moved = make(chan struct{})
	}
	x.mu.Unlock()
	select {
	case x.arrived <- struct{}{}:
	default:
	}
}

// limit is how many blocks a part may hold out at once.
func (x *xfer) limit() int {
	n := int(x.e.partsNow())
	most := int(x.window/blockSize) + 1
	if x.split {
		most = 3
	}
	return max(2, min(most, memBudget/blockSize/max(n, 1)))
}

// getBlock returns a block for p to receive the bytes at off into, once there is room.
func (x *xfer) getBlock(ctx context.Context, p *part, off int64) ([]byte, error) {
	x.mu.Lock()
	var t time.Time
	for x.err == nil && ((!x.split && off >= x.next+x.window) || p.held >= x.limit()) {
		if t.IsZero() {
			t = time.Now()
		}
		ch := x.moved
		x.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		x.mu.Lock()
	}
	if !t.IsZero() {
		x.waited.Add(int64(time.Since(t)))
	}
	if x.err != nil {
		err := x.err
		x.mu.Unlock()
		return nil, err
	}
	p.held++
	x.mu.Unlock()
	return x.e.pool.get(), nil
}

// putBlock gives back a block of p's.
func (x *xfer) putBlock(p *part, b []byte) {
	x.mu.Lock()
	p.held--
	x.mu.Unlock()
	x.e.pool.put(b)
}

// started starts the controller's measurements, when the first response comes (under
// x.mu): a stream that has not filled a block by the time the controller looks is one
// the link limits.
func (x *xfer) started() {
	if x.since.IsZero() {
		x.since = time.Now()
		x.busy.Store(0)
		x.waited.Store(0)
	}
}

// deliver hands the writer goroutine the bytes b received at off by p: kept in memory
// within the window, parked in the spill file beyond it.
func (x *xfer) deliver(p *part, off int64, b []byte) error {
	blk := &block{off: off, n: len(b), b: b, p: p}
	x.mu.Lock()
	if x.split && off >= x.next+x.window {
		f, err := x.spillFile()
		x.mu.Unlock()
		if err == nil {
			_, err = f.WriteAt(b, off)
		}
		x.putBlock(p, b)
		if err != nil {
			return &pullkit.Error{Op: pullkit.OpWriteBlob, Detail: "(parking out-of-order bytes)", Err: err}
		}
		blk.b = nil
		x.mu.Lock()
	}
	x.got[off] = blk
	x.started()
	x.recvd += int64(len(b))
	show := x.recvd/progressStep != x.shown/progressStep
	if show {
		x.shown = x.recvd
	}
	done := x.recvd
	x.mu.Unlock()
	x.e.recv.Add(int64(len(b)))
	if show {
		x.e.report(x.j, pullkit.Event{Kind: pullkit.EventProgress, Done: done, Total: x.size})
	}
	select {
	case x.arrived <- struct{}{}:
	default:
	}
	return nil
}

// received is how many bytes of the blob have arrived (with what the writer held), as
// its events report them.
func (x *xfer) received() int64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.recvd
}

// progressStep is how often a blob's progress is reported.
const progressStep = 1 << 20

// spillFile returns the transfer's spill file, creating it (under x.mu).
func (x *xfer) spillFile() (*os.File, error) {
	if x.spill != nil {
		return x.spill, nil
	}
	var f *os.File
	var err error
	if t, ok := x.e.s.(interface{ TempFile() (*os.File, error) }); ok {
		f, err = t.TempFile()
	} else {
		f, err = scratch.File("", "pullkit-spill-*")
	}
	if err != nil {
		return nil, err
	}
	x.spill = f
	return f, nil
}

// write is the writer goroutine: it hands the blocks to the store's writer in order,
// then commits the blob.
func (x *xfer) write() {
	var back []byte // for parked blocks
	defer func() {
		if back != nil {
			x.e.pool.put(back)
		}
	}()
	for {
		x.mu.Lock()
		for x.err == nil && x.next < x.size && x.got[x.next] == nil {
			x.mu.Unlock()
			select {
			case <-x.arrived:
			case <-x.ctx.Done():
			}
			x.mu.Lock()
			if x.err == nil && x.ctx.Err() != nil {
				x.err = x.ctx.Err()
			}
		}
		if x.err != nil || x.next >= x.size {
			x.mu.Unlock()
			break
		}
		blk := x.got[x.next]
		delete(x.got, x.next)
		x.mu.Unlock()

		data := blk.b
		var err error
		if data == nil {
			if back == nil {
				back = x.e.pool.get()
			}
			data = back[:blk.n]
			if _, err = x.spill.ReadAt(data, blk.off); err != nil {
				err = &pullkit.Error{Op: pullkit.OpReadBlob, Detail: "(reading back parked bytes)", Err: err}
			}
		}
		if err == nil {
			t := time.Now()
			if _, err = x.w.Write(data); err != nil {
				err = blobErr(x.j, pullkit.OpWriteBlob, err)
			}
			x.busy.Add(int64(time.Since(t)))
		}
		if err == nil {
			err = x.taps.write(data)
		}
		if blk.b != nil {
			x.putBlock(blk.p, blk.b)
		}
		x.mu.Lock()
		x.next += int64(blk.n)
		close(x.moved)
		x.moved = make(chan struct{})
		x.mu.Unlock()
		if err != nil {
			x.fail(err)
		}
	}
	x.finish()
}

// finish ends the transfer: commit once every byte is written, or keep what was written
// for a later resume.
func (x *xfer) finish() {
	e, j := x.e, x.j
	x.mu.Lock()
	err := x.err
	if err == nil && x.next < x.size {
		err = x.ctx.Err()
	}
	x.finished = true
	x.mu.Unlock()
	var res Result
	if err == nil {
		err = x.w.Commit(x.ctx, x.size, j.desc.Digest)
		if err == nil {
			res = Result{Desc: j.desc, Fetched: true}
			res.DiffID, err = x.taps.close(nil)
		} else {
			err = blobErr(j, pullkit.OpVerifyBlob, err)
			x.taps.close(err)
		}
	} else {
		x.w.Close()
		x.taps.close(err)
	}
	x.cancel() // parts still checking for trailing bytes, or waiting
	if x.spill != nil {
		x.spill.Close()
	}
	e.mu.Lock()
	for i, a := range e.active {
		if a == x {
			e.active = append(e.active[:i], e.active[i+1:]...)
			break
		}
	}
	e.mu.Unlock()
	switch {
	case err == nil:
		e.report(j, pullkit.Event{Kind: pullkit.EventVerified, Done: x.size, Total: x.size})
		e.done(j, res)
	case e.restart(j, err):
	default:
		e.failJob(j, err)
	}
}

// restart puts j back in the queue after its bytes did not verify, within the retry
// policy (telling a Restarter fetcher), and reports whether it did.
func (e *engine) restart(j *job, err error) bool {
	if !(errors.Is(err, pullkit.ErrDigestMismatch) || errors.Is(err, pullkit.ErrSizeMismatch)) || e.ctx.Err() != nil {
		return false
	}
	j.attempt++
	if j.attempt >= e.o.retry.Attempts {
		return false
	}
	e.startOver(j, err)
	if r, ok := e.f.(Restarter); ok {
		r.Restart(j.desc, err)
	}
	if serr := pullkit.Sleep(e.ctx, e.o.retry.Delay(j.attempt)); serr != nil {
		e.failJob(j, serr) // cancelled while it waited: not the mismatch's failure
		return true
	}
	e.again(j)
	return true
}

// run receives the part, then leaves the transfer.
func (p *part) run(ctx context.Context) {
	err := p.receive(ctx)
	x := p.x
	x.mu.Lock()
	for i, q := range x.parts {
		if q == p {
			x.parts = append(x.parts[:i], x.parts[i+1:]...)
			break
		}
	}
	x.mu.Unlock()
	x.e.partsAdd(-1)
	if p.flowing {
		x.e.flowing.Add(-1)
	}
	if err != nil {
		x.fail(err)
	}
}

// receive brings the part's stretch in, resuming after broken bodies.
func (p *part) receive(ctx context.Context) error {
	x, e, j := p.x, p.x.e, p.x.j
	body := p.body
	p.body = nil
	defer func() {
		if body != nil {
			body.Close()
		}
	}()
	var tries tries
	from := p.pos.Load() // where the body in hand started
	for {
		pos, end := p.pos.Load(), p.end.Load()
		if pos >= end {
			return nil
		}
		if body == nil {
			from = pos
			length := int64(-1)
			if end < x.size {
				length = end - pos
			}
			t := time.Now()
			var err error
			body, err = e.f.Fetch(ctx, j.desc, pos, length)
			if err != nil {
				body = nil
				if err := tries.failed(e, j, ctx, 0, x.received(), err); err != nil {
					return err
				}
				continue
			}
			e.ctl.noteRTT(time.Since(t))
			x.mu.Lock()
			x.started()
			x.mu.Unlock()
		}
		b, err := x.getBlock(ctx, p, pos)
		if err != nil {
			return err
		}
		lim := min(blockSize-pos%blockSize, end-pos)
		n, rerr := readFull(ctx, body, b[:lim])
		if rerr == nil && pos+int64(n) == x.size {
			// The last block: a body that goes on is not this blob.
			if extra, _ := readFull(ctx, body, make([]byte, 1)); extra > 0 {
				x.putBlock(p, b)
				return blobErr(j, pullkit.OpFetchBlob, &pullkit.SizeMismatchError{What: j.what, Want: x.size, Got: x.size + 1, Source: "body (at least)"})
			}
		}
		if n > 0 {
			if !p.flowing {
				p.flowing = true
				e.flowing.Add(1)
			}
			if err := x.deliver(p, pos, b[:n]); err != nil {
				return err
			}
			p.pos.Add(int64(n))
		} else {
			x.putBlock(p, b)
		}
		if rerr == nil {
			continue
		}
		body.Close()
		body = nil
		if errors.Is(rerr, io.EOF) && p.pos.Load() >= p.end.Load() {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(rerr, io.EOF) {
			rerr = fmt.Errorf("body ended at byte %d of %d: %w", p.pos.Load(), p.end.Load(), io.ErrUnexpectedEOF)
		}
		if err := tries.failed(e, j, ctx, p.pos.Load()-from, x.received(), rerr); err != nil {
			return err
		}
	}
}

// readFull reads until b is full, the body ends (io.EOF, also after a partial read), it
// fails or ctx is done. A reader that keeps returning nothing and no error gets
// io.ErrNoProgress rather than a busy loop.
func readFull(ctx context.Context, r io.Reader, b []byte) (int, error) {
	n, empty := 0, 0
	for n < len(b) {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
		if m == 0 {
			if empty++; empty > 100 {
				return n, io.ErrNoProgress
			}
		} else {
			empty = 0
		}
	}
	return n, nil
}

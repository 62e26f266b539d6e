package layers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/ranges"
	"github.com/pullkit/pullkit/internal/stream"
	"github.com/pullkit/pullkit/store"
)

// A large blob's transfer. Its parts receive the blob's bytes into blocks of blockSize,
// aligned to the blob's offsets (so that the store can write them with O_DIRECT); its
// writer goroutine (write) hands the blocks at its offset, in order, to the store's
// writer, which hashes and writes them, and to the blob's taps, and gives the store's
// writer every block that arrives ahead of that offset to hold (store.RangeWriter), to
// take in order later. Only the writer goroutine touches the store's writer.
//
// Every byte is asked for once. A part receives one request at a time, and a request is
// never cut short: what the server sends for it is what the part reads. What no request
// has asked for yet is the transfer's todo list; a part that has read its request to the
// end takes the next stretch from the front of it, and a new part (a split) takes one
// too. So a split costs no bytes in flight, and the stretches are the same whatever the
// timing that decided them.
//
// Memory is bounded by the blocks each part may hold before the writer goroutine has
// taken them (a few, fewer when many parts share the budget, and fewer again when the
// Fetcher holds bodies' bytes itself: Link.Buffered, HTTP/2 windows, comes out of the
// same budget); the server is held back by flow control meanwhile. What the store's
// writer holds out of order survives an interruption (a Layout keeps it in the partial
// file, with a record), so a later transfer asks only for what is missing.
//
// memBudget is 12 MiB: a pull's peak RSS is bound by 64 MiB, and beside the blocks it
// holds the binary's own pages (about 19 MiB resident), the runtime, an unpack's buffers
// and the collector's headroom. With 32 MiB and two blocks a part at the least, an
// unpack over loopback (its writer the limit, 16 parts) held 34 MiB of blocks and went
// to 63-72 MiB of RSS; with 20 MiB and one block a part when two would go over it
// (limit), 50-58 MiB at the same speed. A part holds a block at the least, so with 1 MiB
// blocks 16 parts held 16 MiB whatever the budget: a pull and unpack of 8 x 64 MiB over
// HTTP/2 (32 lanes) still reached 62.8-64.8 MiB. Blocks of 512 KiB and 12 MiB took it to
// 54.5-55.4 MiB at the same speed.
//
// Requests are whole numbers of requestUnit (a multiple of blockSize): the size of a
// request is the link's business, not the memory's.
const (
	blockSize   = 512 << 10
	seqWindow   = 4 << 20
	memBudget   = 12 << 20
	requestUnit = 1 << 20
)

// Request sizes. A blob's first request asks for firstRequest bytes (unless the rest is
// less): enough for the controller to judge its stream before the request ends, and
// small enough that the part which received it does not end long after the parts a
// split starts. While the blob is not split and its stream is not judged link-limited,
// each next request asks for twice the last, up to maxRequest, so that a blob on a fast
// link costs a few requests. A stream judged link-limited is one a split would help: it
// asks for a chunk at a time (see the controller), as a split blob's parts do, so that
// what it has not asked for is there for the parts a split starts whenever connections
// come free (a blob that waited for them while its requests grew would have asked for
// its whole rest in one request, and ended alone on one connection, long after the
// others). Near the end the requests are smaller, so that the parts end together.
const (
	firstRequest = 4 << 20
	maxRequest   = 64 << 20
)

type xfer struct {
	e      *engine
	j      *job
	ctx    context.Context
	cancel context.CancelFunc
	w      store.Writer      // the store's writer, for taps' read-back
	rw     store.RangeWriter // w, or w with a scratch file for what it cannot hold
	size   int64
	taps   *taps

	mu       sync.Mutex
	next     int64            // bytes handed to the writer, in order
	got      map[int64]*block // received blocks the writer goroutine has not taken, by offset
	held     ranges.Set       // what the store's writer holds beyond next
	todo     ranges.Set       // what no request has asked for yet
	grow     int64            // the next request's size while the blob is not split
	arrived  chan struct{}    // wakes the writer goroutine
	moved    chan struct{}    // closed (and replaced) when next moves or the transfer fails
	parts    []*part
	running  sync.WaitGroup // parts that have not ended
	split    bool           // parts beyond the first were started
	noRanges bool           // the server answers a range with the whole blob (or refuses it)
	rangesOK bool           // the server answered a range with that range
	err      error
	finished bool
	recvd    int64 // bytes received (with what the writer had), for progress
	shown    int64 // the last progress reported

	// Measurements for the controller, from the first response.
	since  time.Time    // zero until the first response
	busy   atomic.Int64 // nanoseconds the writer goroutine spent in the store's writer
	waited atomic.Int64 // nanoseconds receivers waited for room
}

// block is a received stretch of the blob.
type block struct {
	off int64
	b   []byte
	p   *part // whose block it is
}

// part receives its stretches of the blob, one request at a time: [pos, end) is what its
// request has yet to give.
type part struct {
	x       *xfer
	pos     atomic.Int64
	end     atomic.Int64
	held    int  // blocks out (under x.mu)
	flowing bool // it has received a byte (counted in engine.flowing)

	// stream is what its requests name (internal/stream): the part itself, or the part
	// that handed its connection over to it (see handOff).
	stream any
	// The part this one hands its connection to when it ends (see handOff), nil for
	// none; set, with its first request already asked for, by the part's own goroutine.
	succ *part
	// For a part handed a connection: its requests' context and its first request,
	// asked for before the part that handed it over ended.
	rc    *reqCtx
	first *nextReq
}

// streamID is the stream the part's requests name.
func (p *part) streamID() any {
	if p.stream != nil {
		return p.stream
	}
	return p
}

// reqCtx is the context of a part's requests: it carries the part's stream, and
// outlives the transfer's context by the cancel grace (see settle).
type reqCtx struct {
	ctx    context.Context
	cancel context.CancelFunc
	stop   func() bool
}

func newReqCtx(ctx context.Context, id any, grace time.Duration) *reqCtx {
	rctx, cancel := context.WithCancel(stream.With(context.WithoutCancel(ctx), id))
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(grace, cancel) })
	return &reqCtx{ctx: rctx, cancel: cancel, stop: stop}
}

func (r *reqCtx) close() {
	r.stop()
	r.cancel()
}

// newXfer starts the transfer of a large blob, with one part (run by the caller) for
// what the store's writer lacks, or returns nil after failing the job.
func (e *engine) newXfer(j *job, w store.Writer) *xfer {
	x := &xfer{e: e, j: j, w: w, size: j.desc.Size, got: map[int64]*block{},
		arrived: make(chan struct{}, 1), moved: make(chan struct{}), grow: firstRequest}
	x.ctx, x.cancel = context.WithCancel(e.ctx)
	taps, err := e.openTaps(x.ctx, j, w)
	if err != nil {
		x.cancel()
		w.Close()
		e.failJob(j, err)
		return nil
	}
	x.taps = taps
	if rw, ok := w.(store.RangeWriter); ok {
		x.rw = rw
	} else {
		x.rw = &spillWriter{Writer: w, s: e.s}
	}
	x.next = w.Offset()
	x.noRanges = e.noRanges
	for _, r := range x.rw.Held() {
		x.held = x.held.Add(max(r.Start, x.next), min(r.End, x.size))
	}
	x.todo = x.held.Gaps(x.next, x.size)
	x.recvd = x.next + x.held.Total()
	p := &part{x: x}
	x.parts = []*part{p}
	x.running.Add(1)
	e.mu.Lock()
	e.active = append(e.active, x)
	e.mu.Unlock()
	e.partsAdd(1)
	e.started(j, x.recvd)
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
	x.wake()
}

func (x *xfer) wake() {
	select {
	case x.arrived <- struct{}{}:
	default:
	}
}

// limit is how many blocks a part may hold out at once: a share of the memory budget,
// less what the Fetcher says it holds of bodies in flight (its HTTP/2 windows), at
// least two, so that it receives into one while the writer takes the other. It is one
// when the Fetcher's buffers are the part's second (its body keeps receiving into them
// while the part waits for the writer), and when two for every part would go over the
// budget: then the connection's socket buffers are the second, and the parts' blocks
// stay within the budget up to one part per MiB of it.
func (x *xfer) limit() int {
	n := max(int(x.e.partsNow()), 1)
	most := seqWindow/blockSize + 1
	if x.split {
		most = 3
	}
	share := int(memBudget-x.e.buffered) / blockSize / n
	least := 2
	if x.e.buffered > 0 || share < 2 {
		least = 1
	}
	return max(least, min(most, share))
}

// getBlock returns a block for p to receive into, once p holds fewer than its limit.
func (x *xfer) getBlock(ctx context.Context, p *part) ([]byte, error) {
	x.mu.Lock()
	var t time.Time
	for x.err == nil && p.held >= x.limit() {
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

// putBlock gives back a block of p's (under x.mu).
func (x *xfer) putBlock(p *part, b []byte) {
	p.held--
	x.e.pool.put(b)
	close(x.moved)
	x.moved = make(chan struct{})
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

// deliver hands the writer goroutine the bytes b received at off by p. Once the transfer
// has failed (or been cancelled) they are still taken, for the store's writer to hold,
// and the error is returned so that p stops.
func (x *xfer) deliver(p *part, off int64, b []byte) error {
	x.mu.Lock()
	if x.finished {
		x.putBlock(p, b)
		x.mu.Unlock()
		return context.Canceled
	}
	stop := x.err
	if old := x.got[off]; old != nil {
		// The same offset again (a whole-blob answer over a range): the later wins.
		x.putBlock(old.p, old.b)
	}
	x.got[off] = &block{off: off, b: b, p: p}
	x.started()
	x.recvd += int64(len(b))
	show := x.recvd/progressStep != x.shown/progressStep
	if show {
		x.shown = x.recvd
	}
	done := min(x.recvd, x.size)
	x.mu.Unlock()
	x.e.recv.Add(int64(len(b)))
	if show {
		x.e.report(x.j, pullkit.Event{Kind: pullkit.EventProgress, Done: done, Total: x.size})
	}
	x.wake()
	return stop
}

// received is how many bytes of the blob have arrived (with what the writer held), as
// its events report them.
func (x *xfer) received() int64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	return min(x.recvd, x.size)
}

// progressStep is how often a blob's progress is reported.
const progressStep = 1 << 20

// work is one step of the writer goroutine.
type work int

const (
	none    work = iota
	inOrder      // the block at next
	absorb       // held bytes at next
	ahead        // a block beyond next, for the store's writer to hold
)

// pick chooses the writer goroutine's next step (under x.mu): the block at next first,
// then, in turn, held bytes at next and a block ahead, so that the hash keeps moving
// while what arrives ahead leaves memory.
func (x *xfer) pick(turn bool) (work, *block) {
	for off, blk := range x.got {
		// A block that reaches no further than next was taken already (a whole-blob
		// answer going over what the writer has): drop it.
		if end := off + int64(len(blk.b)); end <= x.next {
			delete(x.got, off)
			x.putBlock(blk.p, blk.b)
		}
	}
	if blk := x.got[x.next]; blk != nil {
		delete(x.got, x.next)
		return inOrder, blk
	}
	var first *block
	for _, blk := range x.got {
		if first == nil || blk.off < first.off {
			first = blk
		}
	}
	if first != nil && first.off < x.next {
		// It straddles next: its part from next on is in order.
		delete(x.got, first.off)
		first.b = first.b[x.next-first.off:]
		first.off = x.next
		return inOrder, first
	}
	_, canAbsorb := x.held.At(x.next)
	switch {
	case canAbsorb && (first == nil || turn):
		return absorb, nil
	case first != nil:
		delete(x.got, first.off)
		return ahead, first
	}
	return none, nil
}

// write is the writer goroutine: it hands the blob's bytes to the store's writer and the
// taps in order, has the store's writer hold what arrives ahead, then commits the blob.
func (x *xfer) write() {
	var buf []byte // for held bytes taken back
	defer func() {
		if buf != nil {
			x.e.pool.put(buf)
		}
	}()
	turn := false
	for {
		x.mu.Lock()
		var w work
		var blk *block
		for {
			if x.err == nil && x.ctx.Err() != nil {
				x.err = x.ctx.Err()
			}
			if x.err != nil || x.next >= x.size {
				break
			}
			if w, blk = x.pick(turn); w != none {
				break
			}
			x.mu.Unlock()
			select {
			case <-x.arrived:
			case <-x.ctx.Done():
			}
			x.mu.Lock()
		}
		if w == none {
			x.mu.Unlock()
			break
		}
		x.mu.Unlock()
		turn = !turn

		var n int
		var err error
		t := time.Now()
		switch w {
		case inOrder:
			if _, err = x.rw.Write(blk.b); err != nil {
				err = blobErr(x.j, pullkit.OpWriteBlob, err)
			}
			n = len(blk.b)
		case ahead:
			if _, err = x.rw.WriteAt(blk.b, blk.off); err != nil {
				err = blobErr(x.j, pullkit.OpWriteBlob, err)
			}
		case absorb:
			if buf == nil {
				buf = x.e.pool.get()
			}
			if n, err = x.rw.Absorb(buf); err != nil {
				err = blobErr(x.j, pullkit.OpReadBlob, err)
			} else if n == 0 {
				err = blobErr(x.j, pullkit.OpReadBlob, fmt.Errorf("%w: the store's writer holds no bytes at %d", pullkit.ErrInvalid, x.next))
			}
		}
		x.busy.Add(int64(time.Since(t)))
		switch {
		case err != nil:
		case w == inOrder:
			err = x.taps.write(blk.b)
		case w == absorb:
			err = x.taps.write(buf[:n])
		}
		x.mu.Lock()
		switch w {
		case inOrder:
			x.held = x.held.Sub(x.next, x.next+int64(n))
			x.next += int64(n)
			x.putBlock(blk.p, blk.b)
		case absorb:
			x.held = x.held.Sub(x.next, x.next+int64(n))
			x.next += int64(n)
			close(x.moved)
			x.moved = make(chan struct{})
		case ahead:
			if err == nil {
				x.held = x.held.Add(blk.off, blk.off+int64(len(blk.b)))
			}
			x.putBlock(blk.p, blk.b)
		}
		x.mu.Unlock()
		if err != nil {
			x.fail(err)
		}
	}
	x.finish()
}

// keep gives the store's writer, to hold for a later transfer, the blocks in memory
// when the transfer stops short (the writer goroutine's last step), and those its parts
// hand over as they settle (see settle), as they come, until every part has ended (they
// end within the cancel grace: the transfer's context is done). Memory stays bounded by
// the blocks the parts may hold.
func (x *xfer) keep() {
	ended := make(chan struct{})
	go func() {
		x.running.Wait()
		close(ended)
	}()
	last := false
	for {
		x.mu.Lock()
		blocks := make([]*block, 0, len(x.got))
		for off, blk := range x.got {
			delete(x.got, off)
			blocks = append(blocks, blk)
		}
		next := x.next
		x.mu.Unlock()
		for _, blk := range blocks {
			b, off := blk.b, blk.off
			if end := off + int64(len(b)); end > next {
				if off < next {
					b, off = b[next-off:], next
				}
				x.rw.WriteAt(b, off) // best effort: a failure costs a later transfer these bytes
			}
			x.mu.Lock()
			x.putBlock(blk.p, blk.b)
			x.mu.Unlock()
		}
		if last {
			return
		}
		if len(blocks) == 0 {
			select {
			case <-x.arrived:
			case <-ended:
				last = true // once more: what the last parts handed over
			}
		}
	}
}

// finish ends the transfer: commit once every byte is written, or keep what was received
// for a later resume.
func (x *xfer) finish() {
	e, j := x.e, x.j
	x.mu.Lock()
	err := x.err
	if err == nil && x.next < x.size {
		err = x.ctx.Err()
	}
	x.mu.Unlock()
	if err != nil {
		x.cancel()
		x.keep()
	}
	x.mu.Lock()
	x.finished = true
	x.mu.Unlock()
	var res Result
	if err == nil {
		err = x.rw.Commit(x.ctx, x.size, j.desc.Digest)
		if err == nil {
			res = Result{Desc: j.desc, Fetched: true}
			res.DiffID, err = x.taps.close(nil)
		} else {
			err = blobErr(j, pullkit.OpVerifyBlob, err)
			x.taps.close(err)
		}
	} else {
		x.rw.Close()
		x.taps.close(err)
	}
	x.cancel() // parts still checking for trailing bytes, or waiting
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

// handOff finds the part that p's connection goes to once p's request ends, its blob
// having nothing left to ask for, and asks for that part's first stretch now, as p's
// stream (internal/stream: under HTTP/2 it is sent as p's next request would be), as a
// part asks for its next stretch before its request ends: the worker then does not wait
// a round trip (and, for a new connection, its handshake) between two blobs. The part is what a worker freed by
// p would start next: a part split off another blob whose streams limit it, as
// controller.split chooses it, counting p as gone; nothing when a queued blob would be
// started first, when the call is failing, or when the workers were cut (a 429): the
// worker then takes its next task when p ends, as it always did. p's goroutine runs
// the part when p ends (part.run).
func (e *engine) handOff(p *part) *part {
	e.mu.Lock()
	var q *part
	if e.err == nil && e.ctx.Err() == nil && e.busy <= e.slots && !e.queuedFirst() {
		q = e.ctl.handOff(e, p.x)
	}
	e.mu.Unlock()
	if q == nil {
		return nil
	}
	q.stream = p.streamID()
	q.rc = newReqCtx(q.x.ctx, q.stream, e.o.cancelGrace)
	r := ranges.Range{Start: q.pos.Load(), End: q.end.Load()}
	q.end.Store(r.Start) // nothing in hand: its first request is on its way
	q.first = q.x.open(q.rc.ctx, r)
	return q
}

// queuedFirst reports whether a worker that comes free would start a queued blob
// (under e.mu): see pick.
func (e *engine) queuedFirst() bool {
	if len(e.queue) == 0 {
		return false
	}
	more := e.streams < firstStreams || e.ctl.moreStreams(e)
	for _, j := range e.queue {
		if !j.large() || more {
			return true
		}
	}
	return false
}

// newPart adds a part to a split transfer, with the next stretch to ask for (under
// x.mu), or returns nil when nothing is left to ask for.
func (x *xfer) newPart() *part {
	if len(x.todo) == 0 || x.err != nil || x.finished {
		return nil
	}
	p := &part{x: x}
	x.split = true
	x.running.Add(1)
	r := x.assign()
	p.pos.Store(r.Start)
	p.end.Store(r.End)
	x.parts = append(x.parts, p)
	return p
}

// assign takes the next stretch to ask for from the front of the todo list (under x.mu;
// the list is not empty). How much, the policy says: see request.
func (x *xfer) assign() ranges.Range {
	r := x.todo[0]
	n := x.request(r)
	end := min(r.End, r.Start+n)
	if r.End-end < n/2 {
		end = r.End // not a sliver for later
	}
	x.todo = x.todo.Sub(r.Start, end)
	return ranges.Range{Start: r.Start, End: end}
}

// request is how many bytes the next request asks for, from stretch r of the todo list
// (under x.mu). One stream (ranges off, a server without them, the judgement pinned to
// never split): the whole stretch. A blob not split yet whose stream is not judged
// link-limited: growing requests (firstRequest, doubled each time up to maxRequest). A
// split blob, or one whose stream is link-limited: a chunk, the controller's size, or
// a share of what is left when that is less, so that the last requests end together.
func (x *xfer) request(r ranges.Range) int64 {
	e := x.e
	switch {
	case !e.o.ranges || x.noRanges || e.ctl.judge == judgeNever:
		return r.Len()
	case !x.split && !x.limited(time.Now(), e.ctl.rttNow()):
		n := x.grow
		x.grow = min(2*x.grow, maxRequest)
		return n
	}
	chunk, minPart := e.ctl.sizes()
	share := x.todo.Total() / int64(2*max(1, len(x.parts)))
	return max(requestUnit, max(minPart, min(chunk, share))/requestUnit*requestUnit)
}

// wholeFrom takes a body that runs from offset from to the end of the blob (a server
// that answered a range with the whole blob) as the fetch of everything from there:
// nothing is asked for any more, the part's request ends at the blob's end, and the
// transfer is not split again (under x.mu).
func (x *xfer) wholeFrom(p *part) {
	x.noRanges = true
	x.todo = nil
	p.end.Store(x.size)
}

// run receives the part, then leaves the transfer; then the parts it handed its
// connection to, in turn (see handOff).
func (p *part) run(ctx context.Context) {
	for p != nil {
		p = p.runOne(ctx)
		if p != nil {
			ctx = p.x.ctx
		}
	}
}

// runOne receives the part, leaves the transfer, and returns the part it handed its
// connection to, or nil.
func (p *part) runOne(ctx context.Context) *part {
	x := p.x
	defer x.running.Done()
	err := p.receive(ctx)
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
	return p.succ
}

// receive brings the part's stretches in, one request at a time, taking the next from
// the todo list when one ends, and resuming a request whose body breaks from the byte it
// reached.
func (p *part) receive(ctx context.Context) error {
	x, e, j := p.x, p.x.e, p.x.j
	// The requests outlive ctx by the cancel grace: see settle.
	rc := p.rc
	if rc == nil {
		rc = newReqCtx(ctx, p.streamID(), e.o.cancelGrace)
	}
	defer rc.close()
	rctx := rc.ctx
	var body io.ReadCloser
	next := p.first // the next request, opened before this one ends
	p.first = nil
	defer func() {
		if body != nil {
			if ctx.Err() != nil {
				p.settle(rctx, body)
			}
			body.Close()
		}
		if next != nil {
			if ctx.Err() != nil {
				// The next request's answer holds bytes of a stretch nobody else asks
				// for, on their way: keep them too, as for the body in hand. An answer
				// here already is taken even when the grace is over (what it holds is
				// kept; see drainWait).
				var o opened
				got := false
				select {
				case o = <-next.done:
					got = true
				default:
					select {
					case o = <-next.done:
						got = true
					case <-rctx.Done():
					}
				}
				if got {
					if o.err == nil && !o.whole {
						p.pos.Store(next.r.Start)
						p.end.Store(next.r.End)
						p.settle(rctx, o.body)
					}
					if o.body != nil {
						o.body.Close()
					}
					next = nil
				}
			}
			if next != nil {
				next.drop()
			}
		}
	}()
	var tries tries
	from := p.pos.Load() // where the body in hand started
	for {
		pos, end := p.pos.Load(), p.end.Load()
		if pos >= end {
			if body != nil {
				body.Close() // read to the end of its request
				body = nil
			}
			if next != nil {
				// The next request was asked for before this one ended: its answer is
				// on its way, or here.
				a := next
				next = nil
				p.pos.Store(a.r.Start)
				p.end.Store(a.r.End)
				tries.none = 0
				var o opened
				select {
				case o = <-a.done:
				case <-ctx.Done():
					next = a // dropped on the way out
					return ctx.Err()
				}
				if o.err != nil {
					continue // asked again below, within the retry policy
				}
				from = a.r.Start
				if err := p.took(rctx, o, a.r.Start, a.r.End); err != nil {
					o.body.Close()
					continue
				}
				body = o.body
				continue
			}
			x.mu.Lock()
			if len(x.todo) == 0 || x.err != nil || x.finished || ctx.Err() != nil {
				x.mu.Unlock()
				return ctx.Err()
			}
			r := x.assign()
			x.mu.Unlock()
			p.pos.Store(r.Start)
			p.end.Store(r.End)
			tries.none = 0 // the last request moved the blob: a fresh count
			continue
		}
		if body == nil {
			from = pos
			length := int64(-1)
			if end < x.size {
				length = end - pos
			}
			t := time.Now()
			b, served, whole, err := openBody(rctx, e.f, j.desc, pos, length)
			if err == nil && whole {
				// The whole blob for a range: it is the fetch of everything from pos on.
				x.mu.Lock()
				x.wholeFrom(p)
				x.mu.Unlock()
				end = x.size
				err = skip(rctx, b, pos-served)
				if err != nil {
					b.Close()
				}
			}
			if err != nil {
				if errors.Is(err, pullkit.ErrUnsupported) && length >= 0 {
					// No range that ends before the blob does: one stream from here to
					// the end, which covers everything not received.
					x.mu.Lock()
					x.wholeFrom(p)
					x.mu.Unlock()
					continue
				}
				if errors.Is(err, pullkit.ErrTooManyRequests) {
					// The registry says too many: half the connections from now on.
					e.mu.Lock()
					e.ctl.backOff(e)
					e.mu.Unlock()
				}
				if err := tries.failed(e, j, ctx, 0, x.received(), err); err != nil {
					return err
				}
				continue
			}
			body = b
			e.ctl.noteRTT(time.Since(t))
			x.mu.Lock()
			if length >= 0 && !x.noRanges {
				x.rangesOK = true
			}
			x.started()
			x.mu.Unlock()
		}
		if next == nil && end-pos <= e.ctl.prefetchAt() {
			// What is left of this request comes within two round trips: ask for the
			// next stretch now (checked before each block, so that a request of a
			// block or two has its next one asked for in time too), or, when the blob
			// has nothing left to ask for, hand the connection over.
			if end < x.size {
				next = x.openNext(rctx)
			}
			if next == nil && p.succ == nil {
				p.succ = e.handOff(p)
			}
		}
		b, err := x.getBlock(ctx, p)
		if err != nil {
			return err
		}
		lim := min(blockSize-pos%blockSize, end-pos)
		n, rerr := readFull(rctx, body, b[:lim])
		if rerr == nil && pos+int64(n) == x.size {
			// The last block: a body that goes on is not this blob.
			if extra, _ := readFull(rctx, body, make([]byte, 1)); extra > 0 {
				x.mu.Lock()
				x.putBlock(p, b)
				x.mu.Unlock()
				return blobErr(j, pullkit.OpFetchBlob, &pullkit.SizeMismatchError{What: j.what, Want: x.size, Got: x.size + 1, Source: "body (at least)"})
			}
		}
		if n > 0 {
			if !p.flowing {
				p.flowing = true
				e.flowing.Add(1)
			}
			err := x.deliver(p, pos, b[:n])
			p.pos.Add(int64(n)) // delivered, kept even when err stops the part
			if err != nil {
				return err
			}
		} else {
			x.mu.Lock()
			x.putBlock(p, b)
			x.mu.Unlock()
		}
		if rerr == nil {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err() // the body is settled, not closed yet (see the deferred settle)
		}
		body.Close()
		body = nil
		if errors.Is(rerr, io.EOF) && p.pos.Load() >= p.end.Load() {
			continue
		}
		if errors.Is(rerr, io.EOF) {
			rerr = fmt.Errorf("body ended at byte %d of %d: %w", p.pos.Load(), p.end.Load(), io.ErrUnexpectedEOF)
		}
		if err := tries.failed(e, j, ctx, p.pos.Load()-from, x.received(), rerr); err != nil {
			return err
		}
	}
}

// settle reads, once the transfer's context is done (a cancel, a failure elsewhere),
// the rest of the part's request from body, for as long as the cancel grace lasts (rctx
// ends then), and hands it to the transfer, which gives it to the store's writer to
// keep as it comes (see keep). Nothing more is asked for: these are bytes the server
// is sending anyway, and a request closed before its end throws away what is on its
// way (a round trip's worth of the link: in the sockets, in HTTP/2 windows) and costs
// the next pull as much again. With a grace of 0 it reads nothing more from the
// network. Once the grace is over it still takes what the body holds already (see
// drainWait).
func (p *part) settle(rctx context.Context, body io.Reader) {
	x := p.x
	ctx, over := rctx, false
	for {
		pos, end := p.pos.Load(), p.end.Load()
		if pos >= end {
			return
		}
		if !over && rctx.Err() != nil {
			var cancel context.CancelFunc
			ctx, cancel = drainCtx()
			defer cancel()
			over = true
		}
		b := x.settleBlock(rctx, p) // once rctx is done: only where there is room at once
		if b == nil {
			return
		}
		n, err := readFull(ctx, body, b[:min(blockSize-pos%blockSize, end-pos)])
		if n > 0 {
			x.deliver(p, pos, b[:n]) // taken even though the transfer has stopped
			p.pos.Add(int64(n))
		} else {
			x.mu.Lock()
			x.putBlock(p, b)
			x.mu.Unlock()
		}
		if err != nil && (over || rctx.Err() == nil) {
			return // the body ended, or what it held is taken
		}
	}
}

// drainWait bounds how long a request's body is read once its grace is over: long
// enough to take what the body holds already in the process (Go's HTTP/2 client keeps
// what a reset stream's window let in readable; reading it is a copy), short enough
// that a body still trickling in, or one that ignores its ended request, is left at
// once. A variable for the package's tests.
var drainWait = 50 * time.Millisecond

// drainCtx is the context of the reads of a body whose request ended with the grace:
// what they give was sent by the server and is in the process already, kept rather
// than thrown away (a Fetcher's body ends its reads once its request's context is
// done, so they do not wait for the network).
func drainCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), drainWait)
}

// settleBlock is getBlock for settle: it waits for room as getBlock does, though the
// transfer has stopped (the writer goroutine keeps what arrives meanwhile), until rctx
// ends; nil once it has, or once the transfer has finished.
func (x *xfer) settleBlock(rctx context.Context, p *part) []byte {
	x.mu.Lock()
	for !x.finished && p.held >= x.limit() {
		ch := x.moved
		x.mu.Unlock()
		select {
		case <-ch:
		case <-rctx.Done():
			return nil
		}
		x.mu.Lock()
	}
	if x.finished {
		x.mu.Unlock()
		return nil
	}
	p.held++
	x.mu.Unlock()
	return x.e.pool.get()
}

// nextReq is a request a part opens before its current one ends, so that its connection
// does not wait a round trip between requests (a new connection under HTTP/1.1, another
// stream under HTTP/2). Its stretch is taken from the todo list when it is asked for, so
// it is never asked for twice.
type nextReq struct {
	r    ranges.Range
	done chan opened
}

// opened is what a request gave.
type opened struct {
	body  io.ReadCloser
	from  int64
	whole bool
	err   error
	took  time.Duration
}

// openNext asks for the next stretch of the todo list in the background, or returns nil
// when there is none to ask for, or the transfer is one stream (under the judgement
// pinned never to split, with ranges off, or a server without them).
func (x *xfer) openNext(ctx context.Context) *nextReq {
	e := x.e
	x.mu.Lock()
	if len(x.todo) == 0 || x.err != nil || x.finished || x.ctx.Err() != nil || x.noRanges || !x.rangesOK || !e.o.ranges || e.ctl.judge == judgeNever {
		x.mu.Unlock()
		return nil
	}
	r := x.assign()
	x.mu.Unlock()
	return x.open(ctx, r)
}

// open asks for stretch r in the background.
func (x *xfer) open(ctx context.Context, r ranges.Range) *nextReq {
	e := x.e
	a := &nextReq{r: r, done: make(chan opened, 1)}
	length := int64(-1)
	if r.End < x.size {
		length = r.Len()
	}
	go func() {
		t := time.Now()
		b, from, whole, err := openBody(ctx, e.f, x.j.desc, r.Start, length)
		a.done <- opened{body: b, from: from, whole: whole, err: err, took: time.Since(t)}
	}()
	return a
}

// drop closes the answer of a request that will not be read (the part stopped).
func (a *nextReq) drop() {
	go func() {
		if o := <-a.done; o.body != nil {
			o.body.Close()
		}
	}()
}

// took takes the answer o of a request for [start, end) as the part's body: a whole-blob
// answer is the fetch of everything from start on (its bytes before start skipped).
func (p *part) took(ctx context.Context, o opened, start, end int64) error {
	x := p.x
	x.e.ctl.noteRTT(o.took)
	x.mu.Lock()
	if o.whole {
		x.wholeFrom(p)
	}
	x.mu.Unlock()
	if o.whole {
		return skip(ctx, o.body, start-o.from)
	}
	return nil
}

// skip reads and drops n bytes of body, honouring ctx.
func skip(ctx context.Context, body io.Reader, n int64) error {
	if n <= 0 {
		return nil
	}
	buf := make([]byte, min(n, 64<<10))
	for n > 0 {
		k, err := readFull(ctx, body, buf[:min(n, int64(len(buf)))])
		n -= int64(k)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("skip to the byte asked for in a whole-blob answer: %w", err)
		}
	}
	return nil
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

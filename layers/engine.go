package layers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/store"
)

// The engine runs one Fetch: a fixed set of workers (WithJobs of them) takes tasks from
// it, one request at a time each. A task is either the start of a blob that waits in the
// queue, or, once the queue is empty, a part split off a large blob whose one stream is
// what limits it (see controller). A blob under smallBlob bytes (or of unknown size) is
// received by its worker alone, inline; a larger one gets a transfer (xfer) whose parts
// receive blocks and whose writer goroutine hands them, in order, to the store.

// smallBlob is the size under which a blob is received inline, in one buffer.
const smallBlob = 1 << 20

// job is one digest of the call (a digest listed twice is one job).
type job struct {
	desc    manifest.Descriptor
	what    string
	diff    bool
	tees    []Tee
	idx     []int
	attempt int // starts from scratch so far (digest or size mismatches)
	res     Result
	ev      blobEvents
}

// large reports whether j gets a transfer of its own (rather than an inline receive).
func (j *job) large() bool { return j.desc.Size < 0 || j.desc.Size >= smallBlob }

// tiny reports whether j may start beside the call's slots (see DefaultTinyJobs).
func (j *job) tiny() bool { return j.desc.Size >= 0 && j.desc.Size <= TinyBlobSize }

type engine struct {
	ctx    context.Context
	cancel context.CancelFunc
	f      Fetcher
	s      store.Content
	o      options
	pool   *blocks
	ctl    controller

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []*job
	active  []*xfer  // large transfers in progress
	left    int      // jobs not finished
	busy    int      // workers running a task
	slots   int      // how many workers may run a task (lowered after 429s)
	tiny    int      // tiny blobs started beside slots (see DefaultTinyJobs) and not ended
	tinyOff bool     // no more of them: a request failed and was retried
	streams int      // large blobs started and not finished
	ready   []func() // parts of a split waiting for a worker
	err     error    // the first failure

	noRanges bool  // the Fetcher's LinkMemory says the server does not serve ranges
	buffered int64 // what the Fetcher's LinkMemory says it holds of bodies in flight (see limit)

	writers sync.WaitGroup // the writer goroutines of large transfers

	recv    atomic.Int64 // bytes received, all transfers
	parts   atomic.Int64 // parts receiving, all transfers (for the memory budget)
	flowing atomic.Int64 // parts that have received their first byte and not ended
}

func (e *engine) partsNow() int64  { return e.parts.Load() }
func (e *engine) partsAdd(n int64) { e.parts.Add(n) }

func run(ctx context.Context, f Fetcher, s store.Content, blobs []Blob, o options) ([]Result, error) {
	e := &engine{f: f, s: s, o: o, pool: &blocks{pool: getBufPool(blockSize)}, slots: o.jobs}
	e.ctx, e.cancel = context.WithCancel(ctx)
	defer e.cancel()
	defer e.pool.release()
	e.cond = sync.NewCond(&e.mu)
	e.ctl.init(o.judge)

	byDigest := make(map[digest.Digest]*job, len(blobs))
	var total int64 // -1 once a blob of unknown size is planned
	for i, b := range blobs {
		j := byDigest[b.Desc.Digest]
		if j == nil {
			j = &job{desc: b.Desc, what: what(b)}
			byDigest[b.Desc.Digest] = j
			e.queue = append(e.queue, j)
		} else if j.desc.Size < 0 && b.Desc.Size >= 0 {
			j.desc = b.Desc
		}
		j.diff = j.diff || b.DiffID
		if b.Tee != nil {
			j.tees = append(j.tees, b.Tee)
		}
		j.idx = append(j.idx, i)
	}
	jobs := append([]*job(nil), e.queue...)
	e.left = len(jobs)
	for _, j := range jobs {
		if total >= 0 && j.desc.Size >= 0 {
			total += j.desc.Size
		} else {
			total = -1
		}
	}
	// What earlier calls learnt of the link, and what this one learns, for a Fetcher
	// that remembers (the link of the first large blob stands for the call's).
	lm, _ := f.(LinkMemory)
	var linked *job
	for _, j := range jobs {
		if j.large() && j.desc.Size >= 0 {
			linked = j
			break
		}
	}
	if lm != nil && linked != nil {
		l := lm.Link(linked.desc)
		e.ctl.start(l)
		e.noRanges = l.NoRanges
		e.buffered = min(max(l.Buffered, 0), memBudget/2)
		defer func() {
			if l, ok := e.ctl.learnt(); ok && l.RTT > 0 {
				lm.Learnt(linked.desc, l)
			}
		}()
	}
	e.emit(pullkit.Event{Kind: pullkit.EventPlanned, Total: total, Blobs: len(jobs)})
	for _, j := range jobs {
		e.report(j, pullkit.Event{Kind: pullkit.EventQueued, Total: j.desc.Size})
	}

	// Wake idle workers when the call is cancelled, and while transfers run, so that they
	// look at the measurements again.
	stop := make(chan struct{})
	go e.tick(stop)

	var wg sync.WaitGroup
	for range o.jobs + o.tiny {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.work()
		}()
	}
	wg.Wait()
	// A cancelled call's workers leave while the writer goroutines of large transfers
	// may still be closing their blobs (the store's writer, a diffID's decompression):
	// the call returns only once they are done with them.
	e.writers.Wait()
	close(stop)
	e.mu.Lock()
	cause := e.err
	e.mu.Unlock()
	if cause == nil {
		cause = ctx.Err()
	}
	if cause == nil {
		cause = context.Canceled
	}
	e.cancelUnfinished(jobs, cause)

	results := make([]Result, len(blobs))
	for _, j := range jobs {
		for _, i := range j.idx {
			r := j.res
			r.Desc = blobs[i].Desc
			if r.Desc.Size < 0 {
				r.Desc.Size = j.res.Desc.Size
			}
			if !blobs[i].DiffID {
				r.DiffID = ""
			}
			results[i] = r
		}
	}
	e.mu.Lock()
	err := e.err
	e.mu.Unlock()
	if err != nil {
		return results, err
	}
	if err := ctx.Err(); err != nil {
		return results, err
	}
	return results, nil
}

// tick broadcasts to idle workers every controller period and when the call ends.
func (e *engine) tick(stop chan struct{}) {
	t := time.NewTicker(tickPeriod)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-e.ctx.Done():
			e.mu.Lock()
			e.cond.Broadcast()
			e.mu.Unlock()
			return
		case now := <-t.C:
			e.ctl.sample(now, e.recv.Load(), e.flowing.Load())
			e.mu.Lock()
			if len(e.active) > 0 {
				e.cond.Broadcast()
			}
			e.mu.Unlock()
		}
	}
}

func (e *engine) emit(ev pullkit.Event) {
	if e.o.progress != nil {
		e.o.progress(ev)
	}
}

// work runs tasks until none is left.
func (e *engine) work() {
	for {
		task, tiny := e.take()
		if task == nil {
			return
		}
		task()
		e.mu.Lock()
		if tiny {
			e.tiny--
		} else {
			e.busy--
		}
		e.cond.Broadcast()
		e.mu.Unlock()
	}
}

// take waits for the next task: a queued blob, or a part split off a large one; tiny
// says the task is a tiny blob started beside the slots (see DefaultTinyJobs), which
// the slots do not count.
func (e *engine) take() (task func(), tiny bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for {
		if e.err != nil || e.ctx.Err() != nil || e.left == 0 {
			return nil, false
		}
		if e.tinyRoom() {
			if j := e.pickTiny(); j != nil {
				e.tiny++
				return func() { e.start(j) }, true
			}
		}
		if e.busy < e.slots {
			if len(e.ready) > 0 {
				t := e.ready[0]
				e.ready = e.ready[1:]
				e.busy++
				return t, false
			}
			if j := e.pick(); j != nil {
				e.busy++
				return func() { e.start(j) }, false
			}
			if t := e.ctl.split(e); t != nil {
				e.busy++
				return t, false
			}
		}
		e.cond.Wait()
	}
}

// tinyRoom reports whether a tiny blob may start beside the slots (under e.mu): they
// are all taken, fewer than the options' tiny ones run, no request has failed (a 429, a
// 5xx, a connection refused or broken: the registry may want fewer) and the slots have
// not been halved after a 429.
func (e *engine) tinyRoom() bool {
	return e.busy >= e.slots && e.tiny < e.o.tiny && !e.tinyOff && e.slots == e.o.jobs
}

// pickTiny takes the first tiny blob from the queue (under e.mu), nil for none.
func (e *engine) pickTiny() *job {
	for i, j := range e.queue {
		if j.tiny() {
			e.queue = append(e.queue[:i], e.queue[i+1:]...)
			return j
		}
	}
	return nil
}

// firstStreams is how many large blobs a call starts at once before it knows more: enough
// to keep a fast link and two cores busy. More start only while the streams already
// running are what limits them (a long or capped link), as for splitting.
const firstStreams = 4

// pick takes the next job to start from the queue (under e.mu): the first one, unless it
// is a large blob and enough streams run already, in which case a small one behind it.
func (e *engine) pick() *job {
	more := e.streams < firstStreams || e.ctl.moreStreams(e)
	for i, j := range e.queue {
		if j.large() && !more {
			continue
		}
		e.queue = append(e.queue[:i], e.queue[i+1:]...)
		if j.large() {
			e.streams++
		}
		return j
	}
	return nil
}

// fail records the first failure and cancels the call.
func (e *engine) fail(err error) {
	e.mu.Lock()
	if e.err == nil {
		e.err = err
		e.cancel()
	}
	e.cond.Broadcast()
	e.mu.Unlock()
}

// done records a finished job.
func (e *engine) done(j *job, res Result) {
	e.mu.Lock()
	j.res = res
	e.left--
	if j.large() {
		e.streams--
	}
	e.cond.Broadcast()
	e.mu.Unlock()
}

// again puts a job that must start over back at the head of the queue.
func (e *engine) again(j *job) {
	e.mu.Lock()
	if j.large() {
		e.streams--
	}
	e.queue = append([]*job{j}, e.queue...)
	e.cond.Broadcast()
	e.mu.Unlock()
}

// blobErr names the step (a pullkit.Op constant) and the blob in err.
func blobErr(j *job, op string, err error) error {
	return pullkit.WrapDetail("", op, "("+j.what+")", j.desc.Digest, err)
}

// start begins a job: it skips a blob the store has, waits for another writer of it,
// and otherwise receives it (inline, or as the first part of a transfer).
func (e *engine) start(j *job) {
	ctx := e.ctx
	if j.desc.Size > e.o.maxSize {
		e.failJob(j, blobErr(j, pullkit.OpFetchBlob, &pullkit.TooLargeError{What: j.what, Limit: e.o.maxSize, Size: j.desc.Size}))
		return
	}
	if res, ok, err := e.present(ctx, j); err != nil || ok {
		if err != nil {
			e.failJob(j, err)
			return
		}
		e.report(j, pullkit.Event{Kind: pullkit.EventSkipped, Done: res.Desc.Size, Total: res.Desc.Size})
		e.done(j, res)
		return
	}
	w, err := e.writer(ctx, j)
	if errors.Is(err, pullkit.ErrAlreadyExists) {
		// Another transfer stored it while this one waited for its writer.
		res, ok, err := e.present(ctx, j)
		if err == nil && !ok {
			err = blobErr(j, pullkit.OpOpenWriter, fmt.Errorf("%w: the store reported it present, then did not have it", pullkit.ErrNotFound))
		}
		if err != nil {
			e.failJob(j, err)
			return
		}
		e.report(j, pullkit.Event{Kind: pullkit.EventSkipped, Done: res.Desc.Size, Total: res.Desc.Size})
		e.done(j, res)
		return
	}
	if err != nil {
		e.failJob(j, blobErr(j, pullkit.OpOpenWriter, err))
		return
	}
	if j.desc.Size >= 0 && w.Offset() > j.desc.Size {
		if err := w.Truncate(0); err != nil {
			w.Close()
			e.failJob(j, blobErr(j, pullkit.OpWriteBlob, err))
			return
		}
	}
	if j.desc.Size < 0 || j.desc.Size < smallBlob {
		e.inline(ctx, j, w)
		return
	}
	x := e.newXfer(j, w)
	if x == nil {
		return
	}
	x.parts[0].run(x.ctx)
}

// present reports whether the store holds the job's blob (whole: one whose size is not
// the descriptor's is removed as damaged), with its Result.
func (e *engine) present(ctx context.Context, j *job) (Result, bool, error) {
	info, err := e.s.Info(ctx, j.desc.Digest)
	if errors.Is(err, pullkit.ErrNotFound) {
		return Result{}, false, nil
	}
	if err != nil {
		return Result{}, false, blobErr(j, pullkit.OpStatBlob, err)
	}
	if j.desc.Size >= 0 && info.Size != j.desc.Size {
		// Damaged under its name (truncated on disk, say): remove it and fetch it again.
		if err := e.s.Delete(ctx, j.desc.Digest); err != nil && !errors.Is(err, pullkit.ErrNotFound) {
			return Result{}, false, blobErr(j, pullkit.OpDeleteBlob, err)
		}
		return Result{}, false, nil
	}
	res := Result{Desc: j.desc}
	res.Desc.Size = info.Size
	if j.diff || len(j.tees) > 0 {
		ra, err := e.s.ReaderAt(ctx, j.desc.Digest)
		if err != nil {
			return Result{}, false, blobErr(j, pullkit.OpReadBlob, err)
		}
		res.DiffID, err = replay(ctx, j, ra)
		ra.Close()
		if err != nil {
			return Result{}, false, err
		}
	}
	return res, true, nil
}

// failJob fails the whole call for j.
func (e *engine) failJob(j *job, err error) {
	kind := pullkit.EventFailed
	if e.ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		kind = pullkit.EventCancelled
	}
	e.report(j, pullkit.Event{Kind: kind, Total: j.desc.Size, Err: err})
	e.fail(err)
}

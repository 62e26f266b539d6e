package layers

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
)

// Range is an inclusive byte range of a blob; End < 0 means to the end of the blob.
type Range struct{ Start, End int64 }

// Fetcher opens blob bodies; the puller's repository client implements it.
type Fetcher interface {
	// FetchBlob GETs desc's blob. With rng nil it asks for the whole blob, otherwise it
	// sends "Range: bytes=Start-End" (or "bytes=Start-" when End < 0). It returns the
	// response for a 200 or 206 (auth, redirects and retries of the request itself are its
	// business) and an error for any other status. The caller checks 206 + Content-Range,
	// reads and closes the body. The request must honour ctx: cancelling it is how a
	// stalled body is stopped.
	FetchBlob(ctx context.Context, desc manifest.Descriptor, rng *Range) (*http.Response, error)
}

// Blob is one blob to fetch.
type Blob struct {
	// Desc is the blob's descriptor; Size < 0 means unknown (schema 1).
	Desc manifest.Descriptor
	// DiffID asks for the layer's diffID (sha256 of its uncompressed content), computed
	// while the blob streams in (or from the stored file when it is already present).
	DiffID bool
	// WantDiffID, when set, is the diffID the image config names for this layer; a layer
	// that decompresses to anything else fails with ErrDiffIDMismatch. Setting it implies
	// DiffID.
	WantDiffID digest.Digest
}

// Result is the outcome for one Blob, at the same index.
type Result struct {
	// Desc is the blob's descriptor, with Size filled in when it was unknown.
	Desc manifest.Descriptor
	// DiffID is the layer's diffID, when it was asked for.
	DiffID digest.Digest
	// Fetched is false when this call downloaded nothing for the blob: the store had it,
	// or another Fetch into the same store downloaded it meanwhile.
	Fetched bool
	// Size is the blob's size in bytes.
	Size int64
}

// Fetch downloads blobs into s and returns one Result per Blob, in order.
//
// At most WithJobs requests are in flight. Every body streams through the digest's hash
// (and a size check) into a file under ingest/ that is renamed into blobs/ only once it
// verifies; nothing unverified ever carries a final name. A blob s already has is not
// fetched; a digest listed twice, or wanted by concurrent Fetch calls into one store, is
// fetched once. An interrupted body is resumed with a Range request from the byte it
// reached (a server that answers 200 instead makes the transfer start over, never
// append); a blob fails after WithMaxAttempts attempts in a row that received nothing.
// Blobs of at least the WithParallelRanges size are fetched as parallel ranged requests.
//
// On the first failure the other transfers are cancelled and the error (a *BlobError) is
// returned with the Results of the blobs that completed. Files of a blob that failed to
// verify (digest or size) are deleted; those of an interrupted transfer stay in ingest/
// and the next Fetch resumes them.
func Fetch(ctx context.Context, f Fetcher, s *Layout, blobs []Blob, opts ...Option) ([]Result, error) {
	if f == nil || s == nil {
		return nil, errors.New("layers.Fetch: nil Fetcher or store")
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	t := &transfer{f: f, s: s, o: o, sem: semaphore.NewWeighted(int64(o.jobs)), pool: getBufPool(o.bufSize)}

	// One job per digest; the checks that differ per entry (size, wanted diffID) are done
	// for each entry once the job is done.
	type job struct {
		desc     manifest.Descriptor
		wantDiff bool
		idx      []int
	}
	var order []*job
	byDigest := make(map[digest.Digest]*job, len(blobs))
	for i, b := range blobs {
		j := byDigest[b.Desc.Digest]
		if j == nil {
			j = &job{desc: b.Desc}
			byDigest[b.Desc.Digest] = j
			order = append(order, j)
		} else if j.desc.Size < 0 && b.Desc.Size >= 0 {
			j.desc = b.Desc
		}
		j.wantDiff = j.wantDiff || b.DiffID || b.WantDiffID != ""
		j.idx = append(j.idx, i)
	}

	results := make([]Result, len(blobs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.jobs)
	t.waiting.Store(int64(len(order)))
	for _, j := range order {
		// A job stops counting as waiting when it is handed to the group, not when its
		// goroutine first runs: otherwise the last, large blob could start while the one
		// before it has a slot but has not run yet, see it "waiting" and not split
		// (TestBoundedConcurrency failed so under load).
		t.waiting.Add(-1)
		g.Go(func() error {
			res, err := t.blob(gctx, j.desc, j.wantDiff)
			for _, i := range j.idx {
				if err != nil {
					break
				}
				err = check(blobs[i], res)
			}
			if err != nil {
				t.emit(Event{Digest: j.desc.Digest, Kind: EventFailed, Total: j.desc.Size, Err: err})
				return err
			}
			for _, i := range j.idx {
				r := res
				r.Desc = blobs[i].Desc
				r.Desc.Size = res.Size
				if !blobs[i].DiffID && blobs[i].WantDiffID == "" {
					r.DiffID = ""
				}
				results[i] = r
			}
			return nil
		})
	}
	return results, g.Wait()
}

// check holds a job's result against one of the entries that asked for it.
func check(b Blob, res Result) error {
	d := b.Desc.Digest
	if b.Desc.Size >= 0 && b.Desc.Size != res.Size {
		return blobErr(d, OpVerify, &SizeMismatchError{Want: b.Desc.Size, Got: res.Size, Source: "verified blob"})
	}
	if b.WantDiffID != "" && b.WantDiffID != res.DiffID {
		return blobErr(d, OpDiffID, &DiffIDMismatchError{Want: b.WantDiffID, Got: res.DiffID})
	}
	return nil
}

// transfer is one Fetch call.
type transfer struct {
	f    Fetcher
	s    *Layout
	o    options
	sem  *semaphore.Weighted // request slots
	pool *bufPool
	// waiting counts the blobs not yet handed to a worker. A blob is split into parallel ranges
	// only when none is waiting: before that, the request slots have better use.
	waiting atomic.Int64
}

func (t *transfer) emit(e Event) {
	if t.o.progress != nil {
		t.o.progress(e)
	}
}

// blob fetches one digest, deduplicated through the store's singleflight.
func (t *transfer) blob(ctx context.Context, desc manifest.Descriptor, wantDiff bool) (Result, error) {
	d := desc.Digest
	if err := d.Validate(); err != nil {
		return Result{}, blobErr(d, OpVerify, fmt.Errorf("invalid digest %q: %w", d, err))
	}
	for {
		ran := false
		v, err, _ := t.s.st.dl.Do(d.String(), func() (any, error) {
			ran = true
			return t.download(ctx, desc, wantDiff)
		})
		if err != nil {
			if !ran && ctx.Err() == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
				continue // the Fetch that ran the download was cancelled, this one was not
			}
			return Result{}, err
		}
		res := v.(Result)
		if !ran {
			res.Fetched = false
		}
		if wantDiff && res.DiffID == "" {
			f, err := os.Open(t.s.Path(d))
			if err != nil {
				return Result{}, blobErr(d, OpStore, err)
			}
			res.DiffID, err = diffIDOf(f, d, false)
			f.Close()
			if err != nil {
				return Result{}, blobErr(d, OpDiffID, err)
			}
		}
		if !res.Fetched {
			t.emit(Event{Digest: d, Kind: EventSkipped, Done: res.Size, Total: res.Size})
		}
		return res, nil
	}
}

// download runs under the store's singleflight for d: it fetches the blob unless the
// store has it by now.
func (t *transfer) download(ctx context.Context, desc manifest.Descriptor, wantDiff bool) (Result, error) {
	d := desc.Digest
	if fi, err := os.Stat(t.s.Path(d)); err == nil && fi.Mode().IsRegular() {
		return Result{Desc: desc, Size: fi.Size()}, nil
	}
	if err := t.sem.Acquire(ctx, 1); err != nil {
		return Result{}, blobErr(d, OpFetch, err)
	}
	defer t.sem.Release(1)
	var in *ingest
	if desc.Size >= 0 && desc.Size < smallBlob {
		in = t.s.openUnnamed()
	}
	if in == nil {
		var err error
		if in, err = t.s.openIngest(d); err != nil {
			return Result{}, blobErr(d, OpStore, err)
		}
	}
	x := &xfer{t: t, d: d, desc: desc, size: desc.Size, in: in, wantDiff: wantDiff}
	x.m = meter{t: t, d: d}
	return x.run(ctx)
}

// xfer is the transfer of one blob into one ingest file.
type xfer struct {
	t        *transfer
	d        digest.Digest
	desc     manifest.Descriptor
	size     int64 // -1 until known
	in       *ingest
	wantDiff bool
	// How to resume. rangeOpen asks "bytes=N-"; after a server refused that (some,
	// like go-containerregistry's registry, answer 416 to an open-ended range) the next
	// attempt asks "bytes=N-<size-1>"; after a botched answer, whole bodies only.
	rangeMode int

	// The hashed stream: bytes [0, hashed) of the blob went through dg (and diff).
	dg     digest.Digester
	h      hash.Hash
	diff   *diffIDer
	hashed int64
	buf    []byte // the read buffer when there is no diffIDer

	m meter
}

func (x *xfer) run(ctx context.Context) (res Result, err error) {
	x.buf = x.t.pool.get()
	defer func() {
		x.t.pool.put(x.buf)
		if x.diff != nil {
			x.diff.finish(x.t.pool)
		}
		if err != nil && x.in != nil {
			if errors.Is(err, ErrDigestMismatch) || errors.Is(err, ErrSizeMismatch) {
				x.in.discard()
			} else {
				x.in.keep()
			}
		}
	}()

	fromDisk := false
	x.resetHash()
	if x.in.prefix > 0 {
		if x.size >= 0 && x.in.prefix > x.size {
			if err := x.in.reset(); err != nil {
				return Result{}, blobErr(x.d, OpStore, err)
			}
		} else if err := x.rehash(ctx); err != nil {
			return Result{}, err
		}
		fromDisk = x.hashed > 0
	}
	x.m.start(x.hashed, x.size)
	x.t.emit(Event{Digest: x.d, Kind: EventStarted, Done: x.hashed, Total: x.size})
	if fromDisk {
		x.t.emit(Event{Digest: x.d, Kind: EventResumed, Done: x.hashed, Total: x.size})
	}

	err = x.fetch(ctx)
	if err == nil {
		err = x.verify()
	}
	if err != nil && fromDisk && (errors.Is(err, ErrDigestMismatch) || errors.Is(err, ErrSizeMismatch)) {
		// The partial file an earlier run left did not belong to this blob after all
		// (or was damaged): start over once, from nothing.
		x.size = x.desc.Size
		if err = x.restart(); err != nil {
			return Result{}, err
		}
		if err = x.fetch(ctx); err == nil {
			err = x.verify()
		}
	}
	if err != nil {
		return Result{}, err
	}

	res = Result{Desc: x.desc, Size: x.hashed, Fetched: true}
	res.Desc.Size = x.hashed
	var diffErr error
	if x.diff != nil {
		res.DiffID, diffErr = x.diff.finish(x.t.pool)
		x.diff = nil
	}
	if err := x.in.commit(x.t.s.Path(x.d), x.t.o.sync); err != nil {
		return Result{}, blobErr(x.d, OpStore, err)
	}
	x.in = nil
	x.t.emit(Event{Digest: x.d, Kind: EventVerified, Done: x.hashed, Total: x.hashed})
	if diffErr != nil {
		// The blob itself is verified and stored; only its diffID is unknown.
		return Result{}, blobErr(x.d, OpDiffID, diffErr)
	}
	return res, nil
}

// resetHash starts the hashed stream over (from byte 0).
func (x *xfer) resetHash() {
	if x.diff != nil {
		x.diff.finish(x.t.pool)
		x.diff = nil
	}
	x.dg = x.d.Algorithm().Digester()
	x.h = x.dg.Hash()
	x.hashed = 0
	if x.wantDiff {
		x.diff = newDiffIDer(x.d, x.t.pool)
	}
}

// restart empties the ingest file and the hashed stream.
func (x *xfer) restart() error {
	if err := x.in.reset(); err != nil {
		return blobErr(x.d, OpStore, err)
	}
	x.resetHash()
	x.m.start(0, x.size)
	x.t.emit(Event{Digest: x.d, Kind: EventRestarted, Done: 0, Total: x.size})
	return nil
}

// getBuf returns a buffer to read into; pass it to absorb or release.
func (x *xfer) getBuf() []byte {
	if x.diff != nil {
		return x.diff.next()
	}
	return x.buf
}

// absorb appends b (from getBuf) to the hashed stream and hands it on.
func (x *xfer) absorb(b []byte) {
	x.h.Write(b)
	x.hashed += int64(len(b))
	if x.diff != nil {
		x.diff.feed(b)
	}
}

// absorbCopy appends b to the hashed stream; b stays the caller's (the diffIDer gets a
// copy).
func (x *xfer) absorbCopy(b []byte) {
	x.h.Write(b)
	x.hashed += int64(len(b))
	for x.diff != nil && len(b) > 0 {
		d := x.diff.next()
		n := copy(d, b)
		x.diff.feed(d[:n])
		b = b[n:]
	}
}

// release gives back a buffer from getBuf that absorb did not take.
func (x *xfer) release(b []byte) {
	if x.diff != nil {
		x.diff.free <- b[:cap(b)]
	}
}

// rehash hashes the prefix of the ingest file an earlier run left.
func (x *xfer) rehash(ctx context.Context) error {
	for x.hashed < x.in.prefix {
		if err := ctx.Err(); err != nil {
			return blobErr(x.d, OpFetch, err)
		}
		b := x.getBuf()
		n := int(min(int64(len(b)), x.in.prefix-x.hashed))
		m, err := x.in.f.ReadAt(b[:n], x.hashed)
		if m > 0 {
			x.absorb(b[:m])
		} else {
			x.release(b)
		}
		if err != nil && !(errors.Is(err, io.EOF) && m == n) {
			// Unreadable leftovers: start from nothing.
			return x.restart()
		}
	}
	return nil
}

func (x *xfer) verify() error {
	if x.size >= 0 && x.hashed != x.size {
		return blobErr(x.d, OpVerify, &SizeMismatchError{Want: x.size, Got: x.hashed, Source: "body"})
	}
	if got := x.dg.Digest(); got != x.d {
		return blobErr(x.d, OpVerify, &pullkit.DigestMismatchError{What: "blob", Want: x.d, Got: got})
	}
	return nil
}

// fetch brings the hashed stream to the end of the blob.
func (x *xfer) fetch(ctx context.Context) error {
	if x.size >= 0 && x.hashed == x.size {
		return nil
	}
	if !x.t.o.rangeAdaptive && x.rangedEligible() {
		fallback, err := x.fetchRanged(ctx)
		if !fallback {
			return err
		}
	}
	return x.fetchSeq(ctx)
}

// Values of xfer.rangeMode.
const (
	rangeOpen = iota
	rangeClosed
	rangeNone
)

// attemptErr classifies an attempt's failure.
type attemptErr struct {
	err   error
	retry bool // worth another attempt
}

func final(err error) *attemptErr { return &attemptErr{err: err} }
func retry(err error) *attemptErr { return &attemptErr{err: err, retry: true} }

// errStallCause is the cancellation cause of an attempt stopped by the watchdog.
var errStallCause = errors.New("stall watchdog")

// fetchSeq downloads the rest of the blob as one body, resuming after interruptions.
func (x *xfer) fetchSeq(ctx context.Context) error {
	noProgress := 0
	for {
		var rng *Range
		if x.hashed > 0 && x.rangeMode != rangeNone {
			rng = &Range{Start: x.hashed, End: -1}
			if x.rangeMode == rangeClosed {
				rng.End = x.size - 1
			}
		}
		n, ae := x.seqAttempt(ctx, rng)
		if ae == nil {
			return nil
		}
		if !ae.retry {
			return blobErr(x.d, OpFetch, ae.err)
		}
		if err := x.again(ctx, n, &noProgress, ae.err); err != nil {
			return err
		}
	}
}

// again decides about another attempt after one that received n bytes and failed with
// err: it counts attempts without progress, gives up after the limit, and waits a
// little (growing) before retrying an attempt that received nothing.
func (x *xfer) again(ctx context.Context, n int64, noProgress *int, err error) error {
	if n > 0 {
		*noProgress = 0
	} else {
		*noProgress++
	}
	if *noProgress >= x.t.o.maxAttempts {
		return blobErr(x.d, OpFetch, fmt.Errorf("giving up after %d attempts without progress: %w", *noProgress, err))
	}
	if n == 0 && x.t.o.backoff > 0 {
		d := x.t.o.backoff << min(*noProgress-1, 6)
		d = min(d, 5*time.Second)
		d = d/2 + rand.N(d/2+1)
		tm := time.NewTimer(d)
		select {
		case <-ctx.Done():
			tm.Stop()
			return blobErr(x.d, OpFetch, ctx.Err())
		case <-tm.C:
		}
	}
	x.t.emit(Event{Digest: x.d, Kind: EventResumed, Done: x.m.done.Load(), Total: x.size})
	return nil
}

// watchdog cancels an attempt when its body sends nothing for the stall timeout. The hot
// path only bumps a counter (kick); a timer looks at it four times per timeout, so a
// stall is noticed after between 1 and 1.25 timeouts.
type watchdog struct {
	t      *time.Timer
	reads  atomic.Int64
	mu     sync.Mutex
	last   int64
	idle   time.Duration
	tick   time.Duration
	limit  time.Duration
	cancel context.CancelCauseFunc
	done   bool
}

func (t *transfer) watch(cancel context.CancelCauseFunc) *watchdog {
	if t.o.stall <= 0 {
		return nil
	}
	w := &watchdog{tick: max(t.o.stall/4, time.Millisecond), limit: t.o.stall, cancel: cancel}
	w.mu.Lock() // check must see w.t
	w.t = time.AfterFunc(w.tick, w.check)
	w.mu.Unlock()
	return w
}

func (w *watchdog) check() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return
	}
	if n := w.reads.Load(); n != w.last {
		w.last, w.idle = n, 0
	} else if w.idle += w.tick; w.idle >= w.limit {
		w.cancel(errStallCause)
		return
	}
	w.t.Reset(w.tick)
}

func (w *watchdog) kick() {
	if w != nil {
		w.reads.Add(1)
	}
}

func (w *watchdog) stop() {
	if w != nil {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
		w.t.Stop()
	}
}

// classify turns the error of a request or body read in an attempt with context actx
// (derived from ctx) into a retry or a final failure.
func (t *transfer) classify(ctx, actx context.Context, err error, readingBody bool) *attemptErr {
	if errors.Is(context.Cause(actx), errStallCause) {
		return retry(fmt.Errorf("%w: no data for %v", ErrStalled, t.o.stall))
	}
	if ctx.Err() != nil {
		return final(ctx.Err())
	}
	if readingBody {
		return retry(err)
	}
	return final(err)
}

// seqAttempt makes one request for the blob (from rng when set) and streams its body into
// the ingest file. It returns how many bytes it received.
func (x *xfer) seqAttempt(ctx context.Context, rng *Range) (int64, *attemptErr) {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := x.t.watch(cancel)
	defer w.stop()
	resp, err := x.t.f.FetchBlob(actx, x.desc, rng)
	if err != nil {
		ae := x.t.classify(ctx, actx, err, false)
		if rng != nil && !ae.retry && ctx.Err() == nil {
			// The server may not like this form of Range: try the next one.
			if x.rangeMode == rangeOpen && x.size >= 0 {
				x.rangeMode = rangeClosed
			} else {
				x.rangeMode = rangeNone
			}
			ae.retry = true
		}
		return 0, ae
	}
	defer resp.Body.Close()

	switch {
	case resp.StatusCode == http.StatusPartialContent && rng != nil:
		h := resp.Header.Get("Content-Range")
		start, end, total, err := parseContentRange(h)
		if err != nil {
			x.rangeMode = rangeNone
			return 0, retry(&ContentRangeError{Asked: *rng, Header: h, Reason: err.Error()})
		}
		if start != rng.Start || (total >= 0 && end != total-1) || (rng.End >= 0 && end != rng.End) {
			x.rangeMode = rangeNone
			return 0, retry(&ContentRangeError{Asked: *rng, Header: h, Reason: "not the range asked for"})
		}
		if total >= 0 {
			if x.size >= 0 && total != x.size {
				return 0, final(&SizeMismatchError{Want: x.size, Got: total, Source: "Content-Range total"})
			}
			if err := x.setSize(total, "Content-Range total"); err != nil {
				return 0, final(err)
			}
		}
		if resp.ContentLength >= 0 && resp.ContentLength != end-start+1 {
			x.rangeMode = rangeNone
			return 0, retry(&ContentRangeError{Asked: *rng, Header: h,
				Reason: fmt.Sprintf("Content-Length %d does not match", resp.ContentLength)})
		}
	case resp.StatusCode == http.StatusOK:
		if x.hashed > 0 {
			// The server ignored the Range (or was not asked for one after a botched
			// answer): this body starts at byte 0, so the transfer starts over.
			if err := x.restart(); err != nil {
				return 0, final(err)
			}
		}
		if resp.ContentLength >= 0 {
			if x.size >= 0 && resp.ContentLength != x.size {
				return 0, final(&SizeMismatchError{Want: x.size, Got: resp.ContentLength, Source: "Content-Length"})
			}
			if err := x.setSize(resp.ContentLength, "Content-Length"); err != nil {
				return 0, final(err)
			}
		}
	case resp.StatusCode == http.StatusPartialContent:
		// A 206 to a request without Range is acceptable only if it is the whole blob.
		h := resp.Header.Get("Content-Range")
		start, end, total, err := parseContentRange(h)
		if err != nil || start != 0 || total < 0 || end != total-1 {
			return 0, final(&ContentRangeError{Asked: Range{Start: 0, End: -1}, Header: h, Reason: "partial answer to a request for the whole blob"})
		}
		if x.hashed > 0 {
			if err := x.restart(); err != nil {
				return 0, final(err)
			}
		}
		if x.size >= 0 && total != x.size {
			return 0, final(&SizeMismatchError{Want: x.size, Got: total, Source: "Content-Range total"})
		}
		if err := x.setSize(total, "Content-Range total"); err != nil {
			return 0, final(err)
		}
	default:
		return 0, final(fmt.Errorf("unexpected HTTP status %s", resp.Status))
	}

	if x.usePipe() {
		return x.seqPiped(ctx, actx, resp.Body, w)
	}
	var n int64
	br := bodyReader{r: resp.Body, w: w}
	for {
		b := x.getBuf()
		lim := len(b)
		if x.size >= 0 {
			// One byte more than what is left, to notice a body that runs long.
			lim = int(min(int64(lim), x.size-x.hashed+1))
		}
		m, rerr := br.read(b[:lim])
		if m == 0 {
			x.release(b)
		} else {
			if x.size >= 0 && x.hashed+int64(m) > x.size {
				x.release(b)
				return n, final(&SizeMismatchError{Want: x.size, Got: x.hashed + int64(m), Source: "body (at least)"})
			}
			if x.size < 0 && x.hashed+int64(m) > x.t.o.maxUnknown {
				x.release(b)
				return n, final(&SizeMismatchError{Want: x.t.o.maxUnknown, Got: x.hashed + int64(m), Source: "body of a blob of unknown size, over the cap (at least)"})
			}
			if err := writeCached(x.in.f, b[:m], x.hashed); err != nil {
				x.release(b)
				return n, final(fmt.Errorf("writing %s: %w", x.in.path, err))
			}
			x.absorb(b[:m])
			n += int64(m)
			x.m.add(int64(m))
		}
		if errors.Is(rerr, io.EOF) {
			if x.size >= 0 && x.hashed < x.size {
				return n, retry(fmt.Errorf("body ended at byte %d of %d: %w", x.hashed, x.size, io.ErrUnexpectedEOF))
			}
			if x.size < 0 {
				x.size, x.m.total = x.hashed, x.hashed // within the cap, checked above
			}
			return n, nil
		}
		if rerr != nil {
			return n, x.t.classify(ctx, actx, rerr, true)
		}
	}
}

// seqPiped streams the body of a sequential attempt through a pipe: this goroutine
// receives and writes, another hashes. When the blob may use parallel ranges and this
// one stream turns out to be what limits the transfer, the rest of the blob is split off
// to ranged parts (see splitter).
func (x *xfer) seqPiped(ctx, actx context.Context, body io.ReadCloser, w *watchdog) (int64, *attemptErr) {
	start := x.hashed // the hasher owns x.hashed until it returns
	var sp *splitter
	split := x.t.o.rangeAdaptive && x.rangedEligible()
	p := x.newPipe(seqWindow, x.size)
	if p.direct.Load() != nil {
		// A direct write waits for the disk: let the receiver go on meanwhile. A write
		// into the page cache is a copy, best made by the goroutine that just received the
		// bytes, while they are in its CPU's cache.
		p.startWriter()
	}
	defer p.close()
	var splitAt func(int64) int64
	if split {
		sp = x.newSplitter(ctx, p, start)
		splitAt = sp.check
	}
	herr := make(chan error, 1)
	go func() { herr <- p.hash(ctx) }()
	n, ae, rerr := p.recv(actx, body, w, start, x.size, nil, func(got int64) *attemptErr {
		return final(&SizeMismatchError{Want: x.size, Got: got, Source: "body (at least)"})
	}, splitAt)
	if sp != nil && sp.ps != nil {
		// The stream's share is done (or broken): let its connection go now rather than
		// hold it, unread, while the parts finish.
		w.stop()
		body.Close()
		err := sp.finish(ctx, actx, n, ae, rerr)
		if e := <-herr; err == nil {
			err = e
		}
		if err != nil {
			return n, final(err)
		}
		return n, nil
	}
	p.finish(start + n)
	if err := <-herr; err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return n, final(err)
	}
	if rerr != nil {
		return n, x.t.classify(ctx, actx, rerr, true)
	}
	return n, ae
}

// setSize records the blob's size once a header (source) told it, refusing a size over
// the cap when the descriptor gave none.
func (x *xfer) setSize(n int64, source string) error {
	if x.desc.Size < 0 && n > x.t.o.maxUnknown {
		return &SizeMismatchError{Want: x.t.o.maxUnknown, Got: n, Source: source + " of a blob of unknown size, over the cap"}
	}
	x.size = n
	x.m.total = n
	return nil
}

// bodyReader reads the body of one attempt: a read that returns data kicks the
// attempt's watchdog, and more than 100 reads in a row that return neither data nor an
// error end the attempt with io.ErrNoProgress.
//
// Whatever a read returns is used at once, never held back to fill a buffer first: on a
// fast single stream that was measured to cost 15-30%, since the pipeline with the
// server stalls while the data already received sits idle. (A pipe does fill a block
// before it hashes it, but its hasher runs in a goroutine of its own, so the receiver
// keeps reading.)
type bodyReader struct {
	r     io.Reader
	w     *watchdog
	empty int // reads in a row that returned nothing
}

func (br *bodyReader) read(p []byte) (int, error) {
	n, err := br.r.Read(p)
	switch {
	case n > 0:
		br.w.kick()
		br.empty = 0
	case err == nil:
		if br.empty++; br.empty > 100 {
			err = io.ErrNoProgress
		}
	}
	return n, err
}

// meter turns byte counts into EventProgress at most every progressStep bytes, with Done
// monotonic even when several goroutines count.
type meter struct {
	t     *transfer
	d     digest.Digest
	total int64
	done  atomic.Int64
	mu    sync.Mutex
	last  int64
}

const progressStep = 1 << 20

func (m *meter) start(done, total int64) {
	m.mu.Lock()
	m.done.Store(done)
	m.last = done
	m.total = total
	m.mu.Unlock()
}

func (m *meter) add(n int64) {
	v := m.done.Add(n)
	if m.t.o.progress == nil || v/progressStep == (v-n)/progressStep {
		return
	}
	m.mu.Lock()
	if v > m.last {
		m.last = v
		m.t.emit(Event{Digest: m.d, Kind: EventProgress, Done: v, Total: m.total})
	}
	m.mu.Unlock()
}

var (
	poolsMu sync.Mutex
	pools   = map[int]*bufPool{}
)

// getBufPool returns the process-wide pool of buffers of the given size.
func getBufPool(size int) *bufPool {
	poolsMu.Lock()
	defer poolsMu.Unlock()
	p := pools[size]
	if p == nil {
		p = newBufPool(size)
		pools[size] = p
	}
	return p
}

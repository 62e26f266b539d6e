package unpack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/scratch"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
)

// Pipeline applies an image's layers while they download: its Tee, given to the pull
// (puller.WithLayerTees), receives each layer's bytes as the transfer verifies them.
//
// Every layer's bytes go to a spool, an unnamed file beside the target, as fast as they
// arrive: the download is never held back by the unpacking (so it cannot stall, and the
// transfer does not keep blocks in memory while a layer is slower to apply than to
// download). A layer whose turn it is is applied from its spool while the spool grows,
// decompressed as the bytes come; one whose turn comes later is applied from its spool
// then, whole or still growing.
//
// Into a Rootfs the layers go in order, one at a time, on fewer than four processors:
// one layer's unpack keeps two busy already (inflating on one; hashing, the tar and the
// writes on the other; the download beside them). With more, they are staged as their
// bytes come, half the processors' worth at once: inflated, verified and their files
// written beside the tree; each is then merged into the tree in order, once the layers
// below are (see Rootfs's staging: the tree is the one applying them in order makes).
// Snapshots do not depend on each other: with every diffID known up front (from the
// config), they are applied in any order, a few at once (half the processors, two at
// least), and a snapshot already there is reused without reading the rest of its bytes;
// without them (schema 1) they go in order.
//
// A layer is applied only from bytes whose digest verified: its spool's reader reports
// the end only once the transfer has closed the blob verified; an attempt that the
// transfer ends with an error (a mismatch it starts over) aborts the layer's apply, and
// the next attempt starts again. Wait returns once every layer is applied, with the first
// failure if any.
type Pipeline struct {
	ctx     context.Context
	cancel  context.CancelCauseFunc
	stop    func() bool // stops the context's wake-up of the spools
	rootfs  *Rootfs
	snaps   *Snapshots
	dir     string // the directory spool files go to
	free    bool   // layers may be applied in any order
	staging bool   // a Rootfs's layers are staged in any order and merged in order
	maxLive int    // when free or staging, how many layers are applied (staged) at once

	progress func(pullkit.Event) // EventUnpacked per layer, if set
	drop     BlobDeleter         // where to delete each layer blob once applied, if set

	mu      sync.Mutex
	layers  []*piped // the layers to apply, base first
	byIndex map[int]*piped
	next    int  // the position in layers of the next layer to apply in order
	running int  // layers being applied (staged)
	merging bool // a goroutine is merging staged layers into the Rootfs
	err     error
	wg      sync.WaitGroup
}

type state int

const (
	waiting   state = iota // nothing received, or a failed attempt
	receiving              // an attempt is writing its spool
	received               // spooled whole and verified
	staged                 // (Rootfs) staged and verified, waiting for its merge
	applied
)

// piped is one layer's state in a Pipeline.
type piped struct {
	i       int
	layer   manifest.Layer
	parent  digest.Digest // the chain ID below (snapshots)
	state   state
	sp      *spool // the current attempt's bytes (receiving, received)
	applier *spool // the spool the running Apply reads, if any
	res     Result
	staged  *stagedLayer  // (Rootfs) the staged layer, until merged
	opened  time.Time     // when the current attempt's first bytes came
	fetch   time.Duration // how long the attempt that verified took
}

// NewPipeline returns a pipeline into r. Give its Tee to the pull
// (puller.WithLayerTees), then call Wait once the pull has returned, then Commit r.
func (r *Rootfs) NewPipeline(ctx context.Context) *Pipeline {
	p := newPipeline(ctx)
	p.rootfs, p.dir = r, r.spoolDir()
	p.staging = runtime.GOMAXPROCS(0) >= stageMinProcs
	return p
}

// stageMinProcs is how many processors a pipeline into a Rootfs needs to stage its
// layers in parallel and merge them in order (see Rootfs's staging) rather than apply
// them in order one at a time. Staging costs more CPU than applying in order (a rename
// per file and the headers replayed: about a seventh more for the app image), which
// two processors, busy with one layer's inflate and writes already, do not have to
// spare: measured there, staging made pulls slower. Tests pin it.
var stageMinProcs = 4

// NewPipeline returns a pipeline into snapshots, each layer in its own.
func (s *Snapshots) NewPipeline(ctx context.Context) *Pipeline {
	p := newPipeline(ctx)
	p.snaps, p.dir = s, s.spoolDir()
	return p
}

func newPipeline(ctx context.Context) *Pipeline {
	p := &Pipeline{byIndex: map[int]*piped{}, maxLive: max(2, runtime.GOMAXPROCS(0)/2)}
	p.ctx, p.cancel = context.WithCancelCause(ctx)
	// A reader waiting for its spool to grow wakes when the pipeline stops.
	p.stop = context.AfterFunc(p.ctx, func() {
		cause := context.Cause(p.ctx)
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, l := range p.layers {
			if l.sp != nil {
				l.sp.end(cause, false)
			}
		}
	})
	return p
}

// Progress sets fn to receive an EventUnpacked for each layer once it is applied and its
// diffID verified, with where its time went (Stages). Call it before the pull; fn is
// called from the pipeline's goroutines, one at a time, and must not call the pipeline.
func (p *Pipeline) Progress(fn func(pullkit.Event)) {
	p.mu.Lock()
	p.progress = fn
	p.mu.Unlock()
}

// BlobDeleter deletes a blob from a store (store.Content does).
type BlobDeleter interface {
	Delete(ctx context.Context, d digest.Digest) error
}

// DropBlobs makes the pipeline delete each layer's blob from st once the layer is
// applied and its diffID verified (a disk policy for engines that keep only unpacked
// layers): the manifest and config stay, so the store still names the image, and a
// later pull that shares the layer reuses its snapshot without downloading it again
// (give Skip to the pull). A layout whose layers were dropped is no longer a whole OCI
// layout: tools that read layers from it (skopeo, umoci) fail on such an image, Check
// does not report the absent blobs, and GC keeps the names and what they still reach.
// A blob already absent is no error; any other failure to delete fails the pipeline.
// Call it before the pull.
func (p *Pipeline) DropBlobs(st BlobDeleter) {
	p.mu.Lock()
	p.drop = st
	p.mu.Unlock()
}

// Skip reports whether layer i, given to Tee just before, need not be downloaded: for
// snapshots with every diffID known so far, when the snapshot of the layer's chain ID is
// there already. The pipeline then counts the layer as reused (Result.Reused) and never
// opens its tee. Give it to the pull with puller.WithSkipLayers(p.Skip); for a Rootfs it
// is always false.
func (p *Pipeline) Skip(i int, l manifest.Layer) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	pl := p.byIndex[i]
	if p.snaps == nil || !p.free || pl == nil || pl.state != waiting || l.DiffID == "" || l.DiffID != pl.layer.DiffID {
		return false
	}
	chain := ChainID(pl.parent, l.DiffID)
	if !p.snaps.Has(chain) {
		return false
	}
	pl.state = applied
	pl.res = Result{DiffID: l.DiffID, ChainID: chain, Reused: true}
	if fn := p.progress; fn != nil {
		fn(pullkit.Event{Kind: pullkit.EventUnpacked, What: "layer", Digest: l.Digest})
	}
	return true
}

// Tee returns the tee for layer i of the image (base first), for puller.WithLayerTees,
// which calls it for every layer to apply, in order, before the first byte arrives. l is
// the layer as the pull knows it, with its diffID when the config gave it (so snapshots
// can be unpacked in any order, and one already there reused).
func (p *Pipeline) Tee(i int, l manifest.Layer) layers.Tee {
	p.mu.Lock()
	defer p.mu.Unlock()
	pl := p.byIndex[i]
	if pl == nil {
		pl = &piped{i: i, layer: l}
		p.byIndex[i] = pl
		p.layers = append(p.layers, pl)
		sort.Slice(p.layers, func(a, b int) bool { return p.layers[a].i < p.layers[b].i })
	}
	// Snapshots go in any order once every chain ID is known.
	p.free = p.snaps != nil
	var parent digest.Digest
	for _, q := range p.layers {
		if q.layer.DiffID == "" {
			p.free = false
			break
		}
		q.parent = parent
		parent = ChainID(parent, q.layer.DiffID)
	}
	return &tee{p: p, l: pl}
}

// tee is one layer's layers.Tee.
type tee struct {
	p *Pipeline
	l *piped
}

func (t *tee) Open(desc manifest.Descriptor) (io.Writer, error) {
	p, l := t.p, t.l
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return nil, p.err
	}
	if err := p.ctx.Err(); err != nil {
		return nil, context.Cause(p.ctx)
	}
	if l.state == applied || l.state == received || l.state == staged {
		return io.Discard, nil // verified and kept already
	}
	f, err := spoolFile(p.dir)
	if err != nil {
		return nil, &pullkit.Error{Op: pullkit.OpUnpack, Detail: "(spooling the layer)", Digest: l.layer.Digest, Err: err}
	}
	l.sp, l.state, l.opened = newSpool(f), receiving, time.Now()
	p.startReady()
	return l.sp, nil
}

func (t *tee) Close(err error) error {
	p, l := t.p, t.l
	p.mu.Lock()
	defer p.mu.Unlock()
	if l.state != receiving {
		return nil
	}
	sp := l.sp
	sp.end(err, err != nil)
	if err != nil {
		// The attempt failed: its Apply, if one reads it, stops; the next attempt starts
		// the layer again.
		l.state, l.sp = waiting, nil
		sp.release()
		return nil
	}
	l.state, l.fetch = received, time.Since(l.opened)
	p.startReady()
	return nil
}

// spoolFile is an unnamed file in dir: it lives until closed.
func spoolFile(dir string) (*os.File, error) { return scratch.File(dir, ".spool-*") }

// turn reports whether l may be applied now (under p.mu).
func (p *Pipeline) turn(l *piped) bool {
	if p.free || p.staging {
		return p.running < p.maxLive
	}
	return p.next < len(p.layers) && p.layers[p.next] == l
}

// startReady starts applying, from their spools, the layers whose turn it is (under
// p.mu).
func (p *Pipeline) startReady() {
	if p.err != nil || p.ctx.Err() != nil {
		return
	}
	for _, l := range p.layers {
		if l.sp == nil || l.applier != nil || (l.state != receiving && l.state != received) || !p.turn(l) {
			continue
		}
		sp := l.sp
		sp.hold()
		l.applier = sp
		p.running++
		p.wg.Add(1)
		go p.run(l, sp)
	}
}

// run applies l from sp, and then records what came of it.
func (p *Pipeline) run(l *piped, sp *spool) {
	defer p.wg.Done()
	if p.staging {
		p.stage(l, sp)
		return
	}
	defer sp.release()
	size := l.layer.Size
	if size <= 0 {
		size = -1
	}
	res, err := p.apply(l, &spoolReader{s: sp, size: size})
	if err == nil {
		if res.Reused {
			sp.discard() // a snapshot already there: the rest of the bytes are not needed
		}
		// The attempt's verdict (for a layer read to its end, known already).
		err = sp.wait()
	}
	p.mu.Lock()
	drop := p.drop
	p.mu.Unlock()
	if err == nil && drop != nil && !sp.aborted() {
		// The transfer stored the blob before its verdict: it is there to delete.
		if derr := drop.Delete(p.ctx, l.layer.Digest); derr != nil && !errors.Is(derr, pullkit.ErrNotFound) {
			err = &pullkit.Error{Op: pullkit.OpDeleteBlob, Detail: "(dropping the applied layer's blob)", Digest: l.layer.Digest, Err: derr}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	l.applier = nil
	p.running--
	switch {
	case sp.aborted():
		// The transfer ended this attempt with an error (Close reset the layer): the
		// next attempt applies it again.
	case err != nil:
		p.failLocked(err)
	default:
		if l.state == received {
			res.Stages.Fetch = l.fetch
		}
		l.state, l.res = applied, res
		if fn := p.progress; fn != nil {
			// Outside p.mu would be nicer; the callback must not call back into p anyway.
			fn(pullkit.Event{Kind: pullkit.EventUnpacked, What: "layer", Digest: l.layer.Digest, Done: res.Size, Total: res.Size, Stages: res.Stages})
		}
		if l.sp == sp {
			l.sp = nil
			sp.release()
		}
		for p.next < len(p.layers) && p.layers[p.next].state == applied {
			if k := p.next + 1; k < len(p.layers) && !p.free {
				p.layers[k].parent = p.layers[p.next].res.ChainID
			}
			p.next++
		}
	}
	p.startReady()
}

// apply applies one layer from r into the target.
func (p *Pipeline) apply(l *piped, r io.Reader) (Result, error) {
	if p.snaps != nil {
		return p.snaps.Apply(p.ctx, l.parent, l.layer.Digest, l.layer.DiffID, r)
	}
	return p.rootfs.Apply(p.ctx, l.layer.Digest, l.layer.DiffID, r)
}

// failLocked stops the pipeline with err (under p.mu): the tees refuse what comes next,
// and the spools' readers and writers stop.
func (p *Pipeline) failLocked(err error) {
	if p.err == nil {
		p.err = err
	}
	p.cancel(err) // runs the wake-up, which takes p.mu, in a goroutine of its own
}

func (p *Pipeline) fail(err error) {
	p.mu.Lock()
	p.failLocked(err)
	p.mu.Unlock()
}

// Wait waits, once the pull has returned, for every layer to be applied, and returns
// their results (base first) or the first failure. A layer the pull never verified is
// an error.
func (p *Pipeline) Wait() ([]Result, error) {
	p.wg.Wait()
	p.stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return nil, p.err
	}
	if err := p.ctx.Err(); err != nil {
		return nil, context.Cause(p.ctx)
	}
	out := make([]Result, 0, len(p.layers))
	for _, l := range p.layers {
		if l.state != applied {
			return nil, &pullkit.Error{Op: pullkit.OpUnpack, Digest: l.layer.Digest,
				Err: fmt.Errorf("%w: layer %d was not received whole", pullkit.ErrInvalid, l.i+1)}
		}
		out = append(out, l.res)
	}
	return out, nil
}

// Abort stops the pipeline and drops what it spooled; a Rootfs or Snapshots it fed keeps
// what was committed (snapshots) and nothing else.
func (p *Pipeline) Abort(err error) {
	if err == nil {
		err = context.Canceled
	}
	p.fail(err)
	p.mu.Lock()
	for _, l := range p.layers {
		if l.sp != nil {
			l.sp.end(err, false) // now, not when the wake-up's goroutine runs
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
	p.mu.Lock()
	for _, l := range p.layers {
		if l.sp != nil {
			l.sp.release()
			l.sp = nil
		}
	}
	p.mu.Unlock()
}

// spool is one attempt's bytes of a layer, in an unnamed file. It grows as the transfer
// writes, and its readers follow: they wait for more bytes, and see the end only once the
// attempt has ended, io.EOF when it verified and its error otherwise (at once, whatever
// is left to read). Its file is closed when the last of its holders (the layer, and an
// Apply reading it) lets it go.
type spool struct {
	f *os.File

	mu     sync.Mutex
	grew   *sync.Cond // broadcast when size grows or the attempt ends
	size   int64
	ended  bool
	err    error // why it ended: nil when verified
	abort  bool  // ended by the transfer with an error
	drop   bool  // no reader wants the rest: writes go nowhere
	refs   int
	closed bool
}

func newSpool(f *os.File) *spool {
	s := &spool{f: f, refs: 1}
	s.grew = sync.NewCond(&s.mu)
	return s
}

// Write appends b; only the transfer's writer goroutine writes. It fails once the spool
// has ended with an error, so a stopped pipeline stops the transfer.
func (s *spool) Write(b []byte) (int, error) {
	s.mu.Lock()
	off, drop, ended, err := s.size, s.drop, s.ended, s.err
	s.mu.Unlock()
	switch {
	case ended && err != nil:
		return 0, err
	case drop:
		return len(b), nil
	}
	n, werr := s.f.WriteAt(b, off)
	s.mu.Lock()
	s.size += int64(n)
	s.grew.Broadcast()
	s.mu.Unlock()
	return n, werr
}

// end ends the attempt with err (nil: verified); abort says the transfer ended it. The
// first end counts.
func (s *spool) end(err error, abort bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	s.ended, s.err, s.abort = true, err, abort
	s.grew.Broadcast()
}

// wait waits for the attempt to end and returns how it ended.
func (s *spool) wait() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for !s.ended {
		s.grew.Wait()
	}
	return s.err
}

func (s *spool) aborted() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.abort
}

func (s *spool) discard() {
	s.mu.Lock()
	s.drop = true
	s.mu.Unlock()
}

func (s *spool) hold() {
	s.mu.Lock()
	s.refs++
	s.mu.Unlock()
}

func (s *spool) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refs--; s.refs == 0 && !s.closed {
		s.closed = true
		_ = s.f.Close()
	}
}

// spoolReader reads a spool from the start, following it as it grows. It can also be
// read at offsets (ReadAt), which parallel inflate does: a read waits for the bytes, and
// past the end of the blob it returns io.EOF once the attempt verified.
type spoolReader struct {
	s    *spool
	off  int64
	size int64 // the blob's size as the manifest says, or -1
}

// ReadAt reads len(p) bytes at off once they are there, or fewer and how the attempt
// ended: io.EOF when it verified, its error otherwise (at once, whatever is there).
func (r *spoolReader) ReadAt(p []byte, off int64) (int, error) {
	s := r.s
	s.mu.Lock()
	for s.size < off+int64(len(p)) && !s.ended {
		s.grew.Wait()
	}
	size, ended, err := s.size, s.ended, s.err
	s.mu.Unlock()
	if ended && err != nil {
		return 0, err
	}
	n := int(max(0, min(int64(len(p)), size-off)))
	if n > 0 {
		k, rerr := s.f.ReadAt(p[:n], off)
		if rerr != nil && rerr != io.EOF {
			return k, rerr
		}
		n = k
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (r *spoolReader) Read(p []byte) (int, error) {
	s := r.s
	s.mu.Lock()
	for r.off == s.size && !s.ended {
		s.grew.Wait()
	}
	size, ended, err := s.size, s.ended, s.err
	s.mu.Unlock()
	switch {
	case ended && err != nil:
		return 0, err
	case r.off == size:
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), size-r.off))
	n, err = s.f.ReadAt(p[:n], r.off)
	r.off += int64(n)
	if err == io.EOF {
		err = nil // the bytes are there: size says so
	}
	return n, err
}

// stage stages l from sp into the Rootfs, and then merges what is staged, in order.
func (p *Pipeline) stage(l *piped, sp *spool) {
	size := l.layer.Size
	if size <= 0 {
		size = -1
	}
	st, err := p.rootfs.stage(p.ctx, l.layer.Digest, l.layer.DiffID, &spoolReader{s: sp, size: size})
	if err == nil {
		err = sp.wait() // the attempt's verdict (for a layer read to its end, known already)
		if err != nil {
			p.rootfs.drop(st)
		}
	}
	sp.release()
	p.mu.Lock()
	l.applier = nil
	p.running--
	switch {
	case sp.aborted():
		// The transfer ended this attempt with an error (Close reset the layer): the
		// next attempt stages it again.
	case err != nil:
		p.failLocked(err)
	default:
		if l.state == received {
			st.res.Stages.Fetch = l.fetch
		}
		l.state, l.staged = staged, st
		if l.sp == sp {
			l.sp = nil
			sp.release()
		}
	}
	p.startReady()
	p.mergeReady()
	p.mu.Unlock()
}

// mergeReady merges the staged layers whose turn it is, one after the other, unless a
// goroutine is at it already (under p.mu, which it lets go while a layer merges).
func (p *Pipeline) mergeReady() {
	if p.merging {
		return
	}
	p.merging = true
	defer func() { p.merging = false }()
	for p.err == nil && p.ctx.Err() == nil && p.next < len(p.layers) && p.layers[p.next].state == staged {
		l := p.layers[p.next]
		st := l.staged
		l.staged = nil
		drop := p.drop
		p.mu.Unlock()
		res, err := p.rootfs.merge(p.ctx, st)
		if err == nil && drop != nil {
			if derr := drop.Delete(p.ctx, l.layer.Digest); derr != nil && !errors.Is(derr, pullkit.ErrNotFound) {
				err = &pullkit.Error{Op: pullkit.OpDeleteBlob, Detail: "(dropping the applied layer's blob)", Digest: l.layer.Digest, Err: derr}
			}
		}
		p.mu.Lock()
		if err != nil {
			p.failLocked(err)
			return
		}
		l.state, l.res = applied, res
		if fn := p.progress; fn != nil {
			fn(pullkit.Event{Kind: pullkit.EventUnpacked, What: "layer", Digest: l.layer.Digest, Done: res.Size, Total: res.Size, Stages: res.Stages})
		}
		p.next++
	}
}

package unpack

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
)

// Pipeline applies an image's layers while they download: its Tee, given to the pull
// (puller.WithLayerTees), receives each layer's bytes as the transfer verifies them.
//
// Into a Rootfs the layers go in order. The next layer to apply streams straight into
// the tree, decompressed as it arrives; a layer whose transfer starts before its turn is
// spooled to an unnamed file beside the target (the download is not held back, so it
// cannot stall) and applied from there as soon as its turn comes. Snapshots do not
// depend on each other: with every diffID known up front (from the config), each layer
// streams into its own snapshot at once, and a snapshot already there is reused; without
// them (schema 1) they go in order, as for a Rootfs.
//
// A layer is applied only from bytes whose digest verified: a stream that the transfer
// ends with an error (a retry, a mismatch) is aborted, and the transfer's next attempt
// starts it again. Wait returns once every layer is applied.
type Pipeline struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	rootfs *Rootfs
	snaps  *Snapshots
	spool  string // the directory spool files go to
	free   bool   // layers may be applied in any order

	mu      sync.Mutex
	layers  []*piped // the layers to apply, base first
	byIndex map[int]*piped
	next    int // the position in layers of the next layer to apply in order
	err     error
	wg      sync.WaitGroup
}

type state int

const (
	waiting  state = iota // nothing received, or a failed attempt
	live                  // streaming into an Apply
	spooling              // being written to its spool
	spooled               // spooled whole and verified
	applying              // being applied from its spool
	applied
)

// piped is one layer's state in a Pipeline.
type piped struct {
	i      int
	layer  manifest.Layer
	parent digest.Digest // the chain ID below (snapshots)
	state  state
	pipe   *io.PipeWriter
	result chan applyResult
	spool  *os.File
	size   int64
	res    Result
}

type applyResult struct {
	res Result
	err error
}

// NewPipeline returns a pipeline into r. Give its Tee to the pull
// (puller.WithLayerTees), then call Wait once the pull has returned, then Commit r.
func (r *Rootfs) NewPipeline(ctx context.Context) *Pipeline {
	p := newPipeline(ctx)
	p.rootfs, p.spool = r, r.spoolDir()
	return p
}

// NewPipeline returns a pipeline into snapshots, each layer in its own.
func (s *Snapshots) NewPipeline(ctx context.Context) *Pipeline {
	p := newPipeline(ctx)
	p.snaps, p.spool = s, s.spoolDir()
	return p
}

func newPipeline(ctx context.Context) *Pipeline {
	p := &Pipeline{byIndex: map[int]*piped{}}
	p.ctx, p.cancel = context.WithCancelCause(ctx)
	return p
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

// turn reports whether l may be applied now (under p.mu).
func (p *Pipeline) turn(l *piped) bool {
	return p.free || (p.next < len(p.layers) && p.layers[p.next] == l)
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
	switch {
	case l.state == applied || l.state == applying || l.state == spooled:
		return io.Discard, nil // verified and kept already
	case p.turn(l):
		pr, pw := io.Pipe()
		l.state, l.pipe, l.result = live, pw, make(chan applyResult, 1)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			res, err := p.apply(l, pr)
			if err == nil {
				// A reused snapshot reads nothing: take the rest, so the transfer goes
				// on, and wait for its verdict.
				_, err = io.Copy(io.Discard, pr)
			}
			pr.CloseWithError(err)
			l.result <- applyResult{res, err}
		}()
		return pw, nil
	}
	if l.spool == nil {
		f, err := spoolFile(p.spool)
		if err != nil {
			return nil, &pullkit.Error{Op: "spool layer", Digest: l.layer.Digest, Err: err}
		}
		l.spool = f
	}
	l.state, l.size = spooling, 0
	return &spoolWriter{l: l}, nil
}

func (t *tee) Close(err error) error {
	p, l := t.p, t.l
	p.mu.Lock()
	st, pipe := l.state, l.pipe
	p.mu.Unlock()
	switch st {
	case live:
		if err != nil {
			pipe.CloseWithError(err)
			<-l.result // aborted; the transfer's next attempt starts it again
			p.set(l, waiting, Result{})
			return nil
		}
		pipe.Close() // io.EOF: the blob verified
		r := <-l.result
		if r.err != nil {
			p.fail(r.err)
			return r.err
		}
		p.set(l, applied, r.res)
	case spooling:
		if err != nil {
			p.set(l, waiting, Result{})
			return nil
		}
		p.set(l, spooled, Result{})
	}
	return nil
}

// spoolWriter appends a layer's bytes to its spool file.
type spoolWriter struct{ l *piped }

func (w *spoolWriter) Write(b []byte) (int, error) {
	n, err := w.l.spool.WriteAt(b, w.l.size)
	w.l.size += int64(n)
	return n, err
}

// spoolFile is a file in dir, removed at once: it lives until closed.
func spoolFile(dir string) (*os.File, error) {
	f, err := os.CreateTemp(dir, ".spool-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return f, nil
}

// apply applies one layer from r into the target.
func (p *Pipeline) apply(l *piped, r io.Reader) (Result, error) {
	if p.snaps != nil {
		return p.snaps.Apply(p.ctx, l.parent, l.layer.Digest, l.layer.DiffID, r)
	}
	return p.rootfs.Apply(p.ctx, l.layer.Digest, l.layer.DiffID, r)
}

// fail stops the pipeline with err.
func (p *Pipeline) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
	p.cancel(err)
}

// set moves l to state st and, in order, applies what has become the next layer's turn
// from its spool.
func (p *Pipeline) set(l *piped, st state, res Result) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l.state = st
	if st == applied {
		l.res = res
		l.pipe = nil
	}
	for p.next < len(p.layers) && p.layers[p.next].state == applied {
		if k := p.next + 1; k < len(p.layers) && !p.free {
			p.layers[k].parent = p.layers[p.next].res.ChainID
		}
		p.next++
	}
	for _, next := range p.layers {
		if next.state == spooled && p.turn(next) && p.err == nil {
			next.state = applying
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				res, err := p.apply(next, io.NewSectionReader(next.spool, 0, next.size))
				next.spool.Close()
				next.spool = nil
				if err != nil {
					p.fail(err)
					return
				}
				p.set(next, applied, res)
			}()
		}
	}
}

// Wait waits, once the pull has returned, for every layer to be applied, and returns
// their results (base first) or the first failure. A layer the pull never verified is
// an error.
func (p *Pipeline) Wait() ([]Result, error) {
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return nil, p.err
	}
	out := make([]Result, 0, len(p.layers))
	for _, l := range p.layers {
		if l.state != applied {
			return nil, &pullkit.Error{Op: "unpack layer", Digest: l.layer.Digest,
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
		if l.pipe != nil {
			l.pipe.CloseWithError(err)
		}
	}
	p.mu.Unlock()
	p.wg.Wait()
	p.mu.Lock()
	for _, l := range p.layers {
		if l.spool != nil {
			l.spool.Close()
			l.spool = nil
		}
	}
	p.mu.Unlock()
}

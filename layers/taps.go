package layers

import (
	"context"
	"io"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/store"
)

// taps are what receives a blob's bytes in order besides the store: the diffID, computed
// in a goroutine of its own, and the caller's Tees.
type taps struct {
	diff *diffTap
	tees []Tee
	ws   []io.Writer
	done bool
}

// openTaps starts j's taps. When the store's writer w already holds a prefix (a resumed
// transfer), the taps are given it first, read back from the writer; a writer that cannot
// be read back starts over instead.
func (e *engine) openTaps(ctx context.Context, j *job, w store.Writer) (*taps, error) {
	t := &taps{}
	if !j.diff && len(j.tees) == 0 {
		return t, nil
	}
	if j.diff {
		t.diff = newDiffTap(ctx, j.desc.Digest, e.pool)
	}
	for _, tee := range j.tees {
		tw, err := tee.Open(j.desc)
		if err != nil {
			t.close(err)
			return nil, blobErr(j, pullkit.OpTee, err)
		}
		t.tees = append(t.tees, tee)
		t.ws = append(t.ws, tw)
	}
	if w == nil || w.Offset() == 0 {
		return t, nil
	}
	ra, ok := w.(io.ReaderAt)
	if !ok {
		if err := w.Truncate(0); err != nil {
			t.close(err)
			return nil, blobErr(j, pullkit.OpWriteBlob, err)
		}
		return t, nil
	}
	if err := t.copyFrom(ctx, e, ra, w.Offset()); err != nil {
		t.close(err)
		return nil, blobErr(j, pullkit.OpReadBlob, err)
	}
	return t, nil
}

// copyFrom gives the taps the first n bytes of ra.
func (t *taps) copyFrom(ctx context.Context, e *engine, ra io.ReaderAt, n int64) error {
	b := e.pool.get()
	defer e.pool.put(b)
	for off := int64(0); off < n; {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := int(min(int64(len(b)), n-off))
		m, err := ra.ReadAt(b[:k], off)
		if m < k {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if err := t.write(b[:k]); err != nil {
			return err
		}
		off += int64(k)
	}
	return nil
}

// replay computes what j's taps want from a blob the store already has.
func replay(ctx context.Context, j *job, ra store.ReaderAt) (digest.Digest, error) {
	e := &engine{pool: &blocks{pool: getBufPool(blockSize)}}
	defer e.pool.release()
	t, err := e.openTaps(ctx, j, nil)
	if err != nil {
		return "", err
	}
	if err := t.copyFrom(ctx, e, ra, ra.Size()); err != nil {
		t.close(err)
		return "", blobErr(j, pullkit.OpReadBlob, err)
	}
	d, err := t.close(nil)
	if err != nil {
		return "", err
	}
	return d, nil
}

func (t *taps) write(p []byte) error {
	if t.diff != nil {
		t.diff.feed(p)
	}
	for _, w := range t.ws {
		if _, err := w.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// close ends the taps: err is nil when the blob verified. It returns the diffID.
func (t *taps) close(err error) (digest.Digest, error) {
	if t.done {
		return "", nil
	}
	t.done = true
	var d digest.Digest
	var first error
	if t.diff != nil {
		var derr error
		d, derr = t.diff.finish()
		if err == nil && derr != nil {
			first = pullkit.Wrap("", pullkit.OpCheckDiffID, "", derr)
		}
	}
	for _, tee := range t.tees {
		cerr := err
		if cerr == nil {
			cerr = first
		}
		if e := tee.Close(cerr); e != nil && first == nil && err == nil {
			first = e
		}
	}
	return d, first
}

// diffTap computes a diffID in a goroutine of its own from copies of the blob's bytes,
// handed over in whole buffers, so decompression overlaps the transfer.
type diffTap struct {
	in   chan []byte
	free chan []byte
	done chan struct{}
	pool *blocks
	cur  []byte // the buffer being filled
	got  digest.Digest
	err  error
}

const diffBuffers = 3

func newDiffTap(ctx context.Context, blob digest.Digest, pool *blocks) *diffTap {
	d := &diffTap{in: make(chan []byte, diffBuffers), free: make(chan []byte, diffBuffers), done: make(chan struct{}), pool: pool}
	for range diffBuffers {
		d.free <- pool.get()[:0]
	}
	go func() {
		defer close(d.done)
		cr := &chanReader{in: d.in, free: d.free}
		d.got, d.err = diffIDOf(ctx, cr, blob)
		cr.drain()
	}()
	return d
}

// feed copies p into the tap's buffers, passing each on once full.
func (d *diffTap) feed(p []byte) {
	for len(p) > 0 {
		if d.cur == nil {
			d.cur = <-d.free
		}
		n := copy(d.cur[len(d.cur):cap(d.cur)], p)
		d.cur = d.cur[:len(d.cur)+n]
		p = p[n:]
		if len(d.cur) == cap(d.cur) {
			d.in <- d.cur
			d.cur = nil
		}
	}
}

// finish ends the input and returns the diffID.
func (d *diffTap) finish() (digest.Digest, error) {
	if len(d.cur) > 0 {
		d.in <- d.cur
		d.cur = nil
	}
	close(d.in)
	<-d.done
	if d.cur != nil {
		d.pool.put(d.cur[:cap(d.cur)])
	}
	close(d.free)
	for b := range d.free {
		d.pool.put(b[:cap(b)])
	}
	return d.got, d.err
}

// chanReader reads the buffers a diffTap is fed, returning each to free once read.
type chanReader struct {
	in   <-chan []byte
	free chan<- []byte
	buf  []byte
	cur  []byte
}

func (c *chanReader) Read(p []byte) (int, error) {
	for len(c.cur) == 0 {
		if !c.next() {
			return 0, io.EOF
		}
	}
	n := copy(p, c.cur)
	c.cur = c.cur[n:]
	return n, nil
}

func (c *chanReader) next() bool {
	if c.buf != nil {
		c.free <- c.buf[:0]
		c.buf, c.cur = nil, nil
	}
	b, ok := <-c.in
	if !ok {
		return false
	}
	c.buf, c.cur = b, b
	return true
}

// drain recycles every buffer still to come, so the feeder never blocks after a
// decompression error.
func (c *chanReader) drain() {
	for c.next() {
	}
}

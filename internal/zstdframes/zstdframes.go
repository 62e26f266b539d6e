// Package zstdframes decompresses a zstd stream of several frames on several cores, to
// exactly the bytes (and, for a damaged stream, the error) a serial decoder gives.
//
// A zstd frame depends on nothing outside it, and its extent can be read from its header
// and its blocks' three-byte headers without decoding it. A layer written as many frames
// (zstd:chunked, seekable zstd, concatenated streams) can so be cut at frame boundaries
// and its frames decoded at once. Here a scanner walks the frames ahead of the reader;
// runs of consecutive frames that state their content size, each at most MaxFrame, are
// decoded whole (klauspost's DecodeAll) by workers or by the reader itself, whichever
// gets to a run first, and handed out in order. A frame that does not state its size, or
// states a larger one, is decoded by the reader as a stream (so a single-frame layer is
// inflated exactly as before, while it downloads); and wherever the scanner cannot read a
// frame's extent (bytes that are not a frame, a truncated or reserved block), or a run
// does not decode, the rest of the stream is decoded serially from that frame on, which
// gives the serial decoder's output and error there (frames are independent, so a
// serial decoder started at a frame's first byte decodes what one started at the
// stream's first byte decodes from there).
package zstdframes

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"
)

// MaxWindow bounds the window a frame may ask the decoder to allocate (as
// layers.Decompress does: 128 MiB admits `zstd --long=27` and `--ultra -22`).
const MaxWindow = 128 << 20

// Config holds the decisions the reader takes; tests pin them.
type Config struct {
	// Workers is how many runs of frames are decoded at once besides the reader, which
	// decodes a run itself when it gets to one no worker has taken; fewer than 1 means
	// the reader decodes everything. Default: GOMAXPROCS-1.
	Workers int
	// RunSize is the uncompressed size a run of frames is cut at (a run holds one frame
	// at least). Default 1 MiB.
	RunSize int
	// MaxFrame is the largest content size a frame may state to be decoded whole in a
	// run; a larger one is decoded as a stream. Default 4 MiB.
	MaxFrame int
	// Ahead is how many runs are scanned ahead of the reader (with their output, it
	// bounds the memory). Default Workers+1.
	Ahead int
}

// Default is the configuration readers get unless given one.
func Default() Config { return Config{Workers: runtime.GOMAXPROCS(0) - 1} }

func (c Config) fill() Config {
	if c.RunSize <= 0 {
		c.RunSize = 1 << 20
	}
	if c.MaxFrame <= 0 {
		c.MaxFrame = 4 << 20
	}
	if c.Ahead <= 0 {
		c.Ahead = max(1, c.Workers) + 1
	}
	return c
}

// Stats says what a reader did; tests read it.
type Stats struct {
	Runs     int   // runs of frames decoded whole
	Frames   int   // frames in them
	InRuns   int64 // uncompressed bytes from runs
	Streamed int64 // uncompressed bytes decoded as a stream
	Rest     bool  // the rest of the stream was decoded serially from some frame on
}

// Reader reads the uncompressed content of a zstd stream.
type Reader struct {
	ctx     context.Context
	cancel  context.CancelFunc
	sctx    context.Context // the scanner's and the workers': ends with ctx, or once the rest is streamed
	scancel context.CancelFunc
	cfg     Config
	src     io.ReaderAt
	size    int64

	items chan *item // from the scanner, in order
	at    *window    // the scanner's reads
	sem   chan struct{}
	wg    sync.WaitGroup

	pending []byte
	framed  *item         // the frame stream decodes, if it decodes one
	stream  *zstd.Decoder // decoding a frame, or the rest, as a stream
	rest    bool          // stream decodes the rest of the stream: no more items
	err     error
	stats   Stats
}

// itemKind says how the reader gets an item's output.
type itemKind int

const (
	kindRun    itemKind = iota // frames decoded whole, by a worker or the reader
	kindStream                 // one frame decoded as a stream (up to where it ends)
	kindRest                   // everything from off on, decoded as a stream
	kindEnd                    // the stream ended where a frame would start
)

// An item is a stretch of the stream in the order the reader hands it out.
type item struct {
	kind   itemKind
	off    int64 // where it starts in the stream
	end    int64 // where it ends (runs)
	frames int   // frames in it (runs)
	size   int   // uncompressed size the frames state (runs)

	claimed atomic.Bool   // a worker or the reader decodes it
	done    chan struct{} // closed once decoded (runs)
	out     []byte
	err     error

	// A frame decoded as a stream: how far the scanner has found it to go (extent, its
	// blocks' ends), then where it ends (ended), or that its extent cannot be read
	// (failed: the reader decodes the rest of the stream from it).
	mu       sync.Mutex
	extent   int64
	ended    bool
	failed   bool
	progress chan struct{} // a token whenever the above change
}

func (it *item) update(fn func()) {
	it.mu.Lock()
	fn()
	it.mu.Unlock()
	select {
	case it.progress <- struct{}{}:
	default:
	}
}

// NewReader returns a reader of the zstd stream in src (read at offsets; a read may
// block until the bytes are there, and returns io.EOF at the end); size is the stream's
// size, or -1.
func NewReader(ctx context.Context, src io.ReaderAt, size int64, cfg Config) (*Reader, error) {
	cfg = cfg.fill()
	ctx, cancel := context.WithCancel(ctx)
	r := &Reader{ctx: ctx, cancel: cancel, cfg: cfg, src: src, size: size, items: make(chan *item, cfg.Ahead)}
	r.sctx, r.scancel = context.WithCancel(ctx)
	r.at = &window{src: src}
	if cfg.Workers > 0 {
		r.sem = make(chan struct{}, cfg.Workers)
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.scan()
	}()
	return r, nil
}

// Stats says what the reader did so far.
func (r *Reader) Stats() Stats { return r.stats }

// Close stops the scanner and the workers and waits for them.
func (r *Reader) Close() error {
	r.cancel()
	r.wg.Wait()
	if r.stream != nil {
		r.stream.Close()
		r.stream = nil
	}
	return nil
}

// Read reads uncompressed bytes.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.pending) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if err := r.ctx.Err(); err != nil {
			r.err = err
			return 0, err
		}
		if r.stream != nil {
			n, err := r.stream.Read(p)
			r.stats.Streamed += int64(n)
			if err == io.EOF {
				r.stream.Close()
				r.stream = nil
				if r.rest || r.framed != nil && r.framed.isFailed() {
					r.err = io.EOF // it decoded the rest of the stream
				}
				r.framed = nil
				err = nil
			}
			if err != nil {
				r.err = err
			}
			if n > 0 {
				return n, nil
			}
			continue
		}
		r.next()
	}
	n := copy(p, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}

// next takes the next item from the scanner and starts handing out its output.
func (r *Reader) next() {
	var it *item
	select {
	case it = <-r.items:
	case <-r.ctx.Done():
		r.err = r.ctx.Err()
		return
	}
	switch it.kind {
	case kindEnd:
		r.err = io.EOF
	case kindRest:
		r.startStream(it.off, nil)
	case kindStream:
		r.startStream(it.off, it)
	case kindRun:
		if it.claimed.CompareAndSwap(false, true) {
			r.decodeRun(it) // no worker took it: the reader decodes it
		}
		select {
		case <-it.done:
		case <-r.ctx.Done():
			r.err = r.ctx.Err()
			return
		}
		if it.err != nil {
			// The serial decoder fails in one of these frames too: decode the rest as it
			// does, for its output and its error.
			r.startStream(it.off, nil)
			return
		}
		r.stats.Runs++
		r.stats.Frames += it.frames
		r.stats.InRuns += int64(len(it.out))
		r.pending = it.out
	}
}

// startStream decodes the stream from off as a stream: the frame of item framed (as far
// as the scanner finds it to go, while it walks it), or (framed nil) the rest of the
// stream, after which nothing else is read.
func (r *Reader) startStream(off int64, framed *item) {
	var src io.Reader
	if framed == nil {
		r.rest, r.stats.Rest = true, true
		r.scancel() // what the scanner and the workers would make is not used
		src = io.NewSectionReader(r.src, off, 1<<62)
	} else {
		r.framed = framed
		src = &frameReader{r: r, it: framed, pos: off}
	}
	d, err := zstd.NewReader(bufio.NewReaderSize(&ctxReader{r.ctx, src}, 32<<10), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(MaxWindow))
	if err != nil {
		r.err = err
		return
	}
	r.stream = d
}

// frameReader reads one frame of the stream, as far as the scanner has found it to go:
// a read waits for the scanner to get further. If the scanner cannot read the frame's
// extent, it reads on to the stream's end (the serial decoder's input from there).
type frameReader struct {
	r   *Reader
	it  *item
	pos int64
}

func (f *frameReader) Read(p []byte) (int, error) {
	for {
		f.it.mu.Lock()
		limit, ended, failed := f.it.extent, f.it.ended, f.it.failed
		f.it.mu.Unlock()
		if failed {
			// The rest of the stream, as a serial decoder reads it.
			n, err := f.r.src.ReadAt(p, f.pos)
			f.pos += int64(n)
			if n > 0 && err == io.EOF {
				err = nil
			}
			return n, err
		}
		if f.pos < limit {
			n, err := f.r.src.ReadAt(p[:min(int64(len(p)), limit-f.pos)], f.pos)
			f.pos += int64(n)
			switch {
			case n > 0:
				return n, nil
			case err != io.EOF:
				return 0, err
			}
			// The stream ends inside the frame: the scanner finds it too, and says
			// failed; wait for that.
		} else if ended {
			return 0, io.EOF
		}
		select {
		case <-f.it.progress:
		case <-f.r.ctx.Done():
			return 0, f.r.ctx.Err()
		}
	}
}

func (it *item) isFailed() bool {
	it.mu.Lock()
	defer it.mu.Unlock()
	return it.failed
}

// ctxReader checks ctx before every read, so that a stream that expands without end is
// stopped by cancelling.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// decoders are DecodeAll's decoders, shared by every reader of the process.
var decoders = sync.Pool{New: func() any {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(MaxWindow))
	if err != nil {
		panic(err) // only for bad options
	}
	return d
}}

// decodeRun decodes a run of frames whole.
func (r *Reader) decodeRun(it *item) {
	defer close(it.done)
	in := make([]byte, it.end-it.off)
	if n, err := r.src.ReadAt(in, it.off); n < len(in) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		it.err = err
		return
	}
	d := decoders.Get().(*zstd.Decoder)
	defer decoders.Put(d)
	out, err := d.DecodeAll(in, make([]byte, 0, it.size))
	if err == nil && len(out) != it.size {
		err = errors.New("zstdframes: frames decoded to another size than they state")
	}
	it.out, it.err = out, err
}

// work decodes run it on a worker, unless the reader takes it first.
func (r *Reader) work(it *item) {
	defer r.wg.Done()
	select {
	case r.sem <- struct{}{}:
	case <-r.sctx.Done():
		return
	}
	defer func() { <-r.sem }()
	if it.claimed.CompareAndSwap(false, true) {
		r.decodeRun(it)
	}
}

// errScan says the scanner could not read a frame's extent.
var errScan = errors.New("zstdframes: no frame here")

// Frame magic numbers (little endian).
const (
	frameMagic     = 0xFD2FB528
	skippableMagic = 0x184D2A50 // the low four bits are free
)

// scan walks the frames from the stream's start and sends the reader its items, in
// order; it ends after an item of kind kindRest or kindEnd, or when the reader stops.
func (r *Reader) scan() {
	var run *item
	send := func(it *item) bool {
		if it.kind == kindRun {
			it.done = make(chan struct{})
			if r.sem != nil {
				r.wg.Add(1)
				go r.work(it)
			}
		}
		select {
		case r.items <- it:
			return true
		case <-r.sctx.Done():
			return false
		}
	}
	flush := func() bool {
		if run == nil {
			return true
		}
		it := run
		run = nil
		return send(it)
	}
	off := int64(0)
	for {
		if r.sctx.Err() != nil {
			return
		}
		var head [4]byte
		n, err := r.at.ReadAt(head[:], off)
		if n == 0 && err == io.EOF {
			if flush() {
				send(&item{kind: kindEnd, off: off})
			}
			return
		}
		if n < 4 {
			if flush() {
				send(&item{kind: kindRest, off: off})
			}
			return
		}
		magic := binary.LittleEndian.Uint32(head[:])
		if magic&^0xF == skippableMagic {
			var sz [4]byte
			var last [1]byte
			next := int64(-1)
			if n, _ := r.at.ReadAt(sz[:], off+4); n == 4 {
				next = off + 8 + int64(binary.LittleEndian.Uint32(sz[:]))
			}
			if next < 0 || next > off+8 && !r.there(last[:], next-1) {
				if flush() {
					send(&item{kind: kindRest, off: off})
				}
				return
			}
			// Skipped by every decoder: a run may go over it.
			if run != nil {
				run.end = next
			}
			off = next
			continue
		}
		if magic != frameMagic {
			if flush() {
				send(&item{kind: kindRest, off: off})
			}
			return
		}
		f, err := r.header(off)
		if err != nil {
			if flush() {
				send(&item{kind: kindRest, off: off})
			}
			return
		}
		if f.size < 0 || f.size > int64(r.cfg.MaxFrame) {
			// Decoded as a stream by the reader, which follows the scanner's walk of its
			// blocks (the frame may still be arriving).
			it := &item{kind: kindStream, off: off, extent: f.body, progress: make(chan struct{}, 1)}
			if !flush() || !send(it) {
				return
			}
			end, err := r.walk(f, func(extent int64) { it.update(func() { it.extent = extent }) })
			if err != nil {
				it.update(func() { it.failed = true })
				return // the reader decodes the rest from this frame on
			}
			it.update(func() { it.extent, it.ended = end, true })
			off = end
			continue
		}
		if f.end, err = r.walk(f, nil); err != nil {
			if flush() {
				send(&item{kind: kindRest, off: off})
			}
			return
		}
		if f.end-off > int64(2*r.cfg.MaxFrame)+64<<10 {
			// More compressed bytes than a frame of its size needs: decoded as a stream.
			it := &item{kind: kindStream, off: off, extent: f.end, ended: true, progress: make(chan struct{}, 1)}
			if !flush() || !send(it) {
				return
			}
			off = f.end
			continue
		}
		if run != nil && (run.size+int(f.size) > r.cfg.RunSize || f.end-run.off > int64(2*r.cfg.RunSize)+64<<10) {
			if !flush() {
				return
			}
		}
		if run == nil {
			run = &item{kind: kindRun, off: off}
		}
		run.end, run.size, run.frames = f.end, run.size+int(f.size), run.frames+1
		off = f.end
		if run.size >= r.cfg.RunSize || run.end-run.off >= int64(r.cfg.RunSize) {
			if !flush() {
				return
			}
		}
	}
}

// frameInfo is what the scanner reads of a frame: where its blocks start (body), the
// content size it states (-1: none), whether a checksum follows its blocks, and where
// it ends (once walked).
type frameInfo struct {
	body     int64
	size     int64
	checksum bool
	end      int64
}

// header reads the header of the frame at off (its magic number read already).
func (r *Reader) header(off int64) (frameInfo, error) {
	var h [18]byte // magic, descriptor, window, dictionary ID (4), content size (8)
	n, _ := r.at.ReadAt(h[:], off)
	if n < 5 {
		return frameInfo{}, errScan
	}
	fhd := h[4]
	if fhd&(1<<3) != 0 {
		return frameInfo{}, errScan // reserved bit
	}
	single := fhd&(1<<5) != 0
	pos := 5
	if !single {
		pos++
	}
	pos += [4]int{0, 1, 2, 4}[fhd&3]
	fcsLen := [4]int{0, 2, 4, 8}[fhd>>6]
	if fcsLen == 0 && single {
		fcsLen = 1
	}
	if n < pos+fcsLen {
		return frameInfo{}, errScan
	}
	size := int64(-1)
	b := h[pos : pos+fcsLen]
	switch fcsLen {
	case 1:
		size = int64(b[0])
	case 2:
		size = int64(binary.LittleEndian.Uint16(b)) + 256
	case 4:
		size = int64(binary.LittleEndian.Uint32(b))
	case 8:
		if v := binary.LittleEndian.Uint64(b); v < 1<<62 {
			size = int64(v)
		}
	}
	return frameInfo{body: off + int64(pos+fcsLen), size: size, checksum: fhd&(1<<2) != 0}, nil
}

// walk reads the frame's blocks' headers, skipping their contents, and returns where the
// frame ends; progress, if set, learns each block's end.
func (r *Reader) walk(f frameInfo, progress func(int64)) (int64, error) {
	at := f.body
	for {
		if r.sctx.Err() != nil {
			return 0, r.sctx.Err()
		}
		var bh [3]byte
		if n, _ := r.at.ReadAt(bh[:], at); n < 3 {
			return 0, errScan
		}
		v := uint32(bh[0]) | uint32(bh[1])<<8 | uint32(bh[2])<<16
		last, typ, bsize := v&1 != 0, (v>>1)&3, int64(v>>3)
		at += 3
		switch typ {
		case 0, 2: // raw, compressed
			at += bsize
		case 1: // RLE
			at++
		default:
			return 0, errScan // reserved
		}
		if last {
			break
		}
		if progress != nil {
			progress(at)
		}
	}
	if f.checksum {
		at += 4 // content checksum
	}
	// The frame must be there whole (its last byte).
	var last [1]byte
	if !r.there(last[:], at-1) {
		return 0, errScan
	}
	return at, nil
}

// there says whether the byte at off is in the stream (reading it into b).
func (r *Reader) there(b []byte, off int64) bool {
	n, _ := r.src.ReadAt(b[:1], off)
	return n == 1
}

// window is the scanner's view of the stream: reads of headers go through a window of
// 64 KiB, so that a stream of small blocks costs few reads of the source.
type window struct {
	src  io.ReaderAt
	buf  []byte
	base int64
	n    int
}

func (w *window) ReadAt(p []byte, off int64) (int, error) {
	if off >= w.base && off+int64(len(p)) <= w.base+int64(w.n) {
		return copy(p, w.buf[off-w.base:]), nil
	}
	if w.buf == nil {
		w.buf = make([]byte, 64<<10)
	}
	// A short window: the bytes asked for and a little more, so that the scanner does
	// not wait for bytes far past the header it reads.
	k := min(len(w.buf), len(p)+4<<10)
	n, err := w.src.ReadAt(w.buf[:k], off)
	w.base, w.n = off, n
	if n >= len(p) {
		return copy(p, w.buf[:n]), nil
	}
	copy(p, w.buf[:n])
	return n, err
}

// Package inflate decompresses one gzip stream on several cores, to exactly the bytes a
// serial decoder gives.
//
// A gzip layer is one DEFLATE stream, which a serial decoder inflates at a few hundred
// MB/s on one core: for large layers that is the wall every engine hits. Here the
// compressed stream is cut into parts of a fixed size; for each part a worker finds a
// block boundary by searching the compressed bits for a block header that parses, and
// decodes from it without knowing the 32 KiB window before it: a back-reference into that
// window becomes a marker, resolved once the previous part is known (the approach of
// pugz and rapidgzip). The reader hands out the parts in order. A part is taken only
// where the real decode of the stream before it (the previous part, or klauspost's flate
// from an inflate checkpoint: bit position and window) ends exactly at the part's first
// block; anything else, a part whose start was not a real boundary, one that does not
// decode, one whose output would be too large, is decoded in order by flate, as a serial
// reader would. So the output, the errors for a corrupt stream, and what comes before
// them, are the serial decoder's.
package inflate

import (
	"bufio"
	"context"
	"errors"
	"hash/crc32"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
)

// Config holds the decisions the reader takes: tests pin them, so that what is decoded
// speculatively does not depend on the machine.
type Config struct {
	// Workers is how many parts are decoded at once (besides the reader's own work);
	// fewer than 1 means serial decoding. Default: GOMAXPROCS-1 (the reader decodes
	// in order on a core of its own).
	Workers int
	// PartSize is the compressed size of a part. Default 512 KiB: fixed costs (the
	// search for a block, the output decoded before markers clear) weigh less in larger
	// parts, and the output of one (entries of two bytes until the markers clear) stays
	// a few MiB.
	PartSize int64
	// Ahead is how many parts are decoded or wait, decoded, for the reader; with their
	// output it bounds the memory. Default Workers+1.
	Ahead int
	// MaxPartOutput bounds a part's output (entries); a part that would make more is
	// decoded in order. Default 4 MiB.
	MaxPartOutput int
	// Search is how many compressed bytes from a part's nominal start are searched for
	// a block boundary. Default 256 KiB.
	Search int
	// MinSize: a stream known to be smaller is decoded serially. Default 2 x PartSize.
	MinSize int64
	// Patient makes the reader wait for a part still being decoded when it gets to it,
	// and schedules parts one after the other from where the reader is. Tests set it, so
	// that what is decoded speculatively does not depend on how fast the workers ran.
	// Otherwise the reader waits only for a worker past half of its part: a part less
	// far along when the reader gets to it is dropped and its stretch decoded in order.
	// Parts are spaced out ahead of the reader, a stretch decoded in order between two
	// parts decoded by a worker, so that one worker, which decodes at about half the
	// in-order speed, finishes its part as the reader gets there. The stretch is in
	// compressed bytes, not whole parts, so that it can settle where the two speeds
	// meet: it grows by half a part when a part was dropped, by an eighth when the
	// reader waited, and shrinks by an eighth when a part was ready half a part early.
	Patient bool
}

// Default is the configuration readers get unless given one.
func Default() Config {
	return Config{Workers: runtime.GOMAXPROCS(0) - 1}
}

func (c Config) fill() Config {
	if c.PartSize <= 0 {
		c.PartSize = 512 << 10
	}
	if c.Ahead <= 0 {
		c.Ahead = c.Workers + 1
	}
	if c.MaxPartOutput <= 0 {
		c.MaxPartOutput = 4 << 20
	}
	if c.Search <= 0 {
		c.Search = 256 << 10
	}
	if c.MinSize <= 0 {
		c.MinSize = 2 * c.PartSize
	}
	return c
}

// The spacing of parts when the reader is not Patient, in parts (the stretch is kept in
// bytes): what the reader decodes in order before the next part. A worker with a core
// of its own decodes a part in about the time the reader decodes one and a half or two
// in order.
const (
	minGap   = 1
	startGap = 2
	maxGap   = 32
)

// tokens bounds the parts decoded at once in this process, whatever the number of
// readers: more would only add memory; slots bounds the parts held in memory (decoding,
// decoded or waiting to be), a few MiB each, so that several layers inflated at once
// share one budget. A reader that gets no slot decodes in order.
var (
	tokens = make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))
	slots  = make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))
)

// Stats says what a reader did; tests read it.
type Stats struct {
	Parts      int   // parts taken from speculative decoding
	Dropped    int   // parts scheduled but decoded in order instead
	Ordered    int64 // output bytes decoded in order by flate
	Speculated int64 // output bytes taken from parts
	Marked     int64 // of those, bytes decoded before the window was known (in marker mode)
	Chained    int   // parts whose markers their worker resolved
	Late       int   // parts dropped because their worker was not done when the reader got there
	Waited     int   // parts the reader waited for, their worker being past half of them
}

// Reader reads the uncompressed content of a gzip stream.
type Reader struct {
	ctx    context.Context
	cancel context.CancelFunc
	cfg    Config
	src    io.ReaderAt
	size   int64 // the stream's size, or -1

	member int64  // byte offset of the current member's deflate data
	crc    uint32 // of the member's output so far
	msize  int64  // the member's output so far
	pos    int64  // bit position of the next block, when between blocks
	hist   []byte // the window at pos (stBlocks), up to windowSize bytes
	state  state

	// in-order decoding with the package's decoder
	dec      decoder
	in       []byte // compressed bytes from byte inBase on
	inBase   int64
	eof      bool   // in ends where the stream does
	out      []byte // the window, then output
	n, from  int    // out: written up to n, handed out up to from
	blockBit int64  // where the block being decoded started
	blockOut int64  // the member's output before it
	blockIdx int    // its index in out, -1 once out has moved on
	blockWin []byte // the window before it, once out has moved on

	// in-order decoding with flate, from the block where the decoder stopped
	fl      io.ReadCloser
	flCount *countReader
	flBuf   *bufio.Reader
	flStart int64 // the byte fl started reading at
	skip    int64 // output fl gives again, to drop
	buf     []byte

	jobs    []*job        // scheduled parts, by nominal start
	lastJob *job          // the last one scheduled
	sem     chan struct{} // the reader's parts being decoded: at most Workers
	gap     int64         // without Patient: compressed bytes decoded in order between two parts
	at      atomic.Int64  // the byte the reader decodes at, for the workers to note
	taken   *job          // the part handed out last, while nothing was decoded in order since
	next    int64         // the nominal start of the next part to schedule
	noJob   bool          // no parts for the rest of this member

	pending  []byte
	pending2 []byte     // handed out after pending
	free     [][]byte   // buffers to reuse once pending and pending2 are handed out
	free16   [][]uint16 // likewise
	err      error
	stats    Stats
	wg       sync.WaitGroup
}

type state int

const (
	stBlocks  state = iota // at a block boundary (pos), window in hist
	stDecode               // decoding in order with decoder
	stFlate                // decoding in order with flate
	stTrailer              // after the final block (pos: its end)
	stDone
)

// inChunk is how much compressed input the in-order decoder reads at a time; outChunk
// how much output it makes before handing it out.
const (
	inChunk  = 256 << 10
	outChunk = 256 << 10
)

// NewGzip returns a reader of the gzip stream in src: every member in turn; bytes after
// a member that do not start another (the zero padding some tools leave) end the content,
// as layers.Decompress reads it. src's ReadAt may block until the bytes are there (a blob
// still arriving); it returns io.EOF at the end. size is the stream's size if known, or
// -1. The first member's header is read now: an error says it is not gzip.
func NewGzip(ctx context.Context, src io.ReaderAt, size int64, cfg Config) (*Reader, error) {
	cfg = cfg.fill()
	if size >= 0 && size < cfg.MinSize {
		cfg.Workers = 0
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &Reader{ctx: ctx, cancel: cancel, cfg: cfg, src: src, size: size, gap: startGap * cfg.PartSize}
	if cfg.Workers > 0 {
		r.sem = make(chan struct{}, cfg.Workers)
	}
	if err := r.header(0); err != nil {
		cancel()
		return nil, err
	}
	r.next = r.member + cfg.PartSize
	return r, nil
}

// Stats says what the reader did so far.
func (r *Reader) Stats() Stats { return r.stats }

// Close stops the workers and waits for them.
func (r *Reader) Close() error {
	r.cancel()
	r.wg.Wait()
	for _, j := range r.jobs {
		j.setWindow(nil)
		<-slots
	}
	r.jobs, r.fl = nil, nil
	return nil
}

// Read reads uncompressed bytes.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.pending) == 0 {
		if len(r.pending2) > 0 {
			r.pending, r.pending2 = r.pending2, nil
			break
		}
		for _, b := range r.free {
			freeBytes.put(b)
		}
		for _, b := range r.free16 {
			freeUint16s.put(b)
		}
		r.free, r.free16 = r.free[:0], r.free16[:0]
		if r.err != nil {
			return 0, r.err
		}
		if err := r.ctx.Err(); err != nil {
			r.err = err
			return 0, err
		}
		r.step()
	}
	n := copy(p, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}

// header reads the member header at byte off.
func (r *Reader) header(off int64) error {
	cr := &countReader{r: io.NewSectionReader(r.src, off, 1<<62)}
	br := bufio.NewReaderSize(cr, 4<<10)
	var z gzip.Reader
	if err := z.Reset(br); err != nil {
		return err
	}
	r.member = off + cr.n - int64(br.Buffered())
	r.crc, r.msize, r.hist = 0, 0, r.hist[:0]
	r.pos = r.member * 8
	r.state = stBlocks
	r.noJob = false
	r.taken = nil
	return nil
}

// step makes the next output (pending) or ends the stream (err).
func (r *Reader) step() {
	switch r.state {
	case stBlocks:
		r.schedule()
		if r.findJob(r.pos, r.msize) {
			r.take()
			return
		}
		if r.err == nil {
			r.startDecode()
		}
	case stDecode:
		r.decode()
	case stFlate:
		r.readFlate()
	case stTrailer:
		r.trailer()
	case stDone:
		r.err = io.EOF
	}
}

// findJob reports whether the next part starts at the block boundary bit, where the
// member's output so far is out, and decoded so that it can follow; it drops the parts
// that cannot start there or later.
func (r *Reader) findJob(bit, out int64) bool {
	for len(r.jobs) > 0 {
		j := r.jobs[0]
		if bit < j.nominal*8 {
			return false
		}
		if !r.cfg.Patient && heldPastHalf != nil {
			j.awaitHalf(r.ctx) // tests: the worker is past half of the part, or done
		}
		if !r.cfg.Patient && !j.done() {
			if j.progress.Load() < r.cfg.PartSize*8/2 {
				// The worker is behind: decode the stretch in order, and space the next
				// parts out more.
				r.gap = min(maxGap*r.cfg.PartSize, r.gap+r.cfg.PartSize/2)
				r.stats.Late++
				r.drop()
				continue
			}
			// Past half of it: the worker ends it sooner than the reader would decode
			// it in order (it decodes at more than half the in-order speed), so wait,
			// and space the next parts out a little.
			r.stats.Waited++
			r.gap = min(maxGap*r.cfg.PartSize, r.gap+r.cfg.PartSize/8)
			if readerWaits != nil {
				readerWaits()
			}
		}
		ok := j.waitStart(r.ctx)
		if r.ctx.Err() != nil {
			r.err = r.ctx.Err()
			return false
		}
		if !ok || bit > j.latest() {
			r.drop()
			continue
		}
		if !j.startsAt(bit, r.src) {
			return false
		}
		p, err := j.waitPart(r.ctx)
		if r.ctx.Err() != nil {
			r.err = r.ctx.Err()
			return false
		}
		if err != nil || int64(p.need) > out || j.resolved != nil && r.taken != j.after {
			// Undecodable, reaching before the member, or resolved by its worker with a
			// window that was not the one before it (its predecessor was not taken).
			r.drop()
			continue
		}
		if !r.cfg.Patient && j.nominal-j.readerAt > r.cfg.PartSize/2 {
			// The worker finished it with half a part to spare: parts may come closer.
			r.gap = max(minGap*r.cfg.PartSize, r.gap-r.cfg.PartSize/8)
		}
		return true
	}
	return false
}

func (r *Reader) drop() {
	if debugJob != nil {
		debugJob(r.jobs[0])
	}
	r.jobs[0].cancel()
	r.jobs[0].setWindow(nil)
	r.jobs[0].forget()
	r.jobs = r.jobs[1:]
	r.stats.Dropped++
	<-slots
}

// schedule starts parts ahead of the reader, up to Ahead of them.
func (r *Reader) schedule() {
	if r.cfg.Workers <= 0 || r.noJob {
		return
	}
	for len(r.jobs) < r.cfg.Ahead {
		if r.next*8 <= r.pos {
			r.next += r.cfg.PartSize * ((r.pos/8-r.next)/r.cfg.PartSize + 1)
		}
		if !r.cfg.Patient {
			// A gap ahead of the reader, and after the last part.
			lo := r.pos/8 + r.gap
			if r.lastJob != nil && len(r.jobs) > 0 {
				lo = max(lo, r.lastJob.nominal+r.gap+r.cfg.PartSize)
			}
			r.next = max(r.next, lo)
		}
		if r.size >= 0 && r.next+256 >= r.size {
			return
		}
		select {
		case slots <- struct{}{}:
		default:
			return // the process holds as many parts as it may: decode in order meanwhile
		}
		j := newJob(r, r.next, r.lastJob)
		r.jobs = append(r.jobs, j)
		r.lastJob = j
		r.next += r.cfg.PartSize
	}
}

// take hands out the next part, verified: its markers resolved against the window.
func (r *Reader) take() {
	j := r.jobs[0]
	r.jobs = r.jobs[1:]
	<-slots
	p := j.part
	j.part = nil
	out := j.resolved // resolved by the worker, over p.marked's memory (findJob checked its window)
	if out == nil {
		out = resolveInPlace(p.marked, r.hist)
	} else {
		r.stats.Chained++
	}
	r.taken = j
	r.emit(out)
	r.keep(out)
	r.free16 = append(r.free16, p.marked)
	if p.plain != nil {
		plain := p.plain[windowSize:]
		r.crc = crc32.Update(r.crc, crc32.IEEETable, plain)
		r.msize += int64(len(plain))
		r.pending2 = plain
		r.keep(plain)
		r.free = append(r.free, p.plain)
	}
	j.setWindow(r.hist) // the true window after the part, for the next part's worker
	j.part, j.resolved, j.after = nil, nil, nil
	r.stats.Parts++
	r.stats.Marked += int64(len(p.marked))
	r.stats.Speculated += int64(p.outLen())
	r.pos = p.end
	r.at.Store(r.pos / 8)
	r.state = stBlocks
	if p.final {
		r.state = stTrailer
	}
}

// keep appends b to the window in hist.
func (r *Reader) keep(b []byte) {
	if len(b) >= windowSize {
		r.hist = append(r.hist[:0], b[len(b)-windowSize:]...)
		return
	}
	r.hist = append(r.hist, b...)
	if len(r.hist) > windowSize {
		r.hist = append(r.hist[:0], r.hist[len(r.hist)-windowSize:]...)
	}
}

// emit hands out b, the member's next output.
func (r *Reader) emit(b []byte) {
	r.crc = crc32.Update(r.crc, crc32.IEEETable, b)
	r.msize += int64(len(b))
	r.pending = b
}

// startDecode starts the in-order decoder at the block boundary pos, with the window
// in hist.
func (r *Reader) startDecode() {
	if r.out == nil {
		r.out = make([]byte, windowSize+outChunk)
		r.in = make([]byte, 0, inChunk+4<<10)
	}
	r.inBase = r.pos / 8
	r.in, r.eof = r.in[:0], false
	if !r.more() {
		return
	}
	r.dec = decoder{lit: r.dec.lit, dist: r.dec.dist, clen: r.dec.clen}
	r.dec.r = bitReader{in: r.in}
	r.dec.r.seek(r.pos - r.inBase*8)
	w := r.hist
	copy(r.out[windowSize-len(w):], w)
	r.dec.floor = windowSize - len(w)
	r.n, r.from = windowSize, windowSize
	r.blockBit, r.blockOut, r.blockIdx, r.blockWin = r.pos, r.msize, r.n, r.blockWin[:0]
	r.state = stDecode
	r.taken = nil
}

// more reads more compressed input after what in holds, keeping what the decoder has
// not read yet; false when it failed (err set).
func (r *Reader) more() bool {
	// Bytes whose bits the decoder holds stay, so that its bit positions hold.
	if p := r.dec.r.pos - int(r.dec.r.nb+7)/8; len(r.in) > 0 && p > 0 {
		k := copy(r.in, r.in[p:])
		r.in = r.in[:k]
		r.inBase += int64(p)
		r.dec.r.pos -= p
	}
	if cap(r.in)-len(r.in) < inChunk {
		r.in = append(make([]byte, 0, len(r.in)+inChunk), r.in...)
	}
	n, err := readFull(r.ctx, r.src, r.in[len(r.in):len(r.in)+inChunk], r.inBase+int64(len(r.in)))
	r.in = r.in[:len(r.in)+n]
	r.dec.r.in = r.in
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		r.eof = true
	case err != nil:
		r.err = err
		return false
	}
	return true
}

// decode runs the in-order decoder one step and hands out what it made.
func (r *Reader) decode() {
	if r.n+258 > len(r.out) {
		r.slide()
	}
	n, ev, err := step(&r.dec, r.out, r.n, r.eof, false)
	r.n = n
	if n > r.from {
		r.stats.Ordered += int64(n - r.from)
		r.emit(r.out[r.from:n])
		r.from = n
	}
	if err != nil {
		r.fallback()
		return
	}
	switch ev {
	case evInput:
		if r.eof {
			r.fallback() // flate decodes the last bytes, as the serial reader does
			return
		}
		r.more()
	case evBlock:
		r.pos = r.inBase*8 + r.dec.r.bit()
		r.at.Store(r.pos / 8)
		if r.dec.final {
			r.state = stTrailer
			return
		}
		r.blockBit, r.blockOut, r.blockIdx, r.blockWin = r.pos, r.msize, r.n, r.blockWin[:0]
		r.schedule()
		if len(r.jobs) > 0 && r.findJob(r.pos, r.msize) {
			r.hist = append(r.hist[:0], r.out[max(r.dec.floor, r.n-windowSize):r.n]...)
			r.state = stBlocks // take it there, once what was made is handed out
		}
	}
}

// slide moves the last window's worth of output to the front of out (what was made is
// handed out already).
func (r *Reader) slide() {
	shift := r.n - windowSize
	if r.blockIdx >= 0 && r.blockIdx-shift < windowSize {
		// The block's window would be lost: keep it, in case flate must decode it again.
		lo := max(r.dec.floor, r.blockIdx-windowSize)
		r.blockWin = append(r.blockWin[:0], r.out[lo:r.blockIdx]...)
		r.blockIdx = -1
	} else if r.blockIdx >= 0 {
		r.blockIdx -= shift
	}
	copy(r.out, r.out[shift:r.n])
	r.dec.floor = max(0, r.dec.floor-shift)
	r.n, r.from = windowSize, windowSize
}

// fallback decodes the rest of the member with flate, from the start of the block the
// decoder stopped in: flate then says what is wrong with the stream, after the same
// output, or decodes the end of the stream as the serial reader does.
func (r *Reader) fallback() {
	win := r.blockWin
	if r.blockIdx >= 0 {
		win = r.out[max(r.dec.floor, r.blockIdx-windowSize):r.blockIdx]
	}
	r.noJob = true
	for len(r.jobs) > 0 {
		r.drop()
	}
	off := r.blockBit / 8
	r.flCount = &countReader{r: io.NewSectionReader(r.src, off, 1<<62)}
	if r.flBuf == nil {
		r.flBuf = bufio.NewReaderSize(r.flCount, 64<<10)
		r.buf = make([]byte, outChunk)
	} else {
		r.flBuf.Reset(r.flCount)
	}
	r.flStart, r.skip = off, r.msize-r.blockOut
	cp := flate.InflateCheckpoint{
		UncompressedOffset: r.blockOut,
		CompressedOffset:   off - r.member,
		BitOffset:          uint8(r.blockBit & 7),
		Window:             win,
	}
	r.fl = flate.NewReaderOpts(r.flBuf, flate.WithResumeFrom(cp))
	r.state = stFlate
}

// readFlate reads the next output of flate.
func (r *Reader) readFlate() {
	n, err := r.fl.Read(r.buf)
	b := r.buf[:n]
	if r.skip > 0 {
		k := min(int64(n), r.skip)
		b, r.skip = b[k:], r.skip-k
	}
	if len(b) > 0 {
		r.stats.Ordered += int64(len(b))
		r.emit(b)
	}
	switch {
	case err == io.EOF:
		if r.skip > 0 {
			r.err = io.ErrUnexpectedEOF // cannot be: the decoder's output is flate's
			return
		}
		// The final block ended: the trailer follows the last byte flate read.
		r.pos = (r.flStart + r.flCount.n - int64(r.flBuf.Buffered())) * 8
		r.fl.Close()
		r.fl, r.state = nil, stTrailer
	case err != nil:
		r.err = err
	}
}

// trailer checks the member's trailer after the final block ending at pos, and reads
// the next member's header if one follows.
func (r *Reader) trailer() {
	off := (r.pos + 7) / 8
	var t [8]byte
	if n, err := r.src.ReadAt(t[:], off); n < 8 {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		r.err = err
		return
	}
	if le32(t[:4]) != r.crc || le32(t[4:]) != uint32(r.msize) {
		r.err = gzip.ErrChecksum
		return
	}
	off += 8
	var m [2]byte
	if n, _ := r.src.ReadAt(m[:], off); n < 2 || m[0] != 0x1f || m[1] != 0x8b {
		r.state = stDone
		r.err = io.EOF
		return
	}
	for len(r.jobs) > 0 && r.jobs[0].nominal < off {
		r.drop()
	}
	if err := r.header(off); err != nil {
		r.err = err
	}
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// countReader counts what is read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// job is one part decoded speculatively by a worker.
type job struct {
	nominal int64 // byte where the search for its first block starts
	ctx     context.Context
	cancel  context.CancelFunc
	started chan struct{} // closed once the part is decoded (or not)
	start   int64         // bit where the part starts, -1 if none was found
	stored  bool          // the part starts with a stored block whose length is at byte start/8
	part    *part
	err     error
	// A part whose predecessor ends where it starts, with a window of its own output,
	// has its markers resolved by its worker against that window: resolved is its
	// output then (the reader takes it if the predecessor was indeed the part before).
	prev     *job
	resolved []byte
	after    *job          // the predecessor whose window resolved the part
	window   []byte        // a copy of the window after the part, once known
	winReady chan struct{} // closed once window is set, or known never to be
	winOnce  sync.Once
	end      int64 // the part's end and whether it was the final block, for the successor
	final    bool
	readerAt int64         // where the reader was when the part was decoded
	at       *atomic.Int64 // where the reader is
	progress atomic.Int64  // how far its worker decoded: bits after nominal, at its last block
	halfway  chan struct{} // tests (heldPastHalf): closed once the worker is past half
	halfOnce sync.Once
}

// passHalf is called by the worker once it decoded past half of the part (tests).
func (j *job) passHalf() {
	j.halfOnce.Do(func() { close(j.halfway) })
	heldPastHalf(j.ctx)
}

// awaitHalf waits until the worker is past half of the part or done (tests).
func (j *job) awaitHalf(ctx context.Context) {
	select {
	case <-j.halfway:
	case <-j.started:
	case <-ctx.Done():
	}
}

var errNoBlock = errors.New("inflate: no block boundary found")

func newJob(r *Reader, nominal int64, prev *job) *job {
	ctx, cancel := context.WithCancel(r.ctx)
	j := &job{nominal: nominal, ctx: ctx, cancel: cancel, started: make(chan struct{}), start: -1, prev: prev, winReady: make(chan struct{}), at: &r.at, halfway: make(chan struct{})}
	if r.src == nil {
		return j // tests run it
	}
	cfg := r.cfg
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		j.run(r.src, cfg, r.sem)
	}()
	return j
}

var debugJob func(*job)

// Tests set these: beforeDecode is called by each worker before it decodes its part;
// heldPastHalf by each worker once it decoded past half of its part (a reader that is not
// Patient then waits, before it looks at a part, until its worker is there or done),
// and readerWaits by such a reader when it waits for a worker past half.
var (
	beforeDecode func()
	heldPastHalf func(context.Context) // its part's context: it ends when the part is dropped
	readerWaits  func()
)

func (j *job) run(src io.ReaderAt, cfg Config, sem chan struct{}) {
	defer close(j.started)
	in := freeIn.get(int(cfg.PartSize) + partSlack)
	defer freeIn.put(in)
	n, err := readFull(j.ctx, src, in, j.nominal)
	if err != nil && err != io.EOF {
		j.err = err
		return
	}
	in = in[:n]
	select {
	case sem <- struct{}{}:
	case <-j.ctx.Done():
		j.err = j.ctx.Err()
		return
	}
	select {
	case tokens <- struct{}{}:
	case <-j.ctx.Done():
		<-sem
		j.err = j.ctx.Err()
		return
	}
	tokenHeld := true
	defer func() {
		if tokenHeld {
			<-tokens
			<-sem
		}
	}()
	if beforeDecode != nil {
		beforeDecode()
	}
	d := &specDecoder{maxOut: cfg.MaxPartOutput, progress: &j.progress}
	if heldPastHalf != nil {
		d.half, d.onHalf = cfg.PartSize*8/2, j.passHalf
	}
	stop := cfg.PartSize * 8
	// A header that parses where no block starts decodes to an error sooner or later:
	// search on from there.
	for from := int64(0); ; {
		if j.ctx.Err() != nil {
			j.err = j.ctx.Err()
			return
		}
		b, ok := findBlock(in, from, int64(cfg.Search)*8, d)
		if !ok {
			j.err = errNoBlock
			return
		}
		p, err := d.decode(in, b.bit, stop, b.stored)
		if err == errCorrupt || err == errInput && int64(len(in)) == cfg.PartSize+partSlack {
			from = b.bit + 1
			continue
		}
		if err != nil {
			j.err = err
			return
		}
		p.start += j.nominal * 8
		p.end += j.nominal * 8
		j.readerAt = j.at.Load()
		j.start, j.stored, j.part = b.bit+j.nominal*8, b.stored, p
		<-tokens // the decoding is done; what follows waits
		<-sem
		tokenHeld = false
		j.chain()
		return
	}
}

// chain resolves the part's markers against its predecessor's window, when the
// predecessor ends where this part starts and made a window's worth of output, and
// keeps the part's own window for its successor.
func (j *job) chain() {
	p := j.part
	j.end, j.final = p.end, p.final
	defer func() { j.prev = nil }() // parts must not keep every part before them alive
	if len(p.marked) > 0 && j.prev != nil && !j.stored {
		select {
		case <-j.prev.winReady:
		case <-j.ctx.Done():
			return
		}
		pv := j.prev
		if win := pv.window; win != nil && pv.err == nil && !pv.final && pv.end == j.start && p.need <= len(win) {
			j.resolved, j.after = resolveInPlace(p.marked, win), pv
		}
	}
	switch {
	case p.plain != nil:
		j.setWindow(p.plain[len(p.plain)-windowSize:])
	case len(j.resolved) >= windowSize:
		j.setWindow(j.resolved[len(j.resolved)-windowSize:])
	}
}

// forget drops a dropped part's buffers, once its worker is done with them.
func (j *job) forget() {
	go func() {
		<-j.started
		if p := j.part; p != nil {
			freeUint16s.put(p.marked) // resolved, if set, is a view of it
			if p.plain != nil {
				freeBytes.put(p.plain)
			}
		}
		j.part, j.resolved, j.prev = nil, nil, nil
	}()
}

// setWindow publishes (a copy of) the window after the part, for its successor's
// worker; nil says there is none. The first call counts.
func (j *job) setWindow(w []byte) {
	j.winOnce.Do(func() {
		if w != nil {
			j.window = append([]byte(nil), w...)
		}
		close(j.winReady)
	})
}

// partSlack is what a part reads past its nominal end, for its last block.
const partSlack = 256 << 10

// readFull reads len(p) bytes at off unless the stream ends first, checking ctx between
// reads.
func readFull(ctx context.Context, src io.ReaderAt, p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		k, err := src.ReadAt(p[n:min(len(p), n+1<<20)], off+int64(n))
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// done reports whether the part's worker is done with it (decoded or not).
func (j *job) done() bool {
	select {
	case <-j.started:
		return true
	default:
		return false
	}
}

// waitStart waits for the part; false when none was decoded (or ctx ended).
func (j *job) waitStart(ctx context.Context) bool {
	select {
	case <-j.started:
	case <-ctx.Done():
		return false
	}
	return j.start >= 0
}

// latest is the last bit a block boundary can be at for the part to start there.
func (j *job) latest() int64 {
	if j.stored {
		return j.start - 3
	}
	return j.start
}

// startsAt reports whether a block starting at bit (a real boundary) is the part's first
// block: the same bit, or for a stored block a non-final stored block header whose
// length field is the part's.
func (j *job) startsAt(bit int64, src io.ReaderAt) bool {
	if !j.stored {
		return bit == j.start
	}
	if bit < j.start-10 || bit > j.start-3 {
		return false
	}
	var b [2]byte
	if n, _ := src.ReadAt(b[:], bit/8); n < 2 {
		return false
	}
	return (uint16(b[0])|uint16(b[1])<<8)>>(bit&7)&7 == 0
}

func (j *job) waitPart(ctx context.Context) (*part, error) {
	select {
	case <-j.started:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if j.err != nil {
		return nil, j.err
	}
	return j.part, nil
}

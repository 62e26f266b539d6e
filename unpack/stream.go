package unpack

import (
	"context"
	_ "crypto/sha256" // digest.SHA256 needs the hash registered
	_ "crypto/sha512" // and digest.SHA512 this one
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/inflate"
	"github.com/pullkit/pullkit/internal/zstdframes"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
)

// source is the caller's blob reader: it checks the context before every read and keeps
// the first error that is not io.EOF, which is the cause whatever a decompressor makes
// of it.
type source struct {
	ctx context.Context
	r   io.Reader
	at  io.ReaderAt // r read at offsets, when it can be (see blobAt)
	mu  sync.Mutex  // guards err: parallel inflate reads at offsets from several goroutines
	err error
	eof bool
}

// ReadAt reads the blob at off (for parallel inflate, from several goroutines).
func (s *source) ReadAt(p []byte, off int64) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := s.at.ReadAt(p, off)
	if err != nil && err != io.EOF {
		s.mu.Lock()
		if s.err == nil {
			s.err = err
		}
		s.mu.Unlock()
	}
	return n, err
}

func (s *source) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// blobAt says whether r can be read at offsets as well as in order, from its start, and
// returns that view: a pipeline's spool, or a file or bytes.Reader an engine opens,
// positioned at the start. size is the blob's size, or -1. Such a blob's gzip stream is
// inflated on several cores (internal/inflate).
func blobAt(r io.Reader) (at io.ReaderAt, size int64, ok bool) {
	switch b := r.(type) {
	case *spoolReader:
		if b.off == 0 {
			return b, b.size, true
		}
	case interface {
		io.ReaderAt
		io.Seeker
	}:
		if pos, err := b.Seek(0, io.SeekCurrent); err == nil && pos == 0 {
			end, err := b.Seek(0, io.SeekEnd)
			if _, err2 := b.Seek(0, io.SeekStart); err2 != nil {
				return nil, 0, false
			}
			if err != nil {
				end = -1
			}
			return b, end, true
		}
	}
	return nil, 0, false
}

func (s *source) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.r.Read(p)
	switch {
	case err == io.EOF:
		s.eof = true
	case err != nil:
		s.err = err
	}
	return n, err
}

// layerStream is a layer's uncompressed tar: compression sniffed from the first bytes,
// every byte hashed for the diffID, and the context checked before every read (also when
// a small compressed input expands without end).
//
// The blob is read and decompressed ahead of the reader by a goroutine of its own
// (readAhead), a few chunks at most, so that decompression runs on one core while the
// applier's system calls run on another; each chunk is then hashed for the diffID by a
// second goroutine (hashAhead) before the reader gets it, so that hashing (a fifth of
// inflating's CPU) is not on the path of the one goroutine no other core can help: a
// single gzip stream inflated in order. Until stop, only readAhead touches src, dec,
// dErr, inflate and size, and only hashAhead touches h.
type layerStream struct {
	ctx      context.Context
	src      *source
	dec      io.Reader
	kind     string // "gzip", "zstd" or "" (plain)
	dErr     error  // the decompressor's first error
	close    func()
	parallel *inflate.Reader    // the parallel gzip reader, when the blob is read at offsets
	frames   *zstdframes.Reader // the parallel zstd reader, likewise
	h        hash.Hash
	alg      digest.Algorithm
	want     digest.Digest

	full   chan chunk     // decompressed chunks, in order, to hash
	hashed chan chunk     // hashed chunks, in order, to read
	free   chan []byte    // buffers the reader has done with
	quit   chan struct{}  // closed by stop
	done   chan struct{}  // closed when both goroutines have ended
	wg     sync.WaitGroup // the two goroutines
	cur    []byte         // what is left of the chunk being read
	buf    []byte         // that chunk's buffer, to give back
	err    error          // the error that ended the stream, once the reader got to it

	inflate time.Duration // the read-ahead goroutine's time decompressing
	size    int64         // uncompressed bytes read ahead
	wait    time.Duration // the reader's time waiting for a chunk
}

// A chunk is what the read-ahead goroutine decompressed into one buffer, and the error
// that ended its reading, if any.
type chunk struct {
	b   []byte
	err error
}

// errStopped ends a read that stop cut short; no reader sees it.
var errStopped = errors.New("unpack: layer stream stopped")

// aheadChunks buffers of aheadChunk bytes per layer being applied bound how far the
// read-ahead runs ahead of the applier (the pull stays in 64 MiB, with the download's
// blocks and several layers applied at once).
const (
	aheadChunk  = 256 << 10
	aheadChunks = 4
)

// openLayer starts reading the layer blob r. want is the expected diffID, or "".
func openLayer(ctx context.Context, r io.Reader, want digest.Digest) (*layerStream, error) {
	alg := digest.SHA256
	if want != "" {
		if err := want.Validate(); err != nil {
			if errors.Is(err, digest.ErrDigestUnsupported) {
				return nil, &pullkit.UnsupportedError{What: "diffID", Reason: fmt.Sprintf("algorithm of %s", want)}
			}
			return nil, &pullkit.InvalidError{What: "diffID", Reason: string(want), Err: err}
		}
		alg = want.Algorithm()
	}
	s := &layerStream{ctx: ctx, src: &source{ctx: ctx, r: r}, h: alg.Hash(), alg: alg, want: want}
	if at, size, ok := blobAt(r); ok && useInflate {
		s.src.at = at
		var head [4]byte
		n, _ := s.src.ReadAt(head[:], 0)
		switch manifest.DetectCompression(head[:n]) {
		case manifest.Gzip:
			z, err := inflate.NewGzip(ctx, s.src, size, inflateConfig)
			if err != nil {
				s.dErr = err
				return nil, s.cause(&pullkit.InvalidError{What: "layer", Reason: "gzip stream does not decompress", Err: err}, "gzip")
			}
			s.dec, s.close, s.kind, s.parallel = &decodeErrors{z, "gzip"}, func() { _ = z.Close() }, "gzip", z
			return s.start(), nil
		case manifest.Zstd:
			z, err := zstdframes.NewReader(ctx, s.src, size, zstdConfig)
			if err != nil {
				s.dErr = err
				return nil, s.cause(&pullkit.InvalidError{What: "layer", Reason: "zstd stream does not decompress", Err: err}, "zstd")
			}
			s.dec, s.close, s.kind, s.frames = &decodeErrors{z, "zstd"}, func() { _ = z.Close() }, "zstd", z
			return s.start(), nil
		}
	}
	dec, kind, err := layers.Decompress(s.src)
	if err != nil {
		return nil, s.cause(err, kind.String())
	}
	s.dec, s.close = dec, func() { _ = dec.Close() }
	if kind != manifest.Uncompressed {
		s.kind = kind.String()
	}
	return s.start(), nil
}

// inflateConfig is how gzip layers read at offsets are inflated, zstdConfig how zstd
// ones are (frames decoded at once by the processors beyond the reader's: this costs no
// more CPU than decoding them in order). Tests pin them, and see what each layer's
// reader did through inflateStats and zstdStats; useInflate false sends every layer
// through layers.Decompress.
var (
	inflateConfig = unpackInflate()
	inflateStats  func(inflate.Stats)
	zstdConfig    = zstdframes.Default()
	zstdStats     func(zstdframes.Stats)
	useInflate    = true
)

// unpackInflate is the inflate configuration of an unpack: the package's own decoder in
// order, with speculative workers only for cores beyond the two a layer's unpack keeps
// busy already (one inflating and hashing, one parsing the tar and writing). On two
// cores a worker takes the core the tar and the writes need: with one, pk-snapshots of
// bench/unpack.sh's app took 4.0 s against 2.9 s without, and its big (one layer of
// 1.4 GiB) 17.2-17.4 s and 65-79 MiB of RSS against 11.1-12.1 s and 40-43 MiB, though a
// worker's part now costs less than twice its in-order decode.
func unpackInflate() inflate.Config {
	c := inflate.Default()
	c.Workers = max(0, runtime.GOMAXPROCS(0)-2)
	return c
}

// decodeErrors gives the parallel readers' decoding errors the vocabulary of
// layers.Decompress: pullkit.ErrInvalid.
type decodeErrors struct {
	r    io.Reader
	kind string
}

func (g *decodeErrors) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	if err != nil && err != io.EOF && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, pullkit.ErrInvalid) {
		err = &pullkit.InvalidError{What: "layer", Reason: g.kind + " stream does not decompress", Err: err}
	}
	return n, err
}

// start starts the read-ahead and the hashing.
func (s *layerStream) start() *layerStream {
	s.full = make(chan chunk, aheadChunks)
	s.hashed = make(chan chunk, aheadChunks)
	s.free = make(chan []byte, aheadChunks)
	s.quit = make(chan struct{})
	s.done = make(chan struct{})
	for range aheadChunks {
		s.free <- make([]byte, aheadChunk)
	}
	s.wg.Add(2)
	go s.readAhead()
	go s.hashAhead()
	go func() {
		s.wg.Wait()
		close(s.done)
	}()
	return s
}

// readAhead decompresses the stream into free buffers and hands them on in order, until
// an error (io.EOF included) or stop.
func (s *layerStream) readAhead() {
	defer s.wg.Done()
	for {
		var b []byte
		select {
		case b = <-s.free:
		case <-s.quit:
			return
		}
		t0 := time.Now()
		n, err := s.fill(b)
		if err == errStopped {
			return
		}
		s.inflate += time.Since(t0)
		s.size += int64(n)
		if err != nil && err != io.EOF && s.dErr == nil {
			s.dErr = err
		}
		select {
		case s.full <- chunk{b[:n], err}:
		case <-s.quit:
			return
		}
		if err != nil {
			return
		}
	}
}

// hashAhead hashes the decompressed chunks for the diffID and hands them on to the
// reader, in order, until the chunk that ends the stream or stop.
func (s *layerStream) hashAhead() {
	defer s.wg.Done()
	for {
		var c chunk
		select {
		case c = <-s.full:
		case <-s.quit:
			return
		}
		s.h.Write(c.b)
		select {
		case s.hashed <- c:
		case <-s.quit:
			return
		}
		if c.err != nil {
			return
		}
	}
}

// fill reads from the decompressor into b until b is full or the stream ends (or fails),
// checking the context and stop before every read, so that a stop waits for one read at
// most.
func (s *layerStream) fill(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		if err := s.ctx.Err(); err != nil {
			return n, err
		}
		select {
		case <-s.quit:
			return n, errStopped
		default:
		}
		k, err := s.dec.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Read reads uncompressed bytes.
func (s *layerStream) Read(p []byte) (int, error) {
	for len(s.cur) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if err := s.ctx.Err(); err != nil {
			return 0, err
		}
		if s.buf != nil {
			s.free <- s.buf[:cap(s.buf)]
			s.buf = nil
		}
		var c chunk
		select {
		case c = <-s.hashed:
		default:
			t0 := time.Now()
			select {
			case c = <-s.hashed:
			case <-s.ctx.Done():
				return 0, s.ctx.Err()
			}
			s.wait += time.Since(t0)
		}
		s.buf, s.cur, s.err = c.b, c.b, c.err
	}
	n := copy(p, s.cur)
	s.cur = s.cur[n:]
	return n, nil
}

// stop ends the read-ahead and hashing goroutines and waits for them, after which the
// stream's state is the caller's to read. It may be called more than once.
func (s *layerStream) stop() {
	select {
	case <-s.quit:
	default:
		close(s.quit)
	}
	<-s.done
}

// finish reads what is left of the uncompressed stream (tar padding after the end of
// the archive counts in the diffID) and of the blob (bytes some tools leave after the
// compressed stream), so that the caller's reader has reported io.EOF, and checks the
// diffID.
func (s *layerStream) finish() (digest.Digest, error) {
	if _, err := io.Copy(io.Discard, s); err != nil {
		return "", s.cause(err, "decompress")
	}
	s.stop() // they have sent io.EOF: they end, and what they read and hashed is ours
	if s.src.at != nil && (s.parallel != nil || s.frames != nil) {
		// Read at offsets: the blob's end, once it came whole and verified, is an io.EOF
		// past it (a spool waits for the transfer's verdict).
		var b [1]byte
		if _, err := s.src.ReadAt(b[:], 1<<62); err != io.EOF {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return "", s.cause(err, "")
		}
	} else {
		if _, err := io.Copy(io.Discard, s.src); err != nil {
			return "", s.cause(err, "")
		}
		if !s.src.eof {
			return "", s.cause(io.ErrUnexpectedEOF, "")
		}
	}
	if s.frames != nil && zstdStats != nil {
		zstdStats(s.frames.Stats())
	}
	if s.parallel != nil && inflateStats != nil {
		inflateStats(s.parallel.Stats())
	}
	got := digest.NewDigest(s.alg, s.h)
	if s.want != "" && got != s.want {
		return got, &pullkit.DigestMismatchError{What: "uncompressed layer (diffID)", Want: s.want, Got: got}
	}
	return got, nil
}

func (s *layerStream) Close() {
	s.stop()
	s.close()
}

// cause turns an error met while reading into the module's vocabulary: the caller's
// reader's own error first (it is what happened), then the context, then a fault of the
// archive (what says "what" went wrong: "gzip", "zstd", "tar").
func (s *layerStream) cause(err error, what string) error {
	if s.done != nil {
		s.stop() // the stream is failing: what the goroutine saw is the cause
	}
	if err := s.src.failure(); err != nil {
		return sourceError(err)
	}
	if cerr := s.ctx.Err(); cerr != nil {
		return cerr
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if errors.Is(err, pullkit.ErrInvalid) {
		return err // the decompressor's own account: the stream does not decompress
	}
	if s.dErr != nil && s.kind != "" {
		what = s.kind // the tar reader only passes on what the decompressor said
	}
	if what == "" {
		what = "layer"
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return &pullkit.InvalidError{What: "layer archive", Reason: what, Err: err}
}

// sentinels are the errors of the module's vocabulary; a reader error that wraps none of
// them (nor a context error) is wrapped in ErrUnreachable: the blob stopped coming.
var sentinels = []error{
	pullkit.ErrNotFound, pullkit.ErrUnauthorized, pullkit.ErrDenied, pullkit.ErrTooManyRequests,
	pullkit.ErrDigestMismatch, pullkit.ErrSizeMismatch, pullkit.ErrNoMatch, pullkit.ErrUnsupported,
	pullkit.ErrInvalid, pullkit.ErrTooLarge, pullkit.ErrUnreachable, pullkit.ErrAlreadyExists,
	context.Canceled, context.DeadlineExceeded,
}

func sourceError(err error) error {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return err
		}
	}
	return fmt.Errorf("%w: reading the layer blob: %w", pullkit.ErrUnreachable, err)
}

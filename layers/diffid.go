package layers

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
)

// zstdMaxWindow bounds the window a zstd layer may ask the decoder to allocate. 128 MiB
// admits `zstd --long=27` and `--ultra -22` layers; a stream that asks for more is refused
// instead of making memory grow with what the network says.
const zstdMaxWindow = 128 << 20

// compression is a layer's compression, as sniffed from its first bytes.
type compression int

const (
	compNone compression = iota
	compGzip
	compZstd
)

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// sniff tells the compression from a layer's first bytes. The media type is not trusted:
// schema 1 says nothing, and the bytes are what the decompressor has to read.
func sniff(head []byte) compression {
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		return compGzip
	case bytes.HasPrefix(head, zstdMagic):
		return compZstd
	}
	return compNone
}

// Compression names the compression of a layer blob from its first bytes (four are
// enough): "gzip", "zstd", or "" for anything else (an uncompressed tar). Media types are
// not trusted for this: schema 1 calls every layer gzip, and the bytes are what a
// decompressor has to read.
func Compression(head []byte) string {
	switch sniff(head) {
	case compGzip:
		return "gzip"
	case compZstd:
		return "zstd"
	}
	return ""
}

// Decompress returns the uncompressed content of a layer blob read from r: gzip and zstd
// are sniffed from the first bytes and decompressed (zstd windows are bounded, so a
// stream cannot make memory grow with what it claims), anything else passes through.
// kind is what was found, as Compression says it. Decoder errors, also those Read returns
// for a corrupt stream, wrap ErrDecompress. Close releases the decoder; it does not close r.
func Decompress(r io.Reader) (rc io.ReadCloser, kind string, err error) {
	br := bufio.NewReaderSize(r, 32<<10)
	head, _ := br.Peek(len(zstdMagic)) // a shorter head is an uncompressed (tiny) blob
	switch sniff(head) {
	case compGzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, "gzip", fmt.Errorf("%w: gzip: %w", ErrDecompress, err)
		}
		return &decompressor{r: zr, kind: "gzip", close: func() { _ = zr.Close() }}, "gzip", nil
	case compZstd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			return nil, "zstd", fmt.Errorf("%w: zstd: %w", ErrDecompress, err)
		}
		return &decompressor{r: zr, kind: "zstd", close: zr.Close}, "zstd", nil
	}
	return &decompressor{r: br, close: func() {}}, "", nil
}

// decompressor is Decompress's result: reads wrap decoder errors in ErrDecompress, and
// Close releases the decoder once.
type decompressor struct {
	r      io.Reader
	kind   string // "" when passing through
	close  func()
	closed bool
}

func (d *decompressor) Read(p []byte) (int, error) {
	if d.closed {
		return 0, fmt.Errorf("read uncompressed layer: %w", os.ErrClosed)
	}
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF && d.kind != "" && !errors.Is(err, ErrDecompress) {
		err = fmt.Errorf("%w: %s: %w", ErrDecompress, d.kind, err)
	}
	return n, err
}

func (d *decompressor) Close() error {
	if !d.closed {
		d.closed = true
		d.close()
	}
	return nil
}

var (
	gzipPool sync.Pool // *gzip.Reader
	zstdPool sync.Pool // *zstd.Decoder
)

// diffIDOf reads a layer blob to its end and returns its diffID: the sha256 of the
// uncompressed content. blob is the blob's digest: an uncompressed sha256 blob is its own
// diffID, so its bytes are only drained.
// When drain is false (a file), an uncompressed sha256 blob is not read past its head.
func diffIDOf(r io.Reader, blob digest.Digest, drain bool) (digest.Digest, error) {
	br := bufio.NewReaderSize(r, 32<<10)
	head, _ := br.Peek(len(zstdMagic)) // a shorter head is an uncompressed (tiny) blob
	h := sha256.New()
	switch sniff(head) {
	case compGzip:
		zr, _ := gzipPool.Get().(*gzip.Reader)
		var err error
		if zr == nil {
			zr, err = gzip.NewReader(br)
		} else {
			err = zr.Reset(br)
		}
		if err != nil {
			return "", fmt.Errorf("%w: gzip: %v", ErrDecompress, err)
		}
		_, err = io.Copy(h, zr)
		gzipPool.Put(zr)
		if err != nil {
			return "", fmt.Errorf("%w: gzip: %v", ErrDecompress, err)
		}
	case compZstd:
		zr, _ := zstdPool.Get().(*zstd.Decoder)
		var err error
		if zr == nil {
			zr, err = zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow))
		} else {
			err = zr.Reset(br)
		}
		if err != nil {
			return "", fmt.Errorf("%w: zstd: %v", ErrDecompress, err)
		}
		_, err = io.Copy(h, zr)
		if rerr := zr.Reset(nil); rerr == nil && err == nil {
			zstdPool.Put(zr)
		} else {
			zr.Close()
		}
		if err != nil {
			return "", fmt.Errorf("%w: zstd: %v", ErrDecompress, err)
		}
	default:
		if blob.Algorithm() == digest.SHA256 {
			if drain {
				if _, err := io.Copy(io.Discard, br); err != nil {
					return "", err
				}
			}
			return blob, nil
		}
		if _, err := io.Copy(h, br); err != nil {
			return "", err
		}
	}
	return digest.NewDigest(digest.SHA256, h), nil
}

// diffIDer computes a diffID in a goroutine of its own from compressed bytes handed to it
// in whole buffers, so decompression overlaps the download without a byte-level channel
// and without copying: the transfer reads the body into a buffer taken from free, writes
// and hashes it, then passes the buffer on with feed and takes the next free one.
type diffIDer struct {
	in   chan []byte
	free chan []byte
	done chan struct{}
	got  digest.Digest
	err  error
}

// diffIDBuffers is how many buffers circulate between a transfer and its diffIDer.
const diffIDBuffers = 3

func newDiffIDer(blob digest.Digest, pool *bufPool) *diffIDer {
	d := &diffIDer{
		in:   make(chan []byte, diffIDBuffers),
		free: make(chan []byte, diffIDBuffers),
		done: make(chan struct{}),
	}
	for range diffIDBuffers {
		d.free <- pool.get()
	}
	go func() {
		defer close(d.done)
		cr := &chanReader{in: d.in, free: d.free}
		d.got, d.err = diffIDOf(cr, blob, true)
		cr.drain()
	}()
	return d
}

// next returns a free buffer to read into.
func (d *diffIDer) next() []byte { return <-d.free }

// feed hands b (a buffer from next, holding the next bytes of the blob) to the decompressor.
func (d *diffIDer) feed(b []byte) { d.in <- b }

// finish ends the input and returns the diffID. The buffers go back to pool.
func (d *diffIDer) finish(pool *bufPool) (digest.Digest, error) {
	close(d.in)
	<-d.done
	close(d.free)
	for b := range d.free {
		pool.put(b)
	}
	return d.got, d.err
}

// chanReader reads the buffers a diffIDer is fed, returning each to free once read.
type chanReader struct {
	in   <-chan []byte
	free chan<- []byte
	buf  []byte // the buffer being read, to return to free
	cur  []byte // its unread part
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
		c.free <- c.buf[:cap(c.buf)]
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

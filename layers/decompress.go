package layers

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
)

// zstdMaxWindow bounds the window a zstd layer may ask the decoder to allocate. 128 MiB
// admits `zstd --long=27` and `--ultra -22` layers; a stream that asks for more is refused
// instead of making memory grow with what the network says.
const zstdMaxWindow = 128 << 20

// Decompress returns the uncompressed content of a layer blob read from r: gzip and zstd
// are recognised by their first bytes and decompressed (zstd windows are bounded, so a
// stream cannot make memory grow with what it claims), anything else passes through.
// Concatenated gzip members are read one after the other; bytes after the last member
// that do not start another (the zero padding some tools leave) end the content, as
// the blob's digest covers them and the diffID does not.
// kind is what was found. Decoder errors, also those Read returns for a corrupt stream,
// wrap pullkit.ErrInvalid. Close releases the decoder; it does not close r.
func Decompress(r io.Reader) (rc io.ReadCloser, kind manifest.Compression, err error) {
	br := bufio.NewReaderSize(r, 32<<10)
	head, _ := br.Peek(4) // a shorter head is an uncompressed (tiny) blob
	switch kind = manifest.DetectCompression(head); kind {
	case manifest.Gzip:
		zr, _ := gzipPool.Get().(*gzip.Reader)
		if zr == nil {
			zr, err = gzip.NewReader(br)
		} else {
			err = zr.Reset(br)
		}
		if err != nil {
			return nil, kind, decompressErr(kind, err)
		}
		zr.Multistream(false)
		members := &gzipMembers{br: br, z: zr}
		return &decompressor{r: members, kind: kind, close: func() { _ = zr.Close(); gzipPool.Put(zr) }}, kind, nil
	case manifest.Zstd:
		zr, _ := zstdPool.Get().(*zstd.Decoder)
		if zr == nil {
			zr, err = zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow))
		} else {
			err = zr.Reset(br)
		}
		if err != nil {
			return nil, kind, decompressErr(kind, err)
		}
		return &decompressor{r: zr, kind: kind, close: func() {
			if zr.Reset(nil) == nil {
				zstdPool.Put(zr)
			} else {
				zr.Close()
			}
		}}, kind, nil
	}
	return &decompressor{r: br, kind: kind, close: func() {}}, kind, nil
}

// gzipMembers reads the members of a gzip stream one after the other and stops at the
// first bytes that do not start another member.
type gzipMembers struct {
	br   *bufio.Reader
	z    *gzip.Reader
	done bool
}

func (g *gzipMembers) Read(p []byte) (int, error) {
	for !g.done {
		n, err := g.z.Read(p)
		if err != io.EOF {
			return n, err
		}
		if head, _ := g.br.Peek(len(gzipMagic)); !bytes.Equal(head, gzipMagic) {
			g.done = true
			return n, io.EOF
		}
		if err := g.z.Reset(g.br); err != nil {
			return n, err
		}
		g.z.Multistream(false)
		if n > 0 {
			return n, nil
		}
	}
	return 0, io.EOF
}

var gzipMagic = []byte{0x1f, 0x8b}

var (
	gzipPool sync.Pool // *gzip.Reader
	zstdPool sync.Pool // *zstd.Decoder
)

func decompressErr(kind manifest.Compression, err error) error {
	return &pullkit.InvalidError{What: "layer", Reason: kind.String() + " stream does not decompress", Err: err}
}

// decompressor is Decompress's result: reads wrap decoder errors in pullkit.ErrInvalid,
// and Close releases the decoder once.
type decompressor struct {
	r      io.Reader
	kind   manifest.Compression
	close  func()
	closed bool
}

func (d *decompressor) Read(p []byte) (int, error) {
	if d.closed {
		return 0, fmt.Errorf("read uncompressed layer: %w", os.ErrClosed)
	}
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF && d.kind != manifest.Uncompressed && !errors.Is(err, pullkit.ErrInvalid) {
		err = decompressErr(d.kind, err)
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

// diffIDOf reads a layer blob to its end and returns its diffID, the sha256 of its
// uncompressed content; an uncompressed sha256 blob is its own diffID. It honours ctx
// between reads and while decompressing, so a small stream that expands without end is
// stopped by cancelling.
func diffIDOf(ctx context.Context, r io.Reader, blob digest.Digest) (digest.Digest, error) {
	rc, kind, err := Decompress(r)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(ctxWriter{ctx, h}, rc); err != nil {
		return "", err
	}
	if kind == manifest.Uncompressed && blob.Algorithm() == digest.SHA256 {
		return blob, nil
	}
	return digest.NewDigest(digest.SHA256, h), nil
}

// ctxWriter fails writes once ctx is done.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

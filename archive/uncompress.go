package archive

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// zstdMaxWindow bounds the memory a zstd frame may ask the decoder for (128 MiB admits
// `zstd --long=27` and `--ultra -22`); a blob that asks for more is refused.
const zstdMaxWindow = 128 << 20

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// Uncompressed returns the uncompressed content of a layer blob read from r, for a
// Layer's opener. The media type says what to expect: a gzip type ("+gzip", docker's
// ".tar.gzip", foreign layers) or a zstd type ("+zstd") must start with that format's
// magic number, or Uncompressed fails instead of writing a mislabelled blob. For an
// uncompressed type, an unknown one or none (schema 1 says nothing) the first bytes
// decide, as docker's own loader does: gzip and zstd are decompressed, anything else is
// passed through.
//
// Closing the result releases the decompressor and closes r when r is an io.Closer.
// Errors wrap ErrDecompress (and the decoder's error), including those returned by Read
// for a corrupt stream.
func Uncompressed(r io.Reader, mediaType string) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 32<<10)
	head, _ := br.Peek(len(zstdMagic)) // a shorter head is a tiny (uncompressed) blob
	isGzip, isZstd := bytes.HasPrefix(head, gzipMagic), bytes.HasPrefix(head, zstdMagic)
	want := compressionOf(mediaType)
	switch {
	case want == "gzip" && !isGzip, want == "zstd" && !isZstd:
		closeIf(r)
		return nil, fmt.Errorf("%w: media type %s but the content is not %s (starts % x)", ErrDecompress, mediaType, want, head)
	case isGzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			closeIf(r)
			return nil, fmt.Errorf("%w: gzip (media type %q): %w", ErrDecompress, mediaType, err)
		}
		return &decompressed{r: zr, kind: "gzip", close: func() { _ = zr.Close(); closeIf(r) }}, nil
	case isZstd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			closeIf(r)
			return nil, fmt.Errorf("%w: zstd (media type %q): %w", ErrDecompress, mediaType, err)
		}
		return &decompressed{r: zr, kind: "zstd", close: func() { zr.Close(); closeIf(r) }}, nil
	}
	return &decompressed{r: br, close: func() { closeIf(r) }}, nil
}

// compressionOf tells what compression a layer media type names: "gzip", "zstd", or ""
// for uncompressed, unknown or missing types.
func compressionOf(mediaType string) string {
	mt := strings.ToLower(strings.TrimSpace(strings.SplitN(mediaType, ";", 2)[0]))
	switch {
	case strings.HasSuffix(mt, "+gzip"), strings.HasSuffix(mt, ".tar.gzip"):
		return "gzip"
	case strings.HasSuffix(mt, "+zstd"), strings.HasSuffix(mt, ".tar.zstd"):
		return "zstd"
	}
	return ""
}

func closeIf(r io.Reader) {
	if c, ok := r.(io.Closer); ok {
		_ = c.Close()
	}
}

// decompressed is Uncompressed's result: reads wrap decoder errors in ErrDecompress,
// Close releases everything once.
type decompressed struct {
	r      io.Reader
	kind   string // "" when passing through
	close  func()
	closed bool
}

func (d *decompressed) Read(p []byte) (int, error) {
	if d.closed {
		return 0, fmt.Errorf("read uncompressed layer: %w", os.ErrClosed)
	}
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF && d.kind != "" && !errors.Is(err, ErrDecompress) {
		err = fmt.Errorf("%w: %s: %w", ErrDecompress, d.kind, err)
	}
	return n, err
}

func (d *decompressed) Close() error {
	if !d.closed {
		d.closed = true
		d.close()
	}
	return nil
}

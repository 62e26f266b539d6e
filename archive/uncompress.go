package archive

import (
	"fmt"
	"io"
	"strings"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
)

// Uncompressed returns the uncompressed content of a layer blob read from r, for a
// Layer's opener. The media type says what to expect: a gzip type ("+gzip", docker's
// ".tar.gzip", foreign layers) or a zstd type ("+zstd") must start with that format's
// magic number, or Uncompressed fails instead of writing a mislabelled blob. For an
// uncompressed type, an unknown one or none (schema 1 says nothing) the first bytes
// decide, as docker's own loader does: gzip and zstd are decompressed, anything else is
// passed through (see layers.Decompress, which does the decompressing).
//
// Closing the result releases the decompressor and closes r when r is an io.Closer.
// Errors wrap pullkit.ErrInvalid (and the decoder's error), including those returned by
// Read for a corrupt stream.
func Uncompressed(r io.Reader, mediaType string) (io.ReadCloser, error) {
	rc, kind, err := layers.Decompress(r)
	if err != nil {
		closeIf(r)
		return nil, fmt.Errorf("media type %q: %w", mediaType, err)
	}
	if want := compressionOf(mediaType); want != manifest.Uncompressed && kind != want {
		rc.Close()
		closeIf(r)
		return nil, &pullkit.InvalidError{What: "layer", Reason: fmt.Sprintf("media type %s but the content is %s", text.Clean(mediaType, 100), kind)}
	}
	return &closeBoth{ReadCloser: rc, r: r}, nil
}

// compressionOf tells what compression a layer media type names (Uncompressed for
// uncompressed, unknown or missing types).
func compressionOf(mediaType string) manifest.Compression {
	mt := strings.ToLower(strings.TrimSpace(strings.SplitN(mediaType, ";", 2)[0]))
	switch {
	case strings.HasSuffix(mt, "+gzip"), strings.HasSuffix(mt, ".tar.gzip"):
		return manifest.Gzip
	case strings.HasSuffix(mt, "+zstd"), strings.HasSuffix(mt, ".tar.zstd"):
		return manifest.Zstd
	}
	return manifest.Uncompressed
}

func closeIf(r io.Reader) {
	if c, ok := r.(io.Closer); ok {
		_ = c.Close()
	}
}

// closeBoth closes the decompressor and then the underlying reader.
type closeBoth struct {
	io.ReadCloser
	r io.Reader
}

func (c *closeBoth) Close() error {
	err := c.ReadCloser.Close()
	closeIf(c.r)
	return err
}

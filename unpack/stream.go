package unpack

import (
	"context"
	_ "crypto/sha256" // digest.SHA256 needs the hash registered
	_ "crypto/sha512" // and digest.SHA512 this one
	"errors"
	"fmt"
	"hash"
	"io"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
)

// source is the caller's blob reader: it checks the context before every read and keeps
// the first error that is not io.EOF, which is the cause whatever a decompressor makes
// of it.
type source struct {
	ctx context.Context
	r   io.Reader
	err error
	eof bool
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
type layerStream struct {
	ctx   context.Context
	src   *source
	dec   io.Reader
	kind  string // "gzip", "zstd" or "" (plain)
	dErr  error  // the decompressor's first error
	close func()
	h     hash.Hash
	alg   digest.Algorithm
	want  digest.Digest
}

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
	dec, kind, err := layers.Decompress(s.src)
	if err != nil {
		return nil, s.cause(err, kind.String())
	}
	s.dec, s.close = dec, func() { _ = dec.Close() }
	if kind != manifest.Uncompressed {
		s.kind = kind.String()
	}
	return s, nil
}

// Read reads uncompressed bytes.
func (s *layerStream) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := s.dec.Read(p)
	s.h.Write(p[:n])
	if err != nil && err != io.EOF && s.dErr == nil {
		s.dErr = err
	}
	return n, err
}

// finish reads what is left of the uncompressed stream (tar padding after the end of
// the archive counts in the diffID) and of the blob (bytes some tools leave after the
// compressed stream), so that the caller's reader has reported io.EOF, and checks the
// diffID.
func (s *layerStream) finish() (digest.Digest, error) {
	if _, err := io.Copy(io.Discard, s); err != nil {
		return "", s.cause(err, "decompress")
	}
	if _, err := io.Copy(io.Discard, s.src); err != nil {
		return "", s.cause(err, "")
	}
	if !s.src.eof {
		return "", s.cause(io.ErrUnexpectedEOF, "")
	}
	got := digest.NewDigest(s.alg, s.h)
	if s.want != "" && got != s.want {
		return got, &pullkit.DigestMismatchError{What: "uncompressed layer (diffID)", Want: s.want, Got: got}
	}
	return got, nil
}

func (s *layerStream) Close() { s.close() }

// cause turns an error met while reading into the module's vocabulary: the caller's
// reader's own error first (it is what happened), then the context, then a fault of the
// archive (what says "what" went wrong: "gzip", "zstd", "tar").
func (s *layerStream) cause(err error, what string) error {
	if s.src.err != nil {
		return sourceError(s.src.err)
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

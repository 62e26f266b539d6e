package layers

import (
	"errors"
	"fmt"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
)

// Sentinel errors. Every error Fetch returns for a blob is a *BlobError whose chain holds one
// of these (or a context error, or the Fetcher's own error), so callers test with errors.Is
// and read details with errors.As.
var (
	// ErrDigestMismatch: the bytes do not hash to the blob's digest. It is the same value as
	// pullkit.ErrDigestMismatch, and the detail is a *pullkit.DigestMismatchError.
	ErrDigestMismatch = pullkit.ErrDigestMismatch
	// ErrSizeMismatch: the blob has another size than its descriptor (or the server) says;
	// the detail is a *SizeMismatchError.
	ErrSizeMismatch = errors.New("size mismatch")
	// ErrDiffIDMismatch: the uncompressed layer does not hash to the diffID the image config
	// names; the detail is a *DiffIDMismatchError.
	ErrDiffIDMismatch = errors.New("diffID mismatch")
	// ErrDecompress: a diffID was asked for but the layer could not be decompressed.
	ErrDecompress = errors.New("layer decompression failed")
	// ErrStalled: no byte arrived for the stall timeout; the attempt was cancelled.
	ErrStalled = errors.New("transfer stalled")
	// ErrBadContentRange: a ranged request was answered with a missing, malformed or
	// different Content-Range than the one asked for.
	ErrBadContentRange = errors.New("bad Content-Range")
	// ErrBlobMissing: the store does not have a blob an operation needs.
	ErrBlobMissing = errors.New("blob not in store")
	// ErrBadLayout: a directory is not a usable OCI image layout.
	ErrBadLayout = errors.New("invalid OCI image layout")
)

// Operations named by BlobError.Op.
const (
	// OpFetch is the network transfer of a blob body.
	OpFetch = "fetch"
	// OpVerify is the check of a blob's digest and size.
	OpVerify = "verify"
	// OpDiffID is the computation or check of a layer's diffID.
	OpDiffID = "diffid"
	// OpStore is a read or write of the store on disk.
	OpStore = "store"
)

// BlobError reports the failure of one blob: which one, what was being done, and why.
type BlobError struct {
	// Digest is the blob's digest.
	Digest digest.Digest
	// Op is one of OpFetch, OpVerify, OpDiffID or OpStore.
	Op string
	// Err is the cause; it wraps one of the sentinels above, a context error, or an error of
	// the Fetcher or the file system.
	Err error
}

func (e *BlobError) Error() string {
	return fmt.Sprintf("%s blob %s: %v", e.Op, e.Digest, e.Err)
}

// Unwrap returns the cause.
func (e *BlobError) Unwrap() error { return e.Err }

// SizeMismatchError reports a blob whose length is not the expected one.
type SizeMismatchError struct {
	// Want is the expected size in bytes.
	Want int64
	// Got is the size found; for a body longer than Want it is the count read when the
	// transfer was stopped, so it may be less than the real length.
	Got int64
	// Source says where the wrong size came from, e.g. "body", "Content-Length" or
	// "Content-Range total".
	Source string
}

func (e *SizeMismatchError) Error() string {
	return fmt.Sprintf("size mismatch: want %d bytes, %s says %d", e.Want, e.Source, e.Got)
}

// Unwrap returns ErrSizeMismatch.
func (e *SizeMismatchError) Unwrap() error { return ErrSizeMismatch }

// DiffIDMismatchError reports a layer whose uncompressed content does not hash to the
// diffID the config names.
type DiffIDMismatchError struct {
	// Want is the diffID the caller expected (from the config's rootfs.diff_ids).
	Want digest.Digest
	// Got is the diffID computed from the layer.
	Got digest.Digest
}

func (e *DiffIDMismatchError) Error() string {
	return fmt.Sprintf("diffID mismatch: want %s, got %s", e.Want, e.Got)
}

// Unwrap returns ErrDiffIDMismatch.
func (e *DiffIDMismatchError) Unwrap() error { return ErrDiffIDMismatch }

// ContentRangeError reports a 206 answer whose Content-Range is not the one asked for.
type ContentRangeError struct {
	// Asked is the range that was requested.
	Asked Range
	// Header is the Content-Range header as received ("" when absent).
	Header string
	// Reason says what is wrong.
	Reason string
}

func (e *ContentRangeError) Error() string {
	end := "end"
	if e.Asked.End >= 0 {
		end = fmt.Sprint(e.Asked.End)
	}
	return fmt.Sprintf("bad Content-Range %q for bytes %d-%s: %s", e.Header, e.Asked.Start, end, e.Reason)
}

// Unwrap returns ErrBadContentRange.
func (e *ContentRangeError) Unwrap() error { return ErrBadContentRange }

func blobErr(d digest.Digest, op string, err error) error {
	var be *BlobError
	if errors.As(err, &be) && be.Digest == d {
		return err
	}
	return &BlobError{Digest: d, Op: op, Err: err}
}

// Package store holds what a pull leaves behind: content, blobs named by their digest,
// and names, image references that point at manifests. It follows containerd's content
// model in small Go interfaces: a writer that commits only bytes whose size and digest
// verify, and can be resumed; a reader at any offset; info, walk and delete; a name index;
// leases that keep a pull's blobs safe from garbage collection while it runs.
//
// Two implementations come with it. Layout is an OCI image layout directory (oci-layout,
// index.json, blobs/<alg>/<hex>) that skopeo, umoci and crane read as is, and that several
// processes may pull into at once. Memory keeps everything in memory, for tests and for
// engines that stream images elsewhere. storetest holds the conformance suite both pass,
// which any other implementation can run from its own tests.
//
// It is a package of its own because storage is the one stage every other is built
// around: the transfer writes into it, unpackers and exporters read from it, and engines
// bring their own.
//
// The interfaces' docs state every rule storetest checks; an implementation that keeps
// them passes it. Rules that hold for every method: a digest that is malformed or of an
// unavailable algorithm ("", "sha256:abc", upper-case hex, "md5:…", "sha256:../x") is
// refused with an error wrapping pullkit.ErrInvalid by Info, ReaderAt, Delete and Writer,
// and never names a file; an error about a blob names its digest, and one about a name
// names the name (a *pullkit.Error with one of the pullkit Op constants does both).
package store

import (
	"context"
	"errors"
	"io"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
)

// Info describes a blob a store holds.
type Info struct {
	// Digest names the blob.
	Digest digest.Digest
	// Size is its length in bytes.
	Size int64
	// Committed is when it got its name.
	Committed time.Time
}

// Provider reads blobs.
type Provider interface {
	// ReaderAt opens blob d for reading. A blob the store does not hold is an error
	// wrapping pullkit.ErrNotFound.
	ReaderAt(ctx context.Context, d digest.Digest) (ReaderAt, error)
}

// ReaderAt reads a committed blob at any offset, as io.ReaderAt says: a read that
// reaches the end returns the bytes it got with io.EOF.
type ReaderAt interface {
	io.ReaderAt
	io.Closer
	// Size is the blob's length in bytes.
	Size() int64
}

// Ingester writes blobs.
type Ingester interface {
	// Writer returns a writer for the blob desc (desc.Digest is required; desc.Size is
	// -1 when unknown). At most one writer of a digest is open at a time, across
	// processes for a Layout: Writer waits while another is open, until it is committed
	// or closed, or until ctx is done (then it returns ctx's error). When the store holds
	// the blob by then, or already did, Writer returns an error wrapping
	// pullkit.ErrAlreadyExists: of N writers asked for one digest at once, one writes and
	// N-1 find it committed. A new writer starts at Offset: what an earlier writer of the
	// digest left when it was closed without committing (0 when none did, or when that
	// writer's Commit failed). A store tells a caller that asked with WithWriterWait why
	// Writer makes it wait (optional: storetest does not require it).
	Writer(ctx context.Context, desc manifest.Descriptor) (Writer, error)
}

// Writer receives the bytes of one blob, in order. Nothing it holds is visible under the
// blob's name (Info, ReaderAt, Walk, Has) until Commit has verified it.
type Writer interface {
	// Write appends p at Offset. For a desc of known size, a Write that would take the
	// blob past it writes nothing and returns an error wrapping pullkit.ErrSizeMismatch
	// naming the digest. A Write after Commit or Close fails.
	io.Writer
	// Offset is how many bytes the writer holds: where the next Write lands, and where a
	// resumed transfer starts.
	Offset() int64
	// Truncate discards every byte from n on; Truncate(0) starts the blob over. Every
	// store supports 0; a store that cannot keep a shorter prefix returns an error
	// wrapping pullkit.ErrUnsupported for other values. Truncate past Offset fails.
	Truncate(n int64) error
	// Commit checks that what was written is size bytes long (unless size < 0) and hashes
	// to expected (desc.Digest when expected is ""; any other digest is refused with
	// pullkit.ErrInvalid), then gives the blob its name, and closes the writer:
	// Commit(-1, "") commits what was written as the writer's own digest, once it
	// verifies. On a mismatch the bytes are discarded (a later writer
	// starts at 0), nothing gets a name, and the error is a *pullkit.SizeMismatchError
	// (Want size, Got the bytes written) or a *pullkit.DigestMismatchError (Want expected,
	// Got what the bytes hash to), naming the digest. When another writer committed the
	// same blob meanwhile, Commit succeeds. Close after Commit returns nil.
	Commit(ctx context.Context, size int64, expected digest.Digest) error
	// Close releases the writer without committing. What it holds is kept for a later
	// writer of the same digest to resume, until garbage collection expires it.
	Close() error
}

// Range is a stretch of a blob's bytes: [Start, End).
type Range struct{ Start, End int64 }

// RangeWriter is a Writer that also keeps bytes that arrive out of order (the parallel
// ranges of a large blob), so that an interrupted transfer resumes with every stretch
// it received, not only the prefix it had hashed. Layout's and Memory's writers are
// RangeWriters; storetest checks these rules for any store whose writers are.
//
// Offset stays what has been taken in order and hashed: held bytes count towards the
// blob once Absorb (or a Write over them) has taken them, and Commit still verifies
// the whole blob. A writer of a digest opened later starts with the prefix and with
// every stretch an earlier writer held when it was closed (a Layout: when its process
// ended, however it ended). A stretch is recorded as held only once its bytes are
// written, so an interruption loses at most the stretches written last, and a writer
// never starts with bytes its store does not have. Truncate drops every held stretch;
// Commit first takes in order what is held from Offset on.
type RangeWriter interface {
	Writer
	// WriteAt keeps p at off, which must be at or beyond Offset and, for a descriptor
	// of known size, end within it (an error wrapping pullkit.ErrInvalid otherwise).
	// Stretches may overlap each other: the bytes written last are kept.
	WriteAt(p []byte, off int64) (int, error)
	// Held lists the stretches kept beyond Offset: sorted, disjoint, not touching.
	Held() []Range
	// Absorb takes held bytes at Offset in order, as Write would take them: it reads up
	// to len(p) of them into p, hashes them, moves Offset past them, and returns how
	// many it took (0 when no held stretch starts at Offset).
	Absorb(p []byte) (int, error)
}

// Content is a store of blobs.
type Content interface {
	Provider
	Ingester
	// Info describes blob d (its digest, size and when it was committed), or returns an
	// error wrapping pullkit.ErrNotFound that names d.
	Info(ctx context.Context, d digest.Digest) (Info, error)
	// Walk calls fn once for every committed blob, with its digest and size, in no
	// particular order, until fn returns an error (which Walk returns as it is).
	Walk(ctx context.Context, fn func(Info) error) error
	// Delete removes blob d, or returns an error wrapping pullkit.ErrNotFound that names
	// d. A deleted blob can be written again.
	Delete(ctx context.Context, d digest.Digest) error
}

// Image is a named entry of a store's index: an image reference and the manifest (or
// index) it names.
type Image struct {
	// Name is the full reference, e.g. "registry.example/team/app:1.0" or
	// "registry.example/team/app@sha256:…".
	Name string
	// Target describes the manifest or index; its blob is in the store.
	Target manifest.Descriptor
}

// Names is a store's index of named images.
type Names interface {
	// PutImage names img.Target img.Name, replacing that name's entry if there is one
	// and leaving every other entry as it is; names put at once, from several
	// goroutines, are all kept. An empty name (or one with control characters) is
	// refused with an error wrapping pullkit.ErrInvalid; a target blob the store does not
	// hold with one wrapping pullkit.ErrNotFound that names its digest. The caller's
	// img.Target.Annotations are not changed.
	PutImage(ctx context.Context, img Image) error
	// Image returns the entry for name: the target as put (digest, size, media type,
	// platform, its own annotations) with both name annotations, AnnotationRefName and
	// AnnotationImageName, set to name. A name the store lacks is an error wrapping
	// pullkit.ErrNotFound that names it.
	Image(ctx context.Context, name string) (Image, error)
	// Images lists every named entry, sorted by name.
	Images(ctx context.Context) ([]Image, error)
	// DeleteImage removes name's entry and those of name's platform names (PlatformName:
	// name + "@" + a platform), not their blobs: garbage collection does that. When there
	// is none of them, it returns an error wrapping pullkit.ErrNotFound.
	DeleteImage(ctx context.Context, name string) error
}

// Leaser protects blobs from garbage collection while they are being pulled.
type Leaser interface {
	// Lease starts a lease; it lasts until released (for a Layout, at the latest until the
	// process that holds it ends).
	Lease(ctx context.Context) (Lease, error)
}

// Lease holds blobs that garbage collection must not remove, whether or not a name
// reaches them yet, and what the manifests among them reference. A pull adds every
// digest it is about to check or write, before it does so.
type Lease interface {
	// Add holds the digests (committed yet or not). Add after Release fails.
	Add(ctx context.Context, ds ...digest.Digest) error
	// Release ends the lease; a second Release returns nil.
	Release() error
}

// Store is what a pull needs: content, names and leases.
type Store interface {
	Content
	Names
	Leaser
}

// Has reports whether s holds blob d.
func Has(ctx context.Context, s Content, d digest.Digest) bool {
	_, err := s.Info(ctx, d)
	return err == nil
}

// ReadBlob returns the whole of blob d, refusing one over limit bytes (with an error
// wrapping pullkit.ErrTooLarge): for manifests and configs, not layers.
func ReadBlob(ctx context.Context, p Provider, d digest.Digest, limit int64) ([]byte, error) {
	ra, err := p.ReaderAt(ctx, d)
	if err != nil {
		return nil, err
	}
	defer ra.Close()
	if ra.Size() > limit {
		return nil, &pullkit.TooLargeError{What: "blob " + string(d), Limit: limit, Size: ra.Size()}
	}
	b := make([]byte, ra.Size())
	if n, err := ra.ReadAt(b, 0); n < len(b) {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, &pullkit.Error{Op: pullkit.OpReadBlob, Digest: d, Err: err}
	}
	return b, nil
}

// WriteBlob stores data as the blob desc through a writer of s, verifying it. A blob s
// already holds is left as it is.
func WriteBlob(ctx context.Context, s Ingester, desc manifest.Descriptor, data []byte) error {
	w, err := s.Writer(ctx, desc)
	if errors.Is(err, pullkit.ErrAlreadyExists) {
		return nil
	}
	if err != nil {
		return err
	}
	if w.Offset() > 0 {
		if err := w.Truncate(0); err != nil {
			w.Close()
			return err
		}
	}
	if _, err := w.Write(data); err != nil {
		w.Close()
		return err
	}
	return w.Commit(ctx, desc.Size, desc.Digest)
}

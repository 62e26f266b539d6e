package layers

import (
	"context"
	"fmt"
	"io"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/store"
)

// Fetcher opens blob bodies; the puller's repository client implements it, and tests can
// implement it over anything.
type Fetcher interface {
	// Fetch returns the bytes of desc's blob from offset on: length of them, or to the
	// end of the blob when length < 0. The reader must yield exactly those bytes (the
	// transfer checks the count and the digest), unless it is a Served body that says
	// it yields the blob from an earlier offset to its end (a server that ignored the
	// range); it is closed by the caller. A fetcher that cannot give a range that ends
	// before the blob does returns an error wrapping pullkit.ErrUnsupported (or such a
	// Served body); every fetcher must accept offset 0 with length < 0. Cancelling ctx
	// must end the request and any read of its body.
	Fetch(ctx context.Context, desc manifest.Descriptor, offset, length int64) (io.ReadCloser, error)
}

// Link is what is known of the link a call's blobs come over: the measurements that
// size its requests and cap its connections, and whether the server serves ranges.
type Link struct {
	// RTT is the shortest request latency seen (to the response headers).
	RTT time.Duration
	// ConnRate is the best rate one connection got over a steady stretch, bytes/s.
	ConnRate float64
	// MaxConns is how many connections were flowing when the rate per connection fell
	// under 60% of the best (the link was full), 0 when that was not seen.
	MaxConns int
	// NoRanges says the server answers a range with the whole blob (or refuses it).
	NoRanges bool
	// Buffered is the most the Fetcher holds in memory at once, over all the bodies of
	// this link in flight, of bytes the transfer has not read yet (HTTP/2 flow-control
	// windows, say; not what the kernel's sockets hold). The transfer counts it against
	// its memory budget: its blocks and these bytes add up to the budget (a block per
	// part at the least), so that a reader held back (an unpack behind the download)
	// does not let the server fill both.
	Buffered int64
}

// A LinkMemory is a Fetcher that remembers links between calls: a call starts from what
// Link says of the link to its first large blob (its first requests and chunks sized
// for it rather than for an unknown link; no ranges tried where the server does not
// serve them), and tells Learnt what it measured once it ends. The puller keeps them per
// host for a Client's life.
type LinkMemory interface {
	Link(desc manifest.Descriptor) Link
	Learnt(desc manifest.Descriptor, l Link)
}

// Served is a body a Fetcher returns when the server sent other bytes than asked for: a
// registry or CDN that ignores Range answers with the whole blob. The transfer then takes
// it as the fetch of everything from the offset asked for to the blob's end (dropping
// what comes before that offset, and asking for nothing more), rather than closing it
// and paying for the blob a second time.
type Served interface {
	io.ReadCloser
	// ServedFrom is the offset of the body's first byte; the body runs to the blob's
	// end.
	ServedFrom() int64
}

// openBody asks f for desc's bytes from offset (length of them, or to the end when
// length < 0), and returns the body with the offset it really starts at, and whether it
// runs to the blob's end whatever was asked (a Served body).
func openBody(ctx context.Context, f Fetcher, desc manifest.Descriptor, offset, length int64) (rc io.ReadCloser, from int64, whole bool, err error) {
	rc, err = f.Fetch(ctx, desc, offset, length)
	if err != nil {
		return nil, 0, false, err
	}
	if s, ok := rc.(Served); ok {
		if from := s.ServedFrom(); from <= offset && from >= 0 {
			return rc, from, true, nil
		}
	}
	return rc, offset, false, nil
}

// A Restarter is a Fetcher that is told when the bytes it served for a blob did not
// verify (a digest or size mismatch), before the blob is fetched again from the start
// within the retry policy: a fetcher with several sources (mirrors, then the registry)
// moves on to the next one, so that one that keeps serving bad bytes does not use up
// the retries.
type Restarter interface {
	Fetcher
	Restart(desc manifest.Descriptor, err error)
}

// Blob is one blob to fetch.
type Blob struct {
	// Desc is the blob's descriptor; Size < 0 means unknown (schema 1 layers).
	Desc manifest.Descriptor
	// What names it in events and errors: "config" or "layer" (the default).
	What string
	// DiffID asks for the layer's diffID (the sha256 of its uncompressed content),
	// computed while the blob streams in, or from the store when it is already there.
	DiffID bool
	// Tee, when not nil, receives the blob's bytes in order while they are verified
	// (see Tee).
	Tee Tee
}

// A Tee receives a blob's bytes in order as the transfer hands them to the store, for
// work that should overlap the download (decompressing and applying a layer, say). The
// bytes are not verified until Close(nil): whatever the tee does with them must not
// become final before.
type Tee interface {
	// Open starts the blob; the bytes that follow begin at offset 0. It is called again
	// (after Close with an error) when the transfer starts the blob over.
	Open(desc manifest.Descriptor) (io.Writer, error)
	// Close ends the blob: err is nil when the bytes written verified against the
	// blob's digest and size, and the error that stopped the transfer otherwise. Its own
	// error fails the blob.
	Close(err error) error
}

// Result is the outcome for one Blob, at the same index.
type Result struct {
	// Desc is the blob's descriptor, with Size filled in when it was unknown.
	Desc manifest.Descriptor
	// DiffID is the layer's diffID, when it was asked for.
	DiffID digest.Digest
	// Fetched is false when this call downloaded nothing for the blob: the store had it,
	// or another transfer into the same store stored it meanwhile.
	Fetched bool
}

// Fetch downloads blobs into s and returns one Result per Blob, in order.
//
// Every byte is verified before a blob gets its name: the store's writer commits only
// content whose size and digest match. A blob the store has is not fetched again (one
// whose size is not the descriptor's is taken for damaged, removed and fetched again); a
// digest listed twice is fetched once; a transfer into the same store elsewhere (another
// call, another process) is waited for rather than repeated. A broken body is resumed
// from the byte it reached; a blob that does not verify is fetched again from the start;
// both within the retry policy. Connections are shared by all the blobs of the call (see
// WithJobs): small blobs keep several requests in flight, and the rest of a large blob is
// split into parallel ranges when its one stream proves to be what limits the transfer.
//
// On the first blob that fails for good the other transfers are cancelled and an error
// naming the blob (a *pullkit.Error) is returned, with the Results of the blobs that
// completed. What an interrupted transfer received stays in the store's writer for the
// next call to resume: the prefix, and with a store.RangeWriter every stretch beyond it.
func Fetch(ctx context.Context, f Fetcher, s store.Content, blobs []Blob, opts ...Option) ([]Result, error) {
	if f == nil || s == nil {
		return nil, &pullkit.InvalidError{What: "layers.Fetch", Reason: "nil Fetcher or store"}
	}
	o := defaultOptions()
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	for _, b := range blobs {
		if err := b.Desc.Digest.Validate(); err != nil {
			return nil, pullkit.WrapDetail("", pullkit.OpFetchBlob, "("+what(b)+")", b.Desc.Digest, &pullkit.InvalidError{What: "descriptor", Reason: "digest " + fmt.Sprintf("%q", string(b.Desc.Digest)), Err: err})
		}
	}
	return run(ctx, f, s, blobs, o)
}

func what(b Blob) string {
	if b.What == "" {
		return "layer"
	}
	return b.What
}

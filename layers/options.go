package layers

import (
	"fmt"
	"sync"
	"time"
	"unsafe"

	digest "github.com/opencontainers/go-digest"
)

// Defaults of Fetch's options.
const (
	// DefaultJobs is how many blob requests a Fetch keeps in flight.
	DefaultJobs = 4
	// DefaultMaxAttempts is how many attempts in a row may fail without moving a blob
	// forward before Fetch gives up on it.
	DefaultMaxAttempts = 5
	// DefaultStallTimeout is how long a body may send nothing before the attempt is
	// cancelled.
	DefaultStallTimeout = 30 * time.Second
	// DefaultRangeMinSize is the smallest blob that may be split into parallel ranged
	// requests (and only once no other blob of the Fetch is waiting for a request slot,
	// and its one stream proved to be the limit: see WithParallelRanges).
	DefaultRangeMinSize = 32 << 20
	// DefaultRangeParts is how many ranged requests one large blob may use at once (never
	// more than the jobs limit).
	DefaultRangeParts = 4
	// DefaultMaxUnknownSize caps a blob whose descriptor gives no size (schema 1): a
	// server cannot make such a transfer fill the disk.
	DefaultMaxUnknownSize = 16 << 30
	// DefaultBufferSize is the size of the copy buffers, which are also the pipe's blocks
	// (see WithDirectIO): a block is filled by reads, written with O_DIRECT in one call,
	// and hashed in one call. Writes through the page cache are made in 32 KiB pieces
	// whatever the buffer size.
	DefaultBufferSize = 1 << 20
)

// EventKind says what happened to a blob.
type EventKind int

// The kinds of Event, in the order a blob sees them.
const (
	// EventStarted: the blob is being fetched; Done is what the store already had of it
	// (a partial file from an earlier run), Total its size (-1 when unknown).
	EventStarted EventKind = iota + 1
	// EventProgress: Done bytes of Total have been received.
	EventProgress
	// EventResumed: a new attempt continues from Done after an interrupted one, or after
	// a partial file left by an earlier run was re-hashed.
	EventResumed
	// EventRestarted: the server ignored a Range request and sent the whole blob, so the
	// transfer starts over from byte 0 (nothing is appended twice).
	EventRestarted
	// EventVerified: the blob matched its digest and size and is in the store under its
	// final name. Done == Total == its size.
	EventVerified
	// EventSkipped: the store already had the blob (or another Fetch into the same store
	// fetched it meanwhile); nothing was downloaded for it by this call.
	EventSkipped
	// EventFailed: the blob failed; Err says why.
	EventFailed
)

func (k EventKind) String() string {
	switch k {
	case EventStarted:
		return "started"
	case EventProgress:
		return "progress"
	case EventResumed:
		return "resumed"
	case EventRestarted:
		return "restarted"
	case EventVerified:
		return "verified"
	case EventSkipped:
		return "skipped"
	case EventFailed:
		return "failed"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event reports the progress of one blob.
type Event struct {
	// Digest names the blob.
	Digest digest.Digest
	// Kind says what happened.
	Kind EventKind
	// Done is how many bytes of the blob are received (for EventProgress, monotonic per
	// blob between restarts).
	Done int64
	// Total is the blob's size, or -1 while it is unknown.
	Total int64
	// Err is the failure, for EventFailed.
	Err error
}

// Option configures Fetch.
type Option func(*options)

type options struct {
	jobs          int
	progress      func(Event)
	maxAttempts   int
	rangeMin      int64
	rangeParts    int
	rangeAdaptive bool  // split only a stream that proves to be the limit
	splitProbe    int64 // bytes a stream runs before the adaptive split looks at it
	chunkSize     int64 // 0: chosen from the blob size
	stall         time.Duration
	sync          bool
	bufSize       int
	backoff       time.Duration // first pause after an attempt that moved nothing
	maxUnknown    int64         // cap for blobs of unknown size
	direct        bool
}

func defaultOptions() options {
	return options{
		jobs:          DefaultJobs,
		maxAttempts:   DefaultMaxAttempts,
		rangeMin:      DefaultRangeMinSize,
		rangeParts:    DefaultRangeParts,
		rangeAdaptive: true,
		splitProbe:    splitProbe,
		stall:         DefaultStallTimeout,
		bufSize:       DefaultBufferSize,
		backoff:       100 * time.Millisecond,
		maxUnknown:    DefaultMaxUnknownSize,
		direct:        true,
	}
}

// WithJobs bounds how many blob requests are in flight at once (n < 1 means
// DefaultJobs). The parallel ranged requests of one large blob count against the same
// bound.
func WithJobs(n int) Option {
	return func(o *options) {
		if n < 1 {
			n = DefaultJobs
		}
		o.jobs = n
	}
}

// WithProgress sets a function that receives every Event. It is called synchronously
// from the transfer goroutines, possibly concurrently for different blobs (and for the
// parts of one ranged blob, though Done stays monotonic), so it must be quick and safe
// for concurrent use.
func WithProgress(fn func(Event)) Option {
	return func(o *options) { o.progress = fn }
}

// WithMaxAttempts sets how many attempts in a row may fail without receiving a byte
// before a blob fails (n < 1 means DefaultMaxAttempts). An attempt that moved the blob
// forward resets the count, so a long transfer over a flaky link keeps going as long as
// it progresses.
func WithMaxAttempts(n int) Option {
	return func(o *options) {
		if n < 1 {
			n = DefaultMaxAttempts
		}
		o.maxAttempts = n
	}
}

// WithParallelRanges splits every blob of at least minSize bytes (and known size) into
// ranged requests from its first byte, up to parts of them in flight at once (still
// within WithJobs). parts < 2 disables parallel ranges altogether. Servers that ignore
// Range get one plain request instead.
//
// Without this option, parallel ranges are adaptive: a blob of at least
// DefaultRangeMinSize starts as one stream, and only if that stream proves to be the
// limit (the hash and the disk waited for it) is the rest of the blob split into up to
// DefaultRangeParts ranged requests. On a fast link, where one stream already delivers
// more than sha256 can hash, extra connections would only cost the server work.
func WithParallelRanges(minSize int64, parts int) Option {
	return func(o *options) {
		o.rangeMin = minSize
		o.rangeParts = parts
		o.rangeAdaptive = false
	}
}

// WithMaxUnknownSize caps the size of a blob whose descriptor does not give one (Size <
// 0, as for schema 1 layers): a header announcing more, or a body running past n, fails
// the blob with ErrSizeMismatch and deletes what was received. Default
// DefaultMaxUnknownSize.
func WithMaxUnknownSize(n int64) Option {
	return func(o *options) { o.maxUnknown = n }
}

// WithStallTimeout cancels an attempt whose body sends no byte for d (and counts it as a
// failed attempt). d <= 0 disables the watchdog.
func WithStallTimeout(d time.Duration) Option {
	return func(o *options) { o.stall = d }
}

// WithSync makes each blob durable before it gets its final name (fsync of the file,
// then of its directory). Without it a blob survives a killed process but not
// necessarily a power loss.
func WithSync(on bool) Option {
	return func(o *options) { o.sync = on }
}

// WithBufferSize sets the size of the copy buffers (n < 4096 means DefaultBufferSize; a
// size that is not a multiple of 4096 gets no O_DIRECT writes). Memory use is a small
// multiple of jobs x n, plus the pipes' windows (see the package documentation),
// whatever the blob sizes.
func WithBufferSize(n int) Option {
	return func(o *options) {
		if n < 4096 {
			n = DefaultBufferSize
		}
		o.bufSize = n
	}
}

// WithDirectIO says whether blobs of a few MiB and more are written with O_DIRECT where
// the store's file system allows it (default true, Linux only). Direct writes skip the
// page cache: a pull of many GiB does not push the rest of the machine's cache out, is
// not charged to the puller's memory cgroup as dirty cache, and costs far less CPU than
// copying into freshly allocated cache pages. The price is that a later reader (an
// unpacker) reads the blob from the disk rather than from memory, and that the transfer
// waits for the disk rather than leaving the writing to the kernel: on a disk slower than
// the network, turn it off.
func WithDirectIO(on bool) Option {
	return func(o *options) { o.direct = on }
}

// bufPool recycles copy buffers of one size. Its buffers are aligned (see
// alignedBytes), so that any of them can serve as a pipe's block.
type bufPool struct {
	size int
	p    sync.Pool
}

func newBufPool(size int) *bufPool { return &bufPool{size: size} }

func (p *bufPool) get() []byte {
	if b, ok := p.p.Get().(*[]byte); ok {
		return *b
	}
	return alignedBytes(p.size)
}

// alignedBytes returns n bytes starting at a multiple of directAlign in memory, as
// O_DIRECT needs.
func alignedBytes(n int) []byte {
	b := make([]byte, n+directAlign)
	off := int(-uintptr(unsafe.Pointer(unsafe.SliceData(b))) & (directAlign - 1))
	return b[off : off+n : off+n]
}

func (p *bufPool) put(b []byte) {
	if cap(b) != p.size {
		return
	}
	b = b[:cap(b)]
	p.p.Put(&b)
}

package layers

import (
	"fmt"
	"time"

	"github.com/pullkit/pullkit"
)

// Defaults of Fetch's options.
const (
	// DefaultJobs is how many requests a Fetch keeps in flight at most: enough to cover a
	// long round trip with small blobs, and to fill a link whose connections are each
	// capped, as CDNs cap them.
	DefaultJobs = 16
	// DefaultTinyJobs is how many more requests a Fetch without WithJobs keeps in
	// flight for tiny blobs (of TinyBlobSize bytes at most, size known), beside the
	// DefaultJobs it keeps for all of them. Such a request is a round trip more than its
	// bytes: 256 KiB take 21 ms at 12.5 MB/s, under a WAN round trip. So an image of many
	// small layers is bound by round trips, and more of them at once shorten it (200 x
	// 64 KiB over a 40 ms link: 0.81 s with 16 in flight, 0.61 s with 32), for a few MiB
	// of buffers at most (DefaultTinyJobs x TinyBlobSize). Any failed request that is
	// retried (a 429, a 5xx, a connection refused or broken) turns them off for the rest
	// of the call, in case their number was the cause; WithJobs(n) bounds every request
	// at n, tiny blobs' included.
	DefaultTinyJobs = 16
	// TinyBlobSize is the most bytes of a blob that DefaultTinyJobs may fetch.
	TinyBlobSize = 256 << 10
	// DefaultMaxBlobSize caps the size of any blob, declared or not (1 TiB): a registry
	// cannot make a transfer plan for, or write, more.
	DefaultMaxBlobSize = 1 << 40
	// DefaultCancelGrace is how long a cancelled Fetch may go on reading the answers
	// to requests it had already made (see WithCancelGrace): about what a request
	// takes on a link of a few MB/s per connection.
	DefaultCancelGrace = time.Second
)

// Option configures Fetch; it returns an error for a value it cannot use.
type Option func(*options) error

type options struct {
	jobs     int
	tiny     int // requests for tiny blobs beside jobs (DefaultTinyJobs, 0 under WithJobs)
	progress func(pullkit.Event)
	retry    pullkit.RetryPolicy
	maxSize  int64
	ranges   bool
	// writerWait is how long a store's Writer may make a blob wait, without saying why,
	// before the wait is reported (a knob for tests; see writerWait).
	writerWait  time.Duration
	judge       judgement
	cancelGrace time.Duration
}

// judgement says how the transfer makes its timing-driven decisions: whether a large
// blob's one stream is what limits it (so that it is split into ranges, and more large
// blobs start beside it), how large its parts are, and how many connections are worth
// using. By default they are measured; the package's tests pin them, so that what they
// assert of the engine's decisions holds on a slow, loaded or -race machine.
type judgement int

const (
	// judgeMeasured decides by measurement (the default): see the controller.
	judgeMeasured judgement = iota
	// judgeNever judges no stream link-limited: each large blob is one stream,
	// resumed from the byte it reached, and at most firstStreams run at once.
	judgeNever
	// judgeAlways judges every large blob's streams link-limited from its first
	// response on; parts are cut at the fixed sizes (minPartSize, chunkSize) and no
	// connection cap is learnt from measured rates (a 429 still halves them).
	judgeAlways
)

// withJudgement pins the transfer's timing-driven decisions (see judgement).
func withJudgement(j judgement) Option {
	return func(o *options) error {
		o.judge = j
		return nil
	}
}

func defaultOptions() options {
	return options{jobs: DefaultJobs, tiny: DefaultTinyJobs, retry: pullkit.DefaultRetryPolicy(), maxSize: DefaultMaxBlobSize, ranges: true, writerWait: writerWait, cancelGrace: DefaultCancelGrace}
}

// WithJobs bounds how many requests are in flight at once, over all the blobs of the call
// and the parallel ranges of large ones. Fewer are used where more would not add
// throughput. Without it, a Fetch keeps up to DefaultJobs requests in flight, and up to
// DefaultTinyJobs more for blobs of at most TinyBlobSize bytes (see DefaultTinyJobs).
func WithJobs(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return &pullkit.InvalidError{What: "option WithJobs", Reason: fmt.Sprintf("%d: want at least 1", n)}
		}
		o.jobs, o.tiny = n, 0
		return nil
	}
}

// WithProgress sets a function that receives every Event of the transfer. It is called
// from the transfer's goroutines, possibly concurrently for different blobs, so it must
// be quick and safe for concurrent use.
func WithProgress(fn func(pullkit.Event)) Option {
	return func(o *options) error {
		o.progress = fn
		return nil
	}
}

// WithRetry sets the retry policy for blobs: how many attempts in a row may fail without
// moving a blob forward, and how long to wait between them (default
// pullkit.DefaultRetryPolicy). An attempt that moved the blob forward resets the count.
func WithRetry(p pullkit.RetryPolicy) Option {
	return func(o *options) error {
		if err := p.Validate(); err != nil {
			return err
		}
		o.retry = p
		return nil
	}
}

// WithMaxBlobSize caps the size of every blob (default DefaultMaxBlobSize): a descriptor
// that declares more, or a body of a blob of unknown size that runs past it, fails the
// blob with an error wrapping pullkit.ErrTooLarge before anything is planned or written.
func WithMaxBlobSize(n int64) Option {
	return func(o *options) error {
		if n < 1 {
			return &pullkit.InvalidError{What: "option WithMaxBlobSize", Reason: fmt.Sprintf("%d: want at least 1", n)}
		}
		o.maxSize = n
		return nil
	}
}

// WithRanges says whether a large blob may be fetched as parallel ranged requests when
// its one stream is what limits the transfer (default true). Turn it off for a registry
// that serves ranges badly.
func WithRanges(on bool) Option {
	return func(o *options) error {
		o.ranges = on
		return nil
	}
}

// WithCancelGrace bounds how long a Fetch whose context is done (cancelled, past its
// deadline, or stopped by a failure) goes on reading the answers to the requests it
// had already made (default DefaultCancelGrace). It asks for nothing more; what it
// reads is kept in the store's partial for the next Fetch, as what it had received is.
// A request closed before its end throws away what the server has sent and the client
// has not read (a round trip's worth of each connection: in the sockets, in HTTP/2
// windows), which the next Fetch then pays for again; reading the answers to their end
// avoids that, and takes the time the answers take, never more than the grace. 0 stops
// at once, keeping only what is already in hand.
func WithCancelGrace(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return &pullkit.InvalidError{What: "option WithCancelGrace", Reason: fmt.Sprintf("%v: want 0 or more", d)}
		}
		o.cancelGrace = d
		return nil
	}
}

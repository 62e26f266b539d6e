package puller

import (
	"fmt"
	"time"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/trust"
)

// PullOption configures one call (Pull, Inspect, Resolve, ResolveAll, PullArtifact); it
// returns an error for a value it cannot use.
type PullOption func(*pullOptions) error

type pullOptions struct {
	matcher  platforms.Matcher
	all      bool
	diffIDs  bool
	format   Format
	progress func(pullkit.Event)
	jobs     int
	jobsSet  bool
	tees     func(i int, l manifest.Layer) layers.Tee
	skip     func(i int, l manifest.Layer) bool
	verified func(*trust.Result) // WithVerified
	creds    CredentialsFunc

	// The transfer (issue 19): ranges on or off, connections per host, the cancel grace.
	noRanges    bool
	conns       int
	cancelGrace *time.Duration
}

// transfer returns the options of the call's layers.Fetch, its events going to progress.
func (o *pullOptions) transfer(retry pullkit.RetryPolicy, progress func(pullkit.Event)) []layers.Option {
	opts := []layers.Option{layers.WithProgress(progress), layers.WithRetry(retry), layers.WithRanges(!o.noRanges)}
	if o.jobsSet {
		opts = append(opts, layers.WithJobs(o.jobs))
	}
	if o.cancelGrace != nil {
		opts = append(opts, layers.WithCancelGrace(*o.cancelGrace))
	}
	return opts
}

// WithRanges says whether a large blob may be fetched as parallel ranged requests when
// its one stream is what limits the transfer (default true; see layers.WithRanges).
// Without them each blob is one request, resumed from the byte it reached: for a
// registry or a proxy that serves ranges badly.
func WithRanges(on bool) PullOption {
	return func(o *pullOptions) error {
		o.noRanges = !on
		return nil
	}
}

// WithConnsPerHost caps the blob requests the call keeps in flight to any one host
// (the registry, a mirror, the blob storage they redirect to), each of them a
// connection (default: no cap of its own, WithJobs bounds them all). For a registry
// or CDN that limits connections per client.
func WithConnsPerHost(n int) PullOption {
	return func(o *pullOptions) error {
		if n < 1 {
			return &pullkit.InvalidError{What: "option WithConnsPerHost", Reason: fmt.Sprintf("%d: want at least 1", n)}
		}
		o.conns = n
		return nil
	}
}

// WithCancelGrace bounds how long a call whose context is done goes on reading the
// answers to the blob requests it had already made, keeping them in the store's
// partial for the next call (default layers.DefaultCancelGrace; see
// layers.WithCancelGrace). It asks for nothing more; a request closed before its end
// throws away what the server had sent, which the next call pays for again. 0 stops at
// once.
func WithCancelGrace(d time.Duration) PullOption {
	return func(o *pullOptions) error {
		if d < 0 {
			return &pullkit.InvalidError{What: "option WithCancelGrace", Reason: fmt.Sprintf("%v: want 0 or more", d)}
		}
		o.cancelGrace = &d
		return nil
	}
}

func callOptions(opts []PullOption) (*pullOptions, error) {
	o := &pullOptions{format: FormatOCI, jobs: layers.DefaultJobs}
	for _, opt := range opts {
		if opt == nil {
			return nil, &pullkit.InvalidError{What: "pull option", Reason: "nil option"}
		}
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	if o.matcher == nil {
		o.matcher = platforms.Only(platforms.Default())
	}
	return o, nil
}

// emit reports ev when the call has a progress function.
func (o *pullOptions) emit(ev pullkit.Event) {
	if o.progress != nil {
		o.progress(ev)
	}
}

// WithPlatform chooses p from lists and indexes, with the rules of platforms.Only. The
// platform a call is for (p, or by default platforms.Default(): linux on this machine's
// architecture) is also checked against the image itself, as containerd does: a config
// (or a schema 1 manifest) that names another platform fails the call with a
// *platforms.NoMatchError naming both (Op pullkit.OpCheckPlatform), whether the image
// was chosen from an index or is the only one the reference names. An engine that
// takes whatever platform a reference names opts out with
// WithMatcher(platforms.Any()).
func WithPlatform(p platforms.Platform) PullOption {
	return func(o *pullOptions) error {
		if p.OS == "" || p.Architecture == "" {
			return &pullkit.InvalidError{What: "option WithPlatform", Reason: "os and architecture are required"}
		}
		o.matcher = platforms.Only(p)
		return nil
	}
}

// WithMatcher chooses from lists and indexes with m, as an engine with its own policy
// needs; like WithPlatform it is checked against the image's config.
// WithMatcher(platforms.Any()) takes an image for any platform, and checks nothing.
func WithMatcher(m platforms.Matcher) PullOption {
	return func(o *pullOptions) error {
		if m == nil {
			return &pullkit.InvalidError{What: "option WithMatcher", Reason: "nil matcher"}
		}
		o.matcher = m
		return nil
	}
}

// anyPlatform reports whether the call takes every platform (platforms.Any): nothing to
// check, nothing to fetch for the check.
func (o *pullOptions) anyPlatform() bool { return o.matcher == platforms.Any() }

// WithAllPlatforms pulls every platform of an index (attestations aside) and stores the
// index (converted to the stored format) as well as each platform's image. The image
// returned describes the platform the matcher prefers, with every platform's image in
// its Platforms.
func WithAllPlatforms() PullOption {
	return func(o *pullOptions) error {
		o.all = true
		return nil
	}
}

// WithDiffIDCheck makes Pull decompress every layer while it streams and check it
// against the config's rootfs.diff_ids, failing with pullkit.ErrDigestMismatch when a
// layer is not the one the config describes. Off by default, as in containerd and
// go-containerregistry: every blob is verified against its digest either way, and
// decompressing costs more CPU than hashing. Schema 1 layers always have their diffIDs
// computed, since their config is synthesised from them.
func WithDiffIDCheck(on bool) PullOption {
	return func(o *pullOptions) error {
		o.diffIDs = on
		return nil
	}
}

// Format is the image manifest format a pull stores.
type Format int

const (
	// FormatOCI stores OCI manifests and indexes (converted from Docker's; same blobs, new
	// manifest digests): what skopeo, umoci and other OCI tools read from a layout.
	FormatOCI Format = iota + 1
	// FormatDocker stores Docker schema 2 manifests and manifest lists.
	FormatDocker
	// FormatAsServed stores the manifests as the registry served them, keeping their
	// digests (schema 1 still becomes schema 2, its config synthesised).
	FormatAsServed
	// FormatSchema1 stores a signed Docker schema 1 conversion (ephemeral key), for old
	// consumers; a schema 1 image is stored as served.
	FormatSchema1
)

func (f Format) String() string {
	switch f {
	case FormatOCI:
		return "oci"
	case FormatDocker:
		return "docker"
	case FormatAsServed:
		return "as served"
	case FormatSchema1:
		return "schema 1"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// WithFormat sets the manifest format a pull stores (default FormatOCI).
func WithFormat(f Format) PullOption {
	return func(o *pullOptions) error {
		if f < FormatOCI || f > FormatSchema1 {
			return &pullkit.InvalidError{What: "option WithFormat", Reason: f.String() + " is not a format"}
		}
		o.format = f
		return nil
	}
}

// WithProgress sets a function that receives every event of the call: manifests,
// config and blobs (see pullkit.Event). It is called from the call's goroutines,
// possibly concurrently, so it must be quick and safe for concurrent use.
func WithProgress(fn func(pullkit.Event)) PullOption {
	return func(o *pullOptions) error {
		o.progress = fn
		return nil
	}
}

// WithJobs bounds how many requests the call keeps in flight, tiny blobs' included.
// Without it, the call keeps up to layers.DefaultJobs requests in flight, and up to
// layers.DefaultTinyJobs more for blobs of at most layers.TinyBlobSize bytes, whose
// requests are round trips more than bytes.
func WithJobs(n int) PullOption {
	return func(o *pullOptions) error {
		if n < 1 {
			return &pullkit.InvalidError{What: "option WithJobs", Reason: fmt.Sprintf("%d: want at least 1", n)}
		}
		o.jobs, o.jobsSet = n, true
		return nil
	}
}

// WithSkipLayers leaves out of the download every layer for which fn returns true:
// fn(i, l) is asked for each layer (index in the image, base first, with its diffID
// when the config gives one) after WithLayerTees's fn, before the transfer starts. An
// unpack pipeline passes its Skip, so that a layer whose snapshot exists is neither
// downloaded nor read from the store, whether or not the store holds its blob (a disk
// policy may have dropped it: unpack.Pipeline.DropBlobs). The image is stored and named
// as usual; its model keeps every layer.
func WithSkipLayers(fn func(i int, l manifest.Layer) bool) PullOption {
	return func(o *pullOptions) error {
		o.skip = fn
		return nil
	}
}

// WithLayerTees gives each layer's bytes, in order as they are verified, to the Tee fn
// returns for it (nil: none), for work that overlaps the download, such as unpacking.
// fn is called with each layer's index in the image (base first) before the transfer
// starts. Schema 1 throwaway layers get none.
func WithLayerTees(fn func(i int, l manifest.Layer) layers.Tee) PullOption {
	return func(o *pullOptions) error {
		o.tees = fn
		return nil
	}
}

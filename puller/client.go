package puller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/pullkit/pullkit/platforms"
	"golang.org/x/sync/singleflight"
)

// Defaults of a Client made by New without options.
const (
	// DefaultMaxManifestSize caps a manifest or config document (4 MiB, like
	// containerd and distribution).
	DefaultMaxManifestSize = 4 << 20
	// DefaultRetryAttempts is how many times an idempotent request is tried in all.
	DefaultRetryAttempts = 4
	// DefaultRetryBase is the first backoff; later ones double, with jitter.
	DefaultRetryBase = 250 * time.Millisecond
	// DefaultMaxRetryAfter caps the wait a 429's Retry-After can impose.
	DefaultMaxRetryAfter = 60 * time.Second
	// DefaultUserAgent is sent when WithUserAgent is not given.
	DefaultUserAgent = "pullkit"

	maxBackoff    = 10 * time.Second
	maxIndexDepth = 4
)

// Client talks to registries: it resolves references, negotiates and verifies
// manifests, picks a platform and hands out per-repository blob fetchers. A Client is
// safe for concurrent use; it remembers one authenticated connection per repository.
type Client struct {
	platform      platforms.Platform
	keychain      authn.Keychain
	plainHTTP     bool
	base          http.RoundTripper
	maxManifest   int64
	attempts      int
	retryBase     time.Duration
	maxRetryAfter time.Duration
	userAgent     string
	mirrors       map[string][]string // registry → mirror hosts, in order
	noFallback    bool                // never ask a registry that has mirrors itself
	checkDiffIDs  bool                // Resolved.Fetch checks layers against rootfs.diff_ids

	// sleep and now are replaced by tests to observe waits without waiting.
	sleep func(ctx context.Context, d time.Duration) error
	now   func() time.Time

	mu    sync.Mutex
	repos map[string]*Repository
	group singleflight.Group
}

// Option configures a Client.
type Option func(*Client)

// WithPlatform sets the platform chosen from manifest lists and indexes (default:
// manifest.DefaultPlatform, linux on the host's architecture). It is normalised as
// manifest.Choose does, so "linux/arm64" and "linux/arm64/v8" are the same.
func WithPlatform(p platforms.Platform) Option {
	return func(c *Client) { c.platform = p }
}

// WithKeychain sets where credentials come from (default authn.DefaultKeychain: the
// docker config.json and its credential helpers). Pass authn.NewMultiKeychain to
// combine several.
func WithKeychain(k authn.Keychain) Option {
	return func(c *Client) {
		if k != nil {
			c.keychain = k
		}
	}
}

// WithPlainHTTP allows plain HTTP to any registry. Without it only loopback registries
// (localhost, 127.0.0.0/8, ::1) are spoken to over HTTP; every other host must be HTTPS.
func WithPlainHTTP(allow bool) Option {
	return func(c *Client) { c.plainHTTP = allow }
}

// maxIdlePerHost is how many idle connections the default transport keeps per registry:
// enough for the default jobs and the parallel ranged parts of a blob.
const maxIdlePerHost = 16

// WithTransport sets the HTTP transport under authentication and retries (default: a
// clone of http.DefaultTransport keeping up to 16 idle connections per host).
func WithTransport(rt http.RoundTripper) Option {
	return func(c *Client) {
		if rt != nil {
			c.base = rt
		}
	}
}

// WithMaxManifestSize caps manifest and config documents (default
// DefaultMaxManifestSize). Bodies are read through the cap, whatever Content-Length says.
func WithMaxManifestSize(n int64) Option {
	return func(c *Client) {
		if n > 0 {
			c.maxManifest = n
		}
	}
}

// WithRetry sets how many times an idempotent request is tried in all (1 disables
// retries) and the first backoff, which doubles (with jitter) up to 10s.
func WithRetry(attempts int, base time.Duration) Option {
	return func(c *Client) {
		c.attempts = max(attempts, 1)
		c.retryBase = max(base, 0)
	}
}

// WithMaxRetryAfter caps how long a 429's Retry-After may make a request wait
// (default DefaultMaxRetryAfter).
func WithMaxRetryAfter(d time.Duration) Option {
	return func(c *Client) { c.maxRetryAfter = max(d, 0) }
}

// WithUserAgent sets the User-Agent prefix (default DefaultUserAgent).
func WithUserAgent(ua string) Option {
	return func(c *Client) {
		if ua != "" {
			c.userAgent = ua
		}
	}
}

// WithDiffIDCheck makes Resolved.Fetch decompress every layer while it streams and
// check it against the config's rootfs.diff_ids, failing with layers.ErrDiffIDMismatch
// when a layer is not the one the config describes. It is off by default, as in
// containerd's and go-containerregistry's fetchers: every blob is verified against its
// digest either way, and decompressing costs more CPU than hashing (it halved
// throughput on 8 x 64 MiB in bench/run.sh), so engines that unpack, and compute
// diffIDs then, need not pay for it twice. Schema 1 layers always have their diffIDs
// computed, since their config is synthesised from them.
func WithDiffIDCheck(check bool) Option {
	return func(c *Client) { c.checkDiffIDs = check }
}

// WithMirrors makes the client ask endpoints (host or host:port, e.g. "mirror.local:5000")
// before registry (e.g. "docker.io") for every repository of that registry, in order,
// falling back to the registry itself, as containerd's hosts configuration does. Mirrors
// serve the same repository paths (Docker Hub's official images under "library/"). A
// mirror may answer tags as well as digests; every manifest and blob it serves is still
// verified against the digest that names it. Repeated calls add to the list.
func WithMirrors(registry string, endpoints ...string) Option {
	return func(c *Client) {
		if c.mirrors == nil {
			c.mirrors = map[string][]string{}
		}
		key := registry
		if r, err := name.NewRegistry(registry); err == nil {
			key = r.RegistryStr()
		}
		c.mirrors[key] = append(c.mirrors[key], endpoints...)
	}
}

// WithMirrorFallback says whether a registry that has mirrors (WithMirrors) is itself
// asked when every mirror fails (default true, as containerd and the docker daemon do).
// With false the registry is never contacted for a repository it has mirrors for:
// manifests and blobs come from the mirrors only, and when they all fail the pull fails
// with the last mirror's error, which names that mirror and wraps the sentinel for what
// went wrong there (ErrUnreachable, ErrNotFound, ErrUnauthorized, …). Use it where the
// registry is unreachable or must not see the traffic (an air-gapped site, a pull-through
// cache that is the only way out). Registries without mirrors are not affected.
func WithMirrorFallback(allow bool) Option {
	return func(c *Client) { c.noFallback = !allow }
}

// endpoints lists where repo is looked for: its registry's mirrors, then the registry
// (unless WithMirrorFallback(false)).
func (c *Client) endpoints(repo name.Repository) ([]name.Repository, error) {
	mirrors := c.mirrors[repo.RegistryStr()]
	if len(mirrors) == 0 {
		return []name.Repository{repo}, nil
	}
	out := make([]name.Repository, 0, len(mirrors)+1)
	for _, m := range mirrors {
		var opts []name.Option
		if c.plainHTTP || isLoopback(m) {
			opts = append(opts, name.Insecure)
		}
		reg, err := name.NewRegistry(m, opts...)
		if err != nil {
			return nil, fmt.Errorf("%w: mirror %q of %s: %s", ErrBadReference, m, repo.RegistryStr(), err.Error())
		}
		out = append(out, reg.Repo(repo.RepositoryStr()))
	}
	if c.noFallback {
		return out, nil
	}
	return append(out, repo), nil
}

// New returns a Client configured by opts.
func New(opts ...Option) *Client {
	c := &Client{
		keychain:      authn.DefaultKeychain,
		maxManifest:   DefaultMaxManifestSize,
		attempts:      DefaultRetryAttempts,
		retryBase:     DefaultRetryBase,
		maxRetryAfter: DefaultMaxRetryAfter,
		userAgent:     DefaultUserAgent,
		sleep:         sleepContext,
		now:           time.Now,
		repos:         map[string]*Repository{},
	}
	for _, o := range opts {
		o(c)
	}
	if c.base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// net/http keeps 2 idle connections per host by default, so with 4 blobs in
		// flight every other request opened a new connection (19 connections for 200 small
		// blobs, against 6 for the benchmark's floor).
		t.MaxIdleConnsPerHost = maxIdlePerHost
		c.base = t
	}
	return c
}

// Platform returns the platform the client chooses from indexes.
func (c *Client) Platform() platforms.Platform {
	if c.platform.OS == "" && c.platform.Architecture == "" {
		return platforms.Default()
	}
	return platforms.Normalize(c.platform)
}

// ParseReference parses ref as go-containerregistry does (docker.io and library/ are
// implied), marking loopback registries, or every registry under WithPlainHTTP, as
// reachable over plain HTTP.
func (c *Client) ParseReference(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %s", ErrBadReference, ref, err.Error())
	}
	if c.plainHTTP || isLoopback(r.Context().RegistryStr()) {
		if r, err = name.ParseReference(ref, name.Insecure); err != nil {
			return nil, fmt.Errorf("%w %q: %s", ErrBadReference, ref, err.Error())
		}
	}
	return r, nil
}

// Repository returns the client for the repository ref names (a reference string with
// or without tag or digest), authenticating on first use: it pings the registry and,
// for bearer challenges, fetches a token with the repository's pull scope. Under
// WithMirrorFallback(false) it is the first of the registry's mirrors that
// authenticates (later mirrors serve the blobs it lacks), never the registry itself.
func (c *Client) Repository(ctx context.Context, ref string) (*Repository, error) {
	r, err := c.ParseReference(ref)
	if err != nil {
		return nil, &Error{Reference: ref, Op: "parse reference", Err: err}
	}
	if c.noFallback && len(c.mirrors[r.Context().RegistryStr()]) > 0 {
		return c.mirrorRepository(ctx, ref, r.Context())
	}
	repo, err := c.repository(ctx, r.Context())
	if err != nil {
		return nil, &Error{Reference: ref, Op: "authenticate to " + r.Context().RegistryStr(), Err: err}
	}
	return repo, nil
}

// mirrorRepository is Repository for a registry whose mirrors must not fall back to it.
func (c *Client) mirrorRepository(ctx context.Context, ref string, origin name.Repository) (*Repository, error) {
	endpoints, err := c.endpoints(origin)
	if err != nil {
		return nil, &Error{Reference: ref, Op: "configure mirrors", Err: err}
	}
	var lastErr error
	for i, ep := range endpoints {
		repo, err := c.repository(ctx, ep)
		if err != nil {
			lastErr = &Error{Reference: ref, Op: "authenticate to mirror " + ep.RegistryStr() + " (no fallback to " + origin.RegistryStr() + ")", Err: err}
			if ctx.Err() != nil {
				break
			}
			continue
		}
		return repo.withFallback(endpoints[i+1:]), nil
	}
	return nil, lastErr
}

// withFallback returns r, or when rest is not empty a copy of r that asks rest, in order,
// for blobs r does not have (the endpoints after r in the mirror list).
func (r *Repository) withFallback(rest []name.Repository) *Repository {
	if len(rest) == 0 {
		return r
	}
	fb := *r
	fb.fallback = rest
	return &fb
}

// repository returns the cached Repository for repo or builds one.
func (c *Client) repository(ctx context.Context, repo name.Repository) (*Repository, error) {
	key := repo.Name()
	c.mu.Lock()
	if r, ok := c.repos[key]; ok {
		c.mu.Unlock()
		return r, nil
	}
	c.mu.Unlock()
	v, err, _ := c.group.Do(key, func() (any, error) {
		r, err := c.newRepository(ctx, repo)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.repos[key] = r
		c.mu.Unlock()
		return r, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*Repository), nil
}

// roundTripper is the stack every request goes through below authentication:
// user agent, retries, the plain-HTTP guard, then the base transport.
func (c *Client) roundTripper() http.RoundTripper {
	rt := http.RoundTripper(&plainHTTPGuard{inner: c.base, allow: c.plainHTTP})
	rt = &retryTransport{
		inner:         rt,
		attempts:      c.attempts,
		base:          c.retryBase,
		maxBackoff:    maxBackoff,
		maxRetryAfter: c.maxRetryAfter,
		sleep:         c.sleep,
		now:           c.now,
	}
	return transport.NewUserAgent(rt, c.userAgent)
}

func (c *Client) newRepository(ctx context.Context, repo name.Repository) (*Repository, error) {
	auth, err := authn.Resolve(ctx, c.keychain, repo.Registry)
	if err != nil {
		return nil, fmt.Errorf("%w: read credentials for %s: %s", ErrUnauthorized, repo.RegistryStr(), err.Error())
	}
	base := c.roundTripper()
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, base, []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, transportError(err, "GET", repo.Scheme()+"://"+repo.RegistryStr()+"/v2/", "a registry API endpoint (ping or token)")
	}
	return &Repository{
		client: c,
		name:   repo,
		http:   &http.Client{Transport: rt, CheckRedirect: checkRedirect},
		anon:   &http.Client{Transport: base, CheckRedirect: checkRedirect},
	}, nil
}

// transportError turns go-containerregistry's handshake errors into ours.
func transportError(err error, method, u, expected string) error {
	var te *transport.Error
	if errors.As(err, &te) {
		he := &HTTPError{Method: method, URL: u, StatusCode: te.StatusCode, Expected: expected}
		if te.Request != nil && te.Request.URL != nil {
			he.Method, he.URL = te.Request.Method, redactURL(te.Request.URL)
		}
		for _, d := range te.Errors {
			he.Codes = append(he.Codes, printable(string(d.Code), 64))
			if he.Message == "" {
				he.Message = printable(d.Message, 200)
			}
		}
		return he
	}
	var ue *url.Error
	if errors.As(err, &ue) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrInsecure) {
		return connError(err)
	}
	// Anything else is the handshake itself: an unusable challenge or realm.
	return fmt.Errorf("%w: %w", ErrUnauthorized, err)
}

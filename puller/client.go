package puller

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
	"github.com/pullkit/pullkit/trust"
)

// DefaultMaxManifestSize caps a manifest, index or config (4 MiB, as containerd and
// distribution do).
const DefaultMaxManifestSize = 4 << 20

// Client talks to registries. It is safe for concurrent use, and worth keeping: it
// remembers, for its life, how each registry authenticates and the tokens it handed out,
// and keeps connections open.
type Client struct {
	keychain    authn.Keychain
	plainHTTP   bool
	base        http.RoundTripper
	maxManifest int64
	retry       pullkit.RetryPolicy
	timeouts    Timeouts
	userAgent   string
	mirrors     map[string][]string // registry → mirror hosts, in order
	noFallback  bool
	verifier    trust.Verifier // nil: no verification (WithVerifier)
	trust       trustCache

	// sleep and now are replaced by tests to observe waits without waiting.
	sleep func(ctx context.Context, d time.Duration) error
	now   func() time.Time

	hc   *http.Client // authenticated, for registries
	anon *http.Client // no credentials, for foreign-layer URLs

	mu      sync.Mutex
	schemes map[string]string // registry host → "https" or "http", once learnt
}

// Option configures a Client; it returns an error for a value it cannot use.
type Option func(*Client) error

// WithKeychain sets where credentials come from (default authn.DefaultKeychain: the
// docker config.json and its credential helpers).
func WithKeychain(k authn.Keychain) Option {
	return func(c *Client) error {
		if k == nil {
			return &pullkit.InvalidError{What: "option WithKeychain", Reason: "nil keychain"}
		}
		c.keychain = k
		return nil
	}
}

// WithPlainHTTP allows plain HTTP to every registry. Without it only loopback registries
// ("localhost", 127.0.0.0/8, ::1) are spoken to over HTTP.
func WithPlainHTTP(allow bool) Option {
	return func(c *Client) error {
		c.plainHTTP = allow
		return nil
	}
}

// WithTransport sets the HTTP transport under authentication and retries (default: one
// with the client's Timeouts, 16 idle connections per registry, and a dialer that keeps a
// registry from sending the puller to loopback or link-local addresses; a transport given
// here must bring its own timeouts).
func WithTransport(rt http.RoundTripper) Option {
	return func(c *Client) error {
		if rt == nil {
			return &pullkit.InvalidError{What: "option WithTransport", Reason: "nil transport"}
		}
		c.base = rt
		return nil
	}
}

// WithMaxManifestSize caps manifests, indexes and configs (default
// DefaultMaxManifestSize); bodies are read through the cap, whatever they announce.
func WithMaxManifestSize(n int64) Option {
	return func(c *Client) error {
		if n < 1 {
			return &pullkit.InvalidError{What: "option WithMaxManifestSize", Reason: fmt.Sprintf("%d: want at least 1", n)}
		}
		c.maxManifest = n
		return nil
	}
}

// WithRetry sets the retry policy for every request and every blob (default
// pullkit.DefaultRetryPolicy).
func WithRetry(p pullkit.RetryPolicy) Option {
	return func(c *Client) error {
		if err := p.Validate(); err != nil {
			return err
		}
		c.retry = p
		return nil
	}
}

// WithTimeouts sets the deadlines of every request phase (default DefaultTimeouts).
func WithTimeouts(t Timeouts) Option {
	return func(c *Client) error {
		if err := t.validate(); err != nil {
			return err
		}
		c.timeouts = t
		return nil
	}
}

// WithUserAgent sets the User-Agent (default "pullkit").
func WithUserAgent(ua string) Option {
	return func(c *Client) error {
		if ua == "" || strings.ContainsAny(ua, "\r\n") {
			return &pullkit.InvalidError{What: "option WithUserAgent", Reason: "empty or more than one line"}
		}
		c.userAgent = ua
		return nil
	}
}

// WithMirrors makes the client ask endpoints (host or host:port) before registry (e.g.
// "docker.io") for every repository of that registry, in order, falling back to the
// registry itself, as containerd's hosts configuration does. A mirror may answer tags as
// well as digests; every manifest and blob it serves is still verified against the digest
// that names it. Repeated calls add to the list.
func WithMirrors(registry string, endpoints ...string) Option {
	return func(c *Client) error {
		r, err := name.NewRegistry(registry)
		if err != nil {
			return &pullkit.InvalidError{What: "option WithMirrors", Reason: "registry " + text.Clean(registry, 100), Err: err}
		}
		for _, ep := range endpoints {
			if _, err := name.NewRegistry(ep); err != nil {
				return &pullkit.InvalidError{What: "option WithMirrors", Reason: "mirror " + text.Clean(ep, 100), Err: err}
			}
		}
		if c.mirrors == nil {
			c.mirrors = map[string][]string{}
		}
		c.mirrors[r.RegistryStr()] = append(c.mirrors[r.RegistryStr()], endpoints...)
		return nil
	}
}

// WithMirrorFallback says whether a registry that has mirrors is itself asked when every
// mirror fails (default true, as containerd and the docker daemon do). With false the
// registry is never contacted for a repository it has mirrors for: use it where the
// registry is unreachable or must not see the traffic.
func WithMirrorFallback(allow bool) Option {
	return func(c *Client) error {
		c.noFallback = !allow
		return nil
	}
}

// New returns a Client configured by opts, or the error of the first option that
// refuses its value.
func New(opts ...Option) (*Client, error) {
	c := &Client{
		keychain:    authn.DefaultKeychain,
		maxManifest: DefaultMaxManifestSize,
		retry:       pullkit.DefaultRetryPolicy(),
		timeouts:    DefaultTimeouts(),
		userAgent:   "pullkit",
		sleep:       pullkit.Sleep,
		now:         time.Now,
		schemes:     map[string]string{},
	}
	for _, o := range opts {
		if o == nil {
			return nil, &pullkit.InvalidError{What: "puller.New", Reason: "nil option"}
		}
		if err := o(c); err != nil {
			return nil, err
		}
	}
	base := c.base
	if base == nil {
		base = newBaseTransport(c.timeouts)
	}
	guarded := &guardTransport{inner: base, plainHTTP: c.plainHTTP}
	watched := &watchTransport{inner: guarded, t: c.timeouts}
	retried := func(rt http.RoundTripper) http.RoundTripper {
		return &retryTransport{inner: rt, policy: c.retry, sleep: func(ctx context.Context, d time.Duration) error { return c.sleep(ctx, d) }, now: func() time.Time { return c.now() }}
	}
	auth := &authTransport{inner: watched, tokens: withUserAgent(retried(watched), c.userAgent), keychain: c.keychain, plain: c.plainHTTP, regs: map[string]*regAuth{}}
	c.hc = &http.Client{Transport: withUserAgent(retried(auth), c.userAgent), CheckRedirect: checkRedirect}
	c.anon = &http.Client{Transport: withUserAgent(retried(watched), c.userAgent), CheckRedirect: checkRedirect}
	return c, nil
}

// scheme returns how registry host is spoken to: HTTPS, or plain HTTP for loopback
// registries (and every registry under WithPlainHTTP), unless it was found to answer
// only HTTPS.
func (c *Client) scheme(host string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.schemes[host]; ok {
		return s
	}
	if c.plainHTTP || isLoopbackName(host) {
		return "http"
	}
	return "https"
}

// learnScheme records that host answers only s.
func (c *Client) learnScheme(host, s string) {
	c.mu.Lock()
	c.schemes[host] = s
	c.mu.Unlock()
}

// uaTransport sets the User-Agent of every request.
type uaTransport struct {
	inner http.RoundTripper
	ua    string
}

func withUserAgent(rt http.RoundTripper, ua string) http.RoundTripper { return &uaTransport{rt, ua} }

func (t *uaTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.Header.Set("User-Agent", t.ua)
	return t.inner.RoundTrip(r)
}

package puller

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/config/auth"
	"github.com/pullkit/pullkit/config/registries"
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

	// Per-host connections (profile.go, scheme.go, route.go).
	proxy          func(*http.Request) (*url.URL, error)
	trustedProxies sync.Map                // host:port of proxies the proxy function named
	allHosts       *hostProfile            // TLS options for every host
	tlsByHost      map[string]*hostProfile // TLS options per host
	insecureWhy    map[string]string       // why a host is insecure, for Plan
	hostsDir       string
	regConf        *registries.Config
	mirrorTimeouts MirrorTimeouts
	route          *routeTransport
	tlsOptions     bool // a TLS option was given
	proxySet       bool // WithProxy was given

	// What is learnt of each host's link, for the client's life (link.go).
	links sync.Map // host:port -> *hostLink

	// Credentials (creds.go).
	static      map[string]Credential
	credFunc    CredentialsFunc
	authFiles   []*auth.File
	authFileSet bool

	mu            sync.Mutex
	schemes       map[string]string       // registry host → "https" or "http", once learnt
	profiles      map[string]*hostProfile // host → its profile, once built
	hostsCache    map[string]hostsEntry   // registry → its hosts directory, once read
	entryProfiles map[string]profileEntry // hosts.toml entry → its profile, once built
	httpHosts     map[string]bool         // hosts a hosts.toml names insecure (http://, skip_verify)
	kc            map[string]*keychainEntry
	deadMirrors   map[string]time.Time // mirror host → skipped until then (MirrorTimeouts.Remember)
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

// WithPlainHTTP forces plain HTTP to every registry. Without it every registry is asked
// over HTTPS first, and only loopback registries ("localhost", 127.0.0.0/8, ::1) and
// registries named insecure are then spoken to over plain HTTP, when they do not speak
// TLS. A registry that answers only TLS fails a forced plain-HTTP request with an error
// that says so, whatever its plain-HTTP answer says.
func WithPlainHTTP(allow bool) Option {
	return func(c *Client) error {
		c.plainHTTP = allow
		return nil
	}
}

// WithTransport sets the HTTP transport under authentication and retries (default: one
// per host profile, with the client's Timeouts, TLS options and proxy, 16 idle
// connections per registry, and a dialer that keeps a registry from sending the puller
// to loopback or link-local addresses; a transport given here must bring its own
// timeouts, TLS settings and proxy, and cannot be combined with WithRootCAs,
// WithClientCertificate or WithProxy).
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
		keychain:      authn.DefaultKeychain,
		maxManifest:   DefaultMaxManifestSize,
		retry:         pullkit.DefaultRetryPolicy(),
		timeouts:      DefaultTimeouts(),
		userAgent:     "pullkit",
		sleep:         pullkit.Sleep,
		now:           time.Now,
		schemes:       map[string]string{},
		profiles:      map[string]*hostProfile{},
		hostsCache:    map[string]hostsEntry{},
		entryProfiles: map[string]profileEntry{},
		httpHosts:     map[string]bool{},
		kc:            map[string]*keychainEntry{},

		mirrorTimeouts: DefaultMirrorTimeouts(),
		proxy:          envProxy(),
	}
	for _, o := range opts {
		if o == nil {
			return nil, &pullkit.InvalidError{What: "puller.New", Reason: "nil option"}
		}
		if err := o(c); err != nil {
			return nil, err
		}
	}
	if !c.authFileSet {
		// containers' REGISTRY_AUTH_FILE is read as WithAuthFile would, when set.
		if p := os.Getenv("REGISTRY_AUTH_FILE"); p != "" {
			if f, err := auth.Load(p); err == nil {
				c.authFiles = append(c.authFiles, f)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, &pullkit.InvalidError{What: "REGISTRY_AUTH_FILE", Reason: text.Clean(p, 200), Err: err}
			}
		}
	}
	base := c.base
	if base == nil {
		c.route = &routeTransport{c: c, bases: map[*hostProfile]*http.Transport{}}
		base = c.route
		// Every TLS option must build: fail now rather than at the first request.
		if _, err := c.allHosts.tlsConfig(); err != nil {
			return nil, err
		}
		for _, p := range c.tlsByHost {
			if _, err := p.tlsConfig(); err != nil {
				return nil, err
			}
		}
	} else if c.allHosts != nil || c.tlsOptions || c.proxySet {
		return nil, &pullkit.InvalidError{What: "puller.New", Reason: "WithTransport brings its own TLS settings and proxy: it cannot be combined with WithRootCAs, WithClientCertificate or WithProxy"}
	}
	guarded := &guardTransport{inner: base, plainHTTP: c.plainHTTP, insecure: c.insecureHost}
	watched := &watchTransport{inner: guarded, t: c.timeouts}
	schemed := &schemeTransport{inner: watched, c: c}
	retried := func(rt http.RoundTripper) http.RoundTripper {
		return &retryTransport{inner: rt, policy: c.retry, sleep: func(ctx context.Context, d time.Duration) error { return c.sleep(ctx, d) }, now: func() time.Time { return c.now() }}
	}
	auth := &authTransport{inner: schemed, tokens: withUserAgent(retried(watched), c.userAgent), c: c, regs: map[string]*regAuth{}}
	c.hc = &http.Client{Transport: withUserAgent(retried(auth), c.userAgent), CheckRedirect: checkRedirect}
	c.anon = &http.Client{Transport: withUserAgent(retried(watched), c.userAgent), CheckRedirect: checkRedirect}
	return c, nil
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

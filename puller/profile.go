package puller

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
)

// The per-host seam. Every connection the client makes goes through one routeTransport
// (the bottom of the stack, under the guard and watch layers), which picks the base
// transport of the request's host profile: the TLS settings (extra root CAs, client
// certificates, verification skipped for a host named insecure) and the dial deadline
// that host gets. Each profile has its own *http.Transport (its own connection pool),
// built once with the client's Timeouts, the guarded dialer and the client's proxy, so a
// per-host setting never loses a deadline or a guard. Per-host protocol choices (HTTP/1
// or HTTP/2, connections per host) belong here too, as fields of hostProfile read by
// newBaseTransport.

// hostProfile is how connections to one host are made. The zero profile is the
// default: the system's roots, no client certificate, verification on.
type hostProfile struct {
	// roots holds the extra root CAs in PEM, added to the system's pool; caFiles says
	// where they came from (for Plan).
	roots   [][]byte
	caFiles []string
	// certs are client certificates offered for mutual TLS; certFiles says where from.
	certs     []tls.Certificate
	certFiles []string
	// insecure is docker's insecure-registry rule: TLS without verification first, then
	// plain HTTP when the server does not speak TLS. Dangerous: anyone on the path can
	// impersonate the registry.
	insecure bool
}

// empty reports whether p changes nothing from the default.
func (p *hostProfile) empty() bool {
	return p == nil || (len(p.roots) == 0 && len(p.certs) == 0 && !p.insecure)
}

// merge returns p with q's settings added (q's insecure wins when set).
func (p *hostProfile) merge(q *hostProfile) *hostProfile {
	if q.empty() {
		return p
	}
	if p.empty() {
		return q
	}
	return &hostProfile{
		roots:     append(append([][]byte(nil), p.roots...), q.roots...),
		caFiles:   append(append([]string(nil), p.caFiles...), q.caFiles...),
		certs:     append(append([]tls.Certificate(nil), p.certs...), q.certs...),
		certFiles: append(append([]string(nil), p.certFiles...), q.certFiles...),
		insecure:  p.insecure || q.insecure,
	}
}

// tlsConfig builds the profile's TLS client configuration.
func (p *hostProfile) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if p == nil {
		return cfg, nil
	}
	if len(p.roots) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		for i, pem := range p.roots {
			if !pool.AppendCertsFromPEM(pem) {
				what := "a root CA given as an option"
				if i < len(p.caFiles) && p.caFiles[i] != "" {
					what = p.caFiles[i]
				}
				return nil, &pullkit.InvalidError{What: "root CA", Reason: text.Clean(what, 200) + " holds no PEM certificate"}
			}
		}
		cfg.RootCAs = pool
	}
	cfg.Certificates = p.certs
	cfg.InsecureSkipVerify = p.insecure //nolint:gosec // docker's insecure-registry rule, asked for by name
	return cfg, nil
}

// readCA reads a PEM file of root CAs for a profile.
func readCA(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return nil, &pullkit.InvalidError{What: "root CA", Reason: text.Clean(path, 200) + " holds no PEM certificate"}
	}
	return b, nil
}

// readKeyPair reads a client certificate and its key (keyFile "" when the key is in
// certFile too, as containerd's hosts.toml allows).
func readKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM := certPEM
	if keyFile != "" {
		if keyPEM, err = os.ReadFile(keyFile); err != nil {
			return tls.Certificate{}, err
		}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, &pullkit.InvalidError{What: "client certificate", Reason: text.Clean(certFile, 200), Err: err}
	}
	return cert, nil
}

// routeTransport is the seam: it sends each request through the base transport of its
// profile, building each once.
type routeTransport struct {
	c *Client

	mu       sync.Mutex
	bases    map[*hostProfile]*http.Transport
	h1       map[*hostProfile]*http.Transport // HTTP/1.1-only variants (link.go)
	sessions map[*hostProfile]tls.ClientSessionCache
}

// sessionCacheSize is how many TLS sessions a profile's cache keeps: one per host
// (server name) the profile's connections go to, most recent first.
const sessionCacheSize = 64

// tlsConfig is the TLS configuration of a transport of profile p (under rt.mu). All of
// a profile's transports (its own, its HTTP/1.1 variant, every lane) share one session
// cache, so that a connection after a host's first resumes its TLS session: the
// handshake then skips the server's certificate chain and its verification (3-5 KB on
// public registries and CDNs), once per lane, and a pull opens up to 32 lanes per host.
// Only connections made with the same TLS settings share it.
func (rt *routeTransport) tlsConfig(p *hostProfile) (*tls.Config, error) {
	cfg, err := p.tlsConfig()
	if err != nil {
		return nil, err
	}
	if rt.sessions == nil {
		rt.sessions = map[*hostProfile]tls.ClientSessionCache{}
	}
	if rt.sessions[p] == nil {
		rt.sessions[p] = tls.NewLRUClientSessionCache(sessionCacheSize)
	}
	cfg.ClientSessionCache = rt.sessions[p]
	return cfg, nil
}

func (rt *routeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	p := rt.c.profileOf(req)
	tr, err := rt.base(p)
	if err != nil {
		return nil, err
	}
	return rt.viaLink(p, tr, req)
}

func (rt *routeTransport) base(p *hostProfile) (*http.Transport, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if tr := rt.bases[p]; tr != nil {
		return tr, nil
	}
	cfg, err := rt.tlsConfig(p)
	if err != nil {
		return nil, err
	}
	tr := newBaseTransport(rt.c.timeouts, cfg, rt.c.proxyFor, rt.c.proxyTrusted)
	// It is a host's first lane too (hostLink.acquire): its windows are a lane's most.
	tr.HTTP2 = laneH2(laneWindows / maxLanes)
	rt.bases[p] = tr
	return tr, nil
}

// CloseIdleConnections closes the idle connections of every profile's transport (and
// of their variants).
func (rt *routeTransport) CloseIdleConnections() {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for _, tr := range rt.bases {
		tr.CloseIdleConnections()
	}
	for _, tr := range rt.h1 {
		tr.CloseIdleConnections()
	}
	rt.c.links.Range(func(_, v any) bool {
		hl := v.(*hostLink)
		hl.mu.Lock()
		for _, ln := range hl.lanes {
			ln.tr.CloseIdleConnections()
		}
		hl.mu.Unlock()
		return true
	})
}

// profileOf is the profile for req: its endpoint's when it goes to the endpoint's host
// (a hosts.toml entry's TLS settings), else the one for its host (options, a hosts
// directory's certs for that host), else the default.
func (c *Client) profileOf(req *http.Request) *hostProfile {
	ri := infoOf(req.Context())
	if ri.profile != nil && sameHostPort(req.URL, ri.endpointHost) {
		return ri.profile
	}
	return c.hostProfile(hostPort(req.URL))
}

// hostProfile is the profile for connections to host:port whatever endpoint leads
// there: the options for every host and for that host, and the hosts directory's TLS
// files for it. Built once per host.
func (c *Client) hostProfile(host string) *hostProfile {
	c.mu.Lock()
	p, ok := c.profiles[host]
	c.mu.Unlock()
	if ok {
		return p
	}
	p = c.allHosts
	if q := c.tlsByHost[host]; q != nil {
		p = p.merge(q)
	}
	if q := c.hostsDirProfile(host); q != nil {
		p = p.merge(q)
	}
	if c.regConf != nil && c.regConf.Insecure(dirName(host)) {
		p = p.merge(&hostProfile{insecure: true})
	}
	if p.empty() {
		p = nil
	}
	c.mu.Lock()
	if old, ok := c.profiles[host]; ok {
		p = old
	} else {
		c.profiles[host] = p
	}
	c.mu.Unlock()
	return p
}

// hostPort is u's host:port, the port filled in from the scheme.
func hostPort(u *url.URL) string {
	return canonicalHost(u)
}

// sameHostPort reports whether u goes to host (host[:port], the port defaulting to u's
// scheme's).
func sameHostPort(u *url.URL, host string) bool {
	if host == "" {
		return false
	}
	h := &url.URL{Scheme: u.Scheme, Host: host}
	return canonicalHost(u) == canonicalHost(h)
}

// proxyFor is the proxy function of every base transport: the client's (from the
// environment when the client was made, or WithProxy), noting each proxy it names so
// that the dialer trusts its address.
func (c *Client) proxyFor(req *http.Request) (*url.URL, error) {
	if c.proxy == nil {
		return nil, nil
	}
	u, err := c.proxy(req)
	if err != nil || u == nil {
		return u, err
	}
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "https":
			port = "443"
		case "socks5", "socks5h":
			port = "1080"
		default:
			port = "80"
		}
	}
	c.trustedProxies.Store(net.JoinHostPort(u.Hostname(), port), true)
	return u, nil
}

// proxyTrusted reports whether addr (host:port) is a proxy the user configured.
func (c *Client) proxyTrusted(addr string) bool {
	_, ok := c.trustedProxies.Load(addr)
	return ok
}

// dialTimeout is the connect deadline of a dial made for ctx's request: its endpoint's
// (a mirror's, hosts.toml's dial_timeout), else the client's.
func dialTimeout(ctx context.Context, def time.Duration) time.Duration {
	if d := infoOf(ctx).connect; d > 0 {
		return d
	}
	return def
}

// describeProfile says what a profile does, for Plan.
func describeProfile(p *hostProfile) string {
	if p.empty() {
		return "system roots"
	}
	var parts []string
	if p.insecure {
		parts = append(parts, "verification SKIPPED (insecure)")
	}
	if len(p.roots) > 0 {
		parts = append(parts, "system roots + "+sources(p.caFiles, len(p.roots), "an option's PEM"))
	} else {
		parts = append(parts, "system roots")
	}
	if len(p.certs) > 0 {
		parts = append(parts, "client certificate "+sources(p.certFiles, len(p.certs), "an option's certificate"))
	}
	return strings.Join(parts, "; ")
}

// sources names n settings by the files they came from (files[i], or byOption when
// an option gave it).
func sources(files []string, n int, byOption string) string {
	names := make([]string, n)
	for i := range names {
		names[i] = byOption
		if i < len(files) && files[i] != "" {
			names[i] = files[i]
		}
	}
	return strings.Join(names, ", ")
}

// notTLS reports an HTTPS request answered by a server that does not speak TLS: the
// first record was not a TLS handshake (a plain-HTTP server answering, or anything
// else that is not TLS).
func notTLS(err error) bool {
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return true
	}
	return strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}

// fmtHost names a host in errors.
func fmtHost(h string) string { return text.Clean(h, 100) }

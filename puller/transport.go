package puller

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
	"github.com/pullkit/pullkit/layers"
)

// The HTTP stack every request goes through, outermost first: the user agent; retries
// (retryTransport); authentication (authTransport); the scheme a registry speaks, HTTPS
// first (schemeTransport); the body deadlines (watchTransport); the plain-HTTP and
// address guards (guardTransport); the per-host seam (routeTransport, profile.go),
// which picks the base transport of the request's host profile: its TLS settings, a
// dialer that refuses loopback and link-local addresses for registries that are not on
// them (proxies the user configured aside), the proxy, and timeouts that bound
// connecting, the TLS handshake and the wait for response headers.

// Timeouts bounds every phase of every request, so that a registry that stops answering
// fails the pull instead of hanging it. The defaults let a slow but honest registry
// through (a 1 GiB layer at 1 MB/s finishes) and fail a stalled one within about a
// minute, with an error that names the step.
type Timeouts struct {
	// Connect bounds a TCP connection's set-up.
	Connect time.Duration
	// TLSHandshake bounds the TLS handshake.
	TLSHandshake time.Duration
	// ResponseHeader bounds the wait for a response's headers once the request is sent
	// (1xx responses do not restart it).
	ResponseHeader time.Duration
	// Idle is the longest a response body may send nothing.
	Idle time.Duration
	// MinRate is the slowest a response body may be, in bytes per second, measured over
	// every RateWindow; 0 turns the rule off.
	MinRate int64
	// RateWindow is the stretch MinRate is measured over.
	RateWindow time.Duration
}

// DefaultTimeouts are the Timeouts of a client made without WithTimeouts: 15 s for a
// connection, 10 s for a TLS handshake, 15 s for response headers, 15 s of silence in a
// body, and at least 1 KiB/s over every 15 s. A registry that stops answering fails each
// attempt within 15 s, so within about a minute over the default retry policy's four
// attempts; a layer at 1 MB/s passes every rule, however large it is.
func DefaultTimeouts() Timeouts {
	return Timeouts{Connect: 15 * time.Second, TLSHandshake: 10 * time.Second, ResponseHeader: 15 * time.Second,
		Idle: 15 * time.Second, MinRate: 1 << 10, RateWindow: 15 * time.Second}
}

func (t Timeouts) validate() error {
	for _, d := range []time.Duration{t.Connect, t.TLSHandshake, t.ResponseHeader, t.Idle, t.RateWindow} {
		if d <= 0 {
			return &pullkit.InvalidError{What: "option WithTimeouts", Reason: "every duration must be positive"}
		}
	}
	if t.MinRate < 0 {
		return &pullkit.InvalidError{What: "option WithTimeouts", Reason: "negative MinRate"}
	}
	return nil
}

// reqInfo travels with a request in its context: who it is for and how to treat it.
type reqInfo struct {
	origin   string // the registry's host:port; requests it leads to elsewhere are checked against it
	repo     string // repository path, for the token scope
	step     string // what the request is for, named in errors ("manifest", "blob sha256:…")
	what     string // what it fetches, as events name it ("manifest", "config", "layer", "token")
	digest   digest.Digest
	noRetry  bool // the caller retries (blob bodies)
	blob     bool // a blob's bytes: spread over a host's lanes under HTTP/2 (link.go)
	progress func(pullkit.Event)
	credSent bool // set by authTransport when it sent credentials

	// Set by the endpoint a request is for (endpoint.request).
	endpointHost string        // the endpoint's host[:port]; profile applies to requests there
	profile      *hostProfile  // TLS settings for the endpoint's host, nil for the default
	connect      time.Duration // dial deadline for the endpoint, 0 for the client's
	firstByte    time.Duration // deadline for the response headers, 0 for the client's
	oneShot      bool          // a failed connection is not tried again: a later endpoint is
	dead         func() bool   // reports the endpoint found dead meanwhile (nil: never skipped)
	cred         *credential   // what to authenticate with, nil for none
	strip        []string      // headers of the endpoint's configuration, dropped when a redirect leaves it
}

type infoKey struct{}

// progressKey carries a call's progress function to the requests it makes, so that the
// waits they make are reported (see withProgress).
type progressKey struct{}

// withProgress makes the requests of ctx report their waits to fn.
func withProgress(ctx context.Context, fn func(pullkit.Event)) context.Context {
	if fn == nil {
		return ctx
	}
	return context.WithValue(ctx, progressKey{}, fn)
}

func progressOf(ctx context.Context) func(pullkit.Event) {
	fn, _ := ctx.Value(progressKey{}).(func(pullkit.Event))
	return fn
}

func withInfo(ctx context.Context, ri *reqInfo) context.Context {
	return context.WithValue(ctx, infoKey{}, ri)
}

func infoOf(ctx context.Context) *reqInfo {
	ri, _ := ctx.Value(infoKey{}).(*reqInfo)
	if ri == nil {
		return &reqInfo{}
	}
	return ri
}

// maxIdlePerHost is how many idle connections the default transport keeps per registry:
// as many as a Fetch uses at most by default (layers.DefaultJobs, and
// layers.DefaultTinyJobs beside them for tiny blobs), so that none is closed between
// two requests and opened again at the cost of a handshake.
const maxIdlePerHost = layers.DefaultJobs + layers.DefaultTinyJobs

// lookupIPAddr resolves names for the default transport's dialer (a variable for the
// package's tests, which resolve test names to loopback).
var lookupIPAddr = net.DefaultResolver.LookupIPAddr

// newBaseTransport is the base transport of one host profile: a clone of net/http's
// with the client's timeouts, the profile's TLS configuration, the client's proxy, more
// idle connections, and a dialer that keeps registries off addresses they have no
// business sending the puller to (a proxy the user configured is trusted, whatever its
// address; the registry's name is then resolved by the proxy).
func newBaseTransport(t Timeouts, tlsCfg *tls.Config, proxy func(*http.Request) (*url.URL, error), trusted func(addr string) bool) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = maxIdlePerHost
	tr.TLSHandshakeTimeout = t.TLSHandshake
	tr.ResponseHeaderTimeout = t.ResponseHeader
	tr.ExpectContinueTimeout = time.Second
	tr.TLSClientConfig = tlsCfg
	tr.Proxy = proxy
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := &net.Dialer{Timeout: dialTimeout(ctx, t.Connect), KeepAlive: 30 * time.Second}
		if trusted != nil && trusted(addr) {
			return d.DialContext(ctx, network, addr)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ips, err := lookupIPAddr(ctx, host)
		if err != nil {
			return nil, err
		}
		// The registry's own name is checked too: a name that resolves to loopback or
		// link-local (DNS rebinding) must not turn a reference a service was given into
		// a request to the host's own services or its cloud metadata endpoint.
		origin := infoOf(ctx).origin
		var last error
		for _, ip := range ips {
			if err := addressAllowed(origin, ip.IP); err != nil {
				last = err
				continue
			}
			// Dial the address that was checked, not the name again.
			c, err := d.DialContext(ctx, network, net.JoinHostPort(ip.IP.String(), port))
			if err == nil {
				return c, nil
			}
			last = err
		}
		if last == nil {
			last = fmt.Errorf("no address for %s", text.Clean(host, 100))
		}
		return nil, last
	}
	return tr
}

// addressAllowed refuses loopback, unspecified and link-local addresses (the host's own
// services, cloud metadata endpoints) for a registry that is not itself on such an
// address: a registry's redirects and foreign-layer URLs must not reach them.
func addressAllowed(origin string, ip net.IP) error {
	if origin == "" || !(ip.IsLoopback() || ip.IsUnspecified() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast()) {
		return nil
	}
	if oip := hostIP(origin); oip != nil && (oip.IsLoopback() == ip.IsLoopback() && (oip.IsLoopback() || oip.IsLinkLocalUnicast())) {
		return nil
	}
	if isLoopbackName(origin) && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: registry %s sent the puller to %s, a loopback or link-local address", pullkit.ErrDenied, text.Clean(origin, 100), ip)
}

// sameHostname reports whether host[:port] a and b name the same host (ports aside).
func sameHostname(a, b string) bool {
	norm := func(s string) string {
		return strings.ToLower(strings.TrimSuffix(strings.Trim(hostOnly(s), "[]"), "."))
	}
	return a != "" && b != "" && norm(a) == norm(b)
}

// isLocalhostName reports whether host[:port] is "localhost" or a name under
// .localhost: names that stand for this machine (RFC 6761), which a registry elsewhere
// has no business sending the puller to, whatever DNS says of them.
func isLocalhostName(hostport string) bool {
	host := strings.ToLower(strings.TrimSuffix(strings.Trim(hostOnly(hostport), "[]"), "."))
	return host == "localhost" || strings.HasSuffix(host, ".localhost")
}

// hostIP returns the IP literal of host[:port], or nil.
func hostIP(hostport string) net.IP {
	return net.ParseIP(strings.Trim(hostOnly(hostport), "[]"))
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// isLoopbackName reports whether host[:port] is this machine by name or address:
// "localhost" itself, 127.0.0.0/8 or ::1. Other names under .localhost are not trusted
// to be: DNS decides where they go.
func isLoopbackName(hostport string) bool {
	host := strings.ToLower(strings.TrimSuffix(strings.Trim(hostOnly(hostport), "[]"), "."))
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// isPrivateName reports whether host[:port] is an IP literal in a private (RFC 1918, ULA)
// or loopback range.
func isPrivateName(hostport string) bool {
	if isLoopbackName(hostport) {
		return true
	}
	ip := hostIP(hostport)
	return ip != nil && (ip.IsPrivate() || ip.IsLoopback())
}

// guardTransport refuses plain HTTP to hosts that are not loopback (unless allowed), and
// any request to a loopback or link-local IP literal, or to localhost and names under
// .localhost, that a registry elsewhere led to.
type guardTransport struct {
	inner     http.RoundTripper
	plainHTTP bool
	// insecure reports hosts named insecure, to which plain HTTP is allowed too (nil:
	// none).
	insecure func(host string) bool
}

func (g *guardTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !g.plainHTTP && !isLoopbackName(req.URL.Host) && (g.insecure == nil || !g.insecure(req.URL.Host)) {
		return nil, fmt.Errorf("%w: plain HTTP to %s (only loopback registries and registries named insecure are spoken to over plain HTTP unless that is allowed)", pullkit.ErrDenied, text.Clean(req.URL.Host, 100))
	}
	if origin := infoOf(req.Context()).origin; !sameHostname(req.URL.Host, origin) {
		ip := hostIP(req.URL.Host)
		if ip == nil && isLocalhostName(req.URL.Host) {
			// Checked here too: a transport given with WithTransport resolves as it
			// likes, and the default one only sees the addresses.
			ip = net.IPv4(127, 0, 0, 1)
		}
		if ip != nil {
			if err := addressAllowed(origin, ip); err != nil {
				return nil, fmt.Errorf("%w (%s)", err, text.Clean(req.URL.Host, 100))
			}
		}
	}
	return g.inner.RoundTrip(req)
}

// watchTransport puts the Idle and MinRate rules on every response body: a body that
// breaks them ends its request with an error naming the step.
type watchTransport struct {
	inner http.RoundTripper
	t     Timeouts
}

func (w *watchTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	step := infoOf(req.Context()).step
	if step == "" {
		step = "response"
	}
	// A backstop for the phases before the body, whatever the base transport: the
	// default one bounds each phase itself, a transport given with WithTransport may
	// bound none (a connection kept alive to a server that went silent waits for ever).
	limit := w.t.Connect + w.t.TLSHandshake + w.t.ResponseHeader
	if fb := infoOf(req.Context()).firstByte; fb > 0 {
		limit = fb // the endpoint's own deadline (a mirror's)
	}
	timer := time.AfterFunc(limit, func() {
		cancel(&StallError{Step: step, Reason: fmt.Sprintf("no response headers within %v", limit)})
	})
	resp, err := w.inner.RoundTrip(identityEncoding(req.WithContext(ctx)))
	fired := !timer.Stop()
	if fired {
		if err == nil {
			resp.Body.Close()
		}
		err = context.Cause(ctx)
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	resp.Body = newWatchedBody(resp.Body, w.t, cancel, step)
	return resp, nil
}

// identityEncoding asks for bodies as they are stored (Accept-Encoding: identity): with
// the header set, no http.Transport decodes a Content-Encoding itself, so a body a
// server encodes anyway is the bytes verified against the digest, and a gzip bomb costs
// what it weighs on the wire, never its expansion.
func identityEncoding(req *http.Request) *http.Request {
	if req.Header.Get("Accept-Encoding") != "" {
		return req
	}
	r := *req
	r.Header = req.Header.Clone()
	if r.Header == nil {
		r.Header = http.Header{}
	}
	r.Header.Set("Accept-Encoding", "identity")
	return &r
}

// StallError reports a response body that broke the Idle or MinRate rule. It wraps
// pullkit.ErrUnreachable.
type StallError struct {
	// Step names what was being received, e.g. "manifest" or "blob sha256:…".
	Step string
	// Reason says which rule it broke.
	Reason string
}

func (e *StallError) Error() string {
	return fmt.Sprintf("%s stalled: %s", e.Step, e.Reason)
}

// Unwrap returns pullkit.ErrUnreachable.
func (e *StallError) Unwrap() error { return pullkit.ErrUnreachable }

// watchedBody enforces the body rules with a timer that looks at a counter four times
// per Idle: reads only bump the counter.
type watchedBody struct {
	rc     io.ReadCloser
	t      Timeouts
	cancel context.CancelCauseFunc
	step   string

	mu       sync.Mutex
	n        int64 // bytes read
	seen     int64 // n at the last look
	idle     time.Duration
	winStart time.Time
	winN     int64
	timer    *time.Timer
	err      error
	done     bool
}

func newWatchedBody(rc io.ReadCloser, t Timeouts, cancel context.CancelCauseFunc, step string) *watchedBody {
	if step == "" {
		step = "response"
	}
	b := &watchedBody{rc: rc, t: t, cancel: cancel, step: step, winStart: time.Now()}
	b.mu.Lock()
	b.timer = time.AfterFunc(b.tick(), b.look)
	b.mu.Unlock()
	return b
}

func (b *watchedBody) tick() time.Duration { return max(b.t.Idle/4, time.Millisecond) }

func (b *watchedBody) look() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	now := time.Now()
	if b.n != b.seen {
		b.seen, b.idle = b.n, 0
	} else if b.idle += b.tick(); b.idle >= b.t.Idle {
		b.stop(&StallError{Step: b.step, Reason: fmt.Sprintf("no data for %v", b.t.Idle)})
		return
	}
	if el := now.Sub(b.winStart); b.t.MinRate > 0 && el >= b.t.RateWindow {
		if got := b.n - b.winN; got < int64(float64(b.t.MinRate)*el.Seconds()) {
			b.stop(&StallError{Step: b.step, Reason: fmt.Sprintf("%d bytes in %v, under the minimum of %d bytes/s", got, el.Round(time.Second), b.t.MinRate)})
			return
		}
		b.winStart, b.winN = now, b.n
	}
	b.timer.Reset(b.tick())
}

// stop ends the request with err (under b.mu).
func (b *watchedBody) stop(err error) {
	b.err = err
	b.done = true
	b.cancel(err)
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.mu.Lock()
	b.n += int64(n)
	if err != nil && b.err != nil {
		err = b.err
	}
	b.mu.Unlock()
	return n, err
}

func (b *watchedBody) Close() error {
	b.mu.Lock()
	b.done = true
	b.timer.Stop()
	b.mu.Unlock()
	err := b.rc.Close()
	b.cancel(nil)
	return err
}

// retryTransport retries idempotent requests (GET and HEAD without a body) when the
// connection fails or the registry answers 5xx (not 501 or 505) or 429, as the retry
// policy says. A 429's Retry-After is honoured when it is within the policy (reported
// to the pull's progress as a wait), and ends the request at once when it is longer.
type retryTransport struct {
	inner  http.RoundTripper
	policy pullkit.RetryPolicy
	sleep  func(ctx context.Context, d time.Duration) error
	now    func() time.Time
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ri := infoOf(req.Context())
	if !idempotent(req) || ri.noRetry || t.policy.Attempts <= 1 {
		return t.inner.RoundTrip(req)
	}
	ctx := req.Context()
	for attempt := 1; ; attempt++ {
		resp, err := t.inner.RoundTrip(req.Clone(ctx))
		if ctx.Err() != nil {
			if err == nil {
				resp.Body.Close()
			}
			return nil, ctx.Err()
		}
		if !retryable(resp, err) || (err != nil && ri.oneShot) {
			return resp, err
		}
		wait := t.policy.Delay(attempt)
		if resp != nil && resp.StatusCode == http.StatusTooManyRequests {
			if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), t.now()); ok {
				if d > t.policy.MaxRetryAfter {
					return resp, nil // the caller reports it, with what the registry asked
				}
				wait = d
			}
		}
		if attempt >= t.policy.Attempts {
			return resp, err
		}
		if resp != nil {
			// Drain a little so the connection can be reused, then drop the body.
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
			resp.Body.Close()
			if resp.StatusCode == http.StatusTooManyRequests && ri.progress != nil {
				what := ri.what
				if what == "" {
					what = ri.step
				}
				ri.progress(pullkit.Event{Kind: pullkit.EventWaiting, What: what, Digest: ri.digest, Total: -1, Wait: wait,
					Err: &pullkit.HTTPError{Method: req.Method, URL: redactURL(req.URL), StatusCode: resp.StatusCode, RetryAfter: wait}})
			}
		}
		if err := t.sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// idempotent reports whether req may be sent again as is.
func idempotent(req *http.Request) bool {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return false
	}
	return req.Body == nil || req.Body == http.NoBody
}

// retryable reports whether the outcome of one attempt is worth another.
func retryable(resp *http.Response, err error) bool {
	if err != nil {
		return !permanent(err)
	}
	switch resp.StatusCode {
	case http.StatusTooManyRequests:
		return true
	case http.StatusNotImplemented, http.StatusHTTPVersionNotSupported:
		return false
	}
	return resp.StatusCode >= 500 && resp.StatusCode <= 599
}

// permanent reports transport errors that another attempt cannot cure: our own
// refusals, a cancelled request, TLS and certificate failures (including an HTTPS
// request answered in plain HTTP) and names that do not resolve. Anything else (resets,
// refusals, timeouts, EOFs) is taken for a broken connection; the caller's own deadline
// is seen before (a deadline error while the request's context goes on is a
// transport's timeout, worth another attempt).
func permanent(err error) bool {
	var (
		recordErr   tls.RecordHeaderError
		verifyErr   *tls.CertificateVerificationError
		authority   x509.UnknownAuthorityError
		hostname    x509.HostnameError
		invalidCert x509.CertificateInvalidError
		dnsErr      *net.DNSError
	)
	var retried *retriedError
	switch {
	case errors.Is(err, pullkit.ErrDenied), errors.Is(err, context.Canceled), errors.As(err, &retried):
		return true
	case errors.As(err, &recordErr), errors.As(err, &verifyErr), errors.As(err, &authority),
		errors.As(err, &hostname), errors.As(err, &invalidCert):
		return true
	case errors.As(err, &dnsErr):
		return dnsErr.IsNotFound
	}
	return strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}

// parseRetryAfter reads a Retry-After value: delta-seconds or an HTTP-date. Negative
// or past values mean "now"; more than a day counts as a day.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	const day = 24 * time.Hour
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0, true
		}
		if secs > int64(day/time.Second) {
			return day, true
		}
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), day), true
	}
	return 0, false
}

// maxRedirects bounds a chain of redirects.
const maxRedirects = 10

// checkRedirect is the http.Client redirect policy: at most maxRedirects hops; the
// Authorization header dropped as soon as a hop leaves the host the request was first
// sent to, so blob storage never sees the registry's credentials; and the same guards
// as for the first request.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("%w: stopped after %d redirects", pullkit.ErrInvalid, maxRedirects)
	}
	if len(via) > 0 && canonicalHost(req.URL) != canonicalHost(via[0].URL) {
		req.Header.Del("Authorization")
		// Headers from the endpoint's configuration are for it alone.
		for _, h := range infoOf(req.Context()).strip {
			req.Header.Del(h)
		}
	}
	if req.URL.Scheme != "https" && req.URL.Scheme != "http" {
		return fmt.Errorf("%w: redirect to a %q URL", pullkit.ErrDenied, text.Clean(req.URL.Scheme, 20))
	}
	return nil
}

// canonicalHostOf is host (host[:port]) as canonicalHost names it under scheme.
func canonicalHostOf(scheme, host string) string {
	return canonicalHost(&url.URL{Scheme: scheme, Host: host})
}

// canonicalHost is host:port with the scheme's default port filled in.
func canonicalHost(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// redactURL prints u without user info, query or fragment (which may hold tokens).
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.Fragment = ""
	return text.Clean(c.String(), 300)
}

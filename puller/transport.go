package puller

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// retryTransport retries idempotent requests (GET and HEAD without a body) when the
// connection fails or the registry answers 5xx (not 501/505) or 429. Waits grow
// exponentially with full jitter; a 429's Retry-After (delta-seconds or HTTP-date) is
// honoured up to maxRetryAfter. Every wait ends early when the request's context does.
type retryTransport struct {
	inner         http.RoundTripper
	attempts      int
	base          time.Duration
	maxBackoff    time.Duration
	maxRetryAfter time.Duration
	sleep         func(ctx context.Context, d time.Duration) error
	now           func() time.Time
}

// RoundTrip implements http.RoundTripper.
func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !idempotent(req) || t.attempts <= 1 {
		return t.inner.RoundTrip(req)
	}
	ctx := req.Context()
	for attempt := 1; ; attempt++ {
		resp, err := t.inner.RoundTrip(req.Clone(ctx))
		if ctx.Err() != nil && err == nil && retryable(context.Background(), resp, nil) {
			// The caller gave up as a failure answer arrived: report that it gave up,
			// not an answer it would have retried.
			resp.Body.Close()
			return nil, ctx.Err()
		}
		if attempt >= t.attempts || !retryable(ctx, resp, err) {
			return resp, err
		}
		wait := t.backoff(attempt)
		if resp != nil {
			if resp.StatusCode == http.StatusTooManyRequests {
				if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), t.now()); ok {
					wait = min(d, t.maxRetryAfter)
				}
			}
			// Drain a little so the connection can be reused, then drop the body.
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
			resp.Body.Close()
		}
		if err := t.sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// backoff is the wait before retry number attempt (1-based): base·2^(attempt-1),
// capped, with full jitter in [d/2, d].
func (t *retryTransport) backoff(attempt int) time.Duration {
	d := t.base
	for i := 1; i < attempt && d < t.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, t.maxBackoff)
	if d <= 0 {
		return 0
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// idempotent reports whether req may be sent again as is.
func idempotent(req *http.Request) bool {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return false
	}
	return req.Body == nil || req.Body == http.NoBody
}

// retryable reports whether the outcome of one attempt is worth another.
func retryable(ctx context.Context, resp *http.Response, err error) bool {
	if ctx.Err() != nil {
		return false
	}
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
// refusals, the context, TLS and certificate failures (including an HTTPS request
// answered in plain HTTP) and names that do not resolve. Anything else (resets,
// refusals, timeouts, EOFs) is taken for a broken connection.
func permanent(err error) bool {
	var (
		recordErr   tls.RecordHeaderError
		verifyErr   *tls.CertificateVerificationError
		authority   x509.UnknownAuthorityError
		hostname    x509.HostnameError
		invalidCert x509.CertificateInvalidError
		dnsErr      *net.DNSError
	)
	switch {
	case errors.Is(err, ErrInsecure), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
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
// or past values mean "now".
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0, true
		}
		if secs > int64(24*time.Hour/time.Second) {
			secs = int64(24 * time.Hour / time.Second)
		}
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		d := t.Sub(now)
		if d < 0 {
			d = 0
		}
		return d, true
	}
	return 0, false
}

// sleepContext waits for d or until ctx is done.
func sleepContext(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// plainHTTPGuard refuses plain-HTTP requests except to loopback hosts, unless allowed.
type plainHTTPGuard struct {
	inner http.RoundTripper
	allow bool
}

// RoundTrip implements http.RoundTripper.
func (g *plainHTTPGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !g.allow && !isLoopback(req.URL.Host) {
		return nil, fmt.Errorf("%w to %s (only loopback registries are spoken to over plain HTTP; use --plain-http to allow it)", ErrInsecure, req.URL.Host)
	}
	return g.inner.RoundTrip(req)
}

// isLoopback reports whether host[:port] names this machine: localhost, *.localhost,
// 127.0.0.0/8 or ::1.
func isLoopback(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// maxRedirects bounds a chain of redirects.
const maxRedirects = 10

// checkRedirect is the http.Client redirect policy: at most maxRedirects hops, and the
// Authorization header is dropped as soon as a hop leaves the host (host and port) the
// request was first sent to, so blob storage never sees the registry's credentials.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	if len(via) > 0 && canonicalHost(req.URL) != canonicalHost(via[0].URL) {
		req.Header.Del("Authorization")
	}
	return nil
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

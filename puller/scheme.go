package puller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"

	"github.com/pullkit/pullkit"
)

// HTTPS first, everywhere. A registry is asked over HTTPS; it is asked over plain HTTP
// instead only when
//   - the client was made WithPlainHTTP (plain HTTP to every registry, forced), or
//   - its HTTPS answer shows it does not speak TLS at all (the first record is not a TLS
//     handshake) and plain HTTP is allowed for it: a loopback registry (localhost,
//     127.0.0.0/8, ::1), or one named insecure (docker's insecure-registry rule).
//
// What is learnt is kept per host for the client's life. A plain-HTTP request that an
// HTTPS-only server answers (Go's "400 Client sent an HTTP request to an HTTPS server",
// nginx's "400 The plain HTTP request was sent to HTTPS port", a raw TLS alert, a closed
// connection) is recognised by behaviour, not wording: an answer that is not a
// registry's (a 400 without a registry error body, a response that is not HTTP, a
// connection closed or reset before any answer) is checked by asking the same request
// over TLS. When TLS answers, the host is spoken to over HTTPS from then on; under
// WithPlainHTTP the request fails instead, saying the registry speaks only TLS.

// schemeTransport sends registry requests by the scheme their host speaks, and finds it
// out. It sits above the watch and guard layers, so every attempt keeps them.
type schemeTransport struct {
	inner http.RoundTripper
	c     *Client
}

// scheme returns how registry host is spoken to first: what was learnt, else plain HTTP
// under WithPlainHTTP, else HTTPS.
func (c *Client) scheme(host string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.schemes[host]; ok {
		return s
	}
	if c.plainHTTP {
		return "http"
	}
	return "https"
}

// learnScheme records that host answers s.
func (c *Client) learnScheme(host, s string) {
	c.mu.Lock()
	c.schemes[host] = s
	c.mu.Unlock()
}

// httpAllowed reports whether plain HTTP may be spoken to host: every host under
// WithPlainHTTP, loopback hosts, and hosts named insecure.
func (c *Client) httpAllowed(host string) bool {
	return c.plainHTTP || isLoopbackName(host) || c.insecureHost(host)
}

// insecureHost reports whether host was named insecure (WithInsecureRegistry, a
// registries.conf entry, a hosts.toml http:// or skip_verify entry).
func (c *Client) insecureHost(host string) bool {
	c.mu.Lock()
	named := c.httpHosts[host]
	c.mu.Unlock()
	if named {
		return true
	}
	p := c.hostProfile(host)
	return p != nil && p.insecure
}

func (s *schemeTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ri := infoOf(req.Context())
	host := req.URL.Host
	if ri.origin == "" || ri.what == "token" || !strings.EqualFold(host, ri.endpointHost) || !replayable(req) {
		return s.inner.RoundTrip(req) // not a registry request, or one that cannot be sent twice
	}
	switch req.URL.Scheme {
	case "https":
		resp, err := s.inner.RoundTrip(req)
		if err == nil || !notTLS(err) || req.Context().Err() != nil {
			return resp, err
		}
		if !s.c.httpAllowed(host) {
			return nil, fmt.Errorf("%w: registry %s does not speak TLS (its answer to HTTPS is not a TLS handshake); plain HTTP is allowed only to loopback registries, registries named insecure, or with WithPlainHTTP", pullkit.ErrUnreachable, fmtHost(host))
		}
		s.c.learnScheme(host, "http")
		return s.inner.RoundTrip(withScheme(req, "http"))
	case "http":
		resp, err := s.inner.RoundTrip(req)
		if !s.maybeTLS(req.Context(), resp, err) {
			return resp, err
		}
		// Hold the answer while TLS is tried: it stands when TLS does not answer.
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
			resp.Body.Close()
			resp.Body = io.NopCloser(bytes.NewReader(body))
		}
		tresp, terr := s.inner.RoundTrip(withScheme(req, "https"))
		if terr != nil {
			return resp, err
		}
		if s.c.plainHTTP {
			tresp.Body.Close()
			return nil, fmt.Errorf("%w: registry %s speaks only TLS, and plain HTTP was forced (WithPlainHTTP)", pullkit.ErrUnreachable, fmtHost(host))
		}
		s.c.learnScheme(host, "https")
		return tresp, nil
	}
	return s.inner.RoundTrip(req)
}

// maybeTLS reports whether a plain-HTTP request's outcome could be a TLS server's: the
// connection was made and then the answer was not HTTP, was cut before any response,
// or was a 400 that no registry wrote (a registry's error bodies are JSON with
// "errors"). Refusals, timeouts, unresolvable names and the puller's own verdicts are
// not.
func (s *schemeTransport) maybeTLS(ctx context.Context, resp *http.Response, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if err != nil {
		var ne net.Error
		var ue *url.Error
		var oe *net.OpError
		switch {
		case vocabulary(err), errors.As(err, &ne) && ne.Timeout(), errors.As(err, new(*StallError)):
			return false
		case errors.As(err, &oe) && oe.Op == "dial":
			return false
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
			return true
		case errors.As(err, &ue) && strings.Contains(ue.Err.Error(), "malformed HTTP"):
			return true
		}
		return strings.Contains(err.Error(), "malformed HTTP")
	}
	if resp.StatusCode != http.StatusBadRequest {
		return false
	}
	ct := strings.ToLower(resp.Header.Get("Content-Type"))
	if strings.Contains(ct, "json") {
		// Peek: a registry's 400 carries {"errors": [...]}.
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		codes, _ := parseErrorBody(body, ct)
		return len(codes) == 0
	}
	return true
}

// replayable reports whether req may be sent a second time.
func replayable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// withScheme is req to the same place under scheme s.
func withScheme(req *http.Request, s string) *http.Request {
	r := req.Clone(req.Context())
	u := *req.URL
	u.Scheme = s
	r.URL = &u
	if req.GetBody != nil {
		r.Body, _ = req.GetBody()
	}
	return r
}

package puller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
	"github.com/pullkit/pullkit/manifest"
)

// endpoint is one place (the registry, or one of its mirrors) serving one repository,
// for one call: what it may be asked, how it is reached, and what the call learnt of it.
type endpoint struct {
	c       *Client
	host    string         // host:port as go-containerregistry names it (index.docker.io for Docker Hub)
	path    string         // the API root, "/v2" unless a hosts.toml override_path says otherwise
	repo    string         // the repository's path there
	logical name.Reference // the reference it serves, as the store names it
	mirror  bool
	resolve bool         // may resolve a tag (else only content by digest)
	pull    bool         // may serve content by digest
	ns      string       // the registry a mirror stands for, sent as ?ns= (containerd's hosts.toml mirrors)
	header  http.Header  // sent with every request to it
	profile *hostProfile // TLS settings chosen for it, nil for its host's
	connect time.Duration
	// firstByte bounds each request until its response headers (0: the client's
	// Timeouts).
	firstByte time.Duration
	oneShot   bool   // a later endpoint exists: a failed connection moves on at once
	source    string // what chose it (a file and entry, an option), for Plan and errors
	creds     CredentialsFunc

	credOnce sync.Once
	cred     *credential
	credErr  error
	dead     atomic.Bool // could not be reached during this call: skipped from then on
}

// via names the endpoint when it is a mirror ("" for the origin), as an Error's Detail.
func (ep *endpoint) via() string {
	if !ep.mirror {
		return ""
	}
	if ep.c.noFallback {
		return "via mirror " + ep.host + " (no fallback to the registry)"
	}
	return "via mirror " + ep.host
}

func (ep *endpoint) url(kind, ident string) string {
	u := ep.c.scheme(ep.host) + "://" + ep.host + ep.path + "/" + ep.repo + "/" + kind + "/" + ident
	if ep.ns != "" {
		u += "?ns=" + url.QueryEscape(ep.ns)
	}
	return u
}

// markDead skips the endpoint for the rest of the call, and a mirror for the client's
// later calls too, for MirrorTimeouts.Remember.
func (ep *endpoint) markDead() {
	ep.dead.Store(true)
	if ep.mirror {
		ep.c.noteDead(ep.host)
	}
}

// credential resolves the endpoint's credential once per call.
func (ep *endpoint) credential(ctx context.Context) (*credential, error) {
	ep.credOnce.Do(func() {
		ep.cred, ep.credErr = ep.c.credentialFor(ctx, ep.creds, ep.host, ep.repo)
	})
	return ep.cred, ep.credErr
}

// request runs one request against the endpoint (redirects followed) with info for the
// transports. A loopback registry spoken to over plain HTTP that turns out to speak only
// TLS is asked again over HTTPS, and remembered so.
func (ep *endpoint) request(ctx context.Context, method, u string, hdr http.Header, ri reqInfo) (*http.Response, *reqInfo, error) {
	ri.origin, ri.repo = ep.host, ep.repo
	ri.endpointHost, ri.profile, ri.connect, ri.firstByte, ri.oneShot = ep.host, ep.profile, ep.connect, ep.firstByte, ep.oneShot
	if ep.oneShot {
		ri.dead = ep.dead.Load
	}
	if ri.progress == nil {
		ri.progress = progressOf(ctx)
	}
	cred, err := ep.credential(ctx)
	if err != nil {
		return nil, nil, err
	}
	ri.cred = cred
	info := ri
	req, err := http.NewRequestWithContext(withInfo(ctx, &info), method, u, nil)
	if err != nil {
		return nil, nil, &pullkit.InvalidError{What: "request", Reason: method + " " + text.Clean(u, 300), Err: err}
	}
	for k, v := range ep.header {
		req.Header[k] = v
		info.strip = append(info.strip, k)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := ep.c.hc.Do(req)
	if err != nil {
		err = requestError(ctx, err)
		if errors.Is(err, pullkit.ErrUnreachable) && ctx.Err() == nil {
			ep.markDead()
		}
		return nil, &info, err
	}
	return resp, &info, nil
}

// requestError is the error of a request that got no answer. The puller's own verdicts
// on the way (a refusal, a token that could not be had, a stall) are returned as they
// are, without net/http's "Get <url>:" around them when they name what they refused;
// anything else is a failed connection (pullkit.ErrUnreachable).
func requestError(ctx context.Context, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) && vocabulary(ue.Err) {
		var se *StallError
		if errors.As(ue.Err, &se) {
			return err // the URL says which body stalled
		}
		return ue.Err
	}
	return connError(ctx, err)
}

// vocabulary reports whether err already says, with a sentinel of the module, what went
// wrong.
func vocabulary(err error) bool {
	for _, s := range []error{pullkit.ErrNotFound, pullkit.ErrUnauthorized, pullkit.ErrDenied, pullkit.ErrTooManyRequests,
		pullkit.ErrDigestMismatch, pullkit.ErrSizeMismatch, pullkit.ErrNoMatch, pullkit.ErrUnsupported, pullkit.ErrInvalid,
		pullkit.ErrTooLarge, pullkit.ErrUnreachable} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// manifestInfo is the reqInfo of a request for the manifest ident (a tag or a digest).
func manifestInfo(ident string) reqInfo {
	ri := reqInfo{step: "manifest " + text.Clean(ident, 140), what: "manifest"}
	if d, err := digest.Parse(ident); err == nil {
		ri.digest = d
	}
	return ri
}

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 64 << 10

// statusError builds the *pullkit.HTTPError of a failed response, reading a bounded
// prefix of its body for the registry's error codes and message.
func statusError(resp *http.Response, ri *reqInfo, expected string, now time.Time) error {
	he := &pullkit.HTTPError{StatusCode: resp.StatusCode, Expected: expected}
	if ri != nil {
		he.CredentialsSent = ri.credSent
	}
	if resp.Request != nil {
		he.Method = resp.Request.Method
		he.URL = redactURL(resp.Request.URL)
	}
	if resp.Body != nil && (resp.Request == nil || resp.Request.Method != http.MethodHead) {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		he.Codes, he.Message = parseErrorBody(body, resp.Header.Get("Content-Type"))
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), now); ok {
			he.RetryAfter = d
		}
	}
	return he
}

// parseErrorBody extracts the registry's error codes and first message from an error
// body. Anything else is quoted only when it is short text, never HTML.
func parseErrorBody(body []byte, contentType string) (codes []string, message string) {
	var re struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(body, &re); err == nil && len(re.Errors) > 0 {
		for _, e := range re.Errors {
			if c := text.Clean(e.Code, 64); c != "" {
				codes = append(codes, c)
			}
			if message == "" {
				message = text.Clean(e.Message, 200)
			}
		}
		return codes, message
	}
	s := strings.TrimSpace(string(body))
	if s == "" || len(s) > 200 || strings.Contains(strings.ToLower(contentType), "html") || strings.HasPrefix(s, "<") {
		return nil, ""
	}
	return nil, text.Clean(s, 200)
}

// served is a manifest as the registry served it.
type served struct {
	raw           []byte
	contentType   string
	contentDigest digest.Digest // Docker-Content-Digest, "" when absent or unusable
}

// head asks for ident's descriptor without the body: digest (Docker-Content-Digest, ""
// when the registry sends none or one that is not a digest), media type and size.
func (ep *endpoint) head(ctx context.Context, ident, expected string) (manifest.Descriptor, error) {
	resp, ri, err := ep.request(ctx, http.MethodHead, ep.url("manifests", ident), http.Header{"Accept": {manifest.AcceptHeader}}, manifestInfo(ident))
	if err != nil {
		return manifest.Descriptor{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		err := statusError(resp, ri, expected, ep.c.now())
		if resp.StatusCode == http.StatusNotFound {
			// A HEAD has no body to tell a missing repository from a missing tag: ask.
			if _, gerr := ep.get(ctx, ident, expected); gerr != nil {
				return manifest.Descriptor{}, gerr
			}
		}
		return manifest.Descriptor{}, err
	}
	if resp.ContentLength > ep.c.maxManifest {
		return manifest.Descriptor{}, &pullkit.TooLargeError{What: "manifest", Limit: ep.c.maxManifest, Size: resp.ContentLength}
	}
	d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		d = "" // absent or not a digest: the caller GETs, which says which
	}
	return manifest.Descriptor{Digest: d, MediaType: mediaTypeOf(resp.Header.Get("Content-Type")), Size: resp.ContentLength}, nil
}

// mediaTypeOf is a Content-Type without its parameters.
func mediaTypeOf(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

// get fetches ident's manifest through the size cap. A body cut short is fetched again,
// within the retry policy (the status-level retries live in the transport).
func (ep *endpoint) get(ctx context.Context, ident, expected string) (*served, error) {
	for attempt := 1; ; attempt++ {
		s, broken, err := ep.getOnce(ctx, ident, expected)
		if err == nil || !broken || attempt >= ep.c.retry.Attempts || ctx.Err() != nil {
			return s, err
		}
		ri := manifestInfo(ident)
		retrying(ctx, ri.what, ri.digest, -1, err)
		if err := ep.c.sleep(ctx, ep.c.retry.Delay(attempt)); err != nil {
			return nil, err
		}
	}
}

func (ep *endpoint) getOnce(ctx context.Context, ident, expected string) (*served, bool, error) {
	resp, ri, err := ep.request(ctx, http.MethodGet, ep.url("manifests", ident), http.Header{"Accept": {manifest.AcceptHeader}}, manifestInfo(ident))
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, false, statusError(resp, ri, expected, ep.c.now())
	}
	raw, err := readCapped(resp, ep.c.maxManifest, "manifest")
	if errors.Is(err, pullkit.ErrTooLarge) {
		return nil, false, err
	}
	if err != nil {
		return nil, true, connError(ctx, err)
	}
	s := &served{raw: raw, contentType: resp.Header.Get("Content-Type")}
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
		d, err := digest.Parse(h)
		if err != nil {
			return nil, false, &pullkit.InvalidError{What: "registry answer", Reason: "Docker-Content-Digest " + text.Clean(h, 100) + " is not a digest"}
		}
		s.contentDigest = d
	}
	return s, false, nil
}

// manifestByDigest fetches and verifies the manifest named by want. Bytes that do not
// verify are fetched again within the retry policy (damage in transit passes).
func (ep *endpoint) manifestByDigest(ctx context.Context, want digest.Digest) (*manifest.Manifest, error) {
	for attempt := 1; ; attempt++ {
		s, err := ep.get(ctx, want.String(), "manifest")
		if err != nil {
			return nil, err
		}
		m, err := manifest.Verify(s.raw, s.contentType, want)
		if err == nil || !errors.Is(err, pullkit.ErrDigestMismatch) || attempt >= ep.c.retry.Attempts {
			return m, err
		}
		retrying(ctx, "manifest", want, -1, err)
		if err := ep.c.sleep(ctx, ep.c.retry.Delay(attempt)); err != nil {
			return nil, err
		}
	}
}

// manifestByTag fetches tag's manifest in one request and checks it against the
// Docker-Content-Digest the registry sent with it. It returns the digest the registry
// answers to for it (that header, or the manifest's own digest when there is none).
//
// Bytes that do not match that digest are fetched again within the retry policy, as for
// a digest: damage in transit passes, a registry that keeps serving them fails.
func (ep *endpoint) manifestByTag(ctx context.Context, tag string) (*manifest.Manifest, digest.Digest, error) {
	for attempt := 1; ; attempt++ {
		s, err := ep.get(ctx, tag, fmt.Sprintf("a manifest for tag %q", tag))
		if err != nil {
			return nil, "", err
		}
		if s.contentDigest == "" {
			m, err := manifest.Parse(s.raw, s.contentType)
			if err != nil {
				return nil, "", err
			}
			return m, m.Digest, nil
		}
		m, err := manifest.Verify(s.raw, s.contentType, s.contentDigest)
		switch {
		case err == nil:
			return m, s.contentDigest, nil
		case !errors.Is(err, pullkit.ErrDigestMismatch):
			return nil, "", pullkit.Wrap("", "", s.contentDigest, err)
		case attempt >= ep.c.retry.Attempts:
			return nil, "", fmt.Errorf("tag %q, checked against its Docker-Content-Digest: %w", text.Clean(tag, 128), err)
		}
		// Damage in transit passes: fetch it again.
		retrying(ctx, "manifest", "", -1, err)
		if err := ep.c.sleep(ctx, ep.c.retry.Delay(attempt)); err != nil {
			return nil, "", err
		}
	}
}

// retrying reports to the call's progress that a manifest or config is fetched again
// from the start (EventRetrying, Done 0), for why.
func retrying(ctx context.Context, what string, d digest.Digest, size int64, why error) {
	if fn := progressOf(ctx); fn != nil {
		fn(pullkit.Event{Kind: pullkit.EventRetrying, What: what, Digest: d, Total: size, Err: why})
	}
}

// readCapped reads resp's body, failing with a *pullkit.TooLargeError past limit bytes.
func readCapped(resp *http.Response, limit int64, what string) ([]byte, error) {
	if resp.ContentLength > limit {
		return nil, &pullkit.TooLargeError{What: what, Limit: limit, Size: resp.ContentLength}
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s from %s: %w", what, redactURL(resp.Request.URL), err)
	}
	if int64(len(raw)) > limit {
		return nil, &pullkit.TooLargeError{What: what, Limit: limit, Size: -1}
	}
	if resp.ContentLength >= 0 && int64(len(raw)) != resp.ContentLength {
		return nil, fmt.Errorf("read %s from %s: %w (got %d of %d bytes)", what, redactURL(resp.Request.URL), io.ErrUnexpectedEOF, len(raw), resp.ContentLength)
	}
	return raw, nil
}

// document fetches a small blob (a config) through the size cap, and verifies it.
func (ep *endpoint) document(ctx context.Context, desc manifest.Descriptor, what string) ([]byte, error) {
	if desc.Size > ep.c.maxManifest {
		return nil, &pullkit.TooLargeError{What: what, Limit: ep.c.maxManifest, Size: desc.Size}
	}
	for attempt := 1; ; attempt++ {
		resp, ri, err := ep.request(ctx, http.MethodGet, ep.url("blobs", desc.Digest.String()), nil, reqInfo{step: what + " " + desc.Digest.String(), what: what, digest: desc.Digest})
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			err := statusError(resp, ri, what, ep.c.now())
			resp.Body.Close()
			return nil, err
		}
		raw, err := readCapped(resp, ep.c.maxManifest, what)
		resp.Body.Close()
		if err != nil {
			if errors.Is(err, pullkit.ErrTooLarge) || attempt >= ep.c.retry.Attempts || ctx.Err() != nil {
				return nil, connError(ctx, err)
			}
			retrying(ctx, what, desc.Digest, desc.Size, err)
			if err := ep.c.sleep(ctx, ep.c.retry.Delay(attempt)); err != nil {
				return nil, err
			}
			continue
		}
		if got := desc.Digest.Algorithm().FromBytes(raw); got != desc.Digest {
			if attempt < ep.c.retry.Attempts {
				retrying(ctx, what, desc.Digest, desc.Size, &pullkit.DigestMismatchError{What: what, Want: desc.Digest, Got: got})
				if err := ep.c.sleep(ctx, ep.c.retry.Delay(attempt)); err != nil {
					return nil, err
				}
				continue
			}
			return nil, &pullkit.DigestMismatchError{What: what, Want: desc.Digest, Got: got}
		}
		if desc.Size >= 0 && int64(len(raw)) != desc.Size {
			return nil, &pullkit.SizeMismatchError{What: what, Want: desc.Size, Got: int64(len(raw)), Source: "body"}
		}
		return raw, nil
	}
}

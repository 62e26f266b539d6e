package puller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/google/go-containerregistry/pkg/name"
	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
)

// Range is a byte range of a blob: Start to End inclusive, or to the end of the blob
// when End < 0. It is the layers package's, so that *Repository is a layers.Fetcher.
type Range = layers.Range

// rangeHeader formats r as an HTTP Range value.
func rangeHeader(r *Range) string {
	if r.End < 0 {
		return fmt.Sprintf("bytes=%d-", r.Start)
	}
	return fmt.Sprintf("bytes=%d-%d", r.Start, r.End)
}

var _ layers.Fetcher = (*Repository)(nil)

// Repository is an authenticated connection to one repository of one registry. It
// fetches manifests and blobs; its FetchBlob makes it the layers package's Fetcher.
type Repository struct {
	client *Client
	name   name.Repository
	http   *http.Client // authenticated, for the registry
	anon   *http.Client // no credentials, for foreign-layer URLs
	// fallback lists the endpoints after this one (a mirror's later mirrors and the
	// origin), asked in order for blobs this endpoint fails to serve.
	fallback []name.Repository
}

// via names the endpoint when it is a mirror of origin ("" for the origin itself).
func (r *Repository) via(origin name.Repository) string {
	if r.name.RegistryStr() == origin.RegistryStr() {
		return ""
	}
	return " via mirror " + r.name.RegistryStr()
}

// Name returns the repository's full name, e.g. "index.docker.io/library/alpine".
func (r *Repository) Name() string { return r.name.Name() }

// url builds a /v2/ API URL for the repository; the scheme the ping settled on is
// applied by the transport.
func (r *Repository) url(kind, ident string) string {
	return fmt.Sprintf("%s://%s/v2/%s/%s/%s", r.name.Scheme(), r.name.RegistryStr(), r.name.RepositoryStr(), kind, ident)
}

// manifestResponse is one manifest as served.
type manifestResponse struct {
	raw           []byte
	contentType   string
	contentDigest string // Docker-Content-Digest, "" when absent
}

// headManifest asks for ident's digest without the body. It returns "" when the
// registry answered but named no usable digest.
func (r *Repository) headManifest(ctx context.Context, ident, expected string) (digest.Digest, error) {
	req, err := r.newRequest(ctx, http.MethodHead, r.url("manifests", ident))
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", manifest.AcceptHeader)
	resp, err := r.http.Do(req)
	if err != nil {
		return "", connError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", statusError(resp, expected)
	}
	if resp.ContentLength > r.client.maxManifest {
		return "", &TooLargeError{What: "manifest", Limit: r.client.maxManifest, Size: resp.ContentLength}
	}
	d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		return "", nil
	}
	return d, nil
}

// getManifest fetches ident's manifest through the size cap. A body cut short by a
// broken connection is fetched again (the status-level retries live in the transport).
func (r *Repository) getManifest(ctx context.Context, ident, expected string) (*manifestResponse, error) {
	attempts := max(r.client.attempts, 1)
	for attempt := 1; ; attempt++ {
		mr, retry, err := r.getManifestOnce(ctx, ident, expected)
		if err == nil || !retry || attempt >= attempts || ctx.Err() != nil {
			return mr, err
		}
		if serr := r.client.sleep(ctx, r.client.retryBase); serr != nil {
			return nil, serr
		}
	}
}

// getManifestOnce is one GET; retry says whether a failure was the body breaking off.
func (r *Repository) getManifestOnce(ctx context.Context, ident, expected string) (mr *manifestResponse, retry bool, err error) {
	req, err := r.newRequest(ctx, http.MethodGet, r.url("manifests", ident))
	if err != nil {
		return nil, false, err
	}
	req.Header.Set("Accept", manifest.AcceptHeader)
	resp, err := r.http.Do(req)
	if err != nil {
		return nil, false, connError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, false, statusError(resp, expected)
	}
	raw, err := readCapped(resp, r.client.maxManifest, "manifest")
	if errors.Is(err, ErrTooLarge) {
		return nil, false, err
	}
	if err != nil {
		return nil, true, connError(err)
	}
	return &manifestResponse{
		raw:           raw,
		contentType:   resp.Header.Get("Content-Type"),
		contentDigest: resp.Header.Get("Docker-Content-Digest"),
	}, false, nil
}

// manifestByDigest fetches the manifest named by want and checks the bytes are it
// (canonical digest, or for signed schema 1 also sha256 of the bytes as served).
func (r *Repository) manifestByDigest(ctx context.Context, want digest.Digest) (*manifest.Manifest, error) {
	mr, err := r.getManifest(ctx, want.String(), "manifest "+want.String())
	if err != nil {
		return nil, err
	}
	return manifest.Verify(mr.raw, mr.contentType, want)
}

// manifestByTag resolves tag: HEAD for its digest, then GET by that digest (verified);
// when HEAD is refused or names no digest, GET by tag and check Docker-Content-Digest
// when the registry sends one.
func (r *Repository) manifestByTag(ctx context.Context, tag string) (*manifest.Manifest, error) {
	expected := fmt.Sprintf("a manifest for tag %q", tag)
	d, err := r.headManifest(ctx, tag, expected)
	switch {
	case err == nil && d != "":
		m, gerr := r.manifestByDigest(ctx, d)
		if gerr == nil || !errors.Is(gerr, ErrNotFound) {
			if gerr != nil {
				return nil, fmt.Errorf("tag %q is %s: %w", tag, d, gerr)
			}
			return m, nil
		}
		// The registry named a digest it does not serve by: fall back to the tag.
	case err == nil:
	case headFallback(err):
	default:
		return nil, err
	}
	mr, err := r.getManifest(ctx, tag, expected)
	if err != nil {
		return nil, err
	}
	if mr.contentDigest == "" {
		return manifest.Parse(mr.raw, mr.contentType)
	}
	want, perr := digest.Parse(mr.contentDigest)
	if perr != nil {
		return nil, fmt.Errorf("%w: Docker-Content-Digest %q for tag %q is not a digest", ErrProtocol, printable(mr.contentDigest, 100), tag)
	}
	m, err := manifest.Verify(mr.raw, mr.contentType, want)
	if err != nil {
		return nil, fmt.Errorf("tag %q (Docker-Content-Digest %s): %w", tag, want, err)
	}
	return m, nil
}

// headFallback reports whether a failed HEAD is worth a GET: anything but a verdict on
// the manifest itself (missing, forbidden, too large) or our own refusal.
func headFallback(err error) bool {
	var he *HTTPError
	if !errors.As(err, &he) {
		return false
	}
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrUnauthorized):
		return false
	}
	return true
}

// FetchBlob GETs the blob desc names, with a Range header when rng is not nil. It
// returns the response for 200 and 206 (the caller checks Content-Range, verifies the
// content and closes the body) and an *Error wrapping an *HTTPError otherwise. A
// foreign layer the registry does not have is fetched from its URLs, without the
// registry's credentials.
func (r *Repository) FetchBlob(ctx context.Context, desc manifest.Descriptor, rng *Range) (*http.Response, error) {
	fail := func(err error) (*http.Response, error) {
		return nil, &Error{Reference: r.Name(), Op: "fetch blob", Digest: desc.Digest, Err: err}
	}
	if err := desc.Digest.Validate(); err != nil {
		return fail(fmt.Errorf("%w: descriptor digest %q: %s", pullkit.ErrInvalid, printable(string(desc.Digest), 100), err.Error()))
	}
	resp, err := r.getBlob(ctx, r.http, r.url("blobs", desc.Digest.String()), rng, "blob "+desc.Digest.String())
	if err == nil {
		return resp, nil
	}
	for _, fb := range r.fallback {
		if ctx.Err() != nil {
			break
		}
		repo, ferr := r.client.repository(ctx, fb)
		if ferr == nil {
			resp, ferr = repo.getBlob(ctx, repo.http, repo.url("blobs", desc.Digest.String()), rng, "blob "+desc.Digest.String())
			if ferr == nil {
				return resp, nil
			}
		}
		err = ferr
	}
	if errors.Is(err, ErrNotFound) && len(desc.URLs) > 0 {
		for _, u := range desc.URLs {
			pu, perr := url.Parse(u)
			if perr != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
				continue
			}
			resp, ferr := r.getBlob(ctx, r.anon, u, rng, "foreign layer "+desc.Digest.String())
			if ferr == nil {
				return resp, nil
			}
			err = ferr
		}
	}
	return fail(err)
}

// getBlob does one (retried) blob GET.
func (r *Repository) getBlob(ctx context.Context, hc *http.Client, u string, rng *Range, expected string) (*http.Response, error) {
	req, err := r.newRequest(ctx, http.MethodGet, u)
	if err != nil {
		return nil, err
	}
	if rng != nil {
		req.Header.Set("Range", rangeHeader(rng))
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, connError(err)
	}
	if resp.StatusCode == http.StatusOK || (rng != nil && resp.StatusCode == http.StatusPartialContent) {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, statusError(resp, expected)
}

// fetchDocument GETs a small blob (a config) through the size cap and checks its
// digest and size against desc.
func (r *Repository) fetchDocument(ctx context.Context, desc manifest.Descriptor, what string) ([]byte, error) {
	if desc.Size > r.client.maxManifest {
		return nil, &TooLargeError{What: what, Limit: r.client.maxManifest, Size: desc.Size}
	}
	attempts := max(r.client.attempts, 1)
	for attempt := 1; ; attempt++ {
		resp, err := r.FetchBlob(ctx, desc, nil)
		if err != nil {
			return nil, err
		}
		raw, err := readCapped(resp, r.client.maxManifest, what)
		resp.Body.Close()
		if err != nil {
			if errors.Is(err, ErrTooLarge) {
				return nil, err
			}
			if attempt >= attempts || ctx.Err() != nil {
				return nil, connError(err)
			}
			if serr := r.client.sleep(ctx, r.client.retryBase); serr != nil {
				return nil, serr
			}
			continue
		}
		if got := desc.Digest.Algorithm().FromBytes(raw); got != desc.Digest {
			return nil, &pullkit.DigestMismatchError{What: what, Want: desc.Digest, Got: got}
		}
		if desc.Size >= 0 && int64(len(raw)) != desc.Size {
			return nil, fmt.Errorf("%w: %s %s is %d bytes, its descriptor says %d", ErrProtocol, what, desc.Digest, len(raw), desc.Size)
		}
		return raw, nil
	}
}

func (r *Repository) newRequest(ctx context.Context, method, u string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: build request %s %s: %s", ErrBadReference, method, u, err.Error())
	}
	return req, nil
}

// readCapped reads resp's body, failing with a *TooLargeError past limit bytes.
func readCapped(resp *http.Response, limit int64, what string) ([]byte, error) {
	if resp.ContentLength > limit {
		return nil, &TooLargeError{What: what, Limit: limit, Size: resp.ContentLength}
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s from %s: %w", what, redactURL(resp.Request.URL), err)
	}
	if int64(len(raw)) > limit {
		return nil, &TooLargeError{What: what, Limit: limit, Size: -1}
	}
	if resp.ContentLength >= 0 && int64(len(raw)) != resp.ContentLength {
		return nil, fmt.Errorf("read %s from %s: %w (got %d of %d bytes)", what, redactURL(resp.Request.URL), io.ErrUnexpectedEOF, len(raw), resp.ContentLength)
	}
	return raw, nil
}

// statusError builds an *HTTPError from a failed response (reading a bounded prefix
// of the body for the registry's error codes).
func statusError(resp *http.Response, expected string) error {
	he := &HTTPError{StatusCode: resp.StatusCode, Expected: expected}
	if resp.Request != nil {
		he.Method = resp.Request.Method
		he.URL = redactURL(resp.Request.URL)
	}
	if resp.Body != nil && (resp.Request == nil || resp.Request.Method != http.MethodHead) {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		he.Codes, he.Message = parseErrorBody(body)
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		if ra := resp.Header.Get("Retry-After"); ra != "" {
			he.Message = joinMessage(he.Message, "Retry-After "+printable(ra, 40))
		}
	}
	return he
}

func joinMessage(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// redactURL prints u without user info or query (which may hold tokens).
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.Fragment = ""
	return c.String()
}

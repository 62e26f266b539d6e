package main

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
)

// maxManifest caps what the proxy reads of an upstream manifest or config.
const maxManifest = 4 << 20

// Proxy is the HTTP handler: schema 1 rewrites by tag for old clients, pass-through for
// everything else.
type Proxy struct {
	upstream *url.URL
	key      crypto.Signer
	pass     *httputil.ReverseProxy
	client   *http.Client
}

// NewProxy fronts the registry at upstream, signing rewrites with key.
func NewProxy(upstream *url.URL, key crypto.Signer) *Proxy {
	return &Proxy{
		upstream: upstream,
		key:      key,
		pass:     httputil.NewSingleHostReverseProxy(upstream),
		client:   &http.Client{Timeout: 2 * time.Minute},
	}
}

// ServeHTTP rewrites GET/HEAD /v2/<name>/manifests/<tag> for clients that need schema 1.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	repo, ref, ok := manifestPath(r.URL.Path)
	if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) ||
		isDigest(ref) || !wantsSchema1(r.Header.Values("Accept")) {
		p.pass.ServeHTTP(w, r)
		return
	}
	body, err := p.rewrite(r.Context(), r.Header.Get("Authorization"), repo, ref)
	var up *upstreamError
	switch {
	case errors.As(err, &up) && up.passThrough:
		p.pass.ServeHTTP(w, r) // upstream said no (401, 404…) or already serves schema 1
		return
	case errors.Is(err, pullkit.ErrNoMatch):
		writeError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", err)
		return
	case err != nil:
		writeError(w, http.StatusBadGateway, "UNKNOWN", err)
		return
	}
	m, err := manifest.Parse(body, manifest.MediaTypeDockerSchema1Signed)
	if err != nil { // our own output must verify; never serve it otherwise
		writeError(w, http.StatusInternalServerError, "UNKNOWN", err)
		return
	}
	w.Header().Set("Content-Type", manifest.MediaTypeDockerSchema1Signed)
	w.Header().Set("Docker-Content-Digest", m.Digest.String())
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

// rewrite fetches repo:tag from upstream with a complete Accept header and converts it.
func (p *Proxy) rewrite(ctx context.Context, auth, repo, tag string) ([]byte, error) {
	raw, mediaType, err := p.get(ctx, auth, repo, "manifests", tag, manifest.AcceptHeader)
	if err != nil {
		return nil, err
	}
	m, err := manifest.Parse(raw, mediaType)
	if err != nil {
		return nil, fmt.Errorf("%s:%s: %w", repo, tag, err)
	}
	if m.Kind == manifest.KindIndex {
		d, err := manifest.Choose(m, platforms.Only(schema1Platform))
		if err != nil {
			return nil, fmt.Errorf("%s:%s (%s): %w", repo, tag, m.Digest, err)
		}
		if raw, mediaType, err = p.get(ctx, auth, repo, "manifests", d.Digest.String(), manifest.AcceptHeader); err != nil {
			return nil, err
		}
		if m, err = manifest.Verify(raw, mediaType, d.Digest); err != nil {
			return nil, fmt.Errorf("%s@%s: %w", repo, d.Digest, err)
		}
	}
	if m.Schema1 != nil {
		return nil, &upstreamError{passThrough: true}
	}
	config, _, err := p.get(ctx, auth, repo, "blobs", m.Config.Digest.String(), "")
	if err != nil {
		return nil, err
	}
	out, err := manifest.ToSchema1(m, config, repo, tag, p.key)
	if err != nil {
		return nil, fmt.Errorf("%s:%s: %w", repo, tag, err)
	}
	return out, nil
}

// schema1Platform is what a list is served as to a client that only understands schema 1
// (Pulp and the distribution registry both pick linux/amd64).
var schema1Platform = platforms.Platform{OS: "linux", Architecture: "amd64"}

// wantsSchema1 reports whether a client that sent these Accept header values must be
// served schema 1 when it pulls by tag: it names no schema 2, list or OCI type (the
// registry's rule for clients older than Docker 1.10).
func wantsSchema1(accept []string) bool {
	for _, a := range accept {
		for _, part := range strings.Split(a, ",") {
			mt, _, _ := strings.Cut(part, ";")
			switch strings.ToLower(strings.TrimSpace(mt)) {
			case manifest.MediaTypeDockerSchema2, manifest.MediaTypeDockerManifestList, manifest.MediaTypeOCIManifest, manifest.MediaTypeOCIIndex:
				return false
			}
		}
	}
	return true
}

// upstreamError is an upstream answer the proxy does not turn into a rewrite.
type upstreamError struct {
	status      int
	url         string
	passThrough bool
}

func (e *upstreamError) Error() string {
	return fmt.Sprintf("upstream %s: status %d", e.url, e.status)
}

// get reads one manifest or blob from upstream, capped at maxManifest.
func (p *Proxy) get(ctx context.Context, auth, repo, kind, ident, accept string) ([]byte, string, error) {
	u := p.upstream.JoinPath("v2", repo, kind, ident)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, "", err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("upstream %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// The first request decides: let the client see the registry's own answer.
		return nil, "", &upstreamError{status: resp.StatusCode, url: u.String(), passThrough: kind == "manifests"}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxManifest+1))
	if err != nil {
		return nil, "", fmt.Errorf("upstream %s: %w", u, err)
	}
	if len(b) > maxManifest {
		return nil, "", fmt.Errorf("upstream %s: larger than %d bytes", u, maxManifest)
	}
	if kind == "blobs" {
		if got, want := digest.FromBytes(b), digest.Digest(ident); got != want {
			return nil, "", &pullkit.DigestMismatchError{What: "config", Want: want, Got: got}
		}
	}
	return b, resp.Header.Get("Content-Type"), nil
}

// manifestPath splits /v2/<name>/manifests/<reference>.
func manifestPath(path string) (repo, ref string, ok bool) {
	rest, found := strings.CutPrefix(path, "/v2/")
	if !found {
		return "", "", false
	}
	i := strings.LastIndex(rest, "/manifests/")
	if i <= 0 {
		return "", "", false
	}
	repo, ref = rest[:i], rest[i+len("/manifests/"):]
	return repo, ref, ref != "" && !strings.Contains(ref, "/")
}

func isDigest(ref string) bool { return strings.Contains(ref, ":") }

// writeError answers in the registry's error format.
func writeError(w http.ResponseWriter, status int, code string, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": err.Error()}}})
}

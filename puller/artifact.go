package puller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/store"
)

// Referrers lists the manifests that refer to what ref names (their subject): the
// signatures, SBOMs and attestations pushed for it, as an index's entries (media type,
// digest, size, artifactType, annotations). A tag is resolved first, with a HEAD, to
// the digest it names (the index, for a multi-platform tag). artifactType, unless "",
// keeps only the referrers of that type.
//
// It asks the OCI 1.1 referrers API (GET /v2/<name>/referrers/<digest>), filtering by
// artifact type itself when the registry did not (no OCI-Filters-Applied). A registry
// without the API (404, 405 or 400 there, as distribution answers) is read the way OCI
// 1.1 clients push to it: the index tagged <alg>-<hex> of the subject; no such tag means
// no referrers. With mirrors, the first endpoint that answers gives the list.
func (c *Client) Referrers(ctx context.Context, ref string, artifactType string) ([]manifest.Descriptor, error) {
	r, err := c.parse(ref)
	if err != nil {
		return nil, err
	}
	eps, err := c.endpoints(ref, r, nil)
	if err != nil {
		return nil, pullkit.Wrap(ref, pullkit.OpReferrers, "", err)
	}
	var last error
	for _, ep := range alive(askable(eps, r)) {
		list, err := ep.referrers(ctx, r, artifactType)
		if err == nil {
			return list, nil
		}
		last = pullkit.WrapDetail(ref, pullkit.OpReferrers, ep.via(), "", err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

// subject is the digest ref names on the endpoint: its own, or for a tag the one a HEAD
// (or, when the HEAD says too little, a GET) gives.
func (ep *endpoint) subject(ctx context.Context, r name.Reference) (digest.Digest, error) {
	if d, ok := r.(name.Digest); ok {
		dg, err := digest.Parse(d.DigestStr())
		if err != nil {
			return "", &pullkit.InvalidError{What: "reference", Reason: "digest " + text.Clean(d.DigestStr(), 100), Err: err}
		}
		return dg, nil
	}
	tag := r.Identifier()
	desc, err := ep.head(ctx, tag, fmt.Sprintf("a manifest for tag %q", tag))
	if err == nil && desc.Digest != "" {
		return desc.Digest, nil
	}
	if err != nil && !headRefused(err) {
		return "", err
	}
	_, d, err := ep.manifestByTag(ctx, tag)
	return d, err
}

func (ep *endpoint) referrers(ctx context.Context, r name.Reference, artifactType string) ([]manifest.Descriptor, error) {
	subject, err := ep.subject(ctx, r)
	if err != nil {
		return nil, err
	}
	return ep.referrersOf(ctx, subject, artifactType)
}

// referrersOf lists the referrers of subject on the endpoint (the API, or its tag schema).
func (ep *endpoint) referrersOf(ctx context.Context, subject digest.Digest, artifactType string) ([]manifest.Descriptor, error) {
	u := ep.url("referrers", subject.String())
	if artifactType != "" {
		u += "?artifactType=" + url.QueryEscape(artifactType)
	}
	resp, ri, err := ep.request(ctx, http.MethodGet, u, http.Header{"Accept": {manifest.MediaTypeOCIIndex}}, reqInfo{step: "referrers of " + subject.String()})
	if err != nil {
		return nil, pullkit.Wrap("", "", subject, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		raw, err := readCapped(resp, ep.c.maxManifest, "referrers index")
		if err != nil {
			return nil, pullkit.Wrap("", "", subject, connError(ctx, err))
		}
		idx, err := manifest.Parse(raw, resp.Header.Get("Content-Type"))
		if err == nil && idx.Kind != manifest.KindIndex {
			err = &pullkit.InvalidError{What: idx.MediaType, Reason: "the referrers API answered with a manifest, not an index"}
		}
		if err != nil {
			return nil, pullkit.Wrap("", pullkit.OpReferrers, subject, err)
		}
		filtered := false
		for _, v := range resp.Header.Values("OCI-Filters-Applied") {
			for _, f := range strings.Split(v, ",") {
				filtered = filtered || strings.TrimSpace(f) == "artifactType"
			}
		}
		if filtered {
			return idx.Manifests, nil
		}
		return ofType(idx.Manifests, artifactType), nil
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusBadRequest:
		// No referrers API here (a registry that has one answers 200, with an empty index
		// for a subject nothing refers to): the tag schema.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return ep.referrersTag(ctx, subject, artifactType)
	}
	return nil, pullkit.Wrap("", "", subject, statusError(resp, ri, "referrers", ep.c.now()))
}

// referrersTag reads the referrers tag schema of OCI 1.1: the index tagged
// <alg>-<encoded> of the subject (cut to 128 characters), kept by pushing clients.
func (ep *endpoint) referrersTag(ctx context.Context, subject digest.Digest, artifactType string) ([]manifest.Descriptor, error) {
	tag := subject.Algorithm().String() + "-" + subject.Encoded()
	if len(tag) > 128 {
		tag = tag[:128]
	}
	idx, _, err := ep.manifestByTag(ctx, tag)
	var he *pullkit.HTTPError
	if errors.As(err, &he) && he.StatusCode == http.StatusNotFound && !slices.Contains(he.Codes, "NAME_UNKNOWN") {
		return []manifest.Descriptor{}, nil // no referrers (a missing repository is an error)
	}
	if err == nil && idx.Kind != manifest.KindIndex {
		err = &pullkit.InvalidError{What: idx.MediaType, Reason: "the referrers tag " + tag + " names a manifest, not an index"}
	}
	if err != nil {
		return nil, pullkit.WrapDetail("", pullkit.OpReferrers, "(tag "+tag+")", "", err)
	}
	return ofType(idx.Manifests, artifactType), nil
}

// ofType keeps the descriptors of artifactType ("" keeps all), never returning nil.
func ofType(ds []manifest.Descriptor, artifactType string) []manifest.Descriptor {
	out := []manifest.Descriptor{}
	for _, d := range ds {
		if artifactType == "" || d.ArtifactType == artifactType {
			out = append(out, d)
		}
	}
	return out
}

// PullArtifact pulls the artifact ref names (typically by a digest Referrers gave) into
// st, as Pull does an image: the manifest verified against the digest that names it (or
// a tag's Docker-Content-Digest) and read with manifest.ParseArtifact, then its config
// and blobs through layers.Fetch (each verified, resumable, under a lease), the manifest
// stored as served, and the artifact named by its full reference last. It is for what
// Pull refuses as not an image: signatures, SBOMs, attestations (an OCI manifest with an
// artifactType or a config that is not an image's, or the withdrawn artifact manifest).
// Of the options, WithProgress and WithJobs apply; the others concern images.
func (c *Client) PullArtifact(ctx context.Context, ref string, st store.Store, opts ...PullOption) (*manifest.Artifact, error) {
	o, err := callOptions(opts)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, &pullkit.InvalidError{What: "PullArtifact", Reason: "nil store"}
	}
	r, err := c.parse(ref)
	if err != nil {
		return nil, err
	}
	eps, err := c.endpoints(ref, r, o)
	if err != nil {
		return nil, pullkit.WrapDetail(ref, pullkit.OpFetchManifest, "of artifact", "", err)
	}
	var last error
	for _, ep := range alive(askable(eps, r)) {
		a, err := ep.artifact(ctx, r)
		if err != nil {
			last = pullkit.WrapDetail(ref, pullkit.OpFetchManifest, strings.TrimSpace("of artifact "+ep.via()), "", err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		o.emit(pullkit.Event{Kind: pullkit.EventVerified, What: "manifest", Digest: a.Digest, Done: int64(len(a.Raw)), Total: int64(len(a.Raw))})
		a.Reference, a.Name = ref, fullName(ep.logical)
		if err := c.storeArtifact(ctx, contentFrom(eps, ep, r), st, a, o); err != nil {
			return nil, pullkit.Wrap(ref, "", "", err)
		}
		return a, nil
	}
	return nil, last
}

// artifact fetches and verifies the artifact manifest r names on the endpoint.
func (ep *endpoint) artifact(ctx context.Context, r name.Reference) (*manifest.Artifact, error) {
	ident, want := r.Identifier(), digest.Digest("")
	if d, ok := r.(name.Digest); ok {
		dg, err := digest.Parse(d.DigestStr())
		if err != nil {
			return nil, &pullkit.InvalidError{What: "reference", Reason: "digest " + text.Clean(d.DigestStr(), 100), Err: err}
		}
		want = dg
	}
	expected := fmt.Sprintf("a manifest for tag %q", ident)
	if want != "" {
		expected = "manifest"
	}
	for attempt := 1; ; attempt++ {
		s, err := ep.get(ctx, ident, expected)
		if err != nil {
			return nil, err
		}
		check := want
		if check == "" {
			check = s.contentDigest
		}
		if check != "" {
			if got := check.Algorithm().FromBytes(s.raw); got != check {
				if want != "" && attempt < ep.c.retry.Attempts {
					if err := ep.c.sleep(ctx, ep.c.retry.Delay(attempt)); err != nil {
						return nil, err
					}
					continue // damage in transit passes
				}
				return nil, &pullkit.DigestMismatchError{What: "artifact manifest", Want: check, Got: got}
			}
		}
		return manifest.ParseArtifact(s.raw, s.contentType)
	}
}

// storeArtifact fetches the artifact's config and blobs into st, stores its manifest and
// names it.
func (c *Client) storeArtifact(ctx context.Context, eps []*endpoint, st store.Store, a *manifest.Artifact, o *pullOptions) error {
	lease, err := st.Lease(ctx)
	if err != nil {
		return pullkit.Wrap("", pullkit.OpLease, "", err)
	}
	defer lease.Release()
	var blobs []layers.Blob
	if a.Config != nil {
		blobs = append(blobs, layers.Blob{Desc: *a.Config, What: "config"})
	}
	for _, d := range a.Blobs {
		blobs = append(blobs, layers.Blob{Desc: d})
	}
	ds := []digest.Digest{a.Digest}
	for _, b := range blobs {
		ds = append(ds, b.Desc.Digest)
	}
	if err := lease.Add(ctx, ds...); err != nil {
		return pullkit.Wrap("", pullkit.OpLease, "", err)
	}
	if _, err := layers.Fetch(ctx, &blobSource{eps: eps, progress: o.progress, conns: o.conns}, st, blobs, o.transfer(c.retry, o.progress)...); err != nil {
		return err
	}
	desc := manifest.Descriptor{MediaType: a.MediaType, Digest: a.Digest, Size: int64(len(a.Raw)), ArtifactType: a.ArtifactType}
	if err := store.WriteBlob(ctx, st, desc, a.Raw); err != nil {
		return pullkit.Wrap("", pullkit.OpStoreManifest, a.Digest, err)
	}
	if err := st.PutImage(ctx, store.Image{Name: a.Name, Target: desc}); err != nil {
		return pullkit.WrapDetail("", pullkit.OpNameImage, a.Name, a.Digest, err)
	}
	return nil
}

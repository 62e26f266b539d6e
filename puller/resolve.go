package puller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/trust"
)

// maxIndexDepth bounds indexes nested in indexes.
const maxIndexDepth = 4

// Resolved is a reference resolved to the image manifest for a platform, for services
// that pin tags to digests. It is a plain value.
type Resolved struct {
	// Reference is the reference as given.
	Reference string
	// Name is the full reference, e.g. "docker.io/library/alpine:3.20": what a store
	// names the image by.
	Name string
	// Repository is the repository, e.g. "docker.io/library/alpine".
	Repository string
	// Descriptor describes what the reference named (an index, for a multi-platform
	// tag), with the digest the registry answers to for it.
	Descriptor manifest.Descriptor
	// Manifest describes the image manifest for the platform (Descriptor itself when
	// the reference named one), with the digest the registry answers to and, when the
	// index says, its platform.
	Manifest manifest.Descriptor
	// Trust is what the client's verifier accepted (WithVerifier), or nil without one.
	Trust *trust.Result
}

// Pinned returns the reference that always names this image on its registry, e.g.
// "docker.io/library/alpine@sha256:…".
func (r Resolved) Pinned() string { return r.Repository + "@" + r.Manifest.Digest.String() }

// parse reads ref as go-containerregistry does (docker.io and library/ implied).
func (c *Client) parse(ref string) (name.Reference, error) { return parseRef(ref) }

// StorageName returns the name Pull stores ref's image under, as Resolved.Name and
// manifest.Image.Name give it after a call: the full reference,
// registry/repository:tag (":latest" when ref names no tag) or
// registry/repository@digest, with Docker Hub written "docker.io/library/…" as containerd
// and nerdctl write it. It sends no request. A reference that does not parse is a
// *pullkit.Error with Op pullkit.OpParseReference wrapping pullkit.ErrInvalid. A pull of
// a reference that names an index also names each platform's image by
// store.PlatformName(StorageName(ref), platform).
func StorageName(ref string) (string, error) {
	r, err := parseRef(ref)
	if err != nil {
		return "", err
	}
	return fullName(r), nil
}

func parseRef(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		// ParseReference says only that it could not, naming ref again: ask the parser of
		// the form ref has for what is wrong with it.
		why := err
		if strings.Contains(ref, "@") {
			_, why = name.NewDigest(ref)
		} else {
			_, why = name.NewTag(ref)
		}
		if why == nil {
			why = err
		}
		return nil, pullkit.Wrap(ref, pullkit.OpParseReference, "", &pullkit.InvalidError{What: "reference", Reason: text.Clean(why.Error(), 300)})
	}
	return r, nil
}

// fullName is the name a store gives r: registry/repository:tag or @digest, with Docker
// Hub as containerd and nerdctl write it ("docker.io/…").
func fullName(r name.Reference) string {
	repo := repositoryName(r.Context())
	switch t := r.(type) {
	case name.Digest:
		return repo + "@" + t.DigestStr()
	case name.Tag:
		return repo + ":" + t.TagStr()
	}
	return repo + ":latest"
}

func repositoryName(repo name.Repository) string {
	reg := repo.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + repo.RepositoryStr()
}

// Resolve resolves ref to the image manifest for the platform, in as few requests as
// the protocol allows: for a tag, a HEAD gives the digest and media type (one request;
// for an index, a second fetches and verifies it and takes the platform's entry); for a
// digest, one verified GET. A 429 is waited for as its Retry-After says, never turned
// into a GET.
//
// Resolve refuses what Pull refuses, with the same error: an index with no entry for the
// platform (pullkit.ErrNoMatch), an index of artifacts only (pullkit.ErrUnsupported),
// and an image for another platform than the one the call is for (WithPlatform, or by
// default platforms.Default(); pullkit.ErrNoMatch, Op pullkit.OpCheckPlatform). An index
// entry's platform is taken as the index says it; an image that no entry vouches for (a
// tag naming one image, or an index's only entry without a platform) costs its manifest
// and its config (two more requests for a tag, one for a digest) to check, unless the
// call takes any platform (WithMatcher(platforms.Any())), which keeps the one HEAD.
//
// With mirrors, they are asked first, in order; when every endpoint fails, the last
// error is returned.
//
// With a verifier (WithVerifier), the resolved digests are verified before Resolve
// returns: a refusal is an error wrapping pullkit.ErrUntrusted, an acceptance is in
// Resolved.Trust.
func (c *Client) Resolve(ctx context.Context, ref string, opts ...PullOption) (Resolved, error) {
	o, err := callOptions(opts)
	if err != nil {
		return Resolved{}, err
	}
	ctx = withProgress(ctx, o.progress)
	r, err := c.parse(ref)
	if err != nil {
		return Resolved{}, err
	}
	eps, err := c.endpoints(ref, r, o)
	if err != nil {
		return Resolved{}, pullkit.Wrap(ref, pullkit.OpResolve, "", err)
	}
	var last error
	for _, ep := range alive(askable(eps, r)) {
		content := contentFrom(eps, ep, r)
		// The verifier runs once the digests are known and before any config is fetched
		// (for a platform check); its verdict is the image's, not the endpoint's, so a
		// refusal is final. The signatures are read where the content is.
		var trustRes *trust.Result
		var refused error
		verify := func(res Resolved) error {
			subject := subjectOf(ref, ep.logical, res.Descriptor, []manifest.Descriptor{res.Manifest})
			trustRes, refused = c.verify(ctx, subject, content, o)
			return refused
		}
		res, err := c.resolveOn(ctx, ep, content, r, o, verify)
		if refused != nil {
			return Resolved{}, refused
		}
		if err == nil {
			res.Reference, res.Name, res.Repository = ref, fullName(ep.logical), repositoryName(ep.logical.Context())
			res.Trust = trustRes
			return res, nil
		}
		last = pullkit.WrapDetail(ref, pullkit.OpResolve, ep.via(), "", err)
		if ctx.Err() != nil {
			break
		}
	}
	return Resolved{}, last
}

// resolveOn resolves r on ep; what a platform check fetches by digest comes from content,
// the endpoints that may pull, as Pull fetches it.
//
// verify, called once the digests are known and before any config is fetched, may
// refuse the image.
func (c *Client) resolveOn(ctx context.Context, ep *endpoint, content []*endpoint, r name.Reference, o *pullOptions, verify func(Resolved) error) (Resolved, error) {
	var res Resolved
	var idx *manifest.Manifest
	var image *manifest.Manifest // the image manifest, when it was fetched on the way
	switch r := r.(type) {
	case name.Digest:
		d, err := digest.Parse(r.DigestStr())
		if err != nil {
			return res, &pullkit.InvalidError{What: "reference", Reason: "digest " + text.Clean(r.DigestStr(), 100), Err: err}
		}
		m, err := ep.manifestByDigest(ctx, d)
		if err != nil {
			return res, pullkit.Wrap("", pullkit.OpFetchManifest, d, err)
		}
		res.Descriptor = manifest.Descriptor{MediaType: m.MediaType, Digest: d, Size: int64(len(m.Raw))}
		if m.Kind == manifest.KindIndex {
			idx = m
		} else {
			image = m
		}
	default:
		desc, err := ep.head(ctx, r.Identifier(), fmt.Sprintf("a manifest for tag %q", r.Identifier()))
		switch {
		case err != nil && !headRefused(err):
			return res, err
		case err != nil || desc.Digest == "" || desc.MediaType == "":
			// No HEAD, or a HEAD that says too little: one GET by tag.
			m, d, err := ep.manifestByTag(ctx, r.Identifier())
			if err != nil {
				return res, err
			}
			res.Descriptor = manifest.Descriptor{MediaType: m.MediaType, Digest: d, Size: int64(len(m.Raw))}
			if m.Kind == manifest.KindIndex {
				idx = m
			} else {
				image = m
			}
		case isImageType(desc.MediaType):
			res.Descriptor = desc
		default:
			// An index, or a media type that does not say (some registries serve
			// manifests as application/json): one verified GET by the digest the HEAD
			// gave tells what it is.
			m, err := ep.manifestByDigest(ctx, desc.Digest)
			if err != nil {
				return res, pullkit.Wrap("", pullkit.OpFetchManifest, desc.Digest, err)
			}
			res.Descriptor = manifest.Descriptor{MediaType: m.MediaType, Digest: desc.Digest, Size: int64(len(m.Raw))}
			if m.Kind == manifest.KindIndex {
				idx = m
			} else {
				image = m
			}
		}
	}
	res.Manifest = res.Descriptor
	// An image that no index entry's platform vouches for (the reference named it, or it
	// is an index's only entry, without a platform) is checked as Pull checks it.
	check := idx == nil
	for depth := 0; idx != nil; depth++ {
		if depth >= maxIndexDepth {
			return res, pullkit.Wrap("", pullkit.OpChoosePlatform, idx.Digest, &pullkit.InvalidError{What: "index", Reason: fmt.Sprintf("indexes nested more than %d deep", maxIndexDepth)})
		}
		d, err := manifest.Choose(idx, o.matcher)
		if err != nil {
			return res, pullkit.Wrap("", pullkit.OpChoosePlatform, "", err)
		}
		res.Manifest = d
		// An entry that does not say what it is (Choose takes it, as Pull does) is
		// fetched as a nested index is: one verified GET by its digest tells, so that
		// what Resolve names is what Pull would pull.
		untyped := d.MediaType == ""
		if !untyped && !isIndexType(d.MediaType) {
			check = d.Platform == nil
			break
		}
		detail := "(an index in an index)"
		if untyped {
			detail = "(an index entry without a media type)"
		}
		m, err := ep.manifestByDigest(ctx, d.Digest)
		if err != nil {
			return res, pullkit.WrapDetail("", pullkit.OpFetchManifest, detail, d.Digest, err)
		}
		if untyped && m.Kind == manifest.KindImage {
			res.Manifest.MediaType = m.MediaType
			image = m
			check = d.Platform == nil
			break
		}
		idx = m
	}
	if err := verify(res); err != nil {
		return res, err
	}
	if check && !o.anyPlatform() {
		if err := c.checkResolved(ctx, content, res.Manifest, image, o); err != nil {
			return res, err
		}
	}
	return res, nil
}

// checkResolved checks the image Resolve chose against the platform the call is for, as
// Pull would: its manifest (fetched unless image holds it already), then its config, or
// a schema 1 manifest's own platform. An artifact fails as Pull fails it.
func (c *Client) checkResolved(ctx context.Context, content []*endpoint, d manifest.Descriptor, image *manifest.Manifest, o *pullOptions) error {
	if image == nil {
		var err error
		for _, ep := range alive(content) {
			if image, err = ep.manifestByDigest(ctx, d.Digest); err == nil || !nextEndpoint(ctx, err) {
				break
			}
		}
		if err == nil && image == nil {
			err = fmt.Errorf("%w: no endpoint may pull it", pullkit.ErrDenied)
		}
		if err != nil {
			return pullkit.Wrap("", pullkit.OpFetchManifest, d.Digest, err)
		}
	}
	if image.Kind != manifest.KindImage {
		return pullkit.Wrap("", pullkit.OpFetchManifest, d.Digest, &pullkit.UnsupportedError{What: image.MediaType, Reason: "an index's only entry is not an image manifest"})
	}
	var cfg *manifest.ImageConfig
	if image.Config != nil {
		var raw []byte
		var err error
		for _, ep := range alive(content) {
			if raw, err = ep.document(ctx, *image.Config, "config"); err == nil || !nextEndpoint(ctx, err) {
				break
			}
		}
		if err != nil {
			return pullkit.Wrap("", pullkit.OpFetchConfig, image.Config.Digest, err)
		}
		if cfg, err = manifest.ParseConfig(raw); err != nil {
			return pullkit.Wrap("", pullkit.OpParseConfig, image.Config.Digest, err)
		}
	}
	if err := checkImagePlatform(o, image, cfg); err != nil {
		return pullkit.Wrap("", pullkit.OpCheckPlatform, d.Digest, err)
	}
	return nil
}

// headRefused reports whether a failed HEAD is worth a GET: a registry that does not
// allow it, or says nothing usable; not a verdict on the manifest, a 429 (which the
// transport waited for as long as the policy allows) or a failure of the connection.
func headRefused(err error) bool {
	var he *pullkit.HTTPError
	if !errors.As(err, &he) {
		return false
	}
	switch {
	case errors.Is(err, pullkit.ErrNotFound), errors.Is(err, pullkit.ErrUnauthorized), errors.Is(err, pullkit.ErrDenied),
		errors.Is(err, pullkit.ErrTooManyRequests), errors.Is(err, pullkit.ErrUnreachable):
		return false
	}
	return true
}

// isImageType reports whether mt is the media type of an image manifest.
func isImageType(mt string) bool {
	switch mt {
	case manifest.MediaTypeDockerSchema2, manifest.MediaTypeOCIManifest, manifest.MediaTypeDockerSchema1Signed, manifest.MediaTypeDockerSchema1:
		return true
	}
	return false
}

func isIndexType(mt string) bool {
	return mt == manifest.MediaTypeOCIIndex || mt == manifest.MediaTypeDockerManifestList
}

// ResolveResult is the outcome for one reference of ResolveAll.
type ResolveResult struct {
	Resolved Resolved
	// Err is the reference's error (an *pullkit.Error naming it), or nil.
	Err error
}

// ResolveAll resolves many references at once, with at most WithJobs of them (8 by
// default) in flight, and returns one result per reference, in order. Each reference
// succeeds or fails on its own; with a verifier, each is verified as Resolve does (so at
// most as many verifications run at once), one refusal failing only its reference.
func (c *Client) ResolveAll(ctx context.Context, refs []string, opts ...PullOption) []ResolveResult {
	out := make([]ResolveResult, len(refs))
	o, err := callOptions(opts)
	if err != nil {
		for i := range out {
			out[i].Err = err
		}
		return out
	}
	jobs := 8
	if o.jobsSet {
		jobs = o.jobs
	}
	sem := make(chan struct{}, jobs)
	var wg sync.WaitGroup
	for i, ref := range refs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				out[i].Err = pullkit.Wrap(ref, pullkit.OpResolve, "", ctx.Err())
				return
			}
			defer func() { <-sem }()
			out[i].Resolved, out[i].Err = c.Resolve(ctx, ref, opts...)
		}()
	}
	wg.Wait()
	return out
}

// checkPlatform fails an image whose config names another platform than the one the
// call is for, naming both. A config that names none passes.
func checkPlatform(o *pullOptions, cfg *manifest.ImageConfig) error {
	if cfg == nil || cfg.OS == "" || cfg.Architecture == "" {
		return nil
	}
	p := cfg.Platform()
	if o.matcher.Match(p) {
		return nil
	}
	return &platforms.NoMatchError{Want: platforms.Describe(o.matcher), Offered: []platforms.Platform{p}}
}

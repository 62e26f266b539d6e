package puller

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
)

// Resolved is a reference resolved to one image manifest, with nothing but manifests
// fetched: what the reference named, the manifest chosen for the platform, and the
// repository to fetch the image's blobs from.
type Resolved struct {
	// Reference is the reference as the caller gave it.
	Reference string
	// Name is the parsed reference.
	Name name.Reference
	// Top is the manifest the reference named, as served (an index for a list).
	Top *manifest.Manifest
	// Chosen is the image manifest chosen (Top itself when Top is an image manifest).
	Chosen *manifest.Manifest
	// Descriptor is the index entry Chosen was fetched by, when Top is an index; nil
	// otherwise.
	Descriptor *manifest.Descriptor
	// Repository fetches the image's blobs (it implements the layers package's Fetcher).
	Repository *Repository

	// config is the config blob Client.Config fetched and verified, kept so that Fetch
	// stores it instead of downloading it again.
	config *Config
	// checkDiffIDs is the client's WithDiffIDCheck.
	checkDiffIDs bool
}

// Digest returns the chosen image manifest's digest: the one to pin, and for signed
// schema 1 the canonical (payload) digest.
func (r *Resolved) Digest() digest.Digest { return r.Chosen.Digest }

// Pinned returns the repository with the chosen manifest's digest, e.g.
// "index.docker.io/library/alpine@sha256:…": a reference that always names this image.
func (r *Resolved) Pinned() string {
	return r.Name.Context().Name() + "@" + r.Chosen.Digest.String()
}

// Resolve resolves ref (repo:tag or repo@digest) to the image manifest for the client's
// platform, downloading manifests only. A tag is resolved with HEAD then GET by digest
// (or GET by tag when HEAD is refused, checking Docker-Content-Digest); every manifest
// fetched by digest is verified against it; an index is narrowed with manifest.Choose
// and the chosen entry fetched by digest and verified.
//
// With WithMirrors, the registry's mirrors are asked first, in order, and the origin
// last; the first endpoint that resolves the reference completely wins, and its
// Repository falls back to the later endpoints for blobs it does not have. When every
// endpoint fails, the origin's error is returned.
func (c *Client) Resolve(ctx context.Context, ref string) (*Resolved, error) {
	r, err := c.ParseReference(ref)
	if err != nil {
		return nil, &Error{Reference: ref, Op: "parse reference", Err: err}
	}
	endpoints, err := c.endpoints(r.Context())
	if err != nil {
		return nil, &Error{Reference: ref, Op: "configure mirrors", Err: err}
	}
	var lastErr error
	for i, ep := range endpoints {
		repo, err := c.repository(ctx, ep)
		if err != nil {
			lastErr = &Error{Reference: ref, Op: "authenticate to " + ep.RegistryStr(), Err: err}
		} else if res, err := c.resolveOn(ctx, ref, r, repo); err != nil {
			lastErr = err
		} else {
			res.Repository = repo.withFallback(endpoints[i+1:])
			return res, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// resolveOn resolves the parsed reference r on one endpoint.
func (c *Client) resolveOn(ctx context.Context, ref string, r name.Reference, repo *Repository) (*Resolved, error) {
	var top *manifest.Manifest
	var err error
	switch r := r.(type) {
	case name.Digest:
		want, derr := digest.Parse(r.DigestStr())
		if derr != nil {
			return nil, &Error{Reference: ref, Op: "parse reference", Err: fmt.Errorf("%w: digest %q: %s", ErrBadReference, r.DigestStr(), derr.Error())}
		}
		if top, err = repo.manifestByDigest(ctx, want); err != nil {
			return nil, &Error{Reference: ref, Op: "fetch manifest" + repo.via(r.Context()), Digest: want, Err: err}
		}
	default:
		if top, err = repo.manifestByTag(ctx, r.Identifier()); err != nil {
			return nil, &Error{Reference: ref, Op: "resolve manifest" + repo.via(r.Context()), Err: err}
		}
	}

	res := &Resolved{Reference: ref, Name: r, Top: top, Chosen: top, Repository: repo, checkDiffIDs: c.checkDiffIDs}
	for depth := 0; res.Chosen.Kind == manifest.KindIndex; depth++ {
		if depth >= maxIndexDepth {
			return nil, &Error{Reference: ref, Op: "choose platform", Digest: res.Chosen.Digest,
				Err: fmt.Errorf("%w: indexes nested more than %d deep", pullkit.ErrInvalid, maxIndexDepth)}
		}
		d, err := manifest.Choose(res.Chosen, platforms.Only(c.Platform()))
		if err != nil {
			// manifest.Choose's error names the index digest already.
			return nil, &Error{Reference: ref, Op: "choose platform", Err: err}
		}
		op := "fetch manifest for " + platformString(d.Platform) + repo.via(r.Context())
		if d.Size > c.maxManifest {
			return nil, &Error{Reference: ref, Op: op, Digest: d.Digest,
				Err: &TooLargeError{What: "manifest", Limit: c.maxManifest, Size: d.Size}}
		}
		m, err := repo.manifestByDigest(ctx, d.Digest)
		if err != nil {
			return nil, &Error{Reference: ref, Op: op, Digest: d.Digest, Err: err}
		}
		if d.Size > 0 && int64(len(m.Raw)) != d.Size {
			return nil, &Error{Reference: ref, Op: op, Digest: d.Digest,
				Err: fmt.Errorf("%w: manifest is %d bytes, the index says %d", ErrProtocol, len(m.Raw), d.Size)}
		}
		res.Chosen, res.Descriptor = m, &d
	}
	return res, nil
}

func platformString(p *platforms.Platform) string {
	if p == nil {
		return "the index's only entry"
	}
	return p.String()
}

// Config is an image's config blob, fetched and verified.
type Config struct {
	// Descriptor is the manifest's config descriptor.
	Descriptor manifest.Descriptor
	// Raw is the blob as served (its digest is Descriptor.Digest).
	Raw []byte
	// Parsed is Raw parsed.
	Parsed *manifest.ImageConfig
}

// Config fetches the chosen manifest's config blob through the size cap and verifies
// its digest and size. A schema 1 manifest has no config blob: Config returns nil and
// no error (its config is synthesised from v1Compatibility once diffIDs are known).
func (c *Client) Config(ctx context.Context, r *Resolved) (*Config, error) {
	if r.Chosen.Config == nil {
		return nil, nil
	}
	desc := *r.Chosen.Config
	raw, err := r.Repository.fetchDocument(ctx, desc, "config")
	if err != nil {
		return nil, &Error{Reference: r.Reference, Op: "fetch config", Digest: desc.Digest, Err: err}
	}
	parsed, err := manifest.ParseConfig(raw)
	if err != nil {
		return nil, &Error{Reference: r.Reference, Op: "parse config", Digest: desc.Digest, Err: err}
	}
	r.config = &Config{Descriptor: desc, Raw: raw, Parsed: parsed}
	return r.config, nil
}

// Image builds the normalised model from r and its config (nil for schema 1).
func (r *Resolved) Image(cfg *Config) (*manifest.Image, error) {
	var (
		desc   *manifest.Descriptor
		parsed *manifest.ImageConfig
	)
	if cfg != nil {
		desc, parsed = &cfg.Descriptor, cfg.Parsed
	}
	img, err := manifest.NewImage(r.Reference, r.Top, r.Chosen, r.Descriptor, desc, parsed)
	if err != nil {
		return nil, &Error{Reference: r.Reference, Op: "build image model", Digest: r.Chosen.Digest, Err: err}
	}
	return img, nil
}

// Pull resolves ref, fetches and verifies the config, and returns the normalised model
// (layers base first). It downloads no layer: hand the model and
// Resolved.Repository to the layers package for that.
func (c *Client) Pull(ctx context.Context, ref string) (*manifest.Image, error) {
	_, img, err := c.PullResolved(ctx, ref)
	return img, err
}

// PullResolved is Pull that also returns the resolution, for callers that go on to
// fetch the blobs.
func (c *Client) PullResolved(ctx context.Context, ref string) (*Resolved, *manifest.Image, error) {
	res, err := c.Resolve(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := c.Config(ctx, res)
	if err != nil {
		return nil, nil, err
	}
	img, err := res.Image(cfg)
	if err != nil {
		return nil, nil, err
	}
	return res, img, nil
}

package store

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
)

// Annotations a pull (puller.Client.Pull) writes on the index entry of a name, beside the
// two name annotations, for what the store's own digests no longer say once a manifest is
// converted (to OCI, by default). Image returns them in Target.Annotations.
const (
	// AnnotationRegistryDigest is the digest the registry answers to for what the name's
	// reference named when it was pulled: the index for a multi-platform tag, the image
	// manifest as served otherwise. It is the RepoDigest docker shows, and
	// repository@digest pulls the same content again.
	AnnotationRegistryDigest = "io.pullkit.registry.digest"
	// AnnotationRegistryManifest is the digest of the platform's image manifest as the
	// registry served it (the canonical payload digest for signed schema 1): what
	// puller.Client.Resolve pins for that platform. It equals AnnotationRegistryDigest
	// when the reference named that manifest.
	AnnotationRegistryManifest = "io.pullkit.registry.manifest"
)

// PlatformName is the name a pull gives one platform's image beside the reference's own
// name: name + "@" + the platform (os/architecture[/variant][:os.version]), e.g.
// "registry.example/app:1.0@linux/arm64/v8". A pull of one platform names its image by
// both, so that pulling a second platform of a tag moves the reference's name to it while
// the first stays reachable by its platform name; a pull of every platform names the
// index by the reference and each platform's image by its platform name, which tools that
// unpack one image (umoci) read. The form is valid as an OCI ref.name (skopeo's
// oci:DIR:NAME, umoci's DIR:NAME) and can never be a docker reference, so it cannot be
// mistaken for a tag.
//
// It returns "" for a platform whose parts are not all letters, digits and single '.',
// '_' or '-' between them (nothing a registry sent can make such a name): a pull then
// names that image by the reference alone.
func PlatformName(name string, p platforms.Platform) string {
	p = platforms.Normalize(p)
	for _, part := range []string{p.OS, p.Architecture, p.Variant, p.OSVersion} {
		if part != "" && !refNamePart.MatchString(part) {
			return ""
		}
	}
	if p.OS == "" || p.Architecture == "" {
		return ""
	}
	s := name + "@" + p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	if p.OSVersion != "" {
		s += ":" + p.OSVersion
	}
	return s
}

// refNamePart is what one part of a platform may be in a name: a component of the OCI
// ref.name grammar.
var refNamePart = regexp.MustCompile(`^[A-Za-z0-9]+(?:(?:[._-]|--)[A-Za-z0-9]+)*$`)

// platformSuffix is what PlatformName appends after the "@".
var platformSuffix = regexp.MustCompile(`^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)?(?::[A-Za-z0-9._-]+)?$`)

// isPlatformNameOf reports whether candidate is one of name's platform names, as
// PlatformName writes them.
func isPlatformNameOf(candidate, name string) bool {
	rest, ok := strings.CutPrefix(candidate, name+"@")
	return ok && platformSuffix.MatchString(rest)
}

// loadLimit caps a manifest, index or config Load reads: the cap a pull puts on them.
const loadLimit = 4 << 20

// Load turns a stored name back into the image model, reading only the store: the
// manifest the name points at (verified against its digest), its config, and from them
// the layers base first with their diffIDs and the runtime config, as Pull returned it.
// For a name that points at an index (a pull of every platform), the model is the image
// platforms.Any prefers (this host's platform first) with every platform's image in
// Platforms, in index order.
//
// What only the registry knew comes from the entry's annotations: RegistryDigest and
// Digest are AnnotationRegistryDigest's (the stored target's digest when the entry has
// none, as for a name another tool wrote). Everything else describes what the store holds:
// Stored is the entry's target, Manifest and MediaType the stored (perhaps converted)
// manifest, Reference and Name the name. A schema 1 manifest stored as such has no config
// blob, so its layers have no diffIDs.
//
// It lives in this package because it needs nothing but a store and the manifest
// package: an engine reloading its images after a restart, an exporter or an unpacker
// reads them without a registry client. Errors are *pullkit.Error with Op
// pullkit.OpLoadImage naming the name and the digest involved; a name the store lacks
// wraps pullkit.ErrNotFound.
func Load(ctx context.Context, s Store, name string) (*manifest.Image, error) {
	entry, err := s.Image(ctx, name)
	if err != nil {
		return nil, pullkit.Wrap(name, pullkit.OpLoadImage, "", err)
	}
	t := entry.Target
	m, err := loadManifest(ctx, s, t)
	if err != nil {
		return nil, pullkit.Wrap(name, pullkit.OpLoadImage, t.Digest, err)
	}
	var img *manifest.Image
	if m.Kind == manifest.KindIndex {
		img, err = loadIndex(ctx, s, name, m)
	} else {
		img, err = loadImage(ctx, s, name, m, m, nil)
	}
	if err != nil {
		return nil, pullkit.Wrap(name, pullkit.OpLoadImage, t.Digest, err)
	}
	img.Name = name
	img.Stored = t
	img.RegistryDigest = t.Digest
	if d, err := digest.Parse(t.Annotations[AnnotationRegistryDigest]); err == nil {
		img.RegistryDigest = d
	}
	img.Digest = img.RegistryDigest
	for _, pi := range img.Platforms {
		pi.RegistryDigest, pi.Digest = img.RegistryDigest, img.Digest
	}
	return img, nil
}

// loadManifest reads the manifest (or index) desc describes, verified.
func loadManifest(ctx context.Context, s Provider, desc manifest.Descriptor) (*manifest.Manifest, error) {
	raw, err := ReadBlob(ctx, s, desc.Digest, loadLimit)
	if err != nil {
		return nil, err
	}
	return manifest.Verify(raw, desc.MediaType, desc.Digest)
}

// loadImage builds the model of image m, named as named (m itself, or the index it is
// in, whose entry is entry).
func loadImage(ctx context.Context, s Provider, name string, named, m *manifest.Manifest, entry *manifest.Descriptor) (*manifest.Image, error) {
	var cfg *manifest.ImageConfig
	if m.Config != nil {
		raw, err := ReadBlob(ctx, s, m.Config.Digest, loadLimit)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if cfg, err = manifest.ParseConfig(raw); err != nil {
			return nil, pullkit.Wrap("", pullkit.OpParseConfig, m.Config.Digest, err)
		}
	}
	img, err := manifest.NewImage(name, named, m, entry, m.Config, cfg)
	if err != nil {
		return nil, pullkit.Wrap("", pullkit.OpBuildModel, m.Digest, err)
	}
	return img, nil
}

// loadIndex builds the model of every image of index idx.
func loadIndex(ctx context.Context, s Provider, name string, idx *manifest.Manifest) (*manifest.Image, error) {
	var imgs []*manifest.Image
	primary := -1
	chosen, chooseErr := manifest.Choose(idx, platforms.Any())
	for i := range idx.Manifests {
		d := idx.Manifests[i]
		if d.Platform == nil || d.Platform.OS == "unknown" || d.Annotations["vnd.docker.reference.type"] != "" {
			continue // attestations and other entries that are not a platform's image
		}
		m, err := loadManifest(ctx, s, d)
		if err != nil {
			return nil, fmt.Errorf("manifest for %s: %w", d.Platform, err)
		}
		if m.Kind != manifest.KindImage {
			continue
		}
		img, err := loadImage(ctx, s, name, idx, m, &d)
		if err != nil {
			return nil, err
		}
		if chooseErr == nil && d.Digest == chosen.Digest {
			primary = len(imgs)
		}
		imgs = append(imgs, img)
	}
	if len(imgs) == 0 {
		return nil, &pullkit.UnsupportedError{What: "index " + string(idx.Digest), Reason: "no image with a platform"}
	}
	p := *imgs[max(primary, 0)]
	p.Platforms = imgs
	return &p, nil
}

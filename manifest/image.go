package manifest

import (
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/platforms"
)

// Image is the normalised model of an image, the same for every manifest format: what the
// reference named, the image manifest chosen for the platform, its config and its layers,
// base first.
type Image struct {
	// Reference is the reference the image was pulled by, as given.
	Reference string
	// Name is the full reference the image is stored under in a store's index
	// (registry/repository:tag, or registry/repository@digest for a digest pull); "" when
	// it was not stored.
	Name string
	// Digest is the digest of what the reference named: the index for a list, the
	// canonical (payload) digest for signed schema 1.
	Digest digest.Digest
	// RegistryDigest is the digest the registry answers to for what the reference
	// named, when a puller filled it in: Digest, except for a signed schema 1 on a
	// registry that indexes manifests by the sha256 of their bytes (go-containerregistry's,
	// CUE's), where a reference pinned by Digest would not be found.
	RegistryDigest digest.Digest
	// MediaType is the media type of what the reference named.
	MediaType string
	// Manifest describes the image manifest chosen (the same digest as Digest when the
	// reference named an image manifest). For signed schema 1 its digest is the canonical
	// one and its size the payload's.
	Manifest Descriptor
	// Stored describes what a store's index names for this pull (the manifest as stored,
	// converted when a format was asked for; the index, for a pull of all platforms); its
	// zero value when nothing was stored.
	Stored Descriptor
	// Platform is the chosen manifest's platform, when known.
	Platform *platforms.Platform
	// Config describes the image config blob (for schema 1, once synthesised).
	Config Descriptor
	// Runtime holds the config's defaults for containers run from the image.
	Runtime RuntimeConfig
	// Layers are the image's layers, base first; Empty ones are kept and flagged.
	Layers []Layer
	// Platforms holds, for a pull of every platform of an index, each platform's image in
	// index order; nil otherwise.
	Platforms []*Image
}

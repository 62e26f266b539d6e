package manifest

import (
	digest "github.com/opencontainers/go-digest"
)

// Image is the normalised model of a pulled image, the same for every manifest format.
// Its JSON form is the `pull --json` contract.
type Image struct {
	// Reference is the reference the image was pulled by, as given.
	Reference string `json:"reference"`
	// Digest is the digest of what the reference named, as served: the index for a list,
	// the canonical (payload) digest for signed schema 1.
	Digest digest.Digest `json:"digest"`
	// MediaType is the media type of what the reference named.
	MediaType string `json:"mediaType"`
	// Manifest describes the image manifest chosen (the same as Digest/MediaType when the
	// reference named an image manifest).
	Manifest ManifestRef `json:"manifest"`
	// Platform is the chosen manifest's platform, when known.
	Platform *Platform `json:"platform,omitempty"`
	// Config describes the image config blob (for schema 1 once synthesised; zero before).
	Config ManifestRef `json:"config"`
	// Layers are the image's layers, base first; Empty ones are kept and flagged.
	Layers []Layer `json:"layers"`
}

// ManifestRef is the digest, media type and size of a manifest or config, as printed.
type ManifestRef struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Size      int64         `json:"size"`
}

// Descriptor returns d as a Descriptor.
func (d ManifestRef) Descriptor() Descriptor {
	return Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}
}

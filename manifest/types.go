package manifest

import (
	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/platforms"
)

// Media types of the manifests, configs and layers that pullkit understands.
const (
	// MediaTypeDockerSchema1 is an unsigned Docker Image Manifest V2, Schema 1.
	MediaTypeDockerSchema1 = "application/vnd.docker.distribution.manifest.v1+json"
	// MediaTypeDockerSchema1Signed is a Docker schema 1 manifest signed with a libtrust JWS.
	MediaTypeDockerSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws"
	// MediaTypeDockerSchema2 is a Docker Image Manifest V2, Schema 2.
	MediaTypeDockerSchema2 = "application/vnd.docker.distribution.manifest.v2+json"
	// MediaTypeDockerManifestList is a Docker manifest list (a multi-platform index).
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	// MediaTypeOCIManifest is an OCI image manifest.
	MediaTypeOCIManifest = "application/vnd.oci.image.manifest.v1+json"
	// MediaTypeOCIIndex is an OCI image index.
	MediaTypeOCIIndex = "application/vnd.oci.image.index.v1+json"
	// MediaTypeOCIArtifact is the withdrawn OCI artifact manifest; it is reported as unsupported.
	MediaTypeOCIArtifact = "application/vnd.oci.artifact.manifest.v1+json"

	// MediaTypeDockerConfig is a Docker image config.
	MediaTypeDockerConfig = "application/vnd.docker.container.image.v1+json"
	// MediaTypeOCIConfig is an OCI image config.
	MediaTypeOCIConfig = "application/vnd.oci.image.config.v1+json"

	// MediaTypeDockerLayer is a gzip-compressed Docker layer.
	MediaTypeDockerLayer = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	// MediaTypeDockerLayerUncompressed is an uncompressed Docker layer (rare, but served).
	MediaTypeDockerLayerUncompressed = "application/vnd.docker.image.rootfs.diff.tar"
	// MediaTypeDockerForeignLayer is a Docker layer that must be fetched from its URLs.
	MediaTypeDockerForeignLayer = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
	// MediaTypeOCILayer is an uncompressed OCI layer.
	MediaTypeOCILayer = "application/vnd.oci.image.layer.v1.tar"
	// MediaTypeOCILayerGzip is a gzip-compressed OCI layer.
	MediaTypeOCILayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
	// MediaTypeOCILayerZstd is a zstd-compressed OCI layer.
	MediaTypeOCILayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
	// MediaTypeOCIRestrictedLayer is an uncompressed non-distributable OCI layer.
	MediaTypeOCIRestrictedLayer = "application/vnd.oci.image.layer.nondistributable.v1.tar"
	// MediaTypeOCIRestrictedLayerGzip is a gzip-compressed non-distributable OCI layer.
	MediaTypeOCIRestrictedLayerGzip = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
	// MediaTypeOCIRestrictedLayerZstd is a zstd-compressed non-distributable OCI layer.
	MediaTypeOCIRestrictedLayerZstd = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
)

// EmptyGzipLayer is the digest of the 32-byte gzip of an empty tar that Docker uses for
// layers that change nothing (schema 1 throwaway layers).
const EmptyGzipLayer = digest.Digest("sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4")

// AcceptHeader lists every manifest media type Parse understands, best first, for a
// registry's Accept header. A registry that does not see schema 2 in Accept rewrites
// schema 2 manifests into schema 1, so the list must be complete.
var AcceptHeader = MediaTypeOCIIndex + ", " + MediaTypeDockerManifestList + ", " +
	MediaTypeOCIManifest + ", " + MediaTypeDockerSchema2 + ", " +
	MediaTypeDockerSchema1Signed + ", " + MediaTypeDockerSchema1

// Descriptor points at a blob or a manifest by digest, as in the OCI image-spec.
type Descriptor struct {
	MediaType    string              `json:"mediaType"`
	Digest       digest.Digest       `json:"digest"`
	Size         int64               `json:"size"`
	URLs         []string            `json:"urls,omitempty"`
	Annotations  map[string]string   `json:"annotations,omitempty"`
	Platform     *platforms.Platform `json:"platform,omitempty"`
	ArtifactType string              `json:"artifactType,omitempty"`
}

// Layer is one filesystem layer of an image, in application order (base first).
type Layer struct {
	// Digest is the blob's digest (schema 1 blobSum).
	Digest digest.Digest `json:"digest"`
	// MediaType is the layer's media type; schema 1 layers are MediaTypeDockerLayer.
	MediaType string `json:"mediaType"`
	// Size is the blob's size in bytes, or -1 when the manifest does not say (schema 1).
	Size int64 `json:"size"`
	// DiffID is the digest of the uncompressed tar, when known.
	DiffID digest.Digest `json:"diffID,omitempty"`
	// URLs are where a foreign or non-distributable layer may be fetched from.
	URLs []string `json:"urls,omitempty"`
	// Empty marks a layer that changes nothing (schema 1 throwaway or the well-known
	// empty gzip). It is kept so that history and v1 ids stay whole; skip it when applying.
	Empty bool `json:"empty"`
}

// Descriptor returns a descriptor for the layer's blob.
func (l Layer) Descriptor() Descriptor {
	return Descriptor{MediaType: l.MediaType, Digest: l.Digest, Size: l.Size, URLs: l.URLs}
}

// Kind says what a parsed manifest is.
type Kind int

const (
	// KindImage is a single-platform image manifest (schema 1, schema 2 or OCI).
	KindImage Kind = iota + 1
	// KindIndex is a Docker manifest list or an OCI index.
	KindIndex
)

// Manifest is one parsed manifest document of any supported format.
type Manifest struct {
	// Kind is KindImage or KindIndex.
	Kind Kind
	// MediaType is the manifest's real media type (sniffed when the served one was generic).
	MediaType string
	// Digest is the manifest's digest as registries compute it: sha256 of the bytes as
	// served, or for signed schema 1 sha256 of the signed payload.
	Digest digest.Digest
	// Raw is the document as served.
	Raw []byte

	// Config is the image config descriptor (nil for schema 1, which has none).
	Config *Descriptor
	// Layers are the image's layers, base first.
	Layers []Layer
	// Platform is what the manifest itself says it is for, when it says (schema 1's
	// architecture, or a Docker 25 config descriptor's platform); nil otherwise.
	Platform *platforms.Platform

	// Manifests are an index's entries.
	Manifests []Descriptor

	// Annotations are the manifest's own annotations.
	Annotations map[string]string

	// Schema1 holds what only schema 1 has (nil for other formats).
	Schema1 *Schema1
}

// Compression is how a layer blob is compressed.
type Compression int

// The compressions layers are served with.
const (
	// Uncompressed is a plain tar (or anything that is neither gzip nor zstd).
	Uncompressed Compression = iota
	// Gzip is gzip (RFC 1952).
	Gzip
	// Zstd is Zstandard (RFC 8878).
	Zstd
)

func (c Compression) String() string {
	switch c {
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	}
	return "uncompressed"
}

// DetectCompression tells a layer blob's compression from its first bytes (four are
// enough). Media types are not trusted for this: schema 1 calls every layer gzip, and the
// bytes are what a decompressor has to read.
func DetectCompression(head []byte) Compression {
	switch {
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		return Gzip
	case len(head) >= 4 && head[0] == 0x28 && head[1] == 0xb5 && head[2] == 0x2f && head[3] == 0xfd:
		return Zstd
	}
	return Uncompressed
}

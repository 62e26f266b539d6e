package manifest

import (
	"fmt"
	"strings"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
	"github.com/pullkit/pullkit/platforms"
)

// annotationReferenceType marks an index entry that describes another entry (a BuildKit
// attestation or build record), not a runnable image.
const annotationReferenceType = "vnd.docker.reference.type"

// isUnknown reports an entry for no platform at all (an attestation's unknown/unknown).
func isUnknown(p platforms.Platform) bool {
	return strings.EqualFold(p.OS, "unknown") || strings.EqualFold(p.Architecture, "unknown")
}

// isImageOrIndexType reports whether an index entry's media type can be pulled as an
// image: an image manifest or a nested index of any supported format, or no media type.
func isImageOrIndexType(mediaType string) bool {
	switch mediaType {
	case "", MediaTypeOCIManifest, MediaTypeDockerSchema2, MediaTypeOCIIndex, MediaTypeDockerManifestList,
		MediaTypeDockerSchema1, MediaTypeDockerSchema1Signed:
		return true
	}
	return false
}

// isArtifactEntry reports whether an index entry says it is an artifact: an artifactType
// that is not an image config's media type (go-containerregistry and others write the
// config's media type there for images).
func isArtifactEntry(d Descriptor) bool {
	switch d.ArtifactType {
	case "", MediaTypeOCIConfig, MediaTypeDockerConfig:
		return false
	}
	return true
}

// Choose picks the entry of an index (a Docker manifest list or an OCI index) to pull on
// a host that m matches (nil means platforms.Only(platforms.Default())). The returned
// descriptor may point at a nested index, which the caller resolves in turn.
//
// Only entries whose media type is an image manifest or an index (or is empty) count, and
// never an entry whose os or architecture is "unknown", that carries a
// vnd.docker.reference.type annotation (BuildKit attestations and build records) or that
// names an artifactType other than an image config's (an OCI 1.1 artifact: a signature,
// an SBOM). Among
// the entries m matches, the one m prefers is chosen (with platforms.Only: the highest
// variant level at or below the wanted one, then the newest os.version), and among equals
// the first in index order.
//
// Entries without a platform are not matched, with one exception: when the index holds
// exactly one such entry and nothing else that counts (an OCI layout's index.json
// pointing at a manifest list), that entry is returned whatever m says.
//
// A manifest that is not an index gives an *pullkit.InvalidError; an index whose only
// entries are artifacts gives an *pullkit.UnsupportedError (it holds no image to pull).
// When nothing matches,
// the error wraps a *platforms.NoMatchError whose Offered lists, in index order and as
// the index writes them, the platforms of every entry that counts; the error text names
// the index digest.
func Choose(index *Manifest, m platforms.Matcher) (Descriptor, error) {
	if index == nil {
		return Descriptor{}, &pullkit.InvalidError{Reason: "choose a platform: no manifest given"}
	}
	if index.Kind != KindIndex {
		return Descriptor{}, &pullkit.InvalidError{
			What:   index.MediaType,
			Reason: fmt.Sprintf("choose a platform: manifest %s is not an index (kind %d)", index.Digest, index.Kind),
		}
	}
	if m == nil {
		m = platforms.Only(platforms.Default())
	}

	best := -1
	var offered []platforms.Platform
	var platformless []int
	var artifacts []string
	for i, d := range index.Manifests {
		if isArtifactEntry(d) {
			artifacts = append(artifacts, d.ArtifactType)
			continue
		}
		if !isImageOrIndexType(d.MediaType) || d.Annotations[annotationReferenceType] != "" {
			continue
		}
		if d.Platform == nil {
			platformless = append(platformless, i)
			continue
		}
		if isUnknown(*d.Platform) {
			continue
		}
		offered = append(offered, d.Platform.Clone())
		if !m.Match(*d.Platform) {
			continue
		}
		if best < 0 || m.Less(*d.Platform, *index.Manifests[best].Platform) {
			best = i
		}
	}
	if best >= 0 {
		return index.Manifests[best], nil
	}
	if len(offered) == 0 && len(platformless) == 1 {
		return index.Manifests[platformless[0]], nil
	}
	if len(offered) == 0 && len(platformless) == 0 && len(artifacts) > 0 {
		return Descriptor{}, &pullkit.UnsupportedError{What: "index " + string(index.Digest),
			Reason: fmt.Sprintf("it holds artifacts (artifactType %s), no image", text.List(artifacts, 3))}
	}
	err := &platforms.NoMatchError{Want: platforms.Describe(m), Offered: offered}
	if index.Digest != "" {
		return Descriptor{}, fmt.Errorf("index %s: %w", index.Digest, err)
	}
	return Descriptor{}, err
}

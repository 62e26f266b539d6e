package manifest

import (
	"encoding/json"
	"fmt"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
)

// Artifact is an OCI artifact manifest as signatures, SBOMs and attestations are pushed:
// an OCI image manifest whose config is not an image's or that names an artifactType, or
// the withdrawn OCI artifact manifest. Parse refuses these as images; ParseArtifact reads
// them for what they are.
type Artifact struct {
	// Reference is the reference it was pulled by, as given; "" from ParseArtifact.
	Reference string
	// Name is the full reference a store names it by; "" when it was not stored.
	Name string
	// MediaType is the manifest's media type (MediaTypeOCIManifest or
	// MediaTypeOCIArtifact).
	MediaType string
	// Digest is the sha256 of the manifest's bytes.
	Digest digest.Digest
	// ArtifactType says what the artifact is: the manifest's artifactType or, as the
	// OCI image-spec says when there is none, its config's media type.
	ArtifactType string
	// Config is the config descriptor (nil for the artifact manifest, which has none).
	Config *Descriptor
	// Blobs are the manifest's layers (the artifact manifest's blobs), in order.
	Blobs []Descriptor
	// Subject is the manifest the artifact refers to, or nil.
	Subject *Descriptor
	// Annotations are the manifest's own annotations.
	Annotations map[string]string
	// Raw is the manifest as served.
	Raw []byte
}

// ParseArtifact reads an artifact manifest: an OCI image manifest (any config, any
// layers) or the withdrawn OCI artifact manifest (blobs, no config). mediaType is the
// Content-Type served; when it is empty or generic the type is taken from the document.
// Every descriptor must have a valid digest and a size; other manifests (indexes, Docker
// formats) are a *pullkit.UnsupportedError. It does no I/O; Digest is over raw as given.
func ParseArtifact(raw []byte, mediaType string) (*Artifact, error) {
	served := normalizeMediaType(mediaType)
	var w struct {
		SchemaVersion *int              `json:"schemaVersion"`
		MediaType     string            `json:"mediaType"`
		ArtifactType  string            `json:"artifactType"`
		Config        *Descriptor       `json:"config"`
		Layers        []Descriptor      `json:"layers"`
		Blobs         []Descriptor      `json:"blobs"`
		Manifests     *json.RawMessage  `json:"manifests"`
		FSLayers      *json.RawMessage  `json:"fsLayers"`
		Subject       *Descriptor       `json:"subject"`
		Annotations   map[string]string `json:"annotations"`
	}
	if err := strictUnmarshal(raw, &w); err != nil {
		return nil, &pullkit.InvalidError{What: served, Reason: "malformed JSON", Err: err}
	}
	found := normalizeMediaType(w.MediaType)
	if found == "" {
		switch {
		case w.Manifests != nil || w.FSLayers != nil:
			return nil, &pullkit.UnsupportedError{What: served, Reason: "an index or a schema 1 manifest, not an artifact"}
		case w.Config != nil:
			found = MediaTypeOCIManifest
		case w.Blobs != nil:
			found = MediaTypeOCIArtifact
		case isGeneric(served):
			return nil, &pullkit.InvalidError{What: served, Reason: "neither a manifest nor an artifact manifest"}
		default:
			found = served
		}
	}
	if !isGeneric(served) && served != found {
		return nil, &pullkit.InvalidError{What: served, Reason: "served as " + served + " but the document says " + found}
	}
	a := &Artifact{MediaType: found, Digest: digest.FromBytes(raw), ArtifactType: w.ArtifactType, Annotations: w.Annotations, Raw: raw}
	switch found {
	case MediaTypeOCIManifest:
		if w.SchemaVersion == nil || *w.SchemaVersion != 2 {
			return nil, &pullkit.InvalidError{What: found, Reason: "schemaVersion is not 2"}
		}
		if w.Config == nil {
			return nil, &pullkit.InvalidError{What: found, Reason: "no config descriptor"}
		}
		if w.Blobs != nil {
			return nil, &pullkit.InvalidError{What: found, Reason: "blobs in an image manifest"}
		}
		if err := checkDescriptor(*w.Config, "config"); err != nil {
			return nil, &pullkit.InvalidError{What: found, Reason: err.Error()}
		}
		a.Config = w.Config
		a.Blobs = w.Layers
		if a.ArtifactType == "" {
			a.ArtifactType = w.Config.MediaType
		}
	case MediaTypeOCIArtifact:
		if w.Config != nil || w.Layers != nil {
			return nil, &pullkit.InvalidError{What: found, Reason: "config or layers in an artifact manifest"}
		}
		a.Blobs = w.Blobs
	default:
		return nil, &pullkit.UnsupportedError{What: found, Reason: "not an artifact manifest"}
	}
	if a.Blobs == nil {
		a.Blobs = []Descriptor{}
	}
	for i, d := range a.Blobs {
		if err := checkDescriptor(d, fmt.Sprintf("blob %d", i)); err != nil {
			return nil, &pullkit.InvalidError{What: found, Reason: err.Error()}
		}
	}
	if w.Subject != nil {
		if err := checkDescriptor(*w.Subject, "subject"); err != nil {
			return nil, &pullkit.InvalidError{What: found, Reason: err.Error()}
		}
		a.Subject = w.Subject
	}
	return a, nil
}

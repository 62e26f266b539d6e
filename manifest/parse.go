package manifest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"strconv"
	"strings"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
)

// Parse reads a manifest document of any supported format: Docker schema 1 (signed or
// unsigned), Docker schema 2, Docker manifest list, OCI image manifest or OCI index.
//
// mediaType is the Content-Type the registry served (parameters are ignored). When it is
// empty or generic (application/json, text/plain, application/octet-stream) the format is
// sniffed from the document. When it names a manifest type but the document says it is
// another one, Parse fails with an *pullkit.InvalidError rather than trust either. Artifacts,
// unknown media types and encrypted layers are reported with an *pullkit.UnsupportedError.
//
// Parse does no I/O and never re-encodes raw: Digest is computed over the bytes as given
// (for signed schema 1, over the signed payload).
func Parse(raw []byte, mediaType string) (*Manifest, error) {
	served := normalizeMediaType(mediaType)
	var probe struct {
		SchemaVersion *int             `json:"schemaVersion"`
		MediaType     string           `json:"mediaType"`
		Manifests     *json.RawMessage `json:"manifests"`
		Config        *json.RawMessage `json:"config"`
		Layers        *json.RawMessage `json:"layers"`
		Blobs         *json.RawMessage `json:"blobs"`
		FSLayers      *json.RawMessage `json:"fsLayers"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, &pullkit.InvalidError{What: served, Reason: "not a JSON object", Err: err}
	}
	if probe.SchemaVersion == nil {
		if served == MediaTypeOCIArtifact || normalizeMediaType(probe.MediaType) == MediaTypeOCIArtifact {
			// The withdrawn artifact manifest has no schemaVersion.
			return nil, &pullkit.UnsupportedError{What: MediaTypeOCIArtifact, Reason: "OCI artifact manifest, not an image"}
		}
		return nil, &pullkit.InvalidError{What: served, Reason: "no schemaVersion"}
	}
	switch *probe.SchemaVersion {
	case 1:
		if !isGeneric(served) && served != MediaTypeDockerSchema1 && served != MediaTypeDockerSchema1Signed {
			return nil, &pullkit.InvalidError{What: served, Reason: "served as " + served + " but the document is schema 1"}
		}
		return parseSchema1(raw)
	case 2:
	default:
		return nil, &pullkit.UnsupportedError{What: served, Reason: fmt.Sprintf("schemaVersion %d", *probe.SchemaVersion)}
	}

	found := normalizeMediaType(probe.MediaType)
	if found == "" {
		// OCI lets mediaType be absent: the structure says manifest or index; the
		// served type (when it is one of the pair) says OCI or Docker.
		switch {
		case probe.Blobs != nil && probe.Config == nil:
			return nil, &pullkit.UnsupportedError{What: served, Reason: "artifact manifest (blobs, no config)"}
		case probe.Manifests != nil && probe.Config == nil && probe.Layers == nil:
			found = MediaTypeOCIIndex
			if served == MediaTypeDockerManifestList {
				found = served
			}
		case probe.Config != nil || probe.Layers != nil:
			found = MediaTypeOCIManifest
			if served == MediaTypeDockerSchema2 {
				found = served
			}
		default:
			return nil, &pullkit.InvalidError{What: served, Reason: "schemaVersion 2 document is neither a manifest nor an index"}
		}
	}
	if !isGeneric(served) && served != found {
		return nil, &pullkit.InvalidError{What: served, Reason: "served as " + served + " but the document says " + found}
	}
	switch found {
	case MediaTypeDockerSchema2, MediaTypeOCIManifest:
		return parseImageManifest(raw, found)
	case MediaTypeDockerManifestList, MediaTypeOCIIndex:
		return parseIndex(raw, found)
	case MediaTypeDockerSchema1, MediaTypeDockerSchema1Signed:
		return nil, &pullkit.InvalidError{What: found, Reason: "schema 1 media type with schemaVersion 2"}
	case MediaTypeOCIArtifact:
		return nil, &pullkit.UnsupportedError{What: found, Reason: "OCI artifact manifest, not an image"}
	default:
		return nil, &pullkit.UnsupportedError{What: found, Reason: "unknown manifest media type"}
	}
}

// normalizeMediaType drops parameters and case from a Content-Type.
func normalizeMediaType(mt string) string {
	mt = strings.TrimSpace(mt)
	if mt == "" {
		return ""
	}
	if parsed, _, err := mime.ParseMediaType(mt); err == nil {
		return parsed
	}
	if i := strings.IndexByte(mt, ';'); i >= 0 {
		mt = mt[:i]
	}
	return strings.ToLower(strings.TrimSpace(mt))
}

// isGeneric reports whether a served Content-Type says nothing about the manifest format.
func isGeneric(mt string) bool {
	switch mt {
	case "", "application/json", "text/plain", "application/octet-stream", "binary/octet-stream":
		return true
	}
	return false
}

type wireManifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        *Descriptor       `json:"config"`
	Layers        []Descriptor      `json:"layers"`
	Manifests     []Descriptor      `json:"manifests"`
	Annotations   map[string]string `json:"annotations"`
}

func parseImageManifest(raw []byte, mediaType string) (*Manifest, error) {
	var w wireManifest
	if err := strictUnmarshal(raw, &w); err != nil {
		return nil, &pullkit.InvalidError{What: mediaType, Reason: "malformed JSON", Err: err}
	}
	if w.Config == nil {
		return nil, &pullkit.InvalidError{What: mediaType, Reason: "no config descriptor"}
	}
	if err := checkDescriptor(*w.Config, "config"); err != nil {
		return nil, &pullkit.InvalidError{What: mediaType, Reason: err.Error()}
	}
	switch w.Config.MediaType {
	case MediaTypeDockerConfig, MediaTypeOCIConfig, "application/octet-stream":
	default:
		reason := "config media type " + quoteOrEmpty(w.Config.MediaType) + " is not an image config"
		if w.ArtifactType != "" {
			reason = "artifact " + w.ArtifactType + ": " + reason
		}
		return nil, &pullkit.UnsupportedError{What: mediaType, Reason: reason}
	}
	if w.ArtifactType != "" {
		return nil, &pullkit.UnsupportedError{What: mediaType, Reason: "artifact manifest (artifactType " + w.ArtifactType + ")"}
	}
	m := &Manifest{
		Kind:        KindImage,
		MediaType:   mediaType,
		Digest:      digest.FromBytes(raw),
		Raw:         raw,
		Config:      w.Config,
		Platform:    w.Config.Platform,
		Annotations: w.Annotations,
		Layers:      make([]Layer, 0, len(w.Layers)),
	}
	for i, d := range w.Layers {
		if err := checkDescriptor(d, fmt.Sprintf("layer %d", i)); err != nil {
			return nil, &pullkit.InvalidError{What: mediaType, Reason: err.Error()}
		}
		if err := checkLayerMediaType(d); err != nil {
			return nil, &pullkit.UnsupportedError{What: mediaType, Reason: fmt.Sprintf("layer %d: %v", i, err)}
		}
		m.Layers = append(m.Layers, Layer{
			Digest:    d.Digest,
			MediaType: d.MediaType,
			Size:      d.Size,
			URLs:      d.URLs,
			Empty:     d.Digest == EmptyGzipLayer,
		})
	}
	return m, nil
}

func parseIndex(raw []byte, mediaType string) (*Manifest, error) {
	var w wireManifest
	if err := strictUnmarshal(raw, &w); err != nil {
		return nil, &pullkit.InvalidError{What: mediaType, Reason: "malformed JSON", Err: err}
	}
	for i, d := range w.Manifests {
		if err := checkDescriptor(d, fmt.Sprintf("manifests[%d]", i)); err != nil {
			return nil, &pullkit.InvalidError{What: mediaType, Reason: err.Error()}
		}
	}
	return &Manifest{
		Kind:        KindIndex,
		MediaType:   mediaType,
		Digest:      digest.FromBytes(raw),
		Raw:         raw,
		Manifests:   w.Manifests,
		Annotations: w.Annotations,
	}, nil
}

// strictUnmarshal decodes one JSON value and refuses trailing data.
func strictUnmarshal(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("data after the JSON document")
	}
	return nil
}

// checkDescriptor rejects descriptors a puller could not safely act on.
func checkDescriptor(d Descriptor, what string) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("%s: bad digest %q: %w", what, d.Digest, err)
	}
	if d.Size < 0 {
		return fmt.Errorf("%s %s: negative size %d", what, d.Digest, d.Size)
	}
	return nil
}

func checkLayerMediaType(d Descriptor) error {
	switch d.MediaType {
	case MediaTypeDockerLayer, MediaTypeDockerLayerUncompressed, MediaTypeDockerForeignLayer,
		MediaTypeOCILayer, MediaTypeOCILayerGzip, MediaTypeOCILayerZstd,
		MediaTypeOCIRestrictedLayer, MediaTypeOCIRestrictedLayerGzip, MediaTypeOCIRestrictedLayerZstd:
		return nil
	}
	if strings.Contains(d.MediaType, "+encrypted") {
		return fmt.Errorf("encrypted layer %s (%s)", d.Digest, d.MediaType)
	}
	return fmt.Errorf("layer %s has media type %s, not an image layer", d.Digest, quoteOrEmpty(d.MediaType))
}

// quoteOrEmpty quotes a string that came from the network for an error message, so
// that empty, control or invalid bytes show as escapes.
func quoteOrEmpty(s string) string { return strconv.Quote(s) }

// Verify checks that raw is the manifest named by want, then parses it: want must be
// the sha256 of the bytes as served or, for signed schema 1, its canonical (payload)
// digest (some registries index schema 1 by one, some by the other; either way the bytes
// are exactly those want names). Bytes that are not what want names are a
// *pullkit.DigestMismatchError even when they do not parse: damage in transit is reported as
// damage, not as an unsupported or malformed image.
func Verify(raw []byte, mediaType string, want digest.Digest) (*Manifest, error) {
	if err := want.Validate(); err != nil {
		return nil, fmt.Errorf("verify manifest: bad digest %q: %w", want, err)
	}
	got := want.Algorithm().FromBytes(raw)
	if got == want {
		return Parse(raw, mediaType)
	}
	// Only a signed schema 1 manifest can be named by a digest other than its bytes'.
	m, err := Parse(raw, mediaType)
	if err == nil && m.Schema1 != nil && m.Digest == want {
		return m, nil
	}
	if err != nil && signedPayloadDigest(raw, want.Algorithm()) == want {
		// The signed payload is what want names, intact; what is wrong with the
		// document (its signatures) is not damage in transit.
		return nil, err
	}
	return nil, &pullkit.DigestMismatchError{What: "manifest", Want: want, Got: got}
}

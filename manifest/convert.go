package manifest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
)

// ToSchema1 converts a schema 2 or OCI image manifest and its raw config into a signed
// schema 1 manifest for name (the repository path, e.g. "library/httpd") and tag, as the
// distribution registry and containers/image (skopeo --format v2s1) do for clients that
// only understand schema 1: one fsLayer and one history entry per config history entry,
// newest first; empty_layer steps become throwaway entries whose blob is the well-known
// empty gzip; every v1 id is sha256(blob hex + " " + parent id); the newest entry's
// v1Compatibility is the config itself without rootfs and history, with id, parent and
// throwaway set. A config without history gets one entry per layer. The payload is
// indented with three spaces as the registry writes it, and signed with key (an ephemeral
// EC P-256 key when key is nil). Layers with URLs (foreign layers) cannot be represented in
// schema 1 and are refused with an *pullkit.UnsupportedError.
//
// This is only sound when serving by tag: the result has a new digest, so a client that
// asked by digest must get the original bytes.
func ToSchema1(m *Manifest, config []byte, name, tag string, key crypto.Signer) ([]byte, error) {
	fail := func(reason string, err error) error {
		return &pullkit.InvalidError{What: MediaTypeDockerSchema1Signed, Reason: "convert " + string(m.Digest) + " to schema 1: " + reason, Err: err}
	}
	if m == nil || m.Kind != KindImage || m.Config == nil || m.Schema1 != nil {
		return nil, &pullkit.InvalidError{What: MediaTypeDockerSchema1Signed, Reason: "convert to schema 1: want a schema 2 or OCI image manifest"}
	}
	if got := digest.FromBytes(config); got != m.Config.Digest {
		return nil, &pullkit.DigestMismatchError{What: "config", Want: m.Config.Digest, Got: got}
	}
	for _, l := range m.Layers {
		if len(l.URLs) > 0 {
			return nil, &pullkit.UnsupportedError{What: m.MediaType, Reason: "layer " + string(l.Digest) + " is foreign (has URLs); schema 1 cannot carry it"}
		}
	}
	var img struct {
		Architecture string    `json:"architecture"`
		Created      time.Time `json:"created"`
		History      []History `json:"history"`
	}
	if err := json.Unmarshal(config, &img); err != nil {
		return nil, fail("config is not an image config", err)
	}
	history := img.History
	if len(history) == 0 {
		for range m.Layers {
			history = append(history, History{Created: img.Created.Format(time.RFC3339Nano)})
		}
	}
	if len(history) == 0 {
		return nil, fail("image has no layers and no history", nil)
	}
	nonEmpty := 0
	for _, h := range history {
		if !h.EmptyLayer {
			nonEmpty++
		}
	}
	if nonEmpty != len(m.Layers) {
		return nil, fail(fmt.Sprintf("config history has %d non-empty steps for %d layers", nonEmpty, len(m.Layers)), nil)
	}

	type fsLayer struct {
		BlobSum digest.Digest `json:"blobSum"`
	}
	type historyEntry struct {
		V1Compatibility string `json:"v1Compatibility"`
	}
	n := len(history)
	fsLayers := make([]fsLayer, n)
	v1History := make([]historyEntry, n)
	parent, layer := "", 0
	for i, h := range history {
		blob := EmptyGzipLayer
		if !h.EmptyLayer {
			blob = m.Layers[layer].Digest
			layer++
		}
		fsLayers[n-1-i] = fsLayer{BlobSum: blob}
		if i == n-1 {
			break // the newest entry is the config itself, below
		}
		id := digest.FromString(blob.Encoded() + " " + parent).Encoded()
		created, err := parseCreated(h.Created)
		if err != nil {
			return nil, fail(fmt.Sprintf("history[%d].created", i), err)
		}
		entry := schema1V1Compatibility{ID: id, Parent: parent, Comment: h.Comment, Created: created, Author: h.Author, ThrowAway: h.EmptyLayer}
		entry.ContainerConfig.Cmd = []string{h.CreatedBy}
		b, err := json.Marshal(&entry)
		if err != nil {
			return nil, fail("encode history", err)
		}
		v1History[n-1-i] = historyEntry{V1Compatibility: string(b)}
		parent = id
	}
	topID := digest.FromString(fsLayers[0].BlobSum.Encoded() + " " + parent + " " + string(config)).Encoded()
	top, err := v1ConfigFromConfig(config, topID, parent, history[n-1].EmptyLayer)
	if err != nil {
		return nil, fail("config is not a JSON object", err)
	}
	v1History[0] = historyEntry{V1Compatibility: string(top)}

	payload, err := json.MarshalIndent(struct {
		SchemaVersion int            `json:"schemaVersion"`
		Name          string         `json:"name"`
		Tag           string         `json:"tag"`
		Architecture  string         `json:"architecture"`
		FSLayers      []fsLayer      `json:"fsLayers"`
		History       []historyEntry `json:"history"`
	}{1, name, tag, img.Architecture, fsLayers, v1History}, "", "   ")
	if err != nil {
		return nil, fail("encode manifest", err)
	}
	if key == nil {
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, fmt.Errorf("convert %s to schema 1: ephemeral key: %w", m.Digest, err)
		}
	}
	return SignSchema1(payload, key, nil)
}

// schema1V1Compatibility is the v1Compatibility entry the registry and containers/image
// write for every step but the newest when converting to schema 1.
type schema1V1Compatibility struct {
	ID              string    `json:"id"`
	Parent          string    `json:"parent,omitempty"`
	Comment         string    `json:"comment,omitempty"`
	Created         time.Time `json:"created"`
	ContainerConfig struct {
		Cmd []string
	} `json:"container_config,omitempty"`
	Author    string `json:"author,omitempty"`
	ThrowAway bool   `json:"throwaway,omitempty"`
}

// parseCreated reads a config history "created" time; absent is the zero time.
func parseCreated(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

// v1ConfigFromConfig turns an image config into the newest schema 1 v1Compatibility:
// every member kept as written except rootfs and history, plus id, parent and throwaway;
// members come out sorted, as both converters write them.
func v1ConfigFromConfig(config []byte, id, parent string, throwaway bool) ([]byte, error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(config, &members); err != nil {
		return nil, err
	}
	if members == nil {
		return nil, fmt.Errorf("config is null")
	}
	delete(members, "rootfs")
	delete(members, "history")
	members["id"] = mustJSON(id)
	if parent != "" {
		members["parent"] = mustJSON(parent)
	}
	if throwaway {
		members["throwaway"] = json.RawMessage("true")
	}
	return json.Marshal(members)
}

func mustJSON(s string) json.RawMessage {
	b, _ := json.Marshal(s) // a string always encodes
	return b
}

// FromSchema1 builds an image manifest of mediaType (MediaTypeDockerSchema2 or
// MediaTypeOCIManifest) and its config from a schema 1 image whose layers were fetched,
// as skopeo --format does: layers is m.Layers with Size and DiffID filled in (and
// MediaType corrected when a blob turned out not to be gzip). The config is
// m.Schema1.SynthesizeConfig of the diffIDs; throwaway layers are dropped from the layer list.
func FromSchema1(m *Manifest, layers []Layer, mediaType string) (manifestJSON, configJSON []byte, err error) {
	if m == nil || m.Schema1 == nil {
		return nil, nil, &pullkit.InvalidError{What: mediaType, Reason: "convert from schema 1: not a schema 1 manifest"}
	}
	fail := func(reason string) error {
		return &pullkit.InvalidError{What: mediaType, Reason: "convert " + string(m.Digest) + " from schema 1: " + reason}
	}
	configType := MediaTypeDockerConfig
	switch mediaType {
	case MediaTypeDockerSchema2:
	case MediaTypeOCIManifest:
		configType = MediaTypeOCIConfig
	default:
		return nil, nil, &pullkit.UnsupportedError{What: mediaType, Reason: "schema 1 converts to schema 2 or OCI only"}
	}
	if len(layers) != len(m.Schema1.History) {
		return nil, nil, fail(fmt.Sprintf("%d layers given for %d history entries", len(layers), len(m.Schema1.History)))
	}
	var diffIDs []digest.Digest
	descs := []Descriptor{}
	for i, l := range layers {
		if l.Digest != m.Layers[i].Digest {
			return nil, nil, fail(fmt.Sprintf("layer %d is %s, want %s", i, l.Digest, m.Layers[i].Digest))
		}
		if m.Schema1.History[i].Throwaway {
			continue
		}
		if l.DiffID == "" || l.Size < 0 {
			return nil, nil, fail(fmt.Sprintf("layer %d (%s) has no diffID or size yet; fetch it first", i, l.Digest))
		}
		diffIDs = append(diffIDs, l.DiffID)
		descs = append(descs, Descriptor{MediaType: convertLayerType(l.MediaType, mediaType), Digest: l.Digest, Size: l.Size})
	}
	configJSON, err = m.Schema1.SynthesizeConfig(diffIDs)
	if err != nil {
		return nil, nil, err
	}
	manifestJSON, err = json.Marshal(struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Config        Descriptor   `json:"config"`
		Layers        []Descriptor `json:"layers"`
	}{2, mediaType, Descriptor{MediaType: configType, Digest: digest.FromBytes(configJSON), Size: int64(len(configJSON))}, descs})
	if err != nil {
		return nil, nil, fail("encode manifest: " + err.Error())
	}
	return manifestJSON, configJSON, nil
}

// convertLayerType maps a layer media type to its spelling in the target format.
func convertLayerType(layerType, target string) string {
	gzip := layerType == "" || layerType == MediaTypeDockerLayer || layerType == MediaTypeOCILayerGzip
	plain := layerType == MediaTypeDockerLayerUncompressed || layerType == MediaTypeOCILayer
	switch {
	case target == MediaTypeOCIManifest && gzip:
		return MediaTypeOCILayerGzip
	case target == MediaTypeOCIManifest && plain:
		return MediaTypeOCILayer
	case target == MediaTypeDockerSchema2 && gzip:
		return MediaTypeDockerLayer
	case target == MediaTypeDockerSchema2 && plain:
		return MediaTypeDockerLayerUncompressed
	}
	return layerType
}

// ConvertImage rewrites a Docker schema 2 image manifest as an OCI image manifest or the
// other way round, as skopeo does when it writes an OCI layout: the config and layer
// blobs are untouched (same digests), only media types change, so the manifest gets a
// new digest. Converting to the manifest's own type returns its bytes as served. Zstd
// and non-distributable OCI layers have no Docker spelling and are refused with an
// *pullkit.UnsupportedError.
func ConvertImage(m *Manifest, to string) ([]byte, error) {
	if m == nil || m.Kind != KindImage || m.Config == nil || m.Schema1 != nil {
		return nil, &pullkit.InvalidError{What: to, Reason: "convert: want a schema 2 or OCI image manifest"}
	}
	if m.MediaType == to {
		return m.Raw, nil
	}
	configType := MediaTypeOCIConfig
	switch to {
	case MediaTypeOCIManifest:
	case MediaTypeDockerSchema2:
		configType = MediaTypeDockerConfig
	default:
		return nil, &pullkit.UnsupportedError{What: to, Reason: "convert " + string(m.Digest) + ": target must be schema 2 or OCI"}
	}
	cfg := *m.Config
	cfg.MediaType = configType
	cfg.Platform = nil // Docker 25's platform on the config descriptor is not in either spec
	out := struct {
		SchemaVersion int               `json:"schemaVersion"`
		MediaType     string            `json:"mediaType"`
		Config        Descriptor        `json:"config"`
		Layers        []Descriptor      `json:"layers"`
		Annotations   map[string]string `json:"annotations,omitempty"`
	}{SchemaVersion: 2, MediaType: to, Config: cfg, Layers: []Descriptor{}}
	if to == MediaTypeOCIManifest {
		out.Annotations = m.Annotations
	}
	for _, l := range m.Layers {
		t, ok := layerTypeFor(l.MediaType, to)
		if !ok {
			return nil, &pullkit.UnsupportedError{What: m.MediaType, Reason: "layer " + string(l.Digest) + " (" + l.MediaType + ") has no " + to + " spelling"}
		}
		out.Layers = append(out.Layers, Descriptor{MediaType: t, Digest: l.Digest, Size: l.Size, URLs: l.URLs})
	}
	return json.Marshal(out)
}

// layerTypeFor spells a layer media type in the target manifest format.
func layerTypeFor(layerType, to string) (string, bool) {
	toOCI := map[string]string{
		MediaTypeDockerLayer:             MediaTypeOCILayerGzip,
		MediaTypeDockerLayerUncompressed: MediaTypeOCILayer,
		MediaTypeDockerForeignLayer:      MediaTypeOCIRestrictedLayerGzip,
	}
	toDocker := map[string]string{
		MediaTypeOCILayerGzip:           MediaTypeDockerLayer,
		MediaTypeOCILayer:               MediaTypeDockerLayerUncompressed,
		MediaTypeOCIRestrictedLayerGzip: MediaTypeDockerForeignLayer,
	}
	table := toDocker
	if to == MediaTypeOCIManifest {
		table = toOCI
	}
	if t, ok := table[layerType]; ok {
		return t, true
	}
	for _, t := range table { // already spelled for the target
		if t == layerType {
			return t, true
		}
	}
	return "", false
}

// NewIndex writes an index of the given media type (an OCI index or a Docker manifest
// list) listing entries, each with its platform: what a store names when it keeps every
// platform of an image in another format than the registry served.
func NewIndex(mediaType string, entries []Descriptor) ([]byte, error) {
	if mediaType != MediaTypeOCIIndex && mediaType != MediaTypeDockerManifestList {
		return nil, &pullkit.UnsupportedError{What: mediaType, Reason: "an index is an OCI index or a Docker manifest list"}
	}
	out := struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Manifests     []Descriptor `json:"manifests"`
	}{2, mediaType, []Descriptor{}}
	for _, e := range entries {
		if err := checkDescriptor(e, "index entry"); err != nil {
			return nil, &pullkit.InvalidError{What: mediaType, Reason: err.Error()}
		}
		e.Annotations, e.URLs, e.ArtifactType = nil, nil, ""
		out.Manifests = append(out.Manifests, e)
	}
	return json.Marshal(out)
}

package manifest

import (
	"encoding/json"
	"fmt"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/dockerv1"
	"github.com/pullkit/pullkit/platforms"
)

// ImageConfig is an OCI or Docker image config: what the image runs on, its layers'
// diffIDs, its history and the runtime defaults an engine starts a container with. The
// blob itself is kept by whoever fetched it; ImageConfig never replaces it.
type ImageConfig struct {
	// Architecture, OS, Variant and OSVersion say what the image runs on.
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
	OSVersion    string `json:"os.version,omitempty"`
	// Runtime holds the defaults for containers run from the image (the config's
	// "config" object); its zero value when the config has none.
	Runtime RuntimeConfig `json:"config"`
	// RootFS lists the diffIDs of the non-empty layers, base first.
	RootFS RootFS `json:"rootfs"`
	// History has one entry per build step, base first; EmptyLayer entries made no layer.
	History []History `json:"history,omitempty"`
}

// RuntimeConfig is what an engine needs to run a container from the image.
type RuntimeConfig struct {
	User         string              `json:"User,omitempty"`
	ExposedPorts map[string]struct{} `json:"ExposedPorts,omitempty"`
	Env          []string            `json:"Env,omitempty"`
	Entrypoint   []string            `json:"Entrypoint,omitempty"`
	Cmd          []string            `json:"Cmd,omitempty"`
	Volumes      map[string]struct{} `json:"Volumes,omitempty"`
	WorkingDir   string              `json:"WorkingDir,omitempty"`
	Labels       map[string]string   `json:"Labels,omitempty"`
	StopSignal   string              `json:"StopSignal,omitempty"`
}

// UnmarshalJSON reads Cmd and Entrypoint as Docker does: a list, a single string or null.
func (r *RuntimeConfig) UnmarshalJSON(b []byte) error {
	var w struct {
		User         string
		ExposedPorts map[string]struct{}
		Env          []string
		Entrypoint   dockerv1.StrSlice
		Cmd          dockerv1.StrSlice
		Volumes      map[string]struct{}
		WorkingDir   string
		Labels       map[string]string
		StopSignal   string
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*r = RuntimeConfig{User: w.User, ExposedPorts: w.ExposedPorts, Env: w.Env, Entrypoint: w.Entrypoint,
		Cmd: w.Cmd, Volumes: w.Volumes, WorkingDir: w.WorkingDir, Labels: w.Labels, StopSignal: w.StopSignal}
	return nil
}

// RootFS is an image config's rootfs section.
type RootFS struct {
	Type    string          `json:"type"`
	DiffIDs []digest.Digest `json:"diff_ids"`
}

// History is one entry of an image config's history.
type History struct {
	Created    string `json:"created,omitempty"`
	CreatedBy  string `json:"created_by,omitempty"`
	Author     string `json:"author,omitempty"`
	Comment    string `json:"comment,omitempty"`
	EmptyLayer bool   `json:"empty_layer,omitempty"`
}

// Platform returns the platform the config says the image is for.
func (c *ImageConfig) Platform() platforms.Platform {
	return platforms.Platform{OS: c.OS, Architecture: c.Architecture, Variant: c.Variant, OSVersion: c.OSVersion}
}

// ParseConfig reads an OCI or Docker image config. Every diffID must be a valid digest.
func ParseConfig(raw []byte) (*ImageConfig, error) {
	var c ImageConfig
	if err := strictUnmarshal(raw, &c); err != nil {
		return nil, &pullkit.InvalidError{What: "image config", Reason: "malformed JSON", Err: err}
	}
	for i, d := range c.RootFS.DiffIDs {
		if err := d.Validate(); err != nil {
			return nil, &pullkit.InvalidError{What: "image config", Reason: fmt.Sprintf("rootfs.diff_ids[%d] %q", i, printable(string(d))), Err: err}
		}
	}
	return &c, nil
}

// NewImage assembles the normalised model of an image.
//
// named is the manifest the reference named; image is the image manifest (named itself
// when the reference named an image manifest); entry is named's entry for image when
// named is an index (nil otherwise); configDesc and config are the config's descriptor and
// parsed content when known (nil for schema 1 before a config is synthesised).
//
// The config's diffIDs are assigned, in order, to the layers that carry one; when the
// counts disagree NewImage fails, since the config then describes another image.
func NewImage(reference string, named, image *Manifest, entry, configDesc *Descriptor, config *ImageConfig) (*Image, error) {
	if named == nil || image == nil {
		return nil, &pullkit.InvalidError{What: "image model", Reason: "missing manifest"}
	}
	if image.Kind != KindImage {
		return nil, &pullkit.InvalidError{What: image.MediaType, Reason: "chosen manifest " + string(image.Digest) + " is not an image manifest"}
	}
	img := &Image{
		Reference: reference,
		Digest:    named.Digest,
		MediaType: named.MediaType,
		Manifest:  Descriptor{Digest: image.Digest, MediaType: image.MediaType, Size: int64(len(image.Raw))},
		Layers:    append([]Layer(nil), image.Layers...),
	}
	if image.Schema1 != nil && image.Schema1.Payload != nil {
		// The canonical digest is over the payload; report the payload's size with it.
		img.Manifest.Size = int64(len(image.Schema1.Payload))
	}
	switch {
	case config != nil && config.OS != "" && config.Architecture != "":
		p := config.Platform()
		img.Platform = &p
	case entry != nil && entry.Platform != nil:
		p := entry.Platform.Clone()
		img.Platform = &p
	case image.Platform != nil:
		p := image.Platform.Clone()
		img.Platform = &p
	}
	if img.Platform != nil {
		p := *img.Platform
		img.Manifest.Platform = &p
	}
	if configDesc != nil {
		img.Config = Descriptor{Digest: configDesc.Digest, MediaType: configDesc.MediaType, Size: configDesc.Size}
	}
	if config != nil {
		img.Runtime = config.Runtime
		if len(config.RootFS.DiffIDs) > 0 {
			if err := assignDiffIDs(image, img.Layers, config.RootFS.DiffIDs); err != nil {
				return nil, fmt.Errorf("config %s: %w", img.Config.Digest, err)
			}
		}
	}
	return img, nil
}

// assignDiffIDs gives each layer that has a diffID its diffID, base first. For schema 1
// those are the layers not marked throwaway (docker's rule, which Schema1.Config follows);
// otherwise every layer when the counts agree, else the layers not flagged Empty.
func assignDiffIDs(m *Manifest, layers []Layer, diffIDs []digest.Digest) error {
	skip := make([]bool, len(layers))
	switch {
	case m.Schema1 != nil && len(m.Schema1.History) == len(layers):
		for i, h := range m.Schema1.History {
			skip[i] = h.Throwaway
		}
	case len(layers) != len(diffIDs):
		for i, l := range layers {
			skip[i] = l.Empty
		}
	}
	want := 0
	for _, s := range skip {
		if !s {
			want++
		}
	}
	if want != len(diffIDs) {
		return &pullkit.InvalidError{What: m.MediaType, Reason: fmt.Sprintf("config has %d diff_ids for %d layers (%d that carry a diffID)", len(diffIDs), len(layers), want)}
	}
	j := 0
	for i := range layers {
		if skip[i] {
			continue
		}
		layers[i].DiffID = diffIDs[j]
		j++
	}
	return nil
}

// ChainIDs returns the chain ID of every prefix of diffIDs (base first), as the OCI image
// spec defines it: the base layer's chain ID is its diffID, and each next one is
// sha256(parentChainID + " " + diffID) over the digests' string forms.
func ChainIDs(diffIDs []digest.Digest) []digest.Digest {
	out := make([]digest.Digest, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d
			continue
		}
		out[i] = digest.FromString(string(out[i-1]) + " " + string(d))
	}
	return out
}

package manifest

import (
	"fmt"

	digest "github.com/opencontainers/go-digest"
)

// Config is the part of an OCI or Docker image config that pulling needs. The raw config
// is kept by whoever fetched it; Config never replaces it.
type Config struct {
	// Architecture, OS, Variant and OSVersion say what the image runs on.
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
	OSVersion    string `json:"os.version,omitempty"`
	// RootFS lists the diffIDs of the non-empty layers, base first.
	RootFS RootFS `json:"rootfs"`
	// History has one entry per build step, base first; EmptyLayer entries made no layer.
	History []History `json:"history,omitempty"`
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
func (c *Config) Platform() Platform {
	return Platform{OS: c.OS, Architecture: c.Architecture, Variant: c.Variant, OSVersion: c.OSVersion}
}

// ParseConfig reads an OCI or Docker image config. Every diffID must be a valid digest.
func ParseConfig(raw []byte) (*Config, error) {
	var c Config
	if err := strictUnmarshal(raw, &c); err != nil {
		return nil, &InvalidError{MediaType: MediaTypeOCIConfig, Reason: "malformed image config", Err: err}
	}
	for i, d := range c.RootFS.DiffIDs {
		if err := d.Validate(); err != nil {
			return nil, &InvalidError{MediaType: MediaTypeOCIConfig, Reason: fmt.Sprintf("rootfs.diff_ids[%d] %q", i, d), Err: err}
		}
	}
	return &c, nil
}

// BuildImage assembles the normalised model of a pull.
//
// top is the manifest the reference named; chosen is the image manifest (top itself
// when the reference named an image manifest); chosenDesc is top's entry for chosen when
// top is an index (nil otherwise); cfgDesc and cfg are the config's descriptor and parsed
// content when known (nil for schema 1 before a config is synthesised).
//
// The config's diffIDs are assigned, in order, to the layers that carry one (see
// assignDiffIDs); when the counts disagree BuildImage fails, since the config then
// describes another image.
func BuildImage(reference string, top, chosen *Manifest, chosenDesc, cfgDesc *Descriptor, cfg *Config) (*Image, error) {
	if top == nil || chosen == nil {
		return nil, fmt.Errorf("build image model for %s: %w", reference, &InvalidError{Reason: "missing manifest"})
	}
	if chosen.Kind != KindImage {
		return nil, fmt.Errorf("build image model for %s: %w", reference, &InvalidError{MediaType: chosen.MediaType, Reason: "chosen manifest is not an image manifest"})
	}
	img := &Image{
		Reference: reference,
		Digest:    top.Digest,
		MediaType: top.MediaType,
		Manifest:  ManifestRef{Digest: chosen.Digest, MediaType: chosen.MediaType, Size: int64(len(chosen.Raw))},
		Layers:    append([]Layer(nil), chosen.Layers...),
	}
	if chosen.Schema1 != nil && chosen.Schema1.Payload != nil {
		// The canonical digest is over the payload; report the payload's size with it.
		img.Manifest.Size = int64(len(chosen.Schema1.Payload))
	}
	switch {
	case cfg != nil && cfg.OS != "" && cfg.Architecture != "":
		p := cfg.Platform()
		img.Platform = &p
	case chosenDesc != nil && chosenDesc.Platform != nil:
		p := *chosenDesc.Platform
		img.Platform = &p
	case chosen.Platform != nil:
		p := *chosen.Platform
		img.Platform = &p
	}
	if cfgDesc != nil {
		img.Config = ManifestRef{Digest: cfgDesc.Digest, MediaType: cfgDesc.MediaType, Size: cfgDesc.Size}
	}
	if cfg != nil && len(cfg.RootFS.DiffIDs) > 0 {
		if err := assignDiffIDs(chosen, img.Layers, cfg.RootFS.DiffIDs); err != nil {
			return nil, fmt.Errorf("build image model for %s (config %s): %w", reference, img.Config.Digest, err)
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
		return &InvalidError{MediaType: m.MediaType, Reason: fmt.Sprintf("config has %d diff_ids for %d layers (%d that carry a diffID)", len(diffIDs), len(layers), want)}
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

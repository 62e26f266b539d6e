package archive

import (
	"encoding/json"
	"fmt"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/dockerv1"
	"github.com/pullkit/pullkit/manifest"
)

// v1idConfigDoc is how docker reads an image config: its image.Image embeds V1Image and
// declares its own "parent", which hides V1Image's, so a config's "parent" never reaches
// the legacy image.
type v1idConfigDoc struct {
	dockerv1.Image
	Parent string `json:"parent,omitempty"`
}

// V1Layer is one layer of an image as the legacy `docker save` layout describes it.
type V1Layer struct {
	// ID is the layer's v1 id; its hex part names the layer's folder in the archive.
	ID digest.Digest
	// Parent is the v1 id of the layer below, empty for the base layer.
	Parent digest.Digest
	// DiffID is the layer's diffID (sha256 of its uncompressed tar), from the config.
	DiffID digest.Digest
	// ChainID is the chain ID of the diffIDs from the base up to this layer.
	ChainID digest.Digest
	// JSON is the legacy image JSON docker writes into the layer's folder (<v1id>/json):
	// the hashed legacy image with "id", "parent" and "os" set, without "layer_id".
	JSON []byte
}

// V1IDs returns the legacy v1 image id of every layer of the image config, base first:
// one per rootfs.diff_ids entry, the ids `docker save` names layer folders with and writes
// into the `repositories` file. A config without layers has none.
//
// Before Docker 25, `docker save` wrote one folder per layer, named by its v1 id, and a
// `repositories` file mapping each tag to the top layer's v1 id; Docker 25 to 28 still
// compute the same ids for the legacy image JSON they put under blobs/. A registry never
// serves these ids: docker derives them from the image config, and so does V1IDs.
//
// For the layer at position i docker builds a legacy image: the top layer gets the
// config's own V1Image fields (comment, created, container, container_config,
// docker_version, author, config, architecture, variant, os, Size); every other layer an
// almost empty one whose created is the Unix epoch (Docker 17.06 and later; 1.13 to 17.05
// used the image's created time). It marshals that struct, unmarshals it into a map, adds
// "layer_id" (the chain ID of diffIDs[:i+1]) and, above the base, "parent" (the previous
// v1 id, "sha256:…"), marshals the map (keys sorted) and hashes it.
//
// So the id depends on how docker's Go structs re-encode the config, not on the config's
// bytes: nested objects come out in the field order, omitempty rules and defaults of
// moby's container.Config. Keeping the config's nested objects as raw bytes reproduces a
// config docker wrote itself (the docker 1.13 fixture, whose container_config and config
// are already in struct order) but not one BuildKit wrote (the Docker 25 fixture's config
// has only Env, Cmd, WorkingDir, ArgsEscaped and OnBuild, in that order, while docker
// hashed every field from Hostname to Labels, in struct order, plus an empty
// container_config). So the config is decoded into mirrors of docker's structs and
// re-encoded with encoding/json as docker does; that reproduces both fixtures' ids and
// their legacy JSON byte for byte.
//
// The mirrors follow Docker 20.10 to 24, the last versions whose `repositories` holds v1
// ids: V1Image with Variant and a time.Time created (a config without "created" hashes
// as "0001-01-01T00:00:00Z"), container.Config with MacAddress (omitempty) and OnBuild
// (always written, null when empty), HealthConfig up to StartPeriod. Elsewhere ids
// differ: Docker 25 to 28 hash a missing created as null and keep
// Healthcheck.StartInterval; Docker 29 omits an empty OnBuild, which changes almost every
// id; docker before 20.10 has no Variant. Docker formats the lower layers' epoch in the
// daemon's local time zone; UTC ("1970-01-01T00:00:00Z", the usual setting) is assumed.
func V1IDs(config []byte) ([]digest.Digest, error) {
	layers, err := V1Layers(config)
	if err != nil {
		return nil, err
	}
	ids := make([]digest.Digest, len(layers))
	for i, l := range layers {
		ids[i] = l.ID
	}
	return ids, nil
}

// V1Layers returns, base first, the v1 id, parent, diffID, chain ID and legacy image JSON
// of every layer of the image config, as `docker save` (Docker 20.10 to 24) writes them.
// Errors wrap pullkit.ErrInvalid and name the config's digest.
func V1Layers(config []byte) ([]V1Layer, error) {
	cfgDigest := digest.FromBytes(config)
	fail := func(reason string, err error) error {
		return fmt.Errorf("v1 ids of config %s: %w", cfgDigest,
			&pullkit.InvalidError{What: manifest.MediaTypeDockerConfig, Reason: reason, Err: err})
	}
	cfg, err := manifest.ParseConfig(config)
	if err != nil {
		return nil, fmt.Errorf("v1 ids of config %s: %w", cfgDigest, err)
	}
	var doc v1idConfigDoc
	if err := json.Unmarshal(config, &doc); err != nil {
		return nil, fail("config does not decode as docker's legacy image", err)
	}
	top := doc.Image

	diffIDs := cfg.RootFS.DiffIDs
	chains := manifest.ChainIDs(diffIDs)
	out := make([]V1Layer, len(diffIDs))
	var parent digest.Digest
	for i := range diffIDs {
		img := dockerv1.Image{Created: time.Unix(0, 0).UTC()}
		if i == len(diffIDs)-1 {
			img = top
		}
		id, err := v1ID(img, chains[i], parent)
		if err != nil {
			return nil, fail(fmt.Sprintf("layer %d (%s) legacy image does not encode", i, diffIDs[i]), err)
		}
		img.ID = id.Encoded()
		if parent != "" {
			img.Parent = parent.Encoded()
		}
		img.OS = top.OS
		js, err := json.Marshal(img)
		if err != nil {
			return nil, fail(fmt.Sprintf("layer %d (%s) legacy image does not encode", i, diffIDs[i]), err)
		}
		out[i] = V1Layer{ID: id, Parent: parent, DiffID: diffIDs[i], ChainID: chains[i], JSON: js}
		parent = id
	}
	return out, nil
}

// v1ID hashes one legacy image the way docker's v1.CreateID does: the struct's JSON (id
// cleared) re-read as a map, plus "layer_id" and, when there is one, "parent", encoded
// with sorted keys.
func v1ID(img dockerv1.Image, chainID, parent digest.Digest) (digest.Digest, error) {
	img.ID = ""
	b, err := json.Marshal(img)
	if err != nil {
		return "", err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return "", err
	}
	if fields["layer_id"], err = json.Marshal(chainID); err != nil {
		return "", err
	}
	if parent != "" {
		if fields["parent"], err = json.Marshal(parent); err != nil {
			return "", err
		}
	}
	b, err = json.Marshal(fields)
	if err != nil {
		return "", err
	}
	return digest.FromBytes(b), nil
}

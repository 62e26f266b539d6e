package puller_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

// plainTar is a one-file uncompressed tar.
func plainTar(t *testing.T) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Name: "hello", Mode: 0o644, Size: 5}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// storedManifest reads and parses what a pull stored for img.
func storedManifest(t *testing.T, st store.Store, img *manifest.Image) (*manifest.Manifest, []byte) {
	t.Helper()
	raw, err := store.ReadBlob(t.Context(), st, img.Stored.Digest, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse(raw, img.Stored.MediaType)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := store.ReadBlob(t.Context(), st, m.Config.Digest, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return m, cfg
}

// TestPullSchema1PlainTar pulls a schema 1 image whose only layer is a plain tar (schema 1
// calls every layer gzip): the pull learns the layer's size and diffID while it streams,
// stores an OCI manifest that names the layer for what it is, and a config synthesised
// from the diffIDs.
func TestPullSchema1PlainTar(t *testing.T) {
	layer := plainTar(t)
	diffID := digest.FromBytes(layer)
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []digest.Digest{diffID}},
		"history": []map[string]any{{"created": "2024-01-01T00:00:00Z", "created_by": "COPY hello /"}},
	})
	s2raw, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": manifest.MediaTypeDockerSchema2,
		"config": manifest.Descriptor{MediaType: manifest.MediaTypeDockerConfig, Digest: digest.FromBytes(config), Size: int64(len(config))},
		"layers": []manifest.Descriptor{{MediaType: manifest.MediaTypeDockerLayerUncompressed, Digest: diffID, Size: int64(len(layer))}},
	})
	s2, err := manifest.Parse(s2raw, "")
	if err != nil {
		t.Fatal(err)
	}
	s1raw, err := manifest.ToSchema1(s2, config, "x/plain", "v1", nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := pullkittest.NewRegistry(t)
	reg.PutManifest("x/plain", "v1", manifest.MediaTypeDockerSchema1Signed, s1raw)
	reg.PutBlob("x/plain", layer)

	ref := reg.Ref("x/plain:v1")
	inspected, err := newClient(t).Inspect(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if l := inspected.Layers[0]; l.Size != -1 || l.MediaType != manifest.MediaTypeDockerLayer {
		t.Fatalf("Inspect: %+v, want schema 1's unknown size and gzip label", l)
	}
	st := store.NewMemory()
	img, err := newClient(t).Pull(t.Context(), ref, st)
	if err != nil {
		t.Fatal(err)
	}
	got := img.Layers[0]
	if got.DiffID != diffID || got.Size != int64(len(layer)) || got.MediaType != manifest.MediaTypeDockerLayerUncompressed {
		t.Fatalf("after Pull: %+v, want diffID %s, size %d, uncompressed", got, diffID, len(layer))
	}
	m, cfg := storedManifest(t, st, img)
	if m.MediaType != manifest.MediaTypeOCIManifest || m.Layers[0].MediaType != manifest.MediaTypeOCILayer || !strings.Contains(string(cfg), diffID.String()) {
		t.Fatalf("stored %s with layer %s and config %s", m.MediaType, m.Layers[0].MediaType, cfg)
	}
	if img.Config.Digest != m.Config.Digest {
		t.Errorf("model config %+v, stored %+v", img.Config, m.Config)
	}
}

// TestPullDiffIDCheck: every blob is verified against its digest; the layers' content
// against the config's diff_ids only WithDiffIDCheck, which then fails a layer that is
// not the one the config describes.
func TestPullDiffIDCheck(t *testing.T) {
	layer := pullkittest.RandomLayer(3, 500, manifest.Gzip)
	reg := pullkittest.NewRegistry(t)
	reg.PutBlob("app", layer.Data)
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + digest.FromString("another layer").String() + `"]}}`)
	cd := reg.PutBlob("app", config)
	raw, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": manifest.MediaTypeOCIManifest,
		"config": manifest.Descriptor{MediaType: manifest.MediaTypeOCIConfig, Digest: cd, Size: int64(len(config))},
		"layers": []manifest.Descriptor{{MediaType: manifest.MediaTypeOCILayerGzip, Digest: layer.Digest, Size: layer.Size}},
	})
	reg.PutManifest("app", "v1", manifest.MediaTypeOCIManifest, raw)
	ref := reg.Ref("app:v1")

	if _, err := newClient(t).Pull(t.Context(), ref, store.NewMemory()); err != nil {
		t.Fatalf("Pull without WithDiffIDCheck: %v", err)
	}
	st := store.NewMemory()
	_, err := newClient(t).Pull(t.Context(), ref, st, puller.WithDiffIDCheck(true))
	var de *pullkit.DigestMismatchError
	if !errors.Is(err, pullkit.ErrDigestMismatch) || !errors.As(err, &de) || de.Got != layer.DiffID {
		t.Fatalf("Pull WithDiffIDCheck = %v; want a diffID mismatch that found %s", err, layer.DiffID)
	}
	if msg := oneLine(t, err); !strings.Contains(msg, ref) || !strings.Contains(msg, layer.Digest.String()) {
		t.Errorf("error %q does not name the reference and the layer", msg)
	}
	if imgs, _ := st.Images(t.Context()); len(imgs) != 0 {
		t.Errorf("a layer that is not the config's was named: %v", imgs)
	}
}

// TestPullFormats stores the manifest in the format asked for (a Docker image asked for
// as Docker is kept as served); every format names the same blobs, and the model
// describes what was served either way.
func TestPullFormats(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	img := reg.PushImage("app", "v1", pullkittest.Schema2, pullkittest.Layers(2, 200))
	for _, tc := range []struct {
		format    puller.Format
		mediaType string
	}{
		{puller.FormatOCI, manifest.MediaTypeOCIManifest},
		{puller.FormatDocker, manifest.MediaTypeDockerSchema2},
		{puller.FormatAsServed, manifest.MediaTypeDockerSchema2},
		{puller.FormatSchema1, manifest.MediaTypeDockerSchema1Signed},
	} {
		st := store.NewMemory()
		got, err := newClient(t).Pull(t.Context(), reg.Ref("app:v1"), st, puller.WithFormat(tc.format))
		if err != nil {
			t.Fatalf("%v: %v", tc.format, err)
		}
		if got.Digest != img.Digest || got.MediaType != manifest.MediaTypeDockerSchema2 || got.Stored.MediaType != tc.mediaType {
			t.Errorf("%v: model %s %s, stored %s; want served %s, stored %s", tc.format, got.Digest, got.MediaType, got.Stored.MediaType, img.Digest, tc.mediaType)
		}
		if (tc.format == puller.FormatAsServed || tc.format == puller.FormatDocker) != (got.Stored.Digest == img.Digest) {
			t.Errorf("%v: stored %s, served %s", tc.format, got.Stored.Digest, img.Digest)
		}
		raw, err := store.ReadBlob(t.Context(), st, got.Stored.Digest, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		m, err := manifest.Parse(raw, got.Stored.MediaType)
		if err != nil {
			t.Fatalf("%v: stored manifest: %v", tc.format, err)
		}
		var layers []digest.Digest
		for _, l := range m.Layers {
			if !l.Empty {
				layers = append(layers, l.Digest)
			}
		}
		if len(layers) != 2 || layers[0] != img.Layers[0].Digest || layers[1] != img.Layers[1].Digest {
			t.Errorf("%v: stored layers %v", tc.format, layers)
		}
	}
}

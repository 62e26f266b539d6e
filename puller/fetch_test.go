package puller_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/puller"
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

// resolveHello resolves f's library/hello:latest with a client made of opts and opens a
// fresh store to fetch it into.
func resolveHello(t *testing.T, f *fakeRegistry, opts ...puller.Option) (*puller.Resolved, *manifest.Image, *layers.Layout) {
	t.Helper()
	res, img, err := newClient(opts...).PullResolved(context.Background(), f.ref("library/hello:latest"))
	if err != nil {
		t.Fatal(err)
	}
	store, err := layers.OpenLayout(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return res, img, store
}

func TestResolvedFetchSchema2(t *testing.T) {
	f := newFake(t)
	seedHello(t, f, "library/hello", "latest")
	ctx := context.Background()
	res, img, store := resolveHello(t, f)
	if err := res.Fetch(ctx, store, img); err != nil {
		t.Fatal(err)
	}
	for _, d := range []digest.Digest{img.Config.Digest, img.Layers[0].Digest} {
		if !store.Has(d) {
			t.Errorf("store lacks %s", d)
		}
	}
	if img.Layers[0].DiffID != "sha256:e07ee1baac5fae6a26f30cabfe54a36d3402f96afda318fe0a96cec4ca393359" {
		t.Errorf("diffID %s", img.Layers[0].DiffID)
	}
}

// TestResolvedFetchSchema1 pulls a schema 1 image whose only layer is a plain tar (schema
// 1 calls every layer gzip): Fetch computes its diffID and size and names what it is.
func TestResolvedFetchSchema1(t *testing.T) {
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
	f := newFake(t)
	f.putManifest("x/plain", "v1", fakeManifest{body: s1raw, contentType: manifest.MediaTypeDockerSchema1Signed})
	f.putBlob("x/plain", layer)

	ctx := context.Background()
	res, img, err := newClient().PullResolved(ctx, f.ref("x/plain:v1"))
	if err != nil {
		t.Fatal(err)
	}
	if img.Layers[0].Size != -1 || img.Layers[0].MediaType != manifest.MediaTypeDockerLayer {
		t.Fatalf("before Fetch: %+v, want schema 1's unknown size and gzip label", img.Layers[0])
	}
	store, err := layers.OpenLayout(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Fetch(ctx, store, img); err != nil {
		t.Fatal(err)
	}
	got := img.Layers[0]
	if got.DiffID != diffID || got.Size != int64(len(layer)) || got.MediaType != manifest.MediaTypeDockerLayerUncompressed {
		t.Fatalf("after Fetch: %+v, want diffID %s, size %d, uncompressed", got, diffID, len(layer))
	}
	// The conversion skopeo would do now has everything it needs.
	raw, cfg, err := manifest.FromSchema1(res.Chosen, img.Layers, manifest.MediaTypeOCIManifest)
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse(raw, manifest.MediaTypeOCIManifest)
	if err != nil || m.Layers[0].MediaType != manifest.MediaTypeOCILayer || !strings.Contains(string(cfg), diffID.String()) {
		t.Fatalf("converted: %v %+v", err, m)
	}
}

func TestResolvedFetchDiffIDMismatch(t *testing.T) {
	f := newFake(t)
	seedHello(t, f, "library/hello", "latest")
	ctx := context.Background()
	// Off by default: the layer verifies against its digest, which is all Fetch checks.
	res, img, store := resolveHello(t, f)
	img.Layers[0].DiffID = digest.FromString("another layer")
	if err := res.Fetch(ctx, store, img); err != nil {
		t.Fatalf("Fetch without WithDiffIDCheck: %v", err)
	}

	res, img, store = resolveHello(t, f, puller.WithDiffIDCheck(true))
	img.Layers[0].DiffID = digest.FromString("another layer")
	err := res.Fetch(ctx, store, img)
	var pe *puller.Error
	if !errors.Is(err, layers.ErrDiffIDMismatch) || !errors.As(err, &pe) || pe.Digest != img.Layers[0].Digest {
		t.Fatalf("Fetch = %v; want ErrDiffIDMismatch in an *Error naming %s", err, img.Layers[0].Digest)
	}
	if !strings.Contains(err.Error(), f.ref("library/hello:latest")) {
		t.Errorf("error does not name the reference: %v", err)
	}
}

// TestResolvedFetchConfigOnce: the config PullResolved fetched and verified is stored
// from memory, so a whole pull GETs each blob once.
func TestResolvedFetchConfigOnce(t *testing.T) {
	f := newFake(t)
	seedHello(t, f, "library/hello", "latest")
	ctx := context.Background()
	res, img, store := resolveHello(t, f)
	if err := res.Fetch(ctx, store, img); err != nil {
		t.Fatal(err)
	}
	gets := map[string]int{}
	for _, r := range f.recorded() {
		if r.Method == "GET" && strings.Contains(r.URL.Path, "/blobs/") {
			gets[r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]]++
		}
	}
	if gets[img.Config.Digest.String()] != 1 || gets[img.Layers[0].Digest.String()] != 1 || len(gets) != 2 {
		t.Fatalf("blob GETs %v; want one for the config and one for the layer", gets)
	}
	if !store.Has(img.Config.Digest) {
		t.Fatal("config not stored")
	}
}

package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/store"
)

// Writing a blob through a Layout's writer, which commits only what verifies, and
// reading it back.
func ExampleLayout() {
	dir, err := os.MkdirTemp("", "layout")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	l, err := store.OpenLayout(dir)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()

	data := []byte("hello, layers")
	desc := manifest.Descriptor{MediaType: manifest.MediaTypeOCILayer, Digest: digest.FromBytes(data), Size: int64(len(data))}
	w, err := l.Writer(ctx, desc)
	if err != nil {
		panic(err)
	}
	if _, err := w.Write(data); err != nil {
		panic(err)
	}
	if err := w.Commit(ctx, desc.Size, desc.Digest); err != nil {
		panic(err)
	}

	// A second writer of the same digest finds it stored.
	_, err = l.Writer(ctx, desc)
	fmt.Println("already stored:", errors.Is(err, pullkit.ErrAlreadyExists))

	ra, err := l.ReaderAt(ctx, desc.Digest)
	if err != nil {
		panic(err)
	}
	defer ra.Close()
	word := make([]byte, 6)
	if _, err := ra.ReadAt(word, 7); err != nil {
		panic(err)
	}
	fmt.Printf("%d bytes, from byte 7: %s\n", ra.Size(), word)
	rel, _ := filepath.Rel(l.Dir(), l.Path(desc.Digest))
	fmt.Println(rel)

	// Bytes that do not match the digest never get its name.
	bad := manifest.Descriptor{Digest: digest.FromString("something else"), Size: int64(len(data))}
	err = store.WriteBlob(ctx, l, bad, data)
	fmt.Println("mismatch:", errors.Is(err, pullkit.ErrDigestMismatch), "stored:", store.Has(ctx, l, bad.Digest))
	// Output:
	// already stored: true
	// 13 bytes, from byte 7: layers
	// blobs/sha256/8c95e245fb0fffbc109b4121f9d14d7a1d2a68656586a2acba96f797f595e6bc
	// mismatch: true stored: false
}

// putImage stores a one-layer image (layer, config, manifest) in s the way a pull
// does, under a lease, and names it.
func putImage(ctx context.Context, s store.Store, name string, layer []byte) {
	lease, err := s.Lease(ctx)
	if err != nil {
		panic(err)
	}
	defer lease.Release()
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}`)
	cdesc := manifest.Descriptor{MediaType: manifest.MediaTypeOCIConfig, Digest: digest.FromBytes(config), Size: int64(len(config))}
	ldesc := manifest.Descriptor{MediaType: manifest.MediaTypeOCILayer, Digest: digest.FromBytes(layer), Size: int64(len(layer))}
	m, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": manifest.MediaTypeOCIManifest,
		"config": cdesc, "layers": []manifest.Descriptor{ldesc}})
	mdesc := manifest.Descriptor{MediaType: manifest.MediaTypeOCIManifest, Digest: digest.FromBytes(m), Size: int64(len(m))}
	if err := lease.Add(ctx, cdesc.Digest, ldesc.Digest, mdesc.Digest); err != nil {
		panic(err)
	}
	for _, b := range []struct {
		d    manifest.Descriptor
		data []byte
	}{{ldesc, layer}, {cdesc, config}, {mdesc, m}} {
		if err := store.WriteBlob(ctx, s, b.d, b.data); err != nil {
			panic(err)
		}
	}
	// The name comes last, once everything it reaches is stored.
	if err := s.PutImage(ctx, store.Image{Name: name, Target: mdesc}); err != nil {
		panic(err)
	}
}

// namesAndGC names two images that share their config, lists them, deletes one and
// collects the garbage: only the deleted image's own blobs go.
func namesAndGC(s interface {
	store.Store
	store.Collector
}) {
	ctx := context.Background()
	putImage(ctx, s, "registry.example/app:1.0", []byte("layer of 1.0"))
	putImage(ctx, s, "registry.example/app:2.0", []byte("layer of 2.0"))
	imgs, err := s.Images(ctx)
	if err != nil {
		panic(err)
	}
	for _, img := range imgs {
		fmt.Println(img.Name, img.Target.Annotations[store.AnnotationImageName] == img.Name)
	}
	if err := s.DeleteImage(ctx, "registry.example/app:1.0"); err != nil {
		panic(err)
	}
	res, err := s.GC(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("removed", len(res.Blobs), "blobs")
	_, err = s.Image(ctx, "registry.example/app:1.0")
	fmt.Println("1.0 not found:", errors.Is(err, pullkit.ErrNotFound))
}

// Naming, listing and deleting images in the memory store, and collecting what no
// name reaches any more.
func ExampleMemory() {
	namesAndGC(store.NewMemory())
	// Output:
	// registry.example/app:1.0 true
	// registry.example/app:2.0 true
	// removed 2 blobs
	// 1.0 not found: true
}

// The same in a layout directory, whose index.json skopeo and umoci read by name.
func ExampleLayout_GC() {
	dir, err := os.MkdirTemp("", "layout")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	l, err := store.OpenLayout(dir)
	if err != nil {
		panic(err)
	}
	namesAndGC(l)
	// Output:
	// registry.example/app:1.0 true
	// registry.example/app:2.0 true
	// removed 2 blobs
	// 1.0 not found: true
}

// Check re-hashes every blob of a layout; with repair it removes those whose content no
// longer hashes to their name (a disk error, a hand edit), so that the next pull fetches
// them again instead of trusting them.
func ExampleLayout_Check() {
	dir, err := os.MkdirTemp("", "layout")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	l, err := store.OpenLayout(dir)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	var blobs []digest.Digest
	for _, s := range []string{"first blob", "second blob"} {
		data := []byte(s)
		desc := manifest.Descriptor{MediaType: manifest.MediaTypeOCILayer, Digest: digest.FromBytes(data), Size: int64(len(data))}
		if err := store.WriteBlob(ctx, l, desc, data); err != nil {
			panic(err)
		}
		blobs = append(blobs, desc.Digest)
	}
	// The second blob is damaged on disk, at the same size.
	if err := os.WriteFile(l.Path(blobs[1]), []byte("SECOND BLOB"), 0o644); err != nil {
		panic(err)
	}
	res, err := l.Check(ctx, true)
	if err != nil {
		panic(err)
	}
	fmt.Println("checked", res.Checked, "damaged", len(res.Damaged), "removed", len(res.Removed), res.Removed[0] == blobs[1])
	_, err = l.Info(ctx, blobs[1])
	fmt.Println("gone:", errors.Is(err, pullkit.ErrNotFound))
	// Output:
	// checked 2 damaged 1 removed 1 true
	// gone: true
}

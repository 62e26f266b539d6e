package layers_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/store"
)

// memFetcher serves blobs from memory: the smallest Fetcher, as an engine might write
// one over its own transport (a peer, a cache, a file).
type memFetcher map[digest.Digest][]byte

func (m memFetcher) Fetch(ctx context.Context, desc manifest.Descriptor, offset, length int64) (io.ReadCloser, error) {
	b, ok := m[desc.Digest]
	if !ok {
		return nil, fmt.Errorf("%w: %s", pullkit.ErrNotFound, desc.Digest)
	}
	end := int64(len(b))
	if length >= 0 {
		end = offset + length
	}
	return io.NopCloser(bytes.NewReader(b[offset:end])), nil
}

// Fetch any blobs through any Fetcher into any store, verified, with progress: the
// engine under Pull, usable on its own.
func ExampleFetch() {
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	layer := bytes.Repeat([]byte("pullkit "), 1<<17) // 1 MiB
	f := memFetcher{digest.FromBytes(config): config, digest.FromBytes(layer): layer}
	st := store.NewMemory()

	var mu sync.Mutex
	var verified []string
	progress := func(e pullkit.Event) {
		mu.Lock()
		defer mu.Unlock()
		switch e.Kind {
		case pullkit.EventPlanned:
			fmt.Printf("%d blobs, %d bytes\n", e.Blobs, e.Total)
		case pullkit.EventVerified:
			verified = append(verified, e.What)
		}
	}
	res, err := layers.Fetch(context.Background(), f, st, []layers.Blob{
		{Desc: manifest.Descriptor{MediaType: manifest.MediaTypeOCIConfig, Digest: digest.FromBytes(config), Size: int64(len(config))}, What: "config"},
		{Desc: manifest.Descriptor{MediaType: manifest.MediaTypeOCILayer, Digest: digest.FromBytes(layer), Size: int64(len(layer))}, DiffID: true},
	}, layers.WithProgress(progress))
	if err != nil {
		panic(err)
	}
	fmt.Println(len(verified), "verified;", "layer diffID is its digest:", res[1].DiffID == digest.FromBytes(layer))
	fmt.Println(store.Has(context.Background(), st, digest.FromBytes(layer)))

	// A blob that does not hash to its name is refused, and never stored.
	bad := manifest.Descriptor{Digest: digest.FromString("something else"), Size: int64(len(config))}
	f[bad.Digest] = config
	_, err = layers.Fetch(context.Background(), f, st, []layers.Blob{{Desc: bad}}, layers.WithRetry(pullkit.RetryPolicy{Attempts: 1}))
	fmt.Println(errors.Is(err, pullkit.ErrDigestMismatch), store.Has(context.Background(), st, bad.Digest))
	// Output:
	// 2 blobs, 1048654 bytes
	// 2 verified; layer diffID is its digest: true
	// true
	// true false
}

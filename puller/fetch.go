package puller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
)

// Fetch downloads the blobs of img (the model of r, from Resolved.Image or PullResolved)
// into store with layers.Fetch, through r's repository: the config (stored from memory
// when Client.Config already fetched it; schema 1 has none), and every layer except
// schema 1's throwaway ones (their blob is the empty gzip, and no converted manifest
// lists them). For schema 1 the diffIDs are
// computed while the layers stream, since a config must be synthesised from them (see
// manifest.FromSchema1); otherwise, with WithDiffIDCheck, they are computed and checked
// against the config's rootfs.diff_ids.
// img's layers get the sizes and diffIDs the transfer learnt, and schema 1 layers whose
// bytes turn out not to be gzip get the media type of what they are.
//
// Errors wrap the layers package's (layers.ErrSizeMismatch, pullkit.ErrDigestMismatch,
// layers.ErrDiffIDMismatch, …) in an *Error naming the reference and the blob.
func (r *Resolved) Fetch(ctx context.Context, store *layers.Layout, img *manifest.Image, opts ...layers.Option) error {
	s1 := r.Chosen.Schema1
	var blobs []layers.Blob
	var at []int // index in img.Layers of each blob; -1 for the config
	if s1 == nil {
		cfg := img.Config
		if c := r.config; c != nil && c.Descriptor.Digest == cfg.Digest && !store.Has(cfg.Digest) {
			// Already fetched and verified by Client.Config: store it, do not GET it again.
			if err := store.PutBlob(ctx, c.Descriptor, c.Raw); err != nil {
				return &Error{Reference: r.Reference, Op: "store config", Digest: cfg.Digest, Err: err}
			}
		}
		blobs = append(blobs, layers.Blob{Desc: cfg})
		at = append(at, -1)
	}
	for i, l := range img.Layers {
		if s1 != nil && i < len(s1.History) && s1.History[i].Throwaway {
			continue
		}
		b := layers.Blob{Desc: l.Descriptor(), DiffID: s1 != nil}
		if r.checkDiffIDs {
			b.WantDiffID = l.DiffID
		}
		blobs = append(blobs, b)
		at = append(at, i)
	}
	results, err := layers.Fetch(ctx, r.Repository, store, blobs, opts...)
	if err != nil {
		return &Error{Reference: r.Reference, Op: "fetch blobs", Digest: blobDigest(err), Err: err}
	}
	for k, res := range results {
		if at[k] < 0 {
			continue
		}
		l := &img.Layers[at[k]]
		if res.DiffID != "" {
			l.DiffID = res.DiffID
		}
		if l.Size < 0 {
			l.Size = res.Size
		}
		if s1 != nil {
			mt, err := sniffLayerType(store.Path(l.Digest))
			if err != nil {
				return &Error{Reference: r.Reference, Op: "read stored layer", Digest: l.Digest, Err: err}
			}
			l.MediaType = mt
		}
	}
	return nil
}

// blobDigest is the digest a layers error names, if any.
func blobDigest(err error) digest.Digest {
	var b *layers.BlobError
	if errors.As(err, &b) {
		return b.Digest
	}
	return ""
}

// sniffLayerType says what a schema 1 layer blob really is: schema 1 calls every layer
// gzip, but some registries and tools stored plain tars.
func sniffLayerType(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 4)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	switch layers.Compression(head[:n]) {
	case "gzip":
		return manifest.MediaTypeDockerLayer, nil
	case "zstd":
		return manifest.MediaTypeOCILayerZstd, nil
	}
	return manifest.MediaTypeDockerLayerUncompressed, nil
}

package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/archive"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/puller"
)

// writeOutput downloads img's blobs and writes the image to path in o.format. It fills
// in what the download taught (schema 1: layer sizes, diffIDs and the synthesised
// config) and returns a line that says what was written.
func writeOutput(ctx context.Context, o *options, res *puller.Resolved, img *manifest.Image, path string) (string, error) {
	fail := func(err error) (string, error) {
		return "", fmt.Errorf("write %s to %s (%s): %w", res.Reference, path, o.format, err)
	}
	switch o.format {
	case "oci":
		store, err := layers.OpenLayout(path)
		if err != nil {
			return fail(err)
		}
		st, err := fetchImage(ctx, o, res, img, store, manifestTypes[o.manifestFormat])
		if err != nil {
			return fail(err)
		}
		desc := st.manifest
		desc.Platform = img.Platform
		if err := store.AddManifest(desc, refName(res)); err != nil {
			return fail(err)
		}
		return fmt.Sprintf("%s (OCI image layout, manifest %s)", path, desc.Digest), nil

	case "docker-archive":
		tmp, err := os.MkdirTemp("", "pull-blobs-")
		if err != nil {
			return fail(err)
		}
		defer os.RemoveAll(tmp)
		store, err := layers.OpenLayout(tmp)
		if err != nil {
			return fail(err)
		}
		st, err := fetchImage(ctx, o, res, img, store, "")
		if err != nil {
			return fail(err)
		}
		if err := writeArchive(path, res, store, st); err != nil {
			return fail(err)
		}
		return fmt.Sprintf("%s (docker-archive, config %s)", path, digest.FromBytes(st.config)), nil
	}
	return fail(fmt.Errorf("unknown format"))
}

// stored is an image whose blobs are in a store.
type stored struct {
	// manifest describes the image manifest stored (converted, for schema 1).
	manifest manifest.Descriptor
	// config is the image config, as stored.
	config []byte
	// layers are the layers the config's rootfs names, base first, with their diffIDs.
	layers []manifest.Layer
}

// manifestTypes maps --manifest-format to media types.
var manifestTypes = map[string]string{
	"oci":  manifest.MediaTypeOCIManifest,
	"v2s2": manifest.MediaTypeDockerSchema2,
	"v2s1": manifest.MediaTypeDockerSchema1Signed,
}

// fetchImage downloads the config and layers into store, checking the config's diffIDs
// (or, for schema 1, computing them), and stores the image manifest as convertTo: an OCI
// or schema 2 conversion (same blobs, new manifest digest), a signed schema 1 conversion,
// or, when convertTo is "", as served (schema 1 becomes schema 2, its config synthesised).
func fetchImage(ctx context.Context, o *options, res *puller.Resolved, img *manifest.Image, store *layers.Layout, convertTo string) (*stored, error) {
	s1 := res.Chosen.Schema1
	fopts := []layers.Option{layers.WithJobs(o.jobs), layers.WithDirectIO(o.directIO)}
	if o.progressOut != nil { // a fresh display per image, drawn below what was printed
		p := newProgress(o.progressOut)
		fopts = append(fopts, layers.WithProgress(p.event))
		defer p.finish()
	}
	err := res.Fetch(ctx, store, img, fopts...)
	if err != nil {
		return nil, err
	}

	st := &stored{}
	if s1 != nil && convertTo == manifest.MediaTypeDockerSchema1Signed {
		// Already schema 1: store the signed bytes as served, by their sha256 (an OCI
		// layout names blobs by their bytes, not by schema 1's canonical digest).
		st.manifest = manifest.Descriptor{MediaType: res.Chosen.MediaType, Digest: digest.FromBytes(res.Chosen.Raw), Size: int64(len(res.Chosen.Raw))}
		return st, store.PutBlob(ctx, st.manifest, res.Chosen.Raw)
	}
	if s1 != nil {
		if convertTo == "" {
			convertTo = manifest.MediaTypeDockerSchema2
		}
		mraw, cfg, err := manifest.FromSchema1(res.Chosen, img.Layers, convertTo)
		if err != nil {
			return nil, err
		}
		cdesc := manifest.Descriptor{MediaType: manifest.MediaTypeOCIConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
		if convertTo == manifest.MediaTypeDockerSchema2 {
			cdesc.MediaType = manifest.MediaTypeDockerConfig
		}
		st.manifest = manifest.Descriptor{MediaType: convertTo, Digest: digest.FromBytes(mraw), Size: int64(len(mraw))}
		if err := store.PutBlob(ctx, cdesc, cfg); err != nil {
			return nil, err
		}
		if err := store.PutBlob(ctx, st.manifest, mraw); err != nil {
			return nil, err
		}
		st.config = cfg
		img.Config = manifest.Descriptor{Digest: cdesc.Digest, MediaType: cdesc.MediaType, Size: cdesc.Size}
	} else {
		if st.config, err = os.ReadFile(store.Path(img.Config.Digest)); err != nil {
			return nil, err
		}
		raw, mediaType := res.Chosen.Raw, res.Chosen.MediaType
		switch {
		case convertTo == manifest.MediaTypeDockerSchema1Signed:
			repo, tag := res.Name.Context().RepositoryStr(), "latest"
			if t, ok := res.Name.(name.Tag); ok {
				tag = t.TagStr()
			}
			raw, err = manifest.ToSchema1(res.Chosen, st.config, repo, tag, nil)
		case convertTo != "" && convertTo != mediaType:
			raw, err = manifest.ConvertImage(res.Chosen, convertTo)
		}
		if err != nil {
			return nil, err
		}
		if convertTo != "" {
			mediaType = convertTo
		}
		st.manifest = manifest.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(raw), Size: int64(len(raw))}
		if err := store.PutBlob(ctx, st.manifest, raw); err != nil {
			return nil, err
		}
	}
	for _, l := range img.Layers {
		if l.DiffID != "" {
			st.layers = append(st.layers, l)
		}
	}
	return st, nil
}

// writeArchive writes st as a docker-archive tar at path (through a temporary file in
// the same directory, renamed into place once complete).
func writeArchive(path string, res *puller.Resolved, store *layers.Layout, st *stored) error {
	img := archive.DockerImage{Config: st.config}
	if _, ok := res.Name.(name.Tag); ok {
		img.RepoTags = []string{res.Reference}
	}
	for _, l := range st.layers {
		blob, mediaType := store.Path(l.Digest), l.MediaType
		img.Layers = append(img.Layers, archive.Layer{DiffID: l.DiffID, Open: func() (io.ReadCloser, error) {
			f, err := os.Open(blob)
			if err != nil {
				return nil, err
			}
			return archive.Uncompressed(f, mediaType)
		}})
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := archive.WriteDockerArchive(f, img); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// refName is the index.json name of the pulled image: the tag, or none for a digest.
func refName(res *puller.Resolved) string {
	if t, ok := res.Name.(name.Tag); ok {
		return t.TagStr()
	}
	return ""
}

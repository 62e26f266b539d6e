package archive

import (
	"context"
	"io"
	"strings"

	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/store"
)

// maxConfig caps the config FromStore reads: the cap a pull puts on what it fetches as
// a manifest or config.
const maxConfig = 4 << 20

// FromStore describes img, an image a pull stored in p, as WriteDockerArchive needs it:
// its config from the store, its layers opened from the store and decompressed, tagged
// with img.Reference unless the image was pulled or stored by digest (docker-archive
// tags cannot name one). Schema 1
// throwaway layers, which the config's rootfs does not list, are left out. Nothing is
// read but the config until the archive is written.
func FromStore(ctx context.Context, p store.Provider, img *manifest.Image) (DockerImage, error) {
	cfg, err := store.ReadBlob(ctx, p, img.Config.Digest, maxConfig)
	if err != nil {
		return DockerImage{}, err
	}
	di := DockerImage{Config: cfg}
	if tag := img.Reference; tag != "" && !strings.Contains(img.Name+tag, "@") {
		di.RepoTags = []string{tag}
	}
	for _, l := range img.Layers {
		if l.DiffID == "" {
			continue
		}
		di.Layers = append(di.Layers, Layer{DiffID: l.DiffID, Open: func() (io.ReadCloser, error) {
			ra, err := p.ReaderAt(ctx, l.Digest)
			if err != nil {
				return nil, err
			}
			return Uncompressed(readCloser{io.NewSectionReader(ra, 0, ra.Size()), ra}, l.MediaType)
		}})
	}
	return di, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

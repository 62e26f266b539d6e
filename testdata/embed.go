// Package testdata embeds the two real hello-world image archives, so that the pull
// demo (examples/pull with no reference) and the shared test helpers (internal/regtest)
// can seed a registry with real blobs without locating files on disk.
//
// Everything else in this folder is read by tests from disk; see SOURCES.md.
package testdata

import (
	"archive/tar"
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"strings"

	digest "github.com/opencontainers/go-digest"
)

// HelloWorldCtrExport is oci-layout/hello-world-ctr-export.tar: Docker Hub's
// hello-world manifest list (sha256:faa03e78…), its linux/amd64 schema 2 manifest
// (sha256:f54a58bc…), config (sha256:feb5d9fe…) and gzip layer (sha256:2db29710…).
//
//go:embed oci-layout/hello-world-ctr-export.tar
var HelloWorldCtrExport []byte

// HelloWorldDocker25Save is docker-archive/hello-world-docker25-save.tar: an arm64
// hello-world saved by Docker 25, with its OCI manifest (sha256:411caf34…), config
// (sha256:ee301c92…) and uncompressed layer (sha256:12660636…).
//
//go:embed docker-archive/hello-world-docker25-save.tar
var HelloWorldDocker25Save []byte

// Blobs returns the blobs/sha256/* members of an image-layout tar, keyed by digest,
// after checking that each one hashes to its name.
func Blobs(archive []byte) (map[digest.Digest][]byte, error) {
	blobs := map[digest.Digest][]byte{}
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return blobs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read layout tar: %w", err)
		}
		hex, ok := strings.CutPrefix(h.Name, "blobs/sha256/")
		if !ok || hex == "" || h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("read layout tar member %s: %w", h.Name, err)
		}
		d := digest.NewDigestFromEncoded(digest.SHA256, hex)
		if got := digest.FromBytes(b); got != d {
			return nil, fmt.Errorf("layout tar member %s hashes to %s", h.Name, got)
		}
		blobs[d] = b
	}
}

package archive_test

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/archive"
)

// Write what `docker save` writes for one image: its config, its layers in legacy
// folders named by the v1 ids docker computes, manifest.json and repositories.
func ExampleWriteDockerArchive() {
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	tw.WriteHeader(&tar.Header{Name: "hello", Mode: 0o755, Size: 5, Typeflag: tar.TypeReg})
	tw.Write([]byte("hello"))
	tw.Close()
	diffID := digest.FromBytes(layer.Bytes())
	config := []byte(`{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z","rootfs":{"type":"layers","diff_ids":["` + diffID.String() + `"]}}`)

	ids, err := archive.V1IDs(config)
	if err != nil {
		panic(err)
	}
	var out bytes.Buffer
	err = archive.WriteDockerArchive(&out, archive.DockerImage{
		RepoTags: []string{"example.com/hello:v1"},
		Config:   config,
		Layers: []archive.Layer{{Open: func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(layer.Bytes())), nil
		}}},
	})
	if err != nil {
		panic(err)
	}
	tr := tar.NewReader(&out)
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		name := h.Name
		switch {
		case len(name) > 64 && name[:64] == ids[0].Encoded():
			name = "<v1 id>" + name[64:]
		case name == digest.FromBytes(config).Encoded()+".json":
			name = "<config digest>.json"
		}
		fmt.Println(name)
	}
	// Output:
	// <v1 id>/
	// <v1 id>/VERSION
	// <v1 id>/json
	// <v1 id>/layer.tar
	// <config digest>.json
	// manifest.json
	// repositories
}

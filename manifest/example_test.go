package manifest_test

import (
	"fmt"
	"os"

	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
)

// Parse any manifest a registry serves, then choose the platform's entry from an index:
// bytes in, model out, no I/O.
func ExampleChoose() {
	raw, err := os.ReadFile("../testdata/manifest-list/hello-world-dockerhub-2022.json")
	if err != nil {
		panic(err)
	}
	list, err := manifest.Parse(raw, "application/vnd.docker.distribution.manifest.list.v2+json")
	if err != nil {
		panic(err)
	}
	fmt.Println(list.Kind == manifest.KindIndex, len(list.Manifests), "entries")

	// arm64 is arm64/v8, and a v8 host takes the best entry at or below v8.
	want, _ := platforms.Parse("linux/arm64")
	d, err := manifest.Choose(list, platforms.Only(want))
	if err != nil {
		panic(err)
	}
	fmt.Println(d.Platform, d.Digest)

	// A platform the list does not offer is a *platforms.NoMatchError naming what it does.
	_, err = manifest.Choose(list, platforms.Only(platforms.Platform{OS: "linux", Architecture: "sparc64"}))
	fmt.Println(err != nil)
	// Output:
	// true 11 entries
	// linux/arm64/v8 sha256:432f982638b3aefab73cc58ab28f5c16e96fdb504e8c134fc58dff4bae8bf338
	// true
}

// Convert a Docker schema 2 manifest to OCI, as an OCI layout's readers want it: same
// config and layer blobs, new media types, new digest.
func ExampleConvertImage() {
	raw, err := os.ReadFile("../testdata/schema2/hello-world-amd64-dockerhub-2021.json")
	if err != nil {
		panic(err)
	}
	m, err := manifest.Parse(raw, manifest.MediaTypeDockerSchema2)
	if err != nil {
		panic(err)
	}
	oci, err := manifest.ConvertImage(m, manifest.MediaTypeOCIManifest)
	if err != nil {
		panic(err)
	}
	c, err := manifest.Parse(oci, manifest.MediaTypeOCIManifest)
	if err != nil {
		panic(err)
	}
	fmt.Println(c.MediaType)
	fmt.Println(c.Config.Digest == m.Config.Digest, c.Layers[0].Digest == m.Layers[0].Digest, c.Digest == m.Digest)
	fmt.Println(c.Layers[0].MediaType)
	// Output:
	// application/vnd.oci.image.manifest.v1+json
	// true true false
	// application/vnd.oci.image.layer.v1.tar+gzip
}

package store_test

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

// After a restart, an engine turns a stored name back into the image model in one call:
// layers base first with their diffIDs, the runtime config, and the digest the registry
// answers to (kept in an annotation, since the pull stored an OCI conversion of the
// registry's Docker manifest).
func ExampleLoad() {
	reg, err := pullkittest.Start()
	if err != nil {
		panic(err)
	}
	defer reg.Close()
	pushed := reg.PushImage("team/app", "v1", pullkittest.Schema2, pullkittest.Layers(2, 100))
	dir, err := os.MkdirTemp("", "layout")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	// Before: a pull names the image in a layout.
	c, err := puller.New()
	if err != nil {
		panic(err)
	}
	l, err := store.OpenLayout(dir)
	if err != nil {
		panic(err)
	}
	pulled, err := c.Pull(ctx, reg.Ref("team/app:v1"), l, puller.WithPlatform(pushed.Platform))
	if err != nil {
		panic(err)
	}

	// After the restart: the layout reopened, the image loaded by name.
	l, err = store.OpenLayout(dir)
	if err != nil {
		panic(err)
	}
	img, err := store.Load(ctx, l, pulled.Name)
	if err != nil {
		panic(err)
	}
	fmt.Println(strings.TrimPrefix(img.Name, reg.Host()+"/"), img.Platform, img.Runtime.Cmd)
	for i, layer := range img.Layers {
		fmt.Println(i, layer.MediaType, layer.DiffID == pushed.Layers[i].DiffID)
	}
	fmt.Println("repo digest:", img.RegistryDigest == pushed.Digest, "stored as OCI:", img.Stored.Digest != pushed.Digest)
	// Output:
	// team/app:v1 linux/amd64 [/bin/sh]
	// 0 application/vnd.oci.image.layer.v1.tar+gzip true
	// 1 application/vnd.oci.image.layer.v1.tar+gzip true
	// repo digest: true stored as OCI: true
}

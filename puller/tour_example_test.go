package puller_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
	"github.com/pullkit/pullkit/unpack"
)

// The tour README shows: pin a tag, pull it into an OCI layout, read it back by name,
// unpack it while it downloads, and collect what no name reaches.
func Example_tour() {
	ctx := context.Background()
	reg, _ := pullkittest.Start() // an in-process registry, as distribution answers
	defer reg.Close()
	reg.PushIndex("team/app", "v1", pullkittest.OCIIndex) // linux/amd64 and linux/arm64/v8
	ref := reg.Ref("team/app:v1")
	dir, _ := os.MkdirTemp("", "tour")
	defer os.RemoveAll(dir)

	c, err := puller.New() // keep it: it remembers registries' auth and connections
	if err != nil {
		panic(err)
	}
	arm64 := puller.WithPlatform(platforms.Platform{OS: "linux", Architecture: "arm64"})

	// Pull-by-digest services: the tag to the platform's manifest, downloading no blob.
	res, err := c.Resolve(ctx, ref, arm64)
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Manifest.Platform, res.Pinned() == reg.Host()+"/team/app@"+res.Manifest.Digest.String())

	// One call: every blob verified into an OCI layout, the image named last.
	st, err := store.OpenLayout(filepath.Join(dir, "layout"))
	if err != nil {
		panic(err)
	}
	img, err := c.Pull(ctx, ref, st, arm64)
	if err != nil {
		panic(err)
	}
	fmt.Println(img.Stored.MediaType, len(img.Layers), "layers, base first")
	named, _ := st.Image(ctx, img.Name) // what skopeo's oci:DIR:NAME and umoci read
	fmt.Println(named.Target.Digest == img.Stored.Digest)

	// After a restart: the model back from the store by name, no registry needed.
	loaded, err := store.Load(ctx, st, img.Name)
	if err != nil {
		panic(err)
	}
	fmt.Println(len(loaded.Layers), "layers,", loaded.RegistryDigest == res.Descriptor.Digest)

	// Unpack while downloading: a root filesystem, committed once every layer verified.
	rootfs, err := unpack.NewRootfs(filepath.Join(dir, "rootfs"))
	if err != nil {
		panic(err)
	}
	pipe := rootfs.NewPipeline(ctx)
	if _, err := c.Pull(ctx, ref, st, arm64, puller.WithLayerTees(pipe.Tee)); err != nil {
		pipe.Abort(err)
		panic(err)
	}
	if _, err := pipe.Wait(); err != nil {
		panic(err)
	}
	if err := rootfs.Commit(); err != nil {
		panic(err)
	}

	// Names, and garbage collection of what no name reaches.
	if err := st.DeleteImage(ctx, img.Name); err != nil {
		panic(err)
	}
	gc, err := st.GC(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("collected", len(gc.Blobs), "blobs")
	// Output:
	// linux/arm64/v8 true
	// application/vnd.oci.image.manifest.v1+json 2 layers, base first
	// true
	// 2 layers, true
	// collected 4 blobs
}

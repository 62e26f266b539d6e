//go:build linux

package unpack_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
	"github.com/pullkit/pullkit/unpack"
)

// Snapshots filled while the layers download (what `pull --snapshots DIR` does): the
// pipeline's Tee goes to the pull, Wait returns once every layer is applied. Two images
// that share their base: the second pull reuses its snapshots (chain IDs, shortened).
func ExampleSnapshots_NewPipeline() {
	reg, err := pullkittest.Start()
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Close()
	// Two images built from one seed: the second has the first's two layers and one more.
	reg.PushImage("team/base", "v1", pullkittest.OCI, pullkittest.Seed(7), pullkittest.Layers(2, 1024))
	reg.PushImage("team/app", "v1", pullkittest.OCI, pullkittest.Seed(7), pullkittest.Layers(3, 1024))

	dir, err := os.MkdirTemp("", "unpack-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	c, err := puller.New()
	if err != nil {
		log.Fatal(err)
	}
	st := store.NewMemory() // or store.OpenLayout, to keep the blobs
	snaps, err := unpack.OpenSnapshots(filepath.Join(dir, "snapshots"))
	if err != nil {
		log.Fatal(err)
	}
	for _, ref := range []string{"team/base:v1", "team/app:v1"} {
		pipe := snaps.NewPipeline(ctx)
		if _, err := c.Pull(ctx, reg.Ref(ref), st, puller.WithLayerTees(pipe.Tee)); err != nil {
			pipe.Abort(err)
			log.Fatal(err)
		}
		results, err := pipe.Wait()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Print(ref, ":")
		for _, r := range results {
			fmt.Print(" ", r.ChainID.Encoded()[:8], map[bool]string{true: " (reused)"}[r.Reused])
		}
		fmt.Println()
	}
	// Output:
	// team/base:v1: 405b9066 7b39494b
	// team/app:v1: 405b9066 (reused) 7b39494b (reused) 5ad3172d
}

// The disk policy of `pull --snapshots DIR --drop-blobs`: each layer's blob is deleted
// from the layout once its snapshot is applied and verified (the manifest and config
// stay, so the layout still names the image), and a later pull skips every layer whose
// snapshot exists, so a dropped blob is not downloaded again.
func ExamplePipeline_DropBlobs() {
	reg, err := pullkittest.Start()
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Close()
	reg.PushImage("team/base", "v1", pullkittest.OCI, pullkittest.Seed(7), pullkittest.Layers(2, 1024))
	reg.PushImage("team/app", "v1", pullkittest.OCI, pullkittest.Seed(7), pullkittest.Layers(3, 1024))

	dir, err := os.MkdirTemp("", "drop-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	c, err := puller.New()
	if err != nil {
		log.Fatal(err)
	}
	st, err := store.OpenLayout(filepath.Join(dir, "layout"))
	if err != nil {
		log.Fatal(err)
	}
	snaps, err := unpack.OpenSnapshots(filepath.Join(dir, "snapshots"))
	if err != nil {
		log.Fatal(err)
	}
	for _, ref := range []string{"team/base:v1", "team/app:v1"} {
		pipe := snaps.NewPipeline(ctx)
		pipe.DropBlobs(st)
		img, err := c.Pull(ctx, reg.Ref(ref), st, puller.WithLayerTees(pipe.Tee), puller.WithSkipLayers(pipe.Skip))
		if err != nil {
			pipe.Abort(err)
			log.Fatal(err)
		}
		results, err := pipe.Wait()
		if err != nil {
			log.Fatal(err)
		}
		reused, kept := 0, 0
		for i, r := range results {
			if r.Reused {
				reused++
			}
			if store.Has(ctx, st, img.Layers[i].Digest) {
				kept++
			}
		}
		fmt.Printf("%s: %d layers, %d reused, %d layer blobs kept, config kept: %v\n",
			ref, len(results), reused, kept, store.Has(ctx, st, img.Config.Digest))
	}
	// Output:
	// team/base:v1: 2 layers, 0 reused, 0 layer blobs kept, config kept: true
	// team/app:v1: 3 layers, 2 reused, 0 layer blobs kept, config kept: true
}

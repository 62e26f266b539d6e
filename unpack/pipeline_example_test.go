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

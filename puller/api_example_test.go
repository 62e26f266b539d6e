package puller_test

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

// StorageName says, without a request, the name a pull will store an image under, for an
// engine that looks in its store before it pulls.
func ExampleStorageName() {
	for _, ref := range []string{"alpine", "quay.io/org/app:1.2", "registry.example:5000/team/app@sha256:" + fmt.Sprintf("%064x", 1)} {
		name, err := puller.StorageName(ref)
		fmt.Println(name, err)
	}
	name, _ := puller.StorageName("team/app:v1")
	fmt.Println(store.PlatformName(name, platforms.Platform{OS: "linux", Architecture: "arm64"}))
	_, err := puller.StorageName("Team/App")
	fmt.Println(err != nil)
	// Output:
	// docker.io/library/alpine:latest <nil>
	// quay.io/org/app:1.2 <nil>
	// registry.example:5000/team/app@sha256:0000000000000000000000000000000000000000000000000000000000000001 <nil>
	// docker.io/team/app:v1@linux/arm64/v8
	// true
}

// Tags lists a repository's tags, following the registry's pages.
func ExampleClient_Tags() {
	reg := exampleRegistry()
	defer reg.Close()
	reg.PushImage("team/app", "v2", pullkittest.OCI)
	c, err := puller.New()
	if err != nil {
		panic(err)
	}
	tags, err := c.Tags(context.Background(), reg.Host()+"/team/app")
	fmt.Println(tags, err)
	// Output:
	// [v1 v2] <nil>
}

// BlobFetcher gives layers.Fetch the client's credentials, mirrors and retries, for an
// engine that plans its own transfer: here a config and a layer it already knows the
// descriptors of, into its own store, with its own progress.
func ExampleClient_BlobFetcher() {
	reg := exampleRegistry()
	defer reg.Close()
	img := reg.PushImage("team/tool", "v1", pullkittest.OCI, pullkittest.Layers(1, 4096))
	c, err := puller.New()
	if err != nil {
		panic(err)
	}
	f, err := c.BlobFetcher(reg.Host() + "/team/tool")
	if err != nil {
		panic(err)
	}
	st := store.NewMemory()
	var verified atomic.Int32 // progress is called concurrently for different blobs
	results, err := layers.Fetch(context.Background(), f, st, []layers.Blob{
		{Desc: img.Config.Descriptor, What: "config"},
		{Desc: img.Layers[0].Descriptor, DiffID: true},
	}, layers.WithProgress(func(ev pullkit.Event) {
		if ev.Kind == pullkit.EventVerified {
			verified.Add(1)
		}
	}))
	fmt.Println(len(results), verified.Load(), err)
	fmt.Println(results[1].DiffID == img.Layers[0].DiffID, store.Has(context.Background(), st, img.Layers[0].Digest))
	// Output:
	// 2 2 <nil>
	// true true
}

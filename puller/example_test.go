package puller_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

// Every example runs against pullkittest, an in-process registry that answers as CNCF
// distribution does, so it needs no network and no registry of its own.

// exampleRegistry starts a test registry holding team/app:v1 (one OCI image) and team/multi:v1
// (an index for linux/amd64 and linux/arm64/v8).
func exampleRegistry() *pullkittest.Registry {
	reg, err := pullkittest.Start()
	if err != nil {
		panic(err)
	}
	reg.PushImage("team/app", "v1", pullkittest.OCI)
	reg.PushIndex("team/multi", "v1", pullkittest.OCIIndex)
	return reg
}

// short names a reference without the test registry's host:port, which changes from one
// run to the next.
func short(reg *pullkittest.Registry, ref string) string {
	return strings.TrimPrefix(ref, reg.Host()+"/")
}

// Resolve pins a tag to the digest of the platform's image manifest, in as few requests
// as the protocol allows, downloading no blob.
func ExampleClient_Resolve() {
	reg := exampleRegistry()
	defer reg.Close()
	c, err := puller.New()
	if err != nil {
		panic(err)
	}
	arm64 := platforms.Platform{OS: "linux", Architecture: "arm64"}
	res, err := c.Resolve(context.Background(), reg.Ref("team/multi:v1"), puller.WithPlatform(arm64))
	if err != nil {
		panic(err)
	}
	fmt.Println("the tag names:", res.Descriptor.MediaType)
	fmt.Println("for", arm64, "pull:", short(reg, res.Pinned())[:len("team/multi@sha256:")], "…", res.Manifest.Platform)
	fmt.Println("requests:", len(reg.Requests()))
	// Output:
	// the tag names: application/vnd.oci.image.index.v1+json
	// for linux/arm64 pull: team/multi@sha256: … linux/arm64/v8
	// requests: 2
}

// ResolveAll pins many references at once, with bounded concurrency: one result per
// reference, in order, each a success or its own typed error.
func ExampleClient_ResolveAll() {
	reg := exampleRegistry()
	defer reg.Close()
	c, err := puller.New()
	if err != nil {
		panic(err)
	}
	refs := []string{reg.Ref("team/app:v1"), reg.Ref("team/app:v2"), reg.Ref("team/multi:v1")}
	for _, r := range c.ResolveAll(context.Background(), refs, puller.WithJobs(2)) {
		switch {
		case errors.Is(r.Err, pullkit.ErrNotFound):
			fmt.Println("not found")
		case r.Err != nil:
			fmt.Println("error:", r.Err)
		default:
			fmt.Println(short(reg, r.Resolved.Name), "→", r.Resolved.Manifest.MediaType)
		}
	}
	// Output:
	// team/app:v1 → application/vnd.oci.image.manifest.v1+json
	// not found
	// team/multi:v1 → application/vnd.oci.image.manifest.v1+json
}

// Pull into an OCI image layout directory, which skopeo, umoci and crane read as is; the
// image is named by its full reference once every blob has verified.
func ExampleClient_Pull() {
	reg := exampleRegistry()
	defer reg.Close()
	dir, err := os.MkdirTemp("", "layout")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	st, err := store.OpenLayout(dir)
	if err != nil {
		panic(err)
	}
	c, err := puller.New()
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	img, err := c.Pull(ctx, reg.Ref("team/app:v1"), st)
	if err != nil {
		panic(err)
	}
	fmt.Println(img.Platform, len(img.Layers), "layers, cmd", img.Runtime.Cmd)
	names, err := st.Images(ctx)
	if err != nil {
		panic(err)
	}
	for _, n := range names {
		fmt.Println(short(reg, n.Name), n.Target.MediaType, n.Target.Digest == img.Stored.Digest)
	}
	// Output:
	// linux/amd64 2 layers, cmd [/bin/sh]
	// team/app:v1 application/vnd.oci.image.manifest.v1+json true
}

// WithAllPlatforms pulls every platform of an index and stores the index too, as a
// mirror or an image builder needs.
func ExampleWithAllPlatforms() {
	reg := exampleRegistry()
	defer reg.Close()
	c, err := puller.New()
	if err != nil {
		panic(err)
	}
	st := store.NewMemory()
	img, err := c.Pull(context.Background(), reg.Ref("team/multi:v1"), st, puller.WithAllPlatforms())
	if err != nil {
		panic(err)
	}
	fmt.Println("stored:", img.Stored.MediaType)
	for _, p := range img.Platforms {
		fmt.Println(p.Platform, len(p.Layers), "layers")
	}
	// Output:
	// stored: application/vnd.oci.image.index.v1+json
	// linux/amd64 2 layers
	// linux/arm64/v8 2 layers
}

// The memory store keeps a pull in memory, for tests and for engines that stream images
// elsewhere.
func ExampleClient_Pull_memory() {
	reg := exampleRegistry()
	defer reg.Close()
	c, err := puller.New()
	if err != nil {
		panic(err)
	}
	st := store.NewMemory()
	ctx := context.Background()
	img, err := c.Pull(ctx, reg.Ref("team/app:v1"), st, puller.WithFormat(puller.FormatAsServed))
	if err != nil {
		panic(err)
	}
	blobs := 0
	if err := st.Walk(ctx, func(store.Info) error { blobs++; return nil }); err != nil {
		panic(err)
	}
	fmt.Println(blobs, "blobs: the manifest, the config and", len(img.Layers), "layers")
	fmt.Println("as served:", img.Stored.Digest == img.Digest)
	// Output:
	// 4 blobs: the manifest, the config and 2 layers
	// as served: true
}

// Inspect reads an image's manifests and config, downloading no layer: what a UI or a
// policy check needs before a pull.
func ExampleClient_Inspect() {
	reg := exampleRegistry()
	defer reg.Close()
	c, err := puller.New()
	if err != nil {
		panic(err)
	}
	img, err := c.Inspect(context.Background(), reg.Ref("team/multi:v1"), puller.WithPlatform(platforms.Platform{OS: "linux", Architecture: "arm64"}))
	if err != nil {
		panic(err)
	}
	fmt.Println(img.MediaType)
	fmt.Println(img.Platform, img.Manifest.MediaType)
	for _, l := range img.Layers {
		fmt.Println(l.MediaType, l.Size > 0, l.DiffID != "")
	}
	fmt.Println("env", img.Runtime.Env)
	fmt.Println("blob requests:", reg.Count(pullkittest.Match{Route: pullkittest.RouteBlob}))
	// Output:
	// application/vnd.oci.image.index.v1+json
	// linux/arm64/v8 application/vnd.oci.image.manifest.v1+json
	// application/vnd.oci.image.layer.v1.tar+gzip true true
	// application/vnd.oci.image.layer.v1.tar+gzip true true
	// env [PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin]
	// blob requests: 1
}

// Referrers lists the signatures, SBOMs and attestations pushed for an image, filterable
// by artifact type; on a registry without the referrers API it reads the sha256-<hex>
// tag OCI 1.1 clients keep there.
func ExampleClient_Referrers() {
	for _, opts := range [][]pullkittest.Option{nil, {pullkittest.WithoutReferrersAPI()}} {
		reg, err := pullkittest.Start(opts...)
		if err != nil {
			panic(err)
		}
		img := reg.PushImage("team/app", "v1", pullkittest.OCI)
		reg.PushArtifact("team/app", img.Descriptor(), "application/spdx+json")
		reg.PushArtifact("team/app", img.Descriptor(), "application/vnd.dev.cosign.artifact.sig.v1+json")
		c, err := puller.New()
		if err != nil {
			panic(err)
		}
		ctx := context.Background()
		all, err := c.Referrers(ctx, img.Ref(), "")
		if err != nil {
			panic(err)
		}
		sboms, err := c.Referrers(ctx, reg.Ref("team/app:v1"), "application/spdx+json")
		if err != nil {
			panic(err)
		}
		fmt.Println(len(all), "referrers:", all[0].ArtifactType, all[1].ArtifactType, "—", len(sboms), "SBOM")
		reg.Close()
	}
	// Output:
	// 2 referrers: application/spdx+json application/vnd.dev.cosign.artifact.sig.v1+json — 1 SBOM
	// 2 referrers: application/spdx+json application/vnd.dev.cosign.artifact.sig.v1+json — 1 SBOM
}

// PullArtifact fetches an artifact (here an SBOM found with Referrers) into a store,
// verified, which Pull refuses as not an image.
func ExampleClient_PullArtifact() {
	reg := exampleRegistry()
	defer reg.Close()
	img := reg.PushImage("team/app", "v1", pullkittest.OCI)
	reg.PushArtifact("team/app", img.Descriptor(), "application/spdx+json",
		pullkittest.ArtifactBlob("application/spdx+json", []byte(`{"spdxVersion":"SPDX-2.3"}`)))
	c, err := puller.New()
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	sboms, err := c.Referrers(ctx, img.Ref(), "application/spdx+json")
	if err != nil {
		panic(err)
	}
	ref := img.Repo + "@" + sboms[0].Digest.String()
	st := store.NewMemory()
	a, err := c.PullArtifact(ctx, reg.Ref(ref), st)
	if err != nil {
		panic(err)
	}
	fmt.Println(a.ArtifactType, len(a.Blobs), "blob, about", a.Subject.Digest == img.Digest)
	named, err := st.Image(ctx, reg.Ref(ref))
	fmt.Println("named:", err == nil && named.Target.Digest == a.Digest)
	_, err = c.Pull(ctx, reg.Ref(ref), store.NewMemory())
	fmt.Println("as an image:", errors.Is(err, pullkit.ErrUnsupported))
	// Output:
	// application/spdx+json 1 blob, about true
	// named: true
	// as an image: true
}

// pin is the code under test in the example below: a service's helper that pins a tag to
// the digest of whatever image it names (platforms.Any: no platform to check, so a tag is
// one HEAD).
func pin(ctx context.Context, c *puller.Client, ref string) (string, error) {
	res, err := c.Resolve(ctx, ref, puller.WithMatcher(platforms.Any()))
	if err != nil {
		return "", fmt.Errorf("pin %s: %w", ref, err)
	}
	return res.Pinned(), nil
}

// A user's own test of a function that calls pullkit, with a fault injected: the
// registry answers the first request 503, the client retries, and the request log shows
// it; a missing tag is pullkit.ErrNotFound. In a real test, pullkittest.NewRegistry(t)
// closes the registry with the test.
func Example_testYourCode() {
	reg, err := pullkittest.Start()
	if err != nil {
		panic(err)
	}
	defer reg.Close()
	img := reg.PushImage("team/app", "v1", pullkittest.OCI)
	reg.Inject(&pullkittest.Rule{
		Match: pullkittest.Match{Route: pullkittest.RouteManifest},
		Times: 1,
		Fault: pullkittest.ErrorResponse(pullkittest.CodeUnavailable),
	})
	c, err := puller.New(puller.WithRetry(pullkit.RetryPolicy{Attempts: 3, Backoff: time.Millisecond, MaxBackoff: time.Millisecond}))
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	got, err := pin(ctx, c, reg.Ref("team/app:v1"))
	fmt.Println("pinned:", got == img.Ref(), err)
	for _, r := range reg.Requests() {
		fmt.Printf("%s %s %s %d %q\n", r.Method, r.Route, r.Ref, r.Status, r.Fault)
	}
	_, err = pin(ctx, c, reg.Ref("team/app:v2"))
	fmt.Println("missing:", errors.Is(err, pullkit.ErrNotFound))
	// Output:
	// pinned: true <nil>
	// HEAD manifest v1 503 "503 UNAVAILABLE"
	// HEAD manifest v1 200 ""
	// missing: true
}

// WithProgress reports every step of a pull: the manifest, the image's totals once they
// are known, and each blob from queued to verified (or skipped, when the store has it).
// A display keeps its own state from these; here the layers' last events are counted.
func ExampleWithProgress() {
	reg := exampleRegistry()
	defer reg.Close()
	c, err := puller.New()
	if err != nil {
		panic(err)
	}
	st := store.NewMemory()
	for round := 1; round <= 2; round++ {
		var mu sync.Mutex // the pull calls progress from its goroutines, concurrently
		count := map[pullkit.EventKind]int{}
		progress := func(ev pullkit.Event) {
			if ev.What == "layer" {
				mu.Lock()
				count[ev.Kind]++
				mu.Unlock()
			}
		}
		if _, err := c.Pull(context.Background(), reg.Ref("team/app:v1"), st, puller.WithProgress(progress)); err != nil {
			panic(err)
		}
		fmt.Printf("pull %d: layers verified %d, already stored %d\n", round, count[pullkit.EventVerified], count[pullkit.EventSkipped])
	}
	// Output:
	// pull 1: layers verified 2, already stored 0
	// pull 2: layers verified 0, already stored 2
}

// WithDiffIDCheck decompresses each layer while it downloads and checks it against the
// diffID its config names, for an engine that will not unpack it but must trust it.
func ExampleWithDiffIDCheck() {
	reg := exampleRegistry()
	defer reg.Close()
	c, err := puller.New()
	if err != nil {
		panic(err)
	}
	img, err := c.Pull(context.Background(), reg.Ref("team/app:v1"), store.NewMemory(), puller.WithDiffIDCheck(true))
	if err != nil {
		panic(err) // a layer that does not decompress to its diffID: pullkit.ErrDigestMismatch
	}
	fmt.Println(len(img.Layers), "layers, each decompressed to the diffID its config names")
	// Output:
	// 2 layers, each decompressed to the diffID its config names
}

// WithFormat chooses the manifest format the store keeps, whatever the registry served:
// OCI (the default), Docker schema 2, as served, or a signed schema 1 for old clients.
// The layers are the same blobs in every case.
func ExampleWithFormat() {
	reg := exampleRegistry()
	defer reg.Close()
	c, err := puller.New()
	if err != nil {
		panic(err)
	}
	for _, f := range []puller.Format{puller.FormatOCI, puller.FormatDocker, puller.FormatSchema1} {
		img, err := c.Pull(context.Background(), reg.Ref("team/app:v1"), store.NewMemory(), puller.WithFormat(f))
		if err != nil {
			panic(err)
		}
		fmt.Println(f, "->", img.Stored.MediaType)
	}
	// Output:
	// oci -> application/vnd.oci.image.manifest.v1+json
	// docker -> application/vnd.docker.distribution.manifest.v2+json
	// schema 1 -> application/vnd.docker.distribution.manifest.v1+prettyjws
}

package puller_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/puller"
)

// soakPulls is how many pulls run at once in each round of the soak.
const soakPulls = 50

// soakResult is the outcome of one pull of the soak.
type soakResult struct {
	ref     string
	img     *manifest.Image
	results []layers.Result
	err     error
}

// soakRound runs soakPulls concurrent pulls of refs (round robin) into the layout at dir,
// each with a client of its own on the shared transport tr.
func soakRound(t *testing.T, tr http.RoundTripper, refs []string, dir string) []soakResult {
	t.Helper()
	out := make([]soakResult, soakPulls)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range out {
		ref := refs[i%len(refs)]
		wg.Go(func() {
			<-start
			c := puller.New(puller.WithKeychain(anonymous), puller.WithRetry(4, time.Millisecond), puller.WithTransport(tr))
			ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			defer cancel()
			img, res, err := pullInto(ctx, c, ref, dir, layers.WithJobs(3), layers.WithStallTimeout(5*time.Second))
			out[i] = soakResult{ref: ref, img: img, results: res, err: err}
		})
	}
	close(start)
	wg.Wait()
	return out
}

// fetchedOnce asserts that across every result of a round, each blob the store holds was
// downloaded (Result.Fetched) exactly once, and no other blob at all.
func fetchedOnce(t *testing.T, round []soakResult, stored []digest.Digest) {
	t.Helper()
	fetched := map[digest.Digest]int{}
	for _, r := range round {
		for _, res := range r.results {
			if res.Fetched {
				fetched[res.Desc.Digest]++
			}
		}
	}
	for _, d := range stored {
		if fetched[d] != 1 {
			t.Errorf("blob %s downloaded %d times into one store, want once", d, fetched[d])
		}
	}
	for d, n := range fetched {
		if !slices.Contains(stored, d) {
			t.Errorf("blob %s reported downloaded %d times but is not in the store", d, n)
		}
	}
}

// imageBlobs lists an image's config and layers.
func imageBlobs(img *manifest.Image) []digest.Digest {
	out := []digest.Digest{img.Config.Digest}
	for _, l := range img.Layers {
		out = append(out, l.Digest)
	}
	return out
}

// cleanFailure lists what a pull through a hostile network may fail with: every one a
// typed verdict, never a panic, a hang or a bare string. A corrupt manifest is a digest
// mismatch, never "invalid" or "unsupported": those would blame the image for the network.
var cleanFailure = []error{
	pullkit.ErrDigestMismatch, layers.ErrSizeMismatch, layers.ErrStalled,
	layers.ErrBadContentRange, puller.ErrUnreachable, puller.ErrTooManyRequests,
	puller.ErrUnexpectedStatus, puller.ErrProtocol,
}

// TestSoak runs 50 concurrent pulls of three overlapping images into one store, first over
// a clean network (every blob crosses the network once), then through random faults
// (every pull verified or failed cleanly, every stored blob downloaded once), then once
// more cleanly into the store the faults left (it completes it, fetching only what is
// missing), and checks that no goroutine is left behind.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: skipped under -short")
	}
	bed := newFaultBed(t)
	// Three images sharing layers: a base in all three, a middle layer in two.
	layer := func(n int64) v1.Layer {
		l, err := random.Layer(n, types.DockerLayer)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	base, middle, onlyB, onlyC := layer(192<<10), layer(48<<10), layer(8<<10), layer(96<<10)
	build := func(ls ...v1.Layer) v1.Image {
		img := mutate.MediaType(empty.Image, types.DockerManifestSchema2)
		img = mutate.ConfigMediaType(img, types.DockerConfigJSON)
		img, err := mutate.AppendLayers(img, ls...)
		if err != nil {
			t.Fatal(err)
		}
		return onLinuxAMD64(t, img)
	}
	images := map[string]v1.Image{
		"soak/a:v1": build(base, middle),
		"soak/b:v1": build(base, middle, onlyB),
		"soak/c:v1": build(base, onlyC),
	}
	var refs []string
	all := map[digest.Digest]bool{}
	for repoTag, img := range images {
		bed.reg.Push(t, repoTag, img)
		refs = append(refs, bed.ref(repoTag))
		f := factsOf(t, img)
		all[f.config] = true
		for _, l := range f.layers {
			all[l] = true
		}
	}
	slices.Sort(refs)

	tr := http.DefaultTransport.(*http.Transport).Clone()
	baseline := runtime.NumGoroutine()

	t.Run("clean network: each blob crosses it once", func(t *testing.T) {
		bed.proxy.Reset()
		dir := t.TempDir()
		round := soakRound(t, tr, refs, dir)
		for _, r := range round {
			if r.err != nil {
				t.Fatalf("pull %s: %v", r.ref, r.err)
			}
		}
		stored := checkStore(t, dir, true)
		if len(stored) != len(all) {
			t.Errorf("store holds %d blobs, want the %d of the three images", len(stored), len(all))
		}
		fetchedOnce(t, round, stored)
		if bed.proxy.Count(http.MethodGet, "/manifests/") < soakPulls {
			t.Fatalf("%d manifest GETs for %d pulls", bed.proxy.Count(http.MethodGet, "/manifests/"), soakPulls)
		}
		for d := range all {
			// A layer crosses the network once, for layers.Fetch; a config also once per
			// pull of its image, for PullResolved (which parses it).
			want := 1
			for _, r := range round {
				if r.img.Config.Digest == d {
					want++
				}
			}
			if got := bed.proxy.Count(http.MethodGet, "/blobs/"+d.String()); got != want {
				t.Errorf("blob %s requested %d times, want %d", d, got, want)
			}
		}
	})

	// Three rounds of random faults, each into a fresh store, with its own seed (a
	// failure names it, so it can be replayed, up to the order of concurrent requests).
	var dir string
	for _, seed := range []uint64{20261123, 7, 1009} {
		dir = t.TempDir()
		t.Run(fmt.Sprintf("random faults seed %d: every pull verified or failed cleanly", seed), func(t *testing.T) {
			bed.proxy.Reset()
			bed.proxy.EnableRandom(seed, 0.25)
			round := soakRound(t, tr, refs, dir)
			faults, blobFaults := 0, 0
			for _, r := range bed.proxy.Records() {
				if r.Fault != "" {
					faults++
					if strings.Contains(r.Path, "/blobs/") {
						blobFaults++
					}
				}
			}
			stored := checkStore(t, dir, false)
			ok := 0
			failures := map[string]int{}
			for _, r := range round {
				if r.err == nil {
					ok++
					for _, d := range imageBlobs(r.img) {
						if !slices.Contains(stored, d) {
							t.Errorf("pull %s succeeded but blob %s is not in the store", r.ref, d)
						}
					}
					continue
				}
				msg := oneLine(t, r.err)
				kind := slices.IndexFunc(cleanFailure, func(e error) bool { return errors.Is(r.err, e) })
				if kind < 0 {
					t.Errorf("pull %s failed with an error of no expected kind: %v", r.ref, r.err)
				} else {
					failures[cleanFailure[kind].Error()]++
				}
				if !strings.Contains(msg, r.ref) || !strings.Contains(msg, "sha256:") {
					t.Errorf("error %q does not name the reference %s and a digest", msg, r.ref)
				}
			}
			fetchedOnce(t, round, stored)
			t.Logf("%d requests, %d faults injected (%d on blobs); %d pulls verified, failures by kind %v",
				len(bed.proxy.Records()), faults, blobFaults, ok, failures)
			if faults == 0 || blobFaults == 0 {
				t.Fatal("no fault was injected into blobs: the soak proves nothing")
			}
			if ok == 0 {
				t.Error("not one pull succeeded")
			}
		})
	}

	t.Run("after the faults, the same store completes cleanly", func(t *testing.T) {
		bed.proxy.Reset()
		before := checkStore(t, dir, false)
		round := soakRound(t, tr, refs, dir)
		for _, r := range round {
			if r.err != nil {
				t.Fatalf("pull %s: %v", r.ref, r.err)
			}
		}
		stored := checkStore(t, dir, true)
		if len(stored) != len(all) {
			t.Errorf("store holds %d blobs, want %d", len(stored), len(all))
		}
		for _, d := range before {
			if n := bed.proxy.Count(http.MethodGet, "/blobs/"+d.String()); n > 0 && !imageConfig(round, d) {
				t.Errorf("layer %s was in the store, yet was requested %d times", d, n)
			}
		}
	})

	// Nothing left running: every goroutine the pulls started is gone once idle
	// connections are closed (ours, and the proxy's to the registry).
	tr.CloseIdleConnections()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > baseline && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	}
	if n := runtime.NumGoroutine(); n > baseline {
		var buf bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
		t.Errorf("%d goroutines after the soak, %d before:\n%s", n, baseline, buf.String())
	}
}

// imageConfig reports whether d is the config of an image pulled in round (configs are
// fetched by PullResolved on every pull, whatever the store holds).
func imageConfig(round []soakResult, d digest.Digest) bool {
	for _, r := range round {
		if r.img != nil && r.img.Config.Digest == d {
			return true
		}
	}
	return false
}

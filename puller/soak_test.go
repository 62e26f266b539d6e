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
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/faultproxy"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/puller"
)

// soakPulls is how many pulls run at once in each round of the soak.
const soakPulls = 50

// soakKinds are the soak's transient faults: resets and truncation midway, 500, 503,
// 429, stalls, and one-off wrong bytes (each corrupt response is one draw: asked again,
// the registry answers right).
var soakKinds = []faultproxy.Kind{faultproxy.KindReset, faultproxy.KindTruncate, faultproxy.KindStatus500,
	faultproxy.KindStatus503, faultproxy.KindTooManyRequests, faultproxy.KindStall, faultproxy.KindCorrupt}

// soakResult is the outcome of one pull of the soak.
type soakResult struct {
	ref    string
	img    *manifest.Image
	err    error
	events *events
}

// soakAttempts is the soak's retry policy's number of attempts. Its faults are drawn
// independently for every request at 25%, so a request fails all of N attempts with a
// probability of about 0.25^N whatever the puller does, and the soak makes some 450
// chains of attempts per run (manifests, configs, blobs, four rounds): with the default
// 4 attempts about one pull in two thousand fails (a soak run in a dozen), with 8 one
// in a few million. The library's part, retrying every transient fault within the
// policy, is what the soak checks; how many attempts is the caller's choice, and the
// default stays at 4 so that a stalled registry fails within about a minute.
const soakAttempts = 8

// soakClient is the client every pull of the soak shares, as an engine shares one:
// soakAttempts attempts with short waits, and deadlines short enough for the stalls to
// cost little.
func soakClient(t *testing.T, tr http.RoundTripper) *puller.Client {
	policy := pullkit.DefaultRetryPolicy()
	policy.Attempts = soakAttempts
	policy.Backoff, policy.MaxBackoff, policy.MaxRetryAfter = 5*time.Millisecond, 50*time.Millisecond, time.Second
	to := shortTimeouts()
	to.ResponseHeader = 2 * time.Second
	return newFaultClient(t, puller.WithTransport(tr), puller.WithRetry(policy), puller.WithTimeouts(to))
}

// soakRound runs soakPulls concurrent pulls of refs (round robin) into the layout at dir,
// each through a Layout of its own on that directory.
func soakRound(t *testing.T, c *puller.Client, refs []string, dir string) []soakResult {
	return soakRoundOf(t, c, func(i int) string { return refs[i%len(refs)] }, dir)
}

// soakRoundOf runs soakPulls concurrent pulls, pull i of refFor(i), into the layout at dir.
func soakRoundOf(t *testing.T, c *puller.Client, refFor func(i int) string, dir string) []soakResult {
	t.Helper()
	out := make([]soakResult, soakPulls)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range out {
		ref := refFor(i)
		ev := &events{}
		out[i] = soakResult{ref: ref, events: ev}
		wg.Go(func() {
			<-start
			st := openStore(t, dir)
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			img, err := c.Pull(ctx, ref, st, linuxAMD64, puller.WithJobs(3), puller.WithProgress(ev.Add))
			out[i].img, out[i].err = img, err
		})
	}
	within(t, 2*time.Minute, func() {
		close(start)
		wg.Wait()
	})
	return out
}

// downloadedOnce asserts that across every pull of a round each layer the store holds
// was downloaded (EventVerified) exactly once, and no other layer at all.
func downloadedOnce(t *testing.T, round []soakResult, stored []digest.Digest) {
	t.Helper()
	fetched := map[digest.Digest]int{}
	for _, r := range round {
		for _, e := range r.events.of(pullkit.EventVerified, "") {
			if e.What == "layer" {
				fetched[e.Digest]++
			}
		}
	}
	for d, n := range fetched {
		if !slices.Contains(stored, d) {
			t.Errorf("layer %s reported verified %d times but is not in the store", d, n)
		} else if n != 1 {
			t.Errorf("layer %s downloaded %d times into one store, want once", d, n)
		}
	}
}

// namesAll asserts that the layout at dir names every image of refs that was pulled
// successfully.
func namesAll(t *testing.T, dir string, round []soakResult) {
	t.Helper()
	imgs, err := openStore(t, dir).Images(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, img := range imgs {
		names = append(names, img.Name)
	}
	for _, r := range round {
		if r.err == nil && !slices.Contains(names, r.img.Name) {
			t.Errorf("pull %s succeeded, but the store's index names only %v", r.ref, names)
		}
	}
}

// faultCounts counts the proxy's injected faults, in all and on blobs.
func faultCounts(p *faultproxy.Proxy) (all, blobs, requests int) {
	recs := p.Records()
	for _, r := range recs {
		if r.Fault != "" {
			all++
			if strings.Contains(r.Path, "/blobs/") {
				blobs++
			}
		}
	}
	return all, blobs, len(recs)
}

// TestSoak runs 50 concurrent pulls of three overlapping images into one store: over a
// clean network (every layer crosses it once); through 25% random transient faults with
// three seeds (every pull verified, every layer downloaded once); with a blob that is
// always corrupt besides (exactly the pulls that need it fail, each with a typed error
// naming reference and digest; the others verify); once more cleanly into the store the
// faults left. No goroutine is left behind.
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
	images := map[string]v1.Image{
		"soak/a:v1": imageOf(t, base, middle),
		"soak/b:v1": imageOf(t, base, middle, onlyB),
		"soak/c:v1": imageOf(t, base, onlyC),
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
	// A fourth image, for the round with a permanent fault: its own layer is the one
	// always corrupt, and it is pulled by 3 of the 50 pulls (6%).
	onlyD := layer(24 << 10)
	imgD := imageOf(t, base, middle, onlyD)
	bed.reg.Push(t, "soak/d:v1", imgD)
	refD := bed.ref("soak/d:v1")
	corrupt := factsOf(t, imgD).layers[2]

	// A transport of the test's own (so that its idle connections can be closed at the
	// end), with the deadlines a transport given to WithTransport must bring.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	tr.ResponseHeaderTimeout = 2 * time.Second
	c := soakClient(t, tr)
	// The clean round counts requests: its client has the default deadlines (and a
	// transport without the soak's 2 s header timeout), so that a loaded machine's pause
	// in an honest answer is not taken for a stall and asked again.
	cleanTr := http.DefaultTransport.(*http.Transport).Clone()
	cleanTr.MaxIdleConnsPerHost = 16
	cleanTr.ResponseHeaderTimeout = puller.DefaultTimeouts().ResponseHeader
	clean := newFaultClient(t, puller.WithTransport(cleanTr), puller.WithRetry(quickRetry(soakAttempts)))
	baseline := runtime.NumGoroutine()
	mem := watchMemory()

	t.Run("clean network: each layer crosses it once", func(t *testing.T) {
		bed.proxy.Reset()
		dir := t.TempDir()
		round := soakRound(t, clean, refs, dir)
		for _, r := range round {
			if r.err != nil {
				t.Fatalf("pull %s: %v", r.ref, r.err)
			}
		}
		stored := checkStore(t, dir, true)
		for d := range all {
			if !slices.Contains(stored, d) {
				t.Errorf("blob %s of the images is not in the store", d)
			}
		}
		downloadedOnce(t, round, stored)
		namesAll(t, dir, round)
		for d := range all {
			// A layer crosses the network once; a config at most once per pull of its
			// image (a pull reads it from the store when an earlier one stored it, and
			// fetches it when the pulls run at once).
			got := bed.proxy.Count(http.MethodGet, "/blobs/"+d.String())
			if n := countConfigOf(round, d); n > 0 {
				if got < 1 || got > n {
					t.Errorf("config %s requested %d times, want 1 to %d", d, got, n)
				}
			} else if got != 1 {
				t.Errorf("blob %s requested %d times, want 1", d, got)
			}
		}
	})

	// Three rounds of random transient faults, each into a fresh store, with its own seed
	// (a failure names it, so it can be replayed, up to the order of concurrent requests).
	var dir string
	for _, seed := range []uint64{20261123, 7, 1009} {
		dir = t.TempDir()
		t.Run(fmt.Sprintf("random transient faults seed %d: every pull verified", seed), func(t *testing.T) {
			bed.proxy.Reset()
			bed.proxy.EnableRandom(seed, 0.25, soakKinds...)
			round := soakRound(t, c, refs, dir)
			faults, blobFaults, requests := faultCounts(bed.proxy)
			stored := checkStore(t, dir, false)
			ok := 0
			for _, r := range round {
				if r.err != nil {
					t.Errorf("pull %s failed through transient faults: %v", r.ref, r.err)
					continue
				}
				ok++
				for _, d := range imageBlobs(r.img) {
					if !slices.Contains(stored, d) {
						t.Errorf("pull %s succeeded but blob %s is not in the store", r.ref, d)
					}
				}
			}
			downloadedOnce(t, round, stored)
			namesAll(t, dir, round)
			t.Logf("seed %d: %d requests, %d faults injected (%d on blobs); %d of %d pulls verified, %d failed",
				seed, requests, faults, blobFaults, ok, soakPulls, soakPulls-ok)
			if faults == 0 || blobFaults == 0 {
				t.Fatal("no fault was injected into blobs: the soak proves nothing")
			}
		})
	}

	t.Run("a blob always corrupt besides: exactly the pulls that need it fail", func(t *testing.T) {
		bed.proxy.Reset()
		bed.proxy.Add(&faultproxy.Rule{Method: http.MethodGet, PathContains: "/blobs/" + corrupt.String(), Fault: faultproxy.CorruptByte()})
		bed.proxy.EnableRandom(424242, 0.25, soakKinds...)
		d := t.TempDir()
		round := soakRoundOf(t, c, func(i int) string {
			if i%17 == 0 {
				return refD
			}
			return refs[i%len(refs)]
		}, d)
		faults, _, requests := faultCounts(bed.proxy)
		permanent := bed.proxy.Count(http.MethodGet, "/blobs/"+corrupt.String())
		stored := checkStore(t, d, false)
		ok, failed, needing := 0, 0, 0
		for _, r := range round {
			needs := r.ref == refD
			if needs {
				needing++
			}
			switch {
			case r.err == nil && needs:
				t.Errorf("pull %s succeeded, but its layer %s is always corrupt", r.ref, corrupt)
			case r.err == nil:
				ok++
				for _, bd := range imageBlobs(r.img) {
					if !slices.Contains(stored, bd) {
						t.Errorf("pull %s succeeded but blob %s is not in the store", r.ref, bd)
					}
				}
			case !needs:
				t.Errorf("pull %s does not need %s, yet failed: %v", r.ref, corrupt, r.err)
			default:
				failed++
				msg := errLine(t, r.err)
				var pe *pullkit.Error
				if !errors.Is(r.err, pullkit.ErrDigestMismatch) || !errors.As(r.err, &pe) {
					t.Errorf("pull %s failed with %v, want a *pullkit.Error wrapping ErrDigestMismatch", r.ref, r.err)
				}
				if !strings.Contains(msg, r.ref) || !strings.Contains(msg, corrupt.String()) {
					t.Errorf("error %q does not name the reference %s and the digest %s", msg, r.ref, corrupt)
				}
			}
		}
		if slices.Contains(stored, corrupt) {
			t.Errorf("the corrupt blob %s is in the store", corrupt)
		}
		namesAll(t, d, round)
		t.Logf("%d requests, %d faults injected (%d of them the permanent one, %.1f%% of the requests); %d pulls verified, %d failed (the %d pulls of soak/d, %d%% of the pulls)",
			requests, faults, permanent, 100*float64(permanent)/float64(requests), ok, failed, needing, 100*needing/soakPulls)
		if failed != needing || ok != soakPulls-needing {
			t.Errorf("%d verified and %d failed, want %d and %d", ok, failed, soakPulls-needing, needing)
		}
	})

	t.Run("after the faults, the same store completes cleanly", func(t *testing.T) {
		bed.proxy.Reset()
		before := checkStore(t, dir, false)
		round := soakRound(t, c, refs, dir)
		for _, r := range round {
			if r.err != nil {
				t.Fatalf("pull %s: %v", r.ref, r.err)
			}
		}
		stored := checkStore(t, dir, true)
		if len(stored) < len(all) {
			t.Errorf("store holds %d blobs, want at least %d", len(stored), len(all))
		}
		for _, d := range before {
			if n := bed.proxy.Count(http.MethodGet, "/blobs/"+d.String()); n > 0 && countConfigOf(round, d) == 0 {
				t.Errorf("layer %s was in the store, yet was requested %d times", d, n)
			}
		}
	})
	mem.Stop(t)

	// Nothing left running: every goroutine the pulls started is gone once idle
	// connections are closed (ours, and the proxy's to the registry).
	deadline := time.Now().Add(time.Minute) // a bound for a loaded machine; it ends as soon as they are gone
	for {
		tr.CloseIdleConnections()
		cleanTr.CloseIdleConnections()
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		if runtime.NumGoroutine() <= baseline || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > baseline {
		var buf bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
		t.Errorf("%d goroutines after the soak, %d before:\n%s", n, baseline, buf.String())
	}
}

// countConfigOf counts the pulls of round whose image has config d.
func countConfigOf(round []soakResult, d digest.Digest) int {
	n := 0
	for _, r := range round {
		if r.img != nil && r.img.Config.Digest == d {
			n++
		}
	}
	return n
}

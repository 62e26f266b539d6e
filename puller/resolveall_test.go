package puller_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
)

// barrier is a fault that holds each request until n are held at once (or a generous
// timeout passes), recording the most in flight, then serves them.
type barrier struct {
	n        int
	mu       sync.Mutex
	inFlight int
	most     int
	full     chan struct{}
	timedOut atomic.Bool
}

func newBarrier(n int) *barrier { return &barrier{n: n, full: make(chan struct{})} }

func (b *barrier) Name() string { return "barrier of " + strconv.Itoa(b.n) }

func (b *barrier) Apply(w http.ResponseWriter, r *http.Request, next http.Handler) {
	b.mu.Lock()
	b.inFlight++
	b.most = max(b.most, b.inFlight)
	if b.inFlight == b.n {
		select {
		case <-b.full:
		default:
			close(b.full)
		}
	}
	b.mu.Unlock()
	select {
	case <-b.full:
	case <-time.After(time.Minute): // catches a client that never has n in flight
		b.timedOut.Store(true)
	case <-r.Context().Done():
	}
	next.ServeHTTP(w, r)
	b.mu.Lock()
	b.inFlight--
	b.mu.Unlock()
}

func (b *barrier) max() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.most
}

// TestResolveAll resolves a batch with bounded concurrency: one result per reference, in
// order, each the reference's own success or typed error.
func TestResolveAll(t *testing.T) {
	const jobs = 3
	reg := pullkittest.NewRegistry(t)
	arm64 := platforms.Platform{OS: "linux", Architecture: "arm64"}
	var tags []*pullkittest.Image
	for i := range 6 {
		tags = append(tags, reg.PushImage("app", "v"+strconv.Itoa(i), pullkittest.OCI, pullkittest.Layers(1, 64), pullkittest.Platform(arm64)))
	}
	idx := reg.PushIndex("multi", "v1", pullkittest.OCIIndex, pullkittest.Layers(1, 64))
	refs := []string{reg.Ref("app:v0"), reg.Ref("app:nope"), reg.Ref("Bad/Ref"), reg.Ref("multi:v1")}
	for _, img := range tags[1:] {
		refs = append(refs, img.Ref())
	}
	refs = append(refs, reg.Ref("multi@"+idx.Digest.String()))

	c := newClient(t)
	// The client's first request to a registry goes alone (it learns how the registry
	// authenticates); then the batch is held until jobs requests are in flight at once.
	if _, err := c.Resolve(t.Context(), refs[0], puller.WithPlatform(arm64)); err != nil {
		t.Fatal(err)
	}
	b := newBarrier(jobs)
	reg.Inject(&pullkittest.Rule{Match: pullkittest.Match{Route: pullkittest.RouteManifest}, Fault: b})
	results := c.ResolveAll(t.Context(), refs, puller.WithJobs(jobs), puller.WithPlatform(arm64))
	if len(results) != len(refs) {
		t.Fatalf("%d results for %d references", len(results), len(refs))
	}
	if b.timedOut.Load() || b.max() != jobs {
		t.Errorf("at most %d manifest requests in flight (barrier timed out: %v), want %d", b.max(), b.timedOut.Load(), jobs)
	}
	for i, r := range results {
		ref := refs[i]
		switch i {
		case 1:
			if !errors.Is(r.Err, pullkit.ErrNotFound) || r.Resolved.Reference != "" {
				t.Errorf("%s: %+v, want ErrNotFound alone", ref, r)
			}
		case 2:
			if !errors.Is(r.Err, pullkit.ErrInvalid) {
				t.Errorf("%s: %+v, want ErrInvalid", ref, r)
			}
		case 3, len(refs) - 1:
			if r.Err != nil || r.Resolved.Manifest.Digest != idx.Images[1].Digest || r.Resolved.Descriptor.Digest != idx.Digest {
				t.Errorf("%s: %+v, want the arm64 image %s of %s", ref, r, idx.Images[1].Digest, idx.Digest)
			}
		default:
			want := tags[0]
			if i > 3 {
				want = tags[i-3]
			}
			if r.Err != nil || r.Resolved.Manifest.Digest != want.Digest || r.Resolved.Reference != ref {
				t.Errorf("%s: %+v, want %s", ref, r, want.Digest)
			}
		}
		if r.Err != nil {
			var pe *pullkit.Error
			if !errors.As(r.Err, &pe) || pe.Reference != ref {
				t.Errorf("%s: err %v is not a *pullkit.Error naming the reference", ref, r.Err)
			}
			oneLine(t, r.Err)
		}
	}

	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		for i, r := range newClient(t).ResolveAll(ctx, refs[:2]) {
			if !errors.Is(r.Err, context.Canceled) {
				t.Errorf("%s: err = %v, want context.Canceled", refs[i], r.Err)
			}
		}
	})
	t.Run("a bad option fails every reference", func(t *testing.T) {
		for i, r := range newClient(t).ResolveAll(t.Context(), refs[:2], puller.WithJobs(0)) {
			if !errors.Is(r.Err, pullkit.ErrInvalid) {
				t.Errorf("%s: err = %v, want ErrInvalid", refs[i], r.Err)
			}
		}
	})
	t.Run("none", func(t *testing.T) {
		if got := newClient(t).ResolveAll(t.Context(), nil); len(got) != 0 {
			t.Errorf("ResolveAll(nil) = %v", got)
		}
	})
}

// TestResolveAllLearnsAuthOnce: a fresh client resolving a batch at once on a registry
// with token auth learns the challenge from one 401 and fetches one token for the
// repository, however many requests start together.
func TestResolveAllLearnsAuthOnce(t *testing.T) {
	reg := pullkittest.NewRegistry(t, pullkittest.WithTokenAuth(pullkittest.TokenAuth{User: "bob", Password: "pw"}))
	var refs []string
	for i := range 8 {
		img := reg.PushImage("app", "v"+strconv.Itoa(i), pullkittest.Schema2, pullkittest.Layers(1, 64))
		refs = append(refs, reg.Ref("app:"+img.Tag))
	}
	results := newClient(t, puller.WithKeychain(staticKeychain{"bob", "pw"})).ResolveAll(t.Context(), refs, puller.WithJobs(8))
	for i, r := range results {
		if r.Err != nil {
			t.Errorf("%s: %v", refs[i], r.Err)
		}
	}
	var unauthorized int
	for _, r := range reg.Requests() {
		if r.Status == http.StatusUnauthorized {
			unauthorized++
		}
	}
	if n := reg.Count(pullkittest.Match{Route: pullkittest.RouteToken}); unauthorized != 1 || n != 1 {
		t.Errorf("%d 401s and %d token requests for a batch of %d, want 1 and 1: %q", unauthorized, n, len(refs), logLines(reg))
	}
}

package puller_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
	"github.com/pullkit/pullkit/trust"
)

// allowList trusts the digests in ok and refuses the others; it counts its calls and
// records the subjects it saw.
type allowList struct {
	mu       sync.Mutex
	ok       map[digest.Digest]bool
	calls    atomic.Int32
	subjects []trust.Subject
}

func (a *allowList) Verify(ctx context.Context, s trust.Subject, src trust.Source) (*trust.Result, error) {
	a.calls.Add(1)
	a.mu.Lock()
	a.subjects = append(a.subjects, s)
	a.mu.Unlock()
	// Read through the source as a real verifier does: referrers of the digest.
	if _, err := src.Referrers(ctx, s.Digest, ""); err != nil {
		return nil, err
	}
	if a.ok[s.Digest] {
		return &trust.Result{Subject: s, Requirements: []trust.Requirement{{Type: "allowList", Met: true}}}, nil
	}
	return nil, trust.Refuse(s, trust.Requirement{Type: "allowList", Reason: "digest " + s.Digest.String() + " is not on the list"})
}

// TestVerifierRefusesBeforeAnyBlob: a refused image fails Pull, Inspect and Resolve with
// ErrUntrusted naming the reference and the digest, after its manifests and the
// verifier's own reads, with no config or layer requested and nothing stored.
func TestVerifierRefusesBeforeAnyBlob(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	idx := reg.PushIndex("team/app", "v1", pullkittest.OCIIndex, pullkittest.Layers(2, 1024))
	v := &allowList{ok: map[digest.Digest]bool{}}
	c := newClient(t, puller.WithVerifier(v))
	st := store.NewMemory()
	amd64 := puller.WithPlatform(platforms.Platform{OS: "linux", Architecture: "amd64"})

	_, err := c.Pull(context.Background(), reg.Ref("team/app:v1"), st, amd64)
	checkUntrusted(t, err, reg.Ref("team/app:v1"), idx.Digest)
	if n := reg.Count(pullkittest.Match{Route: pullkittest.RouteBlob}); n != 0 {
		t.Errorf("a refused pull requested %d blobs, want 0: %v", n, reg.Requests())
	}
	var blobs int
	_ = st.Walk(context.Background(), func(store.Info) error { blobs++; return nil })
	imgs, _ := st.Images(context.Background())
	if blobs != 0 || len(imgs) != 0 {
		t.Errorf("a refused pull stored %d blobs and %d names", blobs, len(imgs))
	}
	if len(v.subjects) != 1 {
		t.Fatalf("verifier called %d times", len(v.subjects))
	}
	s := v.subjects[0]
	if s.Digest != idx.Digest || s.Tag != "v1" || s.Name != reg.Ref("team/app:v1") || len(s.Manifests) != 1 || s.Manifests[0].Platform == nil || s.Manifests[0].Platform.Architecture != "amd64" {
		t.Errorf("subject = %+v", s)
	}

	_, err = c.Inspect(context.Background(), reg.Ref("team/app:v1"), amd64)
	checkUntrusted(t, err, reg.Ref("team/app:v1"), idx.Digest)
	_, err = c.Resolve(context.Background(), reg.Ref("team/app:v1"), amd64)
	checkUntrusted(t, err, reg.Ref("team/app:v1"), idx.Digest)
	if n := reg.Count(pullkittest.Match{Route: pullkittest.RouteBlob}); n != 0 {
		t.Errorf("refused calls requested %d blobs, want 0", n)
	}

	// Trusted now: the pull goes through, and the verdict is kept for the client's life.
	v.ok[idx.Digest] = true
	var got *trust.Result
	img, err := c.Pull(context.Background(), reg.Ref("team/app:v1"), st, amd64, puller.WithVerified(func(r *trust.Result) { got = r }))
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || got.Subject.Digest != idx.Digest || len(got.Requirements) != 1 {
		t.Errorf("WithVerified got %+v", got)
	}
	if len(img.Layers) != 2 {
		t.Errorf("layers = %d", len(img.Layers))
	}
	calls := v.calls.Load()
	res, err := c.Resolve(context.Background(), reg.Ref("team/app:v1"), amd64)
	if err != nil {
		t.Fatal(err)
	}
	if res.Trust == nil || !res.Trust.Cached || v.calls.Load() != calls {
		t.Errorf("second verification of the same subject: cached=%v, calls %d -> %d", res.Trust != nil && res.Trust.Cached, calls, v.calls.Load())
	}
}

func checkUntrusted(t *testing.T, err error, ref string, d digest.Digest) {
	t.Helper()
	if !errors.Is(err, pullkit.ErrUntrusted) {
		t.Fatalf("err = %v, want ErrUntrusted", err)
	}
	var pe *pullkit.Error
	if !errors.As(err, &pe) || pe.Reference != ref || pe.Digest != d || pe.Op != pullkit.OpVerify {
		t.Errorf("err = %#v, want a *pullkit.Error naming %s, verify, %s", pe, ref, d)
	}
	var ue *trust.UntrustedError
	if !errors.As(err, &ue) || len(ue.Unmet) == 0 {
		t.Errorf("err = %v, want a *trust.UntrustedError with unmet requirements", err)
	}
	msg := oneLine(t, err)
	if !strings.Contains(msg, ref) || !strings.Contains(msg, d.String()) || !strings.Contains(msg, "not on the list") {
		t.Errorf("message %q does not name the reference, the digest and why", msg)
	}
}

// TestResolveAllVerifies: one result or typed error per reference, the verifier called
// once per distinct subject however many references name it.
func TestResolveAllVerifies(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	good := reg.PushImage("team/good", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
	bad := reg.PushImage("team/bad", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
	v := &allowList{ok: map[digest.Digest]bool{good.Digest: true}}
	c := newClient(t, puller.WithVerifier(v))
	refs := []string{reg.Ref("team/good:v1"), reg.Ref("team/bad:v1"), good.Ref(), reg.Ref("team/good:v1"), reg.Ref("team/missing:v1")}
	out := c.ResolveAll(context.Background(), refs, puller.WithJobs(2))
	if out[0].Err != nil || out[0].Resolved.Trust == nil || out[2].Err != nil || out[3].Err != nil {
		t.Errorf("trusted references failed: %v / %v / %v", out[0].Err, out[2].Err, out[3].Err)
	}
	checkUntrusted(t, out[1].Err, reg.Ref("team/bad:v1"), bad.Digest)
	if !errors.Is(out[4].Err, pullkit.ErrNotFound) || errors.Is(out[4].Err, pullkit.ErrUntrusted) {
		t.Errorf("missing reference: %v", out[4].Err)
	}
	// team/good:v1 twice shares one verification; by digest it is another subject (name).
	if n := v.calls.Load(); n != 3 {
		t.Errorf("verifier called %d times for 3 distinct subjects", n)
	}
	// Resolve may read a config to check a lone image's platform, but only once the image
	// is trusted: the refused one's config is never asked for.
	if n := reg.Count(pullkittest.Match{Route: pullkittest.RouteBlob, Repo: "team/bad"}); n != 0 {
		t.Errorf("ResolveAll requested %d blobs of the refused image", n)
	}
}

// TestVerifierErrorsRefuse: a verifier that fails without a verdict, panics or returns
// nothing refuses; a cancelled context is the context's error.
func TestVerifierErrorsRefuse(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	reg.PushImage("app", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
	for name, fn := range map[string]trust.VerifierFunc{
		"plain error": func(context.Context, trust.Subject, trust.Source) (*trust.Result, error) {
			return nil, errors.New("key server down")
		},
		"panic": func(context.Context, trust.Subject, trust.Source) (*trust.Result, error) { panic("boom") },
		"nil":   func(context.Context, trust.Subject, trust.Source) (*trust.Result, error) { return nil, nil },
	} {
		t.Run(name, func(t *testing.T) {
			c := newClient(t, puller.WithVerifier(fn))
			_, err := c.Pull(context.Background(), reg.Ref("app:v1"), store.NewMemory())
			if !errors.Is(err, pullkit.ErrUntrusted) {
				t.Fatalf("err = %v", err)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := newClient(t, puller.WithVerifier(trust.VerifierFunc(func(ctx context.Context, s trust.Subject, src trust.Source) (*trust.Result, error) {
		cancel()
		<-ctx.Done()
		return nil, ctx.Err()
	})))
	_, err := c.Resolve(ctx, reg.Ref("app:v1"))
	if !errors.Is(err, context.Canceled) || errors.Is(err, pullkit.ErrUntrusted) {
		t.Errorf("cancelled: %v", err)
	}
}

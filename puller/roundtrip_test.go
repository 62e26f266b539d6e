package puller

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/faultproxy"
	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/store"
)

// counter is a reverse proxy that logs every exchange it passes on: "METHOD path
// status".
type counter struct {
	host string
	mu   sync.Mutex
	log  []string
}

func newCounter(t testing.TB, upstream string) *counter {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	c := &counter{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		c.add(fmt.Sprintf("%s %s %d", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode))
		return nil
	}
	rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		c.add(fmt.Sprintf("%s %s error", r.Method, r.URL.Path))
		w.WriteHeader(http.StatusBadGateway)
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	c.host = strings.TrimPrefix(srv.URL, "http://")
	return c
}

func (c *counter) add(line string) {
	c.mu.Lock()
	c.log = append(c.log, line)
	c.mu.Unlock()
}

// take returns the log so far and empties it.
func (c *counter) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.log
	c.log = nil
	return out
}

// basicKeychain hands the same credentials to every registry.
type basicKeychain struct{ user, pass string }

func (k basicKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return &authn.Basic{Username: k.user, Password: k.pass}, nil
}

// imageFacts are the digests of a pushed image.
type imageFacts struct{ manifest, config, layer digest.Digest }

func factsOf(t testing.TB, img v1.Image) imageFacts {
	t.Helper()
	m, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	c, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil || len(ls) != 1 {
		t.Fatalf("want a one-layer image: %v", err)
	}
	l, err := ls[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	return imageFacts{digest.Digest(m.String()), digest.Digest(c.String()), digest.Digest(l.String())}
}

// blobGETs is the log of fetching an image's config and layer, sorted.
func blobGETs(repo string, f imageFacts) []string {
	return slices.Sorted(slices.Values([]string{
		"GET /v2/" + repo + "/blobs/" + f.config.String() + " 200",
		"GET /v2/" + repo + "/blobs/" + f.layer.String() + " 200",
	}))
}

// TestRoundTrips counts the requests Resolve and Pull send to the real docker-registry,
// through a counting proxy in front of a fault proxy in front of it (issue 11): the
// fewest the protocol allows, no /v2/ ping, and a 429 waited for and retried as it was.
func TestRoundTrips(t *testing.T) {
	reg := regtest.Start(t)
	amd64 := v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 := v1.Platform{OS: "linux", Architecture: "arm64"}
	single := regtest.PlatformImage(t, amd64, true)
	app := factsOf(t, single)
	reg.Push(t, "app:v1", single)
	idx := regtest.Index(t, true, amd64, arm64)
	idxDigest := reg.PushIndex(t, "multi:v1", idx)
	armImg, err := idx.Image(mustHash(t, idx, 1))
	if err != nil {
		t.Fatal(err)
	}
	arm := factsOf(t, armImg)

	faults, err := faultproxy.New("http://" + reg.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(faults.Close)
	cnt := newCounter(t, faults.URL)
	c, w := testClient(t)
	ctx := t.Context()
	onARM := WithPlatform(platforms.Platform{OS: "linux", Architecture: "arm64"})
	onAMD := WithPlatform(platforms.Platform{OS: "linux", Architecture: "amd64"})
	anyPlatform := WithMatcher(platforms.Any())
	appConfig := "GET /v2/app/blobs/" + app.config.String() + " 200"

	for _, tc := range []struct {
		name   string
		ref    string
		opt    PullOption
		want   []string
		chosen digest.Digest
	}{
		{"tag naming one manifest, any platform: one HEAD", "app:v1", anyPlatform, []string{"HEAD /v2/app/manifests/v1 200"}, app.manifest},
		// An image no index entry vouches for is checked as Pull checks it.
		{"tag naming one manifest, its platform checked: HEAD, manifest, config", "app:v1", onAMD,
			[]string{"HEAD /v2/app/manifests/v1 200", "GET /v2/app/manifests/" + app.manifest.String() + " 200", appConfig}, app.manifest},
		{"tag naming an index: HEAD and the index", "multi:v1", onARM, []string{"HEAD /v2/multi/manifests/v1 200", "GET /v2/multi/manifests/" + idxDigest.String() + " 200"}, arm.manifest},
		{"index digest: one GET", "multi@" + idxDigest.String(), onARM, []string{"GET /v2/multi/manifests/" + idxDigest.String() + " 200"}, arm.manifest},
		{"image digest, any platform: one GET", "app@" + app.manifest.String(), anyPlatform, []string{"GET /v2/app/manifests/" + app.manifest.String() + " 200"}, app.manifest},
		{"image digest, its platform checked: the GET and the config", "app@" + app.manifest.String(), onAMD,
			[]string{"GET /v2/app/manifests/" + app.manifest.String() + " 200", appConfig}, app.manifest},
	} {
		res, err := c.Resolve(ctx, cnt.host+"/"+tc.ref, tc.opt)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got := cnt.take()
		t.Logf("Resolve %s: %d requests: %q", tc.ref, len(got), got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: sent %q, want %q", tc.name, got, tc.want)
		}
		if res.Manifest.Digest != tc.chosen {
			t.Errorf("%s: resolved to %s, want %s", tc.name, res.Manifest.Digest, tc.chosen)
		}
	}

	t.Run("an image of another platform: refused as Pull refuses it", func(t *testing.T) {
		_, err := c.Resolve(ctx, cnt.host+"/app:v1", onARM)
		var pe *pullkit.Error
		if !errors.Is(err, pullkit.ErrNoMatch) || !errors.As(err, &pe) || pe.Op != pullkit.OpCheckPlatform {
			t.Fatalf("Resolve of the amd64 image for arm64: %v, want ErrNoMatch at %q", err, pullkit.OpCheckPlatform)
		}
		cnt.take()
	})

	t.Run("429 on HEAD: waited for, retried as a HEAD", func(t *testing.T) {
		faults.Reset()
		faults.Add(&faultproxy.Rule{Method: http.MethodHead, PathContains: "/manifests/v1", Times: 1, Fault: faultproxy.TooManyRequests("7")})
		before := len(w.all())
		if _, err := c.Resolve(ctx, cnt.host+"/app:v1", anyPlatform); err != nil {
			t.Fatal(err)
		}
		want := []string{"HEAD /v2/app/manifests/v1 429", "HEAD /v2/app/manifests/v1 200"}
		if got := cnt.take(); !slices.Equal(got, want) {
			t.Errorf("sent %q, want %q", got, want)
		}
		if waits := w.all()[before:]; !slices.Equal(waits, []time.Duration{7 * time.Second}) {
			t.Errorf("waits %v, want the 7s Retry-After asked", waits)
		}
	})

	t.Run("429 on every HEAD: never a GET", func(t *testing.T) {
		faults.Reset()
		faults.Add(&faultproxy.Rule{Method: http.MethodHead, PathContains: "/manifests/v1", Fault: faultproxy.TooManyRequests("2")})
		before := len(w.all())
		_, err := c.Resolve(ctx, cnt.host+"/app:v1", anyPlatform)
		var he *pullkit.HTTPError
		if !errors.Is(err, pullkit.ErrTooManyRequests) || !errors.As(err, &he) || he.RetryAfter != 2*time.Second {
			t.Fatalf("err = %v, want ErrTooManyRequests carrying Retry-After 2s", err)
		}
		got := cnt.take()
		attempts := pullkit.DefaultRetryPolicy().Attempts
		if len(got) != attempts || slices.ContainsFunc(got, func(l string) bool { return l != "HEAD /v2/app/manifests/v1 429" }) {
			t.Errorf("sent %q, want %d HEADs and no GET", got, attempts)
		}
		if waits := w.all()[before:]; len(waits) != attempts-1 || slices.ContainsFunc(waits, func(d time.Duration) bool { return d != 2*time.Second }) {
			t.Errorf("waits %v, want %d of 2s", waits, attempts-1)
		}
		faults.Reset()
	})

	t.Run("Pull of a tag: one manifest GET, then the config and the layer", func(t *testing.T) {
		if _, err := c.Pull(ctx, cnt.host+"/app:v1", store.NewMemory()); err != nil {
			t.Fatal(err)
		}
		got := cnt.take()
		t.Logf("Pull app:v1: %d requests: %q", len(got), got)
		if len(got) != 3 || got[0] != "GET /v2/app/manifests/v1 200" || !slices.Equal(slices.Sorted(slices.Values(got[1:])), blobGETs("app", app)) {
			t.Errorf("sent %q, want the manifest GET by tag, then %q", got, blobGETs("app", app))
		}
	})

	t.Run("Pull of an index tag: the index, the platform's manifest, its config and layer", func(t *testing.T) {
		if _, err := c.Pull(ctx, cnt.host+"/multi:v1", store.NewMemory(), onARM); err != nil {
			t.Fatal(err)
		}
		got := cnt.take()
		t.Logf("Pull multi:v1: %d requests: %q", len(got), got)
		want := []string{"GET /v2/multi/manifests/v1 200", "GET /v2/multi/manifests/" + arm.manifest.String() + " 200"}
		if len(got) != 4 || !slices.Equal(got[:2], want) || !slices.Equal(slices.Sorted(slices.Values(got[2:])), blobGETs("multi", arm)) {
			t.Errorf("sent %q, want %q then %q", got, want, blobGETs("multi", arm))
		}
	})
}

func mustHash(t testing.TB, idx v1.ImageIndex, i int) v1.Hash {
	t.Helper()
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) <= i {
		t.Fatalf("index has no entry %d: %v", i, err)
	}
	return im.Manifests[i].Digest
}

// TestRoundTripsTokenAuth: with token auth (the realm on another loopback port), the
// challenge is learnt from one 401 and a token fetched once per repository for the
// client's life; a new repository costs one token request and no 401.
func TestRoundTripsTokenAuth(t *testing.T) {
	ts := regtest.NewTokenServer(t)
	reg := regtest.Start(t, regtest.WithToken(ts))
	img := regtest.PlatformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"}, false)
	app := factsOf(t, img)
	reg.Push(t, "app:v1", img)
	reg.Push(t, "app:v2", img)
	reg.Push(t, "other:v1", img)
	cnt := newCounter(t, "http://"+reg.Host)
	c, _ := testClient(t, WithKeychain(basicKeychain{regtest.User, regtest.Password}))
	ctx := t.Context()
	anyPlatform := WithMatcher(platforms.Any()) // Resolve's one HEAD: no platform to check

	for _, tc := range []struct {
		name   string
		do     func() error
		want   []string
		tokens []string // the scopes of the token requests it costs
	}{
		{"first Resolve: the challenge from a 401, one token",
			func() error { _, err := c.Resolve(ctx, cnt.host+"/app:v1", anyPlatform); return err },
			[]string{"HEAD /v2/app/manifests/v1 401", "HEAD /v2/app/manifests/v1 200"}, []string{"repository:app:pull"}},
		{"another tag of the repository: no token request",
			func() error { _, err := c.Resolve(ctx, cnt.host+"/app:v2", anyPlatform); return err },
			[]string{"HEAD /v2/app/manifests/v2 200"}, nil},
		{"a Pull in the repository: no token request, no 401",
			func() error { _, err := c.Pull(ctx, cnt.host+"/app:v2", store.NewMemory()); return err },
			append([]string{"GET /v2/app/manifests/v2 200"}, blobGETs("app", app)...), nil},
		{"a new repository: one token request, no 401",
			func() error { _, err := c.Resolve(ctx, cnt.host+"/other:v1", anyPlatform); return err },
			[]string{"HEAD /v2/other/manifests/v1 200"}, []string{"repository:other:pull"}},
	} {
		before := len(ts.Scopes())
		if err := tc.do(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got := cnt.take()
		if len(got) > 1 && strings.HasPrefix(got[0], "GET") {
			got = append(got[:1], slices.Sorted(slices.Values(got[1:]))...)
		}
		t.Logf("%s: %q, token scopes %q", tc.name, got, ts.Scopes()[before:])
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: sent %q, want %q", tc.name, got, tc.want)
		}
		if scopes := ts.Scopes()[before:]; !slices.Equal(scopes, tc.tokens) {
			t.Errorf("%s: token requests for %q, want %q", tc.name, scopes, tc.tokens)
		}
		if slices.ContainsFunc(got, func(l string) bool { return strings.HasPrefix(l, "GET /v2/ ") || strings.HasPrefix(l, "HEAD /v2/ ") }) {
			t.Errorf("%s: pinged /v2/: %q", tc.name, got)
		}
	}
}

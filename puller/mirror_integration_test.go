package puller_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/faultproxy"
	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/store"
)

// proxied starts a faultproxy in front of the registry at host, closed with the test.
func proxied(t testing.TB, host string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New("http://" + host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// ggcrFacts are the digests of an image built with go-containerregistry.
type ggcrFacts struct {
	manifest, config digest.Digest
	layers           []digest.Digest
}

func factsOfImage(t testing.TB, img v1.Image) ggcrFacts {
	t.Helper()
	m, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	c, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return ggcrFacts{manifest: digest.Digest(m.String()), config: digest.Digest(c.String()), layers: ggcrLayerDigests(t, img)}
}

// verifiedBlobs lists the blobs st holds, failing the test for any that does not hash to
// its name: a pull, failed or not, never leaves unverified bytes under a blob's name.
func verifiedBlobs(t testing.TB, st store.Content) []digest.Digest {
	t.Helper()
	var out []digest.Digest
	err := st.Walk(t.Context(), func(info store.Info) error {
		ra, err := st.ReaderAt(t.Context(), info.Digest)
		if err != nil {
			return err
		}
		defer ra.Close()
		v := info.Digest.Verifier()
		if _, err := io.Copy(v, io.NewSectionReader(ra, 0, ra.Size())); err != nil {
			return err
		}
		if !v.Verified() {
			t.Errorf("blob %s does not verify", info.Digest)
		}
		out = append(out, info.Digest)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMirrorPullThroughCache runs mirrors the way operators do: a real docker-registry as
// a pull-through cache ("proxy: remoteurl:") in front of another real one, the origin.
// Fault proxies in front of both record what the puller asks of each (the cache talks to
// the origin directly, so the origin's proxy sees only the puller).
func TestMirrorPullThroughCache(t *testing.T) {
	ctx := t.Context()
	originReg := regtest.Start(t)
	origin := proxied(t, originReg.Host)
	img := regtest.LayeredImage(t, 2)
	facts := factsOfImage(t, img)
	originReg.Push(t, "team/app:v1", img)
	ref := origin.Host() + "/team/app:v1"

	cacheReg := regtest.Start(t, regtest.WithProxy("http://"+originReg.Host))
	mirror := proxied(t, cacheReg.Host)
	// A mirror that is down: a port nothing listens on any more.
	down, err := faultproxy.New("http://" + cacheReg.Host)
	if err != nil {
		t.Fatal(err)
	}
	down.Close()

	notFound := func(code string) faultproxy.Fault {
		return faultproxy.Status(http.StatusNotFound, http.Header{"Content-Type": {"application/json"}}, `{"errors":[{"code":"`+code+`"}]}`)
	}
	wantBlobs := append([]digest.Digest{facts.config}, facts.layers...)
	for _, tc := range []struct {
		name     string
		mirror   string // the mirror endpoint configured
		rules    []*faultproxy.Rule
		fallback bool
		// wantErr: nil for success; otherwise the sentinel, and the error must name
		// the reference and the mirror.
		wantErr error
		// viaMirror: manifests and blobs came from the mirror; else from the origin.
		viaMirror bool
	}{
		{name: "pulls go via the mirror", mirror: mirror.Host(), fallback: true, viaMirror: true},
		{name: "mirror down: falls back to the origin", mirror: down.Host(), fallback: true},
		{name: "mirror lacks the tag: falls back to the origin", mirror: mirror.Host(), fallback: true,
			rules: []*faultproxy.Rule{{PathContains: "/manifests/", Fault: notFound("MANIFEST_UNKNOWN")}}},
		{name: "fallback forbidden, mirror serving: via the mirror", mirror: mirror.Host(), viaMirror: true},
		{name: "fallback forbidden, mirror down: ErrUnreachable", mirror: down.Host(), wantErr: pullkit.ErrUnreachable},
		{name: "fallback forbidden, mirror lacks the tag: ErrNotFound", mirror: mirror.Host(), wantErr: pullkit.ErrNotFound,
			rules: []*faultproxy.Rule{{PathContains: "/manifests/", Fault: notFound("MANIFEST_UNKNOWN")}}},
		{name: "fallback forbidden, mirror lacks a layer: ErrNotFound", mirror: mirror.Host(), wantErr: pullkit.ErrNotFound,
			rules: []*faultproxy.Rule{{PathContains: "/blobs/" + facts.layers[1].String(), Fault: notFound("BLOB_UNKNOWN")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin.Reset()
			mirror.Reset()
			mirror.Add(tc.rules...)
			c := newClient(t, puller.WithMirrors(origin.Host(), tc.mirror), puller.WithMirrorFallback(tc.fallback))
			st, err := store.OpenLayout(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			pulled, err := c.Pull(cctx, ref, st)
			stored := verifiedBlobs(t, st)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				msg := oneLine(t, err)
				if !strings.Contains(msg, ref) || !strings.Contains(msg, tc.mirror) {
					t.Errorf("error %q does not name the reference %s and the mirror %s", msg, ref, tc.mirror)
				}
				if n := len(origin.Records()); n != 0 {
					t.Errorf("fallback forbidden, yet the origin saw %d requests: %+v", n, origin.Records())
				}
				if imgs, _ := st.Images(ctx); len(imgs) != 0 {
					t.Errorf("a failed pull named %v", imgs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if pulled.Digest != facts.manifest || pulled.Name != ref {
				t.Errorf("pulled %s as %s, want %s as %s", pulled.Digest, pulled.Name, facts.manifest, ref)
			}
			for _, d := range wantBlobs {
				if !slices.Contains(stored, d) {
					t.Errorf("blob %s not stored", d)
				}
			}
			served := origin
			if tc.viaMirror {
				served = mirror
				if n := len(origin.Records()); n != 0 {
					t.Errorf("pulled via the mirror, yet the origin saw %d requests: %+v", n, origin.Records())
				}
			}
			if served.Count("", "/manifests/") == 0 {
				t.Errorf("no manifest request reached the endpoint that should serve them")
			}
			for _, d := range wantBlobs {
				if served.Count(http.MethodGet, "/blobs/"+d.String()) == 0 {
					t.Errorf("blob %s was not fetched from the endpoint that should serve it", d)
				}
			}
		})
	}

	// The cache really is a pull-through cache: it now keeps the blobs it fetched from
	// the origin in its own storage.
	var cached []digest.Digest
	_ = filepath.WalkDir(cacheReg.Dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "data" && strings.Contains(p, "/blobs/sha256/") {
			cached = append(cached, digest.NewDigestFromEncoded(digest.SHA256, filepath.Base(filepath.Dir(p))))
		}
		return nil
	})
	for _, d := range wantBlobs {
		if !slices.Contains(cached, d) {
			t.Errorf("the pull-through cache's storage has no blob %s (has %v)", d, cached)
		}
	}

	t.Run("Resolve never asks the origin when fallback is forbidden", func(t *testing.T) {
		for _, tc := range []struct {
			fallback bool
			via      *faultproxy.Proxy
		}{{false, mirror}, {true, origin}} {
			origin.Reset()
			mirror.Reset()
			// The first mirror is down; the second serves unless the origin is asked first.
			mirrors := []string{down.Host(), mirror.Host()}
			if tc.fallback {
				mirrors = []string{down.Host()}
			}
			c := newClient(t, puller.WithMirrors(origin.Host(), mirrors...), puller.WithMirrorFallback(tc.fallback))
			res, err := c.Resolve(ctx, ref)
			if err != nil {
				t.Fatal(err)
			}
			if res.Manifest.Digest != facts.manifest || res.Pinned() != origin.Host()+"/team/app@"+facts.manifest.String() {
				t.Errorf("fallback %v: Resolve = %+v, pinned %s", tc.fallback, res, res.Pinned())
			}
			if tc.via.Count(http.MethodHead, "/manifests/v1") != 1 {
				t.Errorf("fallback %v: the endpoint that should answer saw %+v", tc.fallback, tc.via.Records())
			}
		}
		origin.Reset()
		c := newClient(t, puller.WithMirrors(origin.Host(), down.Host()), puller.WithMirrorFallback(false))
		_, err := c.Resolve(ctx, ref)
		if !errors.Is(err, pullkit.ErrUnreachable) || !strings.Contains(err.Error(), down.Host()) || !strings.Contains(err.Error(), ref) {
			t.Errorf("every mirror down: err = %v, want ErrUnreachable naming %s and %s", err, ref, down.Host())
		}
		if n := len(origin.Records()); n != 0 {
			t.Errorf("fallback forbidden, yet the origin saw %d requests", n)
		}
	})
}

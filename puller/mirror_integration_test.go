package puller_test

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/internal/faultproxy"
	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/puller"
)

// TestMirrorPullThroughCache runs mirrors the way operators do: a real docker-registry as
// a pull-through cache ("proxy: remoteurl:") in front of another real one, the origin.
// Fault proxies in front of both record what the puller asks of each (the cache talks to
// the origin directly, so the origin's proxy sees only the puller).
func TestMirrorPullThroughCache(t *testing.T) {
	ctx := context.Background()
	origin := newFaultBed(t)
	img := testImage(t, 2048, 512)
	facts := factsOf(t, img)
	origin.reg.Push(t, "team/app:v1", img)
	ref := origin.ref("team/app:v1")

	cacheReg := regtest.Start(t, regtest.WithProxy("http://"+origin.reg.Host))
	mirror, err := faultproxy.New("http://" + cacheReg.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mirror.Close)
	// A mirror that is down: a port nothing listens on any more.
	down, err := faultproxy.New("http://" + cacheReg.Host)
	if err != nil {
		t.Fatal(err)
	}
	down.Close()

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
			rules: []*faultproxy.Rule{{PathContains: "/manifests/", Fault: faultproxy.Status(http.StatusNotFound, nil, `{"errors":[{"code":"MANIFEST_UNKNOWN"}]}`)}}},
		{name: "fallback forbidden, mirror serving: via the mirror", mirror: mirror.Host(), viaMirror: true},
		{name: "fallback forbidden, mirror down: ErrUnreachable", mirror: down.Host(), wantErr: puller.ErrUnreachable},
		{name: "fallback forbidden, mirror lacks the tag: ErrNotFound", mirror: mirror.Host(), wantErr: puller.ErrNotFound,
			rules: []*faultproxy.Rule{{PathContains: "/manifests/", Fault: faultproxy.Status(http.StatusNotFound, nil, `{"errors":[{"code":"MANIFEST_UNKNOWN"}]}`)}}},
		{name: "fallback forbidden, mirror lacks a layer: ErrNotFound", mirror: mirror.Host(), wantErr: puller.ErrNotFound,
			rules: []*faultproxy.Rule{{PathContains: "/blobs/" + facts.layers[1].String(), Fault: faultproxy.Status(http.StatusNotFound, nil, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin.proxy.Reset()
			mirror.Reset()
			mirror.Add(tc.rules...)
			c := newClient(puller.WithMirrors(origin.proxy.Host(), tc.mirror), puller.WithMirrorFallback(tc.fallback))
			dir := t.TempDir()
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			pulled, _, err := pullInto(cctx, c, ref, dir)
			ingestEmpty := true
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				msg := oneLine(t, err)
				t.Logf("error: %s", msg)
				if !strings.Contains(msg, ref) || !strings.Contains(msg, tc.mirror) {
					t.Errorf("error %q does not name the reference %s and the mirror %s", msg, ref, tc.mirror)
				}
				if n := len(origin.proxy.Records()); n != 0 {
					t.Errorf("fallback forbidden, yet the origin saw %d requests: %+v", n, origin.proxy.Records())
				}
				ingestEmpty = false // an interrupted transfer may leave its partial file
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if pulled.Digest != facts.manifest {
					t.Errorf("pulled %s, want %s", pulled.Digest, facts.manifest)
				}
			}
			stored := checkStore(t, dir, ingestEmpty)
			if tc.wantErr != nil {
				return
			}
			for _, d := range wantBlobs {
				if !slices.Contains(stored, d) {
					t.Errorf("blob %s not stored", d)
				}
			}
			served := origin.proxy
			if tc.viaMirror {
				served = mirror
				if n := len(origin.proxy.Records()); n != 0 {
					t.Errorf("pulled via the mirror, yet the origin saw %d requests: %+v", n, origin.proxy.Records())
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

	t.Run("Repository never names the origin when fallback is forbidden", func(t *testing.T) {
		for _, tc := range []struct {
			fallback bool
			want     string
		}{{false, mirror.Host()}, {true, origin.proxy.Host()}} {
			c := newClient(puller.WithMirrors(origin.proxy.Host(), down.Host(), mirror.Host()), puller.WithMirrorFallback(tc.fallback))
			repo, err := c.Repository(ctx, ref)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(repo.Name(), tc.want+"/") {
				t.Errorf("fallback %v: Repository is %s, want one on %s", tc.fallback, repo.Name(), tc.want)
			}
		}
		origin.proxy.Reset()
		c := newClient(puller.WithMirrors(origin.proxy.Host(), down.Host()), puller.WithMirrorFallback(false))
		_, err := c.Repository(ctx, ref)
		if !errors.Is(err, puller.ErrUnreachable) || !strings.Contains(err.Error(), down.Host()) || !strings.Contains(err.Error(), ref) {
			t.Errorf("every mirror down: err = %v, want ErrUnreachable naming %s and %s", err, ref, down.Host())
		}
		if n := len(origin.proxy.Records()); n != 0 {
			t.Errorf("fallback forbidden, yet the origin saw %d requests", n)
		}
	})
}

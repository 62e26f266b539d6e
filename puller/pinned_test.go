package puller_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

// copySchema1 copies a signed schema 1 image from the kit to another registry at host
// (blobs, then the manifest's bytes as they are), as repo:tag.
func copySchema1(t testing.TB, from *pullkittest.Registry, img *pullkittest.Image, host, repo, tag string) {
	t.Helper()
	m, err := manifest.Parse(img.Raw, img.MediaType)
	if err != nil {
		t.Fatal(err)
	}
	done := map[digest.Digest]bool{}
	for _, l := range m.Layers {
		if done[l.Digest] {
			continue
		}
		done[l.Digest] = true
		resp, err := http.Get(from.URL() + "/v2/" + img.Repo + "/blobs/" + l.Digest.String())
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET blob %s from the kit: %s %v", l.Digest, resp.Status, err)
		}
		post, err := http.Post("http://"+host+"/v2/"+repo+"/blobs/uploads/?digest="+l.Digest.String(), "application/octet-stream", bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		post.Body.Close()
		if post.StatusCode != http.StatusCreated {
			t.Fatalf("upload blob %s: %s", l.Digest, post.Status)
		}
	}
	putRaw(t, host, repo, tag, img.MediaType, img.Raw)
}

// status returns the status of a GET of repo's manifest ident on host.
func manifestStatus(t testing.TB, host, repo, ident string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+host+"/v2/"+repo+"/manifests/"+ident, nil)
	req.Header.Set("Accept", manifest.AcceptHeader)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestPinnedIsServed: Resolve pins a signed schema 1 tag by the digest its registry
// answers to, which is not the same on every registry: go-containerregistry's indexes the
// manifest by the sha256 of its bytes, distribution by the canonical digest of its signed
// payload (and re-signs it on every GET, so the bytes' sha256 names nothing there). On
// both, the pinned reference pulls, and the model names the canonical digest (and the
// registry's, where it differs).
func TestPinnedIsServed(t *testing.T) {
	t.Run("go-containerregistry's registry", func(t *testing.T) {
		kit := pullkittest.NewRegistry(t)
		img := kit.PushImage("app", "v1", pullkittest.Schema1, pullkittest.Layers(2, 300))
		host := ggcrRegistry(t)
		copySchema1(t, kit, img, host, "team/app", "v1")
		canonical, bytesDigest := img.Digest, digest.FromBytes(img.Raw)
		if canonical == bytesDigest {
			t.Fatal("control: a signed schema 1 whose canonical digest is its bytes' sha256")
		}
		if s := manifestStatus(t, host, "team/app", canonical.String()); s != http.StatusNotFound {
			t.Fatalf("control: this registry answers %d to the canonical digest, want 404", s)
		}
		checkPinned(t, host+"/team/app:v1", host+"/team/app@"+bytesDigest.String(), canonical, bytesDigest)
	})
	t.Run("distribution", func(t *testing.T) {
		reg := regtest.Start(t)
		reg.Push(t, "layered:v2", regtest.LayeredImage(t, 2))
		reg.Skopeo(t, "v2s1", "layered:v2", "layered:v2s1")
		canonical := reg.DigestOf(t, "layered", "v2s1", manifest.AcceptHeader)
		_, body := reg.Get(t, http.MethodGet, "/v2/layered/manifests/v2s1", manifest.AcceptHeader)
		if s := manifestStatus(t, reg.Host, "layered", digest.FromBytes(body).String()); digest.FromBytes(body) == canonical || s != http.StatusNotFound {
			t.Fatalf("control: the bytes' sha256 answers %d, want 404", s)
		}
		checkPinned(t, reg.Ref("layered:v2s1"), reg.Host+"/layered@"+canonical.String(), canonical, canonical)
	})
	t.Run("pullkittest resigning as distribution 2.8 does", func(t *testing.T) {
		kit := pullkittest.NewRegistry(t, pullkittest.WithSchema1Resigning())
		img := kit.PushImage("app", "v1", pullkittest.Schema1, pullkittest.Layers(2, 300))
		checkPinned(t, kit.Ref("app:v1"), img.Ref(), img.Digest, img.Digest)
	})
}

// checkPinned resolves tag, wants it pinned as pinned, and pulls the pinned reference:
// the model's Digest must be canonical and its RegistryDigest the registry's.
func checkPinned(t *testing.T, tag, pinned string, canonical, registry digest.Digest) {
	t.Helper()
	c := newClient(t)
	res, err := c.Resolve(t.Context(), tag)
	if err != nil {
		t.Fatal(err)
	}
	if res.Pinned() != pinned || res.Manifest.MediaType != manifest.MediaTypeDockerSchema1Signed {
		t.Errorf("Resolve(%s) pinned %s (%s), want %s", tag, res.Pinned(), res.Manifest.MediaType, pinned)
	}
	for _, ref := range []string{res.Pinned(), tag} {
		st := store.NewMemory()
		img, err := c.Pull(t.Context(), ref, st)
		if err != nil {
			t.Fatalf("Pull(%s): %v", ref, err)
		}
		if img.Digest != canonical || img.Manifest.Digest != canonical || img.RegistryDigest != registry {
			t.Errorf("Pull(%s): digest %s, manifest %s, registry's %s; want canonical %s and the registry's %s",
				ref, img.Digest, img.Manifest.Digest, img.RegistryDigest, canonical, registry)
		}
		if named, err := st.Image(t.Context(), ref); err != nil || named.Target.Digest != img.Stored.Digest {
			t.Errorf("Pull(%s): named %+v, %v", ref, named, err)
		}
		if len(verifiedBlobs(t, st)) == 0 {
			t.Errorf("Pull(%s) stored nothing", ref)
		}
	}
}

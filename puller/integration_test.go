package puller_test

import (
	"encoding/base64"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/store"
)

func ggcrLayerDigests(t testing.TB, img v1.Image) []digest.Digest {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []digest.Digest
	for _, l := range ls {
		h, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, digest.Digest(h.String()))
	}
	return out
}

// TestRealRegistry pulls every format from the real distribution registry, by tag and
// by digest, seeded by skopeo and go-containerregistry.
func TestRealRegistry(t *testing.T) {
	reg := regtest.Start(t)
	ctx := t.Context()

	if got := reg.PushRaw(t, "hello:v2", regtest.HelloWorldAMD64(t)); got != helloManifest {
		t.Fatalf("pushed hello-world as %s, want %s", got, helloManifest)
	}
	layered := regtest.LayeredImage(t, 3)
	reg.Push(t, "layered:v2", layered)
	reg.Skopeo(t, "v2s1", "layered:v2", "layered:v2s1")
	reg.Skopeo(t, "oci", "layered:v2", "layered:oci")
	wantLayers := ggcrLayerDigests(t, layered)

	plats := []v1.Platform{
		{OS: "linux", Architecture: "amd64"},
		{OS: "linux", Architecture: "arm64"},
		{OS: "linux", Architecture: "arm", Variant: "v7"},
	}
	list := regtest.Index(t, false, plats...)
	index := regtest.Index(t, true, plats...)
	listDigest := reg.PushIndex(t, "multi:list", list)
	indexDigest := reg.PushIndex(t, "multi:index", index)

	t.Run("schema 2 arrives as schema 2", func(t *testing.T) {
		// Control: this registry rewrites schema 2 to schema 1 when Accept lacks it, so
		// a client with an incomplete Accept header would get schema 1 here.
		resp, _ := reg.Get(t, http.MethodGet, "/v2/hello/manifests/v2", manifest.MediaTypeDockerSchema1Signed)
		if ct := resp.Header.Get("Content-Type"); ct != manifest.MediaTypeDockerSchema1Signed {
			t.Fatalf("control: registry served %q to a schema-1-only client, want a schema 1 rewrite", ct)
		}
		for _, ref := range []string{reg.Ref("hello:v2"), reg.Ref("hello@" + helloManifest.String())} {
			st, err := store.OpenLayout(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			img, err := newClient(t).Pull(ctx, ref, st, puller.WithFormat(puller.FormatAsServed))
			if err != nil {
				t.Fatalf("Pull(%s): %v", ref, err)
			}
			if img.Reference != ref || img.MediaType != manifest.MediaTypeDockerSchema2 || img.Digest != helloManifest {
				t.Errorf("Pull(%s) = %s %s %s, want schema 2 %s", ref, img.Reference, img.MediaType, img.Digest, helloManifest)
			}
			if img.Manifest.Digest != helloManifest || img.Manifest.Size != 525 || img.Config.Digest != helloConfig {
				t.Errorf("Pull(%s): manifest %+v config %+v", ref, img.Manifest, img.Config)
			}
			if len(img.Layers) != 1 || img.Layers[0].Digest != helloLayer || img.Layers[0].DiffID != helloDiffID {
				t.Errorf("Pull(%s): layers %+v, want %s with its diffID", ref, img.Layers, helloLayer)
			}
			if img.Platform == nil || img.Platform.String() != "linux/amd64" {
				t.Errorf("Pull(%s): platform %v, want linux/amd64", ref, img.Platform)
			}
			// As served: the stored manifest keeps its digest, and the layout names it.
			if img.Stored.Digest != helloManifest || !store.Has(ctx, st, helloLayer) {
				t.Errorf("Pull(%s) stored %+v", ref, img.Stored)
			}
			if named, err := st.Image(ctx, ref); err != nil || named.Target.Digest != helloManifest {
				t.Errorf("layout names %s: %+v, %v", ref, named, err)
			}
		}
	})

	t.Run("signed schema 1 by tag and canonical digest", func(t *testing.T) {
		canonical := reg.DigestOf(t, "layered", "v2s1", manifest.AcceptHeader)
		_, body := reg.Get(t, http.MethodGet, "/v2/layered/manifests/v2s1", manifest.AcceptHeader)
		if digest.FromBytes(body) == canonical {
			t.Fatalf("control: the signed manifest's raw sha256 equals its canonical digest %s", canonical)
		}
		var got [][]digest.Digest
		for _, ref := range []string{reg.Ref("layered:v2s1"), reg.Ref("layered@" + canonical.String())} {
			img, err := newClient(t).Pull(ctx, ref, store.NewMemory())
			if err != nil {
				t.Fatalf("Pull(%s): %v", ref, err)
			}
			if img.MediaType != manifest.MediaTypeDockerSchema1Signed || img.Digest != canonical || img.Manifest.Digest != canonical {
				t.Errorf("Pull(%s) = %s %s, want signed schema 1 %s", ref, img.MediaType, img.Digest, canonical)
			}
			if nonEmpty := layerDigests(img.Layers, true); !slices.Equal(nonEmpty, wantLayers) {
				t.Errorf("Pull(%s): non-empty layers %v, want base first %v", ref, nonEmpty, wantLayers)
			}
			for _, l := range img.Layers {
				if !l.Empty && (l.DiffID == "" || l.Size <= 0) {
					t.Errorf("Pull(%s): layer %+v: want the diffID and size the transfer learnt", ref, l)
				}
			}
			if img.Config.Digest == "" || img.Stored.MediaType != manifest.MediaTypeOCIManifest {
				t.Errorf("Pull(%s): config %+v, stored %+v; want a synthesised config in an OCI manifest", ref, img.Config, img.Stored)
			}
			got = append(got, layerDigests(img.Layers, false))
		}
		if !slices.Equal(got[0], got[1]) {
			t.Errorf("by tag %v and by digest %v differ", got[0], got[1])
		}
	})

	t.Run("OCI manifest written by skopeo", func(t *testing.T) {
		img, err := newClient(t).Pull(ctx, reg.Ref("layered:oci"), store.NewMemory())
		if err != nil {
			t.Fatal(err)
		}
		if img.MediaType != manifest.MediaTypeOCIManifest || img.Config.MediaType != manifest.MediaTypeOCIConfig {
			t.Errorf("got %s with config %s, want OCI", img.MediaType, img.Config.MediaType)
		}
		if got := layerDigests(img.Layers, false); !slices.Equal(got, wantLayers) {
			t.Errorf("layers %v, want %v", got, wantLayers)
		}
		for _, l := range img.Layers {
			if l.MediaType != manifest.MediaTypeOCILayerGzip || l.DiffID == "" {
				t.Errorf("layer %+v: want OCI gzip with a diffID", l)
			}
		}
	})

	t.Run("platform choice", func(t *testing.T) {
		for _, tc := range []struct {
			repoTag   string
			top       digest.Digest
			topType   string
			idx       v1.ImageIndex
			want      string
			wantIndex int
		}{
			{"multi:list", listDigest, manifest.MediaTypeDockerManifestList, list, "linux/amd64", 0},
			{"multi:list", listDigest, manifest.MediaTypeDockerManifestList, list, "linux/arm64/v8", 1},
			{"multi:list", listDigest, manifest.MediaTypeDockerManifestList, list, "linux/arm", 2},
			{"multi:index", indexDigest, manifest.MediaTypeOCIIndex, index, "linux/arm64", 1},
			{"multi:index", indexDigest, manifest.MediaTypeOCIIndex, index, "linux/arm/v7", 2},
			{"multi:index", indexDigest, manifest.MediaTypeOCIIndex, index, "linux/amd64", 0},
		} {
			im, err := tc.idx.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			entry := im.Manifests[tc.wantIndex]
			child, err := tc.idx.Image(entry.Digest)
			if err != nil {
				t.Fatal(err)
			}
			cfgHash, err := child.ConfigName()
			if err != nil {
				t.Fatal(err)
			}
			p, err := platforms.Parse(tc.want)
			if err != nil {
				t.Fatal(err)
			}
			repo, _, _ := strings.Cut(tc.repoTag, ":")
			for _, ref := range []string{reg.Ref(tc.repoTag), reg.Ref(repo + "@" + tc.top.String())} {
				img, err := newClient(t).Pull(ctx, ref, store.NewMemory(), puller.WithPlatform(p))
				if err != nil {
					t.Fatalf("Pull(%s, %s): %v", ref, tc.want, err)
				}
				if img.Digest != tc.top || img.MediaType != tc.topType {
					t.Errorf("Pull(%s, %s): top %s %s, want %s %s", ref, tc.want, img.Digest, img.MediaType, tc.top, tc.topType)
				}
				if img.Manifest.Digest != digest.Digest(entry.Digest.String()) || img.Config.Digest != digest.Digest(cfgHash.String()) {
					t.Errorf("Pull(%s, %s): chose %s (config %s), want %s %s (config %s)", ref, tc.want,
						img.Manifest.Digest, img.Config.Digest, entry.Platform, entry.Digest, cfgHash)
				}
				if img.Platform == nil || img.Platform.Architecture != entry.Platform.Architecture {
					t.Errorf("Pull(%s, %s): platform %v, want %v", ref, tc.want, img.Platform, entry.Platform)
				}
			}
		}
	})

	t.Run("every platform", func(t *testing.T) {
		st := store.NewMemory()
		img, err := newClient(t).Pull(ctx, reg.Ref("multi:index"), st, puller.WithAllPlatforms(),
			puller.WithPlatform(platforms.Platform{OS: "linux", Architecture: "arm64"}), puller.WithFormat(puller.FormatAsServed))
		if err != nil {
			t.Fatal(err)
		}
		if len(img.Platforms) != 3 || img.Platform == nil || img.Platform.Architecture != "arm64" || img.Stored.Digest != indexDigest {
			t.Fatalf("Pull of every platform: %d platforms, preferred %v, stored %+v (want the index as served, %s)", len(img.Platforms), img.Platform, img.Stored, indexDigest)
		}
		for _, p := range img.Platforms {
			if !store.Has(ctx, st, p.Manifest.Digest) || !store.Has(ctx, st, p.Config.Digest) {
				t.Errorf("platform %v: manifest or config not stored", p.Platform)
			}
		}
	})

	t.Run("resolve downloads no blob", func(t *testing.T) {
		rec := newRecorder()
		res, err := newClient(t, puller.WithTransport(rec)).Resolve(ctx, reg.Ref("multi:index"), puller.WithPlatform(platforms.Platform{OS: "linux", Architecture: "arm64"}))
		if err != nil {
			t.Fatal(err)
		}
		im, _ := index.IndexManifest()
		if want := digest.Digest(im.Manifests[1].Digest.String()); res.Manifest.Digest != want {
			t.Errorf("Resolve = %s, want the arm64 manifest %s", res.Manifest.Digest, want)
		}
		if res.Descriptor.Digest != indexDigest || res.Descriptor.MediaType != manifest.MediaTypeOCIIndex {
			t.Errorf("Resolve: the tag names %+v, want the index %s", res.Descriptor, indexDigest)
		}
		if want := reg.Host + "/multi@" + res.Manifest.Digest.String(); res.Pinned() != want {
			t.Errorf("Pinned() = %s, want %s", res.Pinned(), want)
		}
		want := []string{"HEAD /v2/multi/manifests/index", "GET /v2/multi/manifests/" + indexDigest.String()}
		if got := rec.lines(); !slices.Equal(got, want) {
			t.Errorf("Resolve sent %q, want %q", got, want)
		}
	})

	t.Run("no platform match names the offered ones", func(t *testing.T) {
		ref := reg.Ref("multi:list")
		_, err := newClient(t).Pull(ctx, ref, store.NewMemory(), puller.WithPlatform(platforms.Platform{OS: "linux", Architecture: "s390x"}))
		if !errors.Is(err, pullkit.ErrNoMatch) {
			t.Fatalf("err = %v, want ErrNoMatch", err)
		}
		msg := oneLine(t, err)
		for _, want := range []string{ref, "linux/s390x", "linux/amd64", "linux/arm64", "linux/arm/v7"} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not name %q", msg, want)
			}
		}
	})

	t.Run("unknown tag, digest or repository", func(t *testing.T) {
		missing := digest.FromString("not pushed")
		for _, ref := range []string{
			reg.Ref("hello:nope"),
			reg.Ref("hello@" + missing.String()),
			reg.Ref("nosuchrepo:latest"),
		} {
			_, err := newClient(t).Pull(ctx, ref, store.NewMemory())
			if !errors.Is(err, pullkit.ErrNotFound) {
				t.Fatalf("Pull(%s) err = %v, want ErrNotFound", ref, err)
			}
			if msg := oneLine(t, err); !strings.Contains(msg, ref) || !strings.Contains(msg, "MANIFEST_UNKNOWN") {
				t.Errorf("error %q does not name %s and the registry's code", msg, ref)
			}
		}
	})
}

// TestRealRegistryBasicAuth pulls from the registry with htpasswd: credentials from a
// keychain and from a docker config.json, and the failures without them.
func TestRealRegistryBasicAuth(t *testing.T) {
	reg := regtest.Start(t, regtest.WithHtpasswd())
	reg.PushRaw(t, "hello:v2", regtest.HelloWorldAMD64(t))
	ref := reg.Ref("hello:v2")
	ctx := t.Context()

	img, err := newClient(t, puller.WithKeychain(staticKeychain{regtest.User, regtest.Password})).Pull(ctx, ref, store.NewMemory())
	if err != nil {
		t.Fatalf("Pull with credentials: %v", err)
	}
	if img.Digest != helloManifest {
		t.Errorf("digest %s, want %s", img.Digest, helloManifest)
	}

	for _, tc := range []struct {
		name string
		kc   authn.Keychain
		sent bool
		says string
	}{
		{"anonymous", anonymous, false, "no credentials were sent"},
		{"wrong password", staticKeychain{regtest.User, "wrong"}, true, "the credentials sent were refused"},
	} {
		_, err := newClient(t, puller.WithKeychain(tc.kc)).Pull(ctx, ref, store.NewMemory())
		if !errors.Is(err, pullkit.ErrUnauthorized) {
			t.Errorf("%s: err = %v, want ErrUnauthorized", tc.name, err)
			continue
		}
		var he *pullkit.HTTPError
		if !errors.As(err, &he) || he.CredentialsSent != tc.sent || he.Message != "authentication required" {
			t.Errorf("%s: err %v: want an *HTTPError with CredentialsSent %v and the registry's message", tc.name, err, tc.sent)
		}
		if msg := oneLine(t, err); !strings.Contains(msg, ref) || !strings.Contains(msg, tc.says) || !strings.Contains(msg, "authentication required") {
			t.Errorf("%s: error %q does not name %s, say %q and show the registry's message", tc.name, msg, ref, tc.says)
		}
	}

	t.Run("docker config.json", func(t *testing.T) {
		dir := t.TempDir()
		auth := base64.StdEncoding.EncodeToString([]byte(regtest.User + ":" + regtest.Password))
		cfg := `{"auths":{"` + reg.Host + `":{"auth":"` + auth + `"}}}`
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("DOCKER_CONFIG", dir)
		c, err := puller.New(puller.WithRetry(fastRetry()))
		if err != nil {
			t.Fatal(err)
		}
		img, err := c.Pull(ctx, ref, store.NewMemory())
		if err != nil {
			t.Fatalf("Pull with the default keychain: %v", err)
		}
		if img.Digest != helloManifest {
			t.Errorf("digest %s, want %s", img.Digest, helloManifest)
		}
	})
}

// TestRealRegistryBearerToken pulls from the registry with token auth, the token issued
// by a token server on another loopback port.
func TestRealRegistryBearerToken(t *testing.T) {
	ts := regtest.NewTokenServer(t)
	reg := regtest.Start(t, regtest.WithToken(ts))
	reg.PushRaw(t, "hello:v2", regtest.HelloWorldAMD64(t))
	ref := reg.Ref("hello:v2")
	ctx := t.Context()

	before := len(ts.Scopes())
	img, err := newClient(t, puller.WithKeychain(staticKeychain{regtest.User, regtest.Password})).Pull(ctx, ref, store.NewMemory())
	if err != nil {
		t.Fatalf("Pull with a token: %v", err)
	}
	if img.Digest != helloManifest || img.Config.Digest != helloConfig {
		t.Errorf("Pull = %s config %s", img.Digest, img.Config.Digest)
	}
	if scopes := ts.Scopes()[before:]; !slices.Equal(scopes, []string{"repository:hello:pull"}) {
		t.Errorf("token scopes asked %v, want repository:hello:pull once", scopes)
	}

	_, err = newClient(t, puller.WithKeychain(staticKeychain{regtest.User, "wrong"})).Pull(ctx, ref, store.NewMemory())
	if !errors.Is(err, pullkit.ErrUnauthorized) {
		t.Fatalf("wrong password: err = %v, want ErrUnauthorized", err)
	}
	var he *pullkit.HTTPError
	if !errors.As(err, &he) || !he.CredentialsSent {
		t.Errorf("wrong password: err %v: want an *HTTPError saying credentials were sent", err)
	}
	if msg := oneLine(t, err); !strings.Contains(msg, ref) || !strings.Contains(msg, "refused") {
		t.Errorf("error %q does not name %s and say the credentials were refused", msg, ref)
	}
}

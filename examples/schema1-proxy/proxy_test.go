package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
)

const schema1Only = manifest.MediaTypeDockerSchema1Signed + ", " + manifest.MediaTypeDockerSchema1

func request(t *testing.T, method, u, accept string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// realLayers is the non-throwaway layers of a schema 1 manifest, base first.
func realLayers(m *manifest.Manifest) []digest.Digest {
	var out []digest.Digest
	for i, l := range m.Layers {
		if !m.Schema1.History[i].Throwaway {
			out = append(out, l.Digest)
		}
	}
	return out
}

// TestProxy runs the proxy in front of the real docker-registry.
func TestProxy(t *testing.T) {
	reg := regtest.Start(t)
	hello := regtest.HelloWorldAMD64(t)
	reg.PushRaw(t, "demo/hello:s2", hello)
	reg.PushIndex(t, "demo/hello:index", regtest.Index(t, true,
		v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"},
		v1.Platform{OS: "linux", Architecture: "amd64"}))
	reg.PushIndex(t, "demo/hello:armonly", regtest.Index(t, false, v1.Platform{OS: "linux", Architecture: "arm64"}))

	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kid, err := manifest.LibtrustKeyID(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	up, _ := url.Parse("http://" + reg.Host)
	front := httptest.NewServer(NewProxy(up, key))
	t.Cleanup(front.Close)
	orig, err := manifest.Parse(hello.Manifest, hello.MediaType)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("schema 2 by tag for a schema 1 client is rewritten and verifies", func(t *testing.T) {
		resp, body := request(t, "GET", front.URL+"/v2/demo/hello/manifests/s2", schema1Only)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != manifest.MediaTypeDockerSchema1Signed {
			t.Fatalf("%s %s: %s", resp.Status, resp.Header.Get("Content-Type"), body)
		}
		m, err := manifest.Parse(body, resp.Header.Get("Content-Type"))
		if err != nil {
			t.Fatalf("rewrite does not verify: %v", err)
		}
		if resp.Header.Get("Docker-Content-Digest") != m.Digest.String() {
			t.Errorf("Docker-Content-Digest %s, canonical %s", resp.Header.Get("Docker-Content-Digest"), m.Digest)
		}
		if m.Schema1.Name != "demo/hello" || m.Schema1.Tag != "s2" || m.Schema1.Signatures[0].KeyID != kid {
			t.Errorf("name %q tag %q signer %+v, want key %s", m.Schema1.Name, m.Schema1.Tag, m.Schema1.Signatures, kid)
		}
		if got, want := realLayers(m), []digest.Digest{orig.Layers[0].Digest}; !slices.Equal(got, want) {
			t.Errorf("layers %v, want %v", got, want)
		}
		head, hbody := request(t, "HEAD", front.URL+"/v2/demo/hello/manifests/s2", schema1Only)
		if head.StatusCode != 200 || len(hbody) != 0 || head.Header.Get("Content-Type") != manifest.MediaTypeDockerSchema1Signed {
			t.Errorf("HEAD: %s, %d body bytes", head.Status, len(hbody))
		}
	})

	t.Run("a schema 2 client gets the registry's bytes unchanged", func(t *testing.T) {
		_, want := reg.Get(t, "GET", "/v2/demo/hello/manifests/s2", manifest.AcceptHeader)
		resp, body := request(t, "GET", front.URL+"/v2/demo/hello/manifests/s2", manifest.AcceptHeader)
		if resp.StatusCode != 200 || string(body) != string(want) || string(body) != string(hello.Manifest) {
			t.Fatalf("%s: proxy changed the bytes", resp.Status)
		}
	})

	t.Run("by digest passes through even for a schema 1 client", func(t *testing.T) {
		path := "/v2/demo/hello/manifests/" + digest.FromBytes(hello.Manifest).String()
		wantResp, want := reg.Get(t, "GET", path, schema1Only)
		resp, body := request(t, "GET", front.URL+path, schema1Only)
		if resp.StatusCode != wantResp.StatusCode || string(body) != string(want) {
			t.Fatalf("proxy %s %d bytes, registry %s %d bytes", resp.Status, len(body), wantResp.Status, len(want))
		}
		if resp.Header.Get("Content-Type") == manifest.MediaTypeDockerSchema1Signed && wantResp.Header.Get("Content-Type") != manifest.MediaTypeDockerSchema1Signed {
			t.Fatal("proxy rewrote a request by digest")
		}
	})

	t.Run("an index resolves to linux/amd64", func(t *testing.T) {
		resp, body := request(t, "GET", front.URL+"/v2/demo/hello/manifests/index", schema1Only)
		m, err := manifest.Parse(body, resp.Header.Get("Content-Type"))
		if resp.StatusCode != 200 || err != nil {
			t.Fatalf("%s: %v", resp.Status, err)
		}
		_, idxRaw := reg.Get(t, "GET", "/v2/demo/hello/manifests/index", manifest.AcceptHeader)
		idx, err := manifest.Parse(idxRaw, manifest.MediaTypeOCIIndex)
		if err != nil {
			t.Fatal(err)
		}
		amd64, err := manifest.Choose(idx, platforms.Only(platforms.Platform{OS: "linux", Architecture: "amd64"}))
		if err != nil {
			t.Fatal(err)
		}
		_, childRaw := reg.Get(t, "GET", "/v2/demo/hello/manifests/"+amd64.Digest.String(), manifest.AcceptHeader)
		child, err := manifest.Parse(childRaw, amd64.MediaType)
		if err != nil {
			t.Fatal(err)
		}
		var want []digest.Digest
		for _, l := range child.Layers {
			want = append(want, l.Digest)
		}
		if got := realLayers(m); !slices.Equal(got, want) || m.Platform.Architecture != "amd64" {
			t.Errorf("layers %v arch %s, want amd64's %v", got, m.Platform.Architecture, want)
		}
	})

	t.Run("an index without linux/amd64 is not found", func(t *testing.T) {
		resp, body := request(t, "GET", front.URL+"/v2/demo/hello/manifests/armonly", schema1Only)
		if resp.StatusCode != 404 || !strings.Contains(string(body), "MANIFEST_UNKNOWN") || !strings.Contains(string(body), "linux/arm64") {
			t.Fatalf("%s %s", resp.Status, body)
		}
	})

	t.Run("an unknown tag is the registry's 404", func(t *testing.T) {
		resp, body := request(t, "GET", front.URL+"/v2/demo/hello/manifests/nope", schema1Only)
		if resp.StatusCode != 404 || !strings.Contains(string(body), "MANIFEST_UNKNOWN") {
			t.Fatalf("%s %s", resp.Status, body)
		}
	})

	t.Run("pullkit's rewrite agrees with skopeo's v2s1 conversion", func(t *testing.T) {
		reg.Skopeo(t, "v2s1", "demo/hello:s2", "demo/hello:skopeo-s1")
		resp, skopeoRaw := reg.Get(t, "GET", "/v2/demo/hello/manifests/skopeo-s1", schema1Only)
		skopeo, err := manifest.Parse(skopeoRaw, resp.Header.Get("Content-Type"))
		if err != nil {
			t.Fatal(err)
		}
		_, body := request(t, "GET", front.URL+"/v2/demo/hello/manifests/s2", schema1Only)
		ours, err := manifest.Parse(body, manifest.MediaTypeDockerSchema1Signed)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(ours.Layers, skopeo.Layers, func(a, b manifest.Layer) bool { return a.Digest == b.Digest && a.Empty == b.Empty }) {
			t.Errorf("layers differ:\n ours   %+v\n skopeo %+v", ours.Layers, skopeo.Layers)
		}
		for i := range skopeo.Schema1.History {
			if a, b := ours.Schema1.History[i].V1Compatibility, skopeo.Schema1.History[i].V1Compatibility; a != b {
				t.Errorf("history %d:\n ours   %s\n skopeo %s", i, a, b)
			}
		}
		// An image that is already schema 1 passes through. The registry signs schema 1
		// afresh on every GET (ECDSA signatures differ each time), so compare what the
		// signatures cover: the payload, i.e. the canonical digest, and the signer.
		presp, passed := request(t, "GET", front.URL+"/v2/demo/hello/manifests/skopeo-s1", schema1Only)
		m, err := manifest.Parse(passed, presp.Header.Get("Content-Type"))
		if err != nil || presp.StatusCode != 200 {
			t.Fatalf("schema 1 by tag through the proxy: %s, %v", presp.Status, err)
		}
		if m.Digest != skopeo.Digest || m.Schema1.Signatures[0].KeyID != skopeo.Schema1.Signatures[0].KeyID || m.Schema1.Signatures[0].KeyID == kid {
			t.Errorf("schema 1 by tag: digest %s signer %s, registry's %s signer %s", m.Digest, m.Schema1.Signatures[0].KeyID, skopeo.Digest, skopeo.Schema1.Signatures[0].KeyID)
		}
	})

	t.Run("blobs pass through", func(t *testing.T) {
		resp, body := request(t, "GET", front.URL+"/v2/demo/hello/blobs/"+orig.Config.Digest.String(), "")
		if resp.StatusCode != 200 || digest.FromBytes(body) != orig.Config.Digest {
			t.Fatalf("%s, %d bytes", resp.Status, len(body))
		}
	})
}

func TestManifestPath(t *testing.T) {
	for _, tt := range []struct {
		path, repo, ref string
		ok              bool
	}{
		{"/v2/library/hello/manifests/latest", "library/hello", "latest", true},
		{"/v2/a/manifests/sha256:abc", "a", "sha256:abc", true},
		{"/v2/a/b/c/manifests/t", "a/b/c", "t", true},
		{"/v2/a/blobs/sha256:abc", "", "", false},
		{"/v2/manifests/x", "", "", false},
		{"/v2/a/manifests/", "a", "", false},
		{"/other", "", "", false},
	} {
		repo, ref, ok := manifestPath(tt.path)
		if repo != tt.repo || ref != tt.ref || ok != tt.ok {
			t.Errorf("manifestPath(%q) = %q %q %v", tt.path, repo, ref, ok)
		}
	}
}

func TestWantsSchema1(t *testing.T) {
	for _, tt := range []struct {
		accept []string
		want   bool
	}{
		{nil, true},
		{[]string{manifest.MediaTypeDockerSchema1Signed}, true},
		{[]string{"application/json", "*/*"}, true},
		{[]string{manifest.MediaTypeDockerSchema1Signed + ", " + manifest.MediaTypeDockerSchema2}, false},
		{[]string{manifest.MediaTypeDockerSchema1Signed, manifest.MediaTypeOCIIndex + "; q=0.5"}, false},
		{[]string{manifest.MediaTypeDockerManifestList}, false},
		{[]string{"Application/Vnd.Docker.Distribution.Manifest.V2+JSON"}, false},
	} {
		if got := wantsSchema1(tt.accept); got != tt.want {
			t.Errorf("wantsSchema1(%q) = %v, want %v", tt.accept, got, tt.want)
		}
	}
}

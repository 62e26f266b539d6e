package puller_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

// TestPullTagIsOneGET checks the request sequence of a pull by tag (the manifest in one
// GET, no ping, no HEAD; then the config and the layer), that every manifest request
// carries the complete Accept header, and what the pull leaves in the store.
func TestPullTagIsOneGET(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	seedHello(t, reg, "library/hello", "latest")
	rec := newRecorder()
	st := store.NewMemory()
	ref := reg.Ref("library/hello:latest")
	img, err := newClient(t, puller.WithTransport(rec)).Pull(t.Context(), ref, st)
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != helloManifest || img.Config.Digest != helloConfig || len(img.Layers) != 1 || img.Layers[0].Digest != helloLayer {
		t.Fatalf("Pull = %+v", img)
	}
	if img.Name != ref || img.Reference != ref || img.Platform == nil || img.Platform.String() != "linux/amd64" {
		t.Errorf("Pull named %q (reference %q), platform %v", img.Name, img.Reference, img.Platform)
	}
	got := rec.lines()
	if len(got) != 3 || got[0] != "GET /v2/library/hello/manifests/latest" {
		t.Fatalf("requests %q: want the manifest GET by tag first, then 2 blobs", got)
	}
	blobs := slices.Sorted(slices.Values(got[1:]))
	want := slices.Sorted(slices.Values([]string{"GET /v2/library/hello/blobs/" + helloConfig.String(), "GET /v2/library/hello/blobs/" + helloLayer.String()}))
	if !slices.Equal(blobs, want) {
		t.Errorf("blob requests %q, want %q", blobs, want)
	}
	for _, r := range rec.requests() {
		if strings.Contains(r.URL.Path, "/manifests/") && r.Header.Get("Accept") != manifest.AcceptHeader {
			t.Errorf("%s %s Accept = %q, want %q", r.Method, r.URL.Path, r.Header.Get("Accept"), manifest.AcceptHeader)
		}
		if ua := r.Header.Get("User-Agent"); ua != "pullkit" {
			t.Errorf("%s %s User-Agent = %q, want pullkit", r.Method, r.URL.Path, ua)
		}
	}
	for _, ct := range []string{manifest.MediaTypeDockerSchema2, manifest.MediaTypeDockerManifestList, manifest.MediaTypeOCIIndex,
		manifest.MediaTypeOCIManifest, manifest.MediaTypeDockerSchema1Signed, manifest.MediaTypeDockerSchema1} {
		if !strings.Contains(manifest.AcceptHeader, ct) {
			t.Errorf("AcceptHeader lacks %s", ct)
		}
	}
	// Stored as OCI by default: a converted manifest naming the same blobs, named last.
	named, err := st.Image(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if named.Target.Digest != img.Stored.Digest || img.Stored.MediaType != manifest.MediaTypeOCIManifest {
		t.Errorf("store names %+v, pull says it stored %+v", named.Target, img.Stored)
	}
	raw, err := store.ReadBlob(t.Context(), st, img.Stored.Digest, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse(raw, img.Stored.MediaType)
	if err != nil || m.Config.Digest != helloConfig || len(m.Layers) != 1 || m.Layers[0].Digest != helloLayer {
		t.Fatalf("stored manifest %s: %v %+v", raw, err, m)
	}
	for _, d := range []digest.Digest{helloConfig, helloLayer} {
		if !store.Has(t.Context(), st, d) {
			t.Errorf("store lacks %s", d)
		}
	}
}

// withoutHeader is a fault that serves the request with header removed.
func withoutHeader(header string) pullkittest.Fault {
	return pullkittest.Rewrite("without "+header, func(b []byte, h http.Header) []byte {
		h.Del(header)
		return b
	})
}

// withHeader is a fault that serves the request with header set to value.
func withHeader(header, value string) pullkittest.Fault {
	return pullkittest.Rewrite(header+": "+value, func(b []byte, h http.Header) []byte {
		h.Set(header, value)
		return b
	})
}

// TestResolveTagHEADFallsBack covers registries that refuse HEAD or send no digest with
// it (one GET by tag, its Docker-Content-Digest checked), and a HEAD that fails
// transiently (retried as a HEAD, never turned into a GET).
func TestResolveTagHEADFallsBack(t *testing.T) {
	head := pullkittest.Match{Method: http.MethodHead, Route: pullkittest.RouteManifest}
	get := pullkittest.Match{Method: http.MethodGet, Route: pullkittest.RouteManifest}
	for _, tc := range []struct {
		name    string
		rules   []*pullkittest.Rule
		wantErr error
		wantGET bool
	}{
		{"HEAD refused, header matches", []*pullkittest.Rule{{Match: head, Fault: pullkittest.Status(http.StatusMethodNotAllowed, nil, "")}}, nil, true},
		{"HEAD refused, no header", []*pullkittest.Rule{
			{Match: head, Fault: pullkittest.Status(http.StatusMethodNotAllowed, nil, "")},
			{Match: get, Fault: withoutHeader("Docker-Content-Digest")}}, nil, true},
		{"HEAD without digest", []*pullkittest.Rule{{Match: head, Fault: withoutHeader("Docker-Content-Digest")}}, nil, true},
		{"HEAD without media type", []*pullkittest.Rule{{Match: head, Fault: withoutHeader("Content-Type")}}, nil, true},
		{"HEAD with a generic media type", []*pullkittest.Rule{{Match: head, Fault: withHeader("Content-Type", "application/json")}}, nil, true},
		{"HEAD refused, header names other content", []*pullkittest.Rule{
			{Match: head, Fault: pullkittest.Status(http.StatusMethodNotAllowed, nil, "")},
			{Match: get, Fault: withHeader("Docker-Content-Digest", digest.FromString("other").String())}}, pullkit.ErrDigestMismatch, true},
		{"HEAD refused, header malformed", []*pullkittest.Rule{
			{Match: head, Fault: pullkittest.Status(http.StatusMethodNotAllowed, nil, "")},
			{Match: get, Fault: withHeader("Docker-Content-Digest", "sha256:nothex")}}, pullkit.ErrInvalid, true},
		{"HEAD 502 once: retried as a HEAD", []*pullkittest.Rule{{Match: head, Times: 1, Fault: pullkittest.Status(http.StatusBadGateway, nil, "")}}, nil, false},
		{"HEAD 502 every time: no GET", []*pullkittest.Rule{{Match: head, Fault: pullkittest.Status(http.StatusBadGateway, nil, "")}}, pullkit.ErrUnreachable, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := pullkittest.NewRegistry(t, pullkittest.WithFaults(tc.rules...))
			seedHello(t, reg, "hello", "v1")
			ref := reg.Ref("hello:v1")
			// Any platform: the HEAD's answer is the whole resolve (no platform check).
			res, err := newClient(t).Resolve(t.Context(), ref, puller.WithMatcher(platforms.Any()))
			gets := reg.Count(get)
			if (gets > 0) != tc.wantGET {
				t.Errorf("%d GETs (want some: %v): %q", gets, tc.wantGET, logLines(reg))
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if msg := oneLine(t, err); !strings.Contains(msg, ref) {
					t.Errorf("error %q does not name %s", msg, ref)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Descriptor.Digest != helloManifest || res.Manifest.Digest != helloManifest || res.Manifest.MediaType != manifest.MediaTypeDockerSchema2 {
				t.Errorf("Resolve = %+v", res)
			}
			if gets > 1 {
				t.Errorf("%d GETs, want at most one: %q", gets, logLines(reg))
			}
		})
	}
}

// TestManifestVerifiedAgainstDigest serves other bytes than the digest that names them,
// for a pull by digest and for one by tag (checked against Docker-Content-Digest).
func TestManifestVerifiedAgainstDigest(t *testing.T) {
	body := helloBody(t)
	tampered := bytes.Replace(body, []byte(`"size": 1469`), []byte(`"size": 1470`), 1)
	if bytes.Equal(body, tampered) {
		t.Fatal("fixture changed: nothing tampered")
	}
	reg := pullkittest.NewRegistry(t, pullkittest.WithFaults(&pullkittest.Rule{
		Match: pullkittest.Match{Method: http.MethodGet, Route: pullkittest.RouteManifest},
		Fault: pullkittest.Rewrite("tampered", func([]byte, http.Header) []byte { return tampered }),
	}))
	seedHello(t, reg, "hello", "v1")
	for _, ref := range []string{reg.Ref("hello@" + helloManifest.String()), reg.Ref("hello:v1")} {
		_, err := newClient(t).Pull(t.Context(), ref, store.NewMemory())
		if !errors.Is(err, pullkit.ErrDigestMismatch) {
			t.Fatalf("Pull(%s) err = %v, want ErrDigestMismatch", ref, err)
		}
		var pe *pullkit.Error
		var de *pullkit.DigestMismatchError
		if !errors.As(err, &pe) || pe.Reference != ref || !errors.As(err, &de) || de.Want != helloManifest || de.Got != digest.FromBytes(tampered) {
			t.Errorf("err %v is not a *pullkit.Error for %s wrapping the mismatch", err, ref)
		}
		msg := oneLine(t, err)
		for _, want := range []string{ref, helloManifest.String(), digest.FromBytes(tampered).String()} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not name %s", msg, want)
			}
		}
	}
}

// chunked is a fault that serves the response without Content-Length, in two writes.
type chunked struct{}

func (chunked) Name() string { return "chunked" }

func (chunked) Apply(w http.ResponseWriter, r *http.Request, next http.Handler) {
	rec := httptest.NewRecorder()
	next.ServeHTTP(rec, r)
	for k, v := range rec.Header() {
		if k != "Content-Length" {
			w.Header()[k] = v
		}
	}
	w.WriteHeader(rec.Code)
	body := rec.Body.Bytes()
	half := len(body) / 2
	_, _ = w.Write(body[:half])
	w.(http.Flusher).Flush()
	_, _ = w.Write(body[half:])
}

// TestManifestSizeCap reads bodies through the cap, with and without Content-Length,
// and refuses a HEAD that announces more.
func TestManifestSizeCap(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fault   pullkittest.Fault
		resolve bool
	}{
		{"Content-Length on GET", nil, false},
		{"chunked GET", chunked{}, false},
		{"Content-Length on HEAD", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := pullkittest.NewRegistry(t)
			if tc.fault != nil {
				reg.Inject(&pullkittest.Rule{Match: pullkittest.Match{Route: pullkittest.RouteManifest}, Fault: tc.fault})
			}
			seedHello(t, reg, "hello", "v1")
			c := newClient(t, puller.WithMaxManifestSize(200))
			var err error
			if tc.resolve {
				_, err = c.Resolve(t.Context(), reg.Ref("hello:v1"))
			} else {
				_, err = c.Pull(t.Context(), reg.Ref("hello:v1"), store.NewMemory())
			}
			if !errors.Is(err, pullkit.ErrTooLarge) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
			if msg := oneLine(t, err); !strings.Contains(msg, "200-byte limit") {
				t.Errorf("error %q does not state the limit", msg)
			}
			if n := reg.Count(pullkittest.Match{Route: pullkittest.RouteBlob}); n != 0 {
				t.Errorf("%d blob requests after a manifest over the cap", n)
			}
		})
	}
	t.Run("at the cap", func(t *testing.T) {
		reg := pullkittest.NewRegistry(t)
		seedHello(t, reg, "hello", "v1")
		_, err := newClient(t, puller.WithMaxManifestSize(int64(len(helloBody(t))))).Pull(t.Context(), reg.Ref("hello:v1"), store.NewMemory())
		if !errors.Is(err, pullkit.ErrTooLarge) || !strings.Contains(oneLine(t, err), "fetch config") {
			t.Fatalf("config (1469 bytes) and a 525-byte cap: err = %v, want the config to be too large", err)
		}
		if _, err := newClient(t, puller.WithMaxManifestSize(1469)).Pull(t.Context(), reg.Ref("hello:v1"), store.NewMemory()); err != nil {
			t.Fatalf("documents exactly at the cap: %v", err)
		}
	})
	t.Run("option refuses 0", func(t *testing.T) {
		if _, err := puller.New(puller.WithMaxManifestSize(0)); !errors.Is(err, pullkit.ErrInvalid) {
			t.Fatalf("WithMaxManifestSize(0): err = %v, want ErrInvalid", err)
		}
	})
}

// TestConfigVerified serves a config that does not hash to its descriptor: the pull
// fails naming the config, and nothing is named in the store.
func TestConfigVerified(t *testing.T) {
	reg := pullkittest.NewRegistry(t, pullkittest.WithFaults(&pullkittest.Rule{
		Match: pullkittest.Match{Route: pullkittest.RouteBlob, Ref: helloConfig.String()},
		Fault: pullkittest.Rewrite("other config", func([]byte, http.Header) []byte { return bytes.Repeat([]byte("x"), 1469) }),
	}))
	seedHello(t, reg, "hello", "v1")
	ref := reg.Ref("hello:v1")
	st := store.NewMemory()
	_, err := newClient(t).Pull(t.Context(), ref, st)
	if !errors.Is(err, pullkit.ErrDigestMismatch) {
		t.Fatalf("err = %v, want ErrDigestMismatch", err)
	}
	if msg := oneLine(t, err); !strings.Contains(msg, ref) || !strings.Contains(msg, "config") || !strings.Contains(msg, helloConfig.String()) {
		t.Errorf("error %q does not name the reference and config", msg)
	}
	if imgs, _ := st.Images(t.Context()); len(imgs) != 0 || store.Has(t.Context(), st, helloConfig) {
		t.Errorf("a failed pull left names %v (config stored: %v)", imgs, store.Has(t.Context(), st, helloConfig))
	}
}

// TestIndexEntryVerified checks the chosen manifest against the index entry: other
// bytes, or a size that contradicts the index.
func TestIndexEntryVerified(t *testing.T) {
	list, err := os.ReadFile("../testdata/manifest-list/hello-world-dockerhub-2022.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		list    []byte
		serve   []byte
		wantErr error
	}{
		{"honest", list, nil, nil},
		{"other bytes", list, bytes.Replace(helloBody(t), []byte("2479"), []byte("2480"), 1), pullkit.ErrDigestMismatch},
		{"index lies about size", bytes.Replace(list, []byte(`"size":525`), []byte(`"size":526`), 1), nil, pullkit.ErrSizeMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := pullkittest.NewRegistry(t)
			seedHello(t, reg, "hello", "")
			reg.PutManifest("hello", "latest", manifest.MediaTypeDockerManifestList, tc.list)
			if tc.serve != nil {
				reg.Inject(&pullkittest.Rule{
					Match: pullkittest.Match{Route: pullkittest.RouteManifest, Ref: helloManifest.String()},
					Fault: pullkittest.Rewrite("other bytes", func([]byte, http.Header) []byte { return tc.serve }),
				})
			}
			ref := reg.Ref("hello:latest")
			img, err := newClient(t).Pull(t.Context(), ref, store.NewMemory(), puller.WithPlatform(platforms.Platform{OS: "linux", Architecture: "amd64"}))
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if img.Digest != digest.FromBytes(list) || img.MediaType != manifest.MediaTypeDockerManifestList || img.Manifest.Digest != helloManifest {
					t.Errorf("Pull = %s %s → %s", img.Digest, img.MediaType, img.Manifest.Digest)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if msg := oneLine(t, err); !strings.Contains(msg, ref) || !strings.Contains(msg, "linux/amd64") {
				t.Errorf("error %q does not name the reference and platform", msg)
			}
		})
	}
}

// TestErrors covers the failures a user can hit by naming something wrong: each is one
// line naming the reference, and matches its sentinel.
func TestErrors(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	seedHello(t, reg, "hello", "v1")
	reg.PutManifest("artifact", "v1", manifest.MediaTypeOCIArtifact,
		[]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.artifact.manifest.v1+json","artifactType":"application/example","blobs":[]}`))
	reg.PutManifest("garbage", "v1", "text/html", []byte("<html>hello</html>"))
	for _, tc := range []struct {
		ref     string
		want    error
		mention string
	}{
		{reg.Ref("hello:nope"), pullkit.ErrNotFound, `tag "nope"`},
		{reg.Ref("nothere:v1"), pullkit.ErrNotFound, "404"},
		{reg.Ref("hello@" + digest.FromString("x").String()), pullkit.ErrNotFound, "MANIFEST_UNKNOWN"},
		{reg.Ref("Upper/Case:v1"), pullkit.ErrInvalid, "invalid reference"},
		{reg.Ref("hello@sha256:1234"), pullkit.ErrInvalid, "invalid reference"},
		{reg.Ref("artifact:v1"), pullkit.ErrUnsupported, "artifact"},
		{reg.Ref("garbage:v1"), pullkit.ErrInvalid, "not a JSON object"},
	} {
		_, err := newClient(t).Pull(t.Context(), tc.ref, store.NewMemory())
		if !errors.Is(err, tc.want) {
			t.Errorf("Pull(%s) err = %v, want %v", tc.ref, err, tc.want)
			continue
		}
		msg := oneLine(t, err)
		if !strings.Contains(msg, tc.ref) || !strings.Contains(msg, tc.mention) {
			t.Errorf("Pull(%s) error %q should name the reference and %q", tc.ref, msg, tc.mention)
		}
	}
	if _, err := newClient(t).Pull(t.Context(), reg.Ref("hello:v1"), nil); !errors.Is(err, pullkit.ErrInvalid) {
		t.Errorf("Pull into a nil store: err = %v, want ErrInvalid", err)
	}
}

// TestBasicAuthFromKeychain authenticates against a registry that wants basic auth.
func TestBasicAuthFromKeychain(t *testing.T) {
	reg := pullkittest.NewRegistry(t, pullkittest.WithBasicAuth("alice", "secret"))
	seedHello(t, reg, "hello", "v1")
	if _, err := newClient(t, puller.WithKeychain(staticKeychain{"alice", "secret"})).Pull(t.Context(), reg.Ref("hello:v1"), store.NewMemory()); err != nil {
		t.Fatal(err)
	}
	_, err := newClient(t, puller.WithKeychain(staticKeychain{"alice", "wrong"})).Pull(t.Context(), reg.Ref("hello:v1"), store.NewMemory())
	if !errors.Is(err, pullkit.ErrUnauthorized) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
	var he *pullkit.HTTPError
	if !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized || !he.CredentialsSent {
		t.Errorf("err %v carries no 401 *HTTPError with credentials sent", err)
	}
}

// TestBearerTokenFlow authenticates against a registry that wants a bearer token from a
// token server on another loopback port, asking for the repository's pull scope.
func TestBearerTokenFlow(t *testing.T) {
	reg := pullkittest.NewRegistry(t, pullkittest.WithTokenAuth(pullkittest.TokenAuth{User: "bob", Password: "pw", Service: "fake.test"}))
	seedHello(t, reg, "team/hello", "v1")
	img, err := newClient(t, puller.WithKeychain(staticKeychain{"bob", "pw"})).Pull(t.Context(), reg.Ref("team/hello:v1"), store.NewMemory())
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != helloManifest {
		t.Errorf("digest %s", img.Digest)
	}
	var scopes []string
	for _, r := range reg.Requests() {
		if r.Route == pullkittest.RouteToken {
			scopes = append(scopes, r.Query)
		}
	}
	if len(scopes) != 1 || !strings.Contains(scopes[0], "scope=repository%3Ateam%2Fhello%3Apull") || !strings.Contains(scopes[0], "service=fake.test") {
		t.Errorf("token requests %q, want one for repository:team/hello:pull and fake.test", scopes)
	}
	_, err = newClient(t, puller.WithKeychain(staticKeychain{"bob", "nope"})).Pull(t.Context(), reg.Ref("team/hello:v1"), store.NewMemory())
	if !errors.Is(err, pullkit.ErrUnauthorized) {
		t.Fatalf("bad password: err = %v, want ErrUnauthorized", err)
	}
	oneLine(t, err)
}

// TestRedirectDropsAuthorization sends a layer GET of an authenticated registry first to
// the registry itself (credentials kept), then to blob storage on another host
// (credentials dropped).
func TestRedirectDropsAuthorization(t *testing.T) {
	reg := pullkittest.NewRegistry(t, pullkittest.WithBasicAuth("alice", "secret"))
	seedHello(t, reg, "hello", "v1")
	onRegistry := pullkittest.Match{Route: pullkittest.RouteBlob, Ref: helloLayer.String(), Host: reg.Host()}
	reg.Inject(
		&pullkittest.Rule{Match: onRegistry, Times: 1, Fault: pullkittest.RedirectTo(reg.URL())},
		&pullkittest.Rule{Match: onRegistry, Times: 1, Fault: pullkittest.Redirect()},
	)
	st := store.NewMemory()
	if _, err := newClient(t, puller.WithKeychain(staticKeychain{"alice", "secret"})).Pull(t.Context(), reg.Ref("hello:v1"), st); err != nil {
		t.Fatal(err)
	}
	if !store.Has(t.Context(), st, helloLayer) {
		t.Fatal("layer not stored")
	}
	storage := strings.TrimPrefix(reg.StorageURL(), "http://")
	var onReg, onStorage []string
	for _, r := range reg.Requests() {
		if r.Route != pullkittest.RouteBlob || r.Ref != helloLayer.String() {
			continue
		}
		switch r.Host {
		case reg.Host():
			onReg = append(onReg, r.Authorization)
		case storage:
			onStorage = append(onStorage, r.Authorization)
		}
	}
	if len(onReg) != 2 || onReg[0] == "" || onReg[1] == "" {
		t.Errorf("registry hops carried Authorization %q, want it on both", onReg)
	}
	if len(onStorage) != 1 || onStorage[0] != "" {
		t.Errorf("blob storage saw Authorization %q, want one request without", onStorage)
	}
}

// foreignImage puts into reg, as repo:tag, an image whose one layer is foreign: the
// manifest names urls for it, and the registry does not have it.
func foreignImage(t testing.TB, reg *pullkittest.Registry, repo, tag string, urls ...string) pullkittest.Layer {
	t.Helper()
	layer := pullkittest.RandomLayer(7, 300, manifest.Gzip)
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + layer.DiffID.String() + `"]}}`)
	cd := reg.PutBlob(repo, config)
	raw := []byte(`{"schemaVersion":2,"mediaType":"` + manifest.MediaTypeDockerSchema2 + `",` +
		`"config":{"mediaType":"` + manifest.MediaTypeDockerConfig + `","digest":"` + cd.String() + `","size":` + strconv.Itoa(len(config)) + `},` +
		`"layers":[{"mediaType":"` + manifest.MediaTypeDockerForeignLayer + `","digest":"` + layer.Digest.String() + `","size":` + strconv.Itoa(len(layer.Data)) +
		`,"urls":["` + strings.Join(urls, `","`) + `"]}]}`)
	reg.PutManifest(repo, tag, manifest.MediaTypeDockerSchema2, raw)
	return layer
}

// TestForeignLayerFromURLs fetches a layer the registry does not have from its URLs,
// without the registry's credentials, skipping a URL that is not HTTP.
func TestForeignLayerFromURLs(t *testing.T) {
	var mu sync.Mutex
	var auth []string
	var data []byte
	urls := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		b := data
		mu.Unlock()
		_, _ = w.Write(b)
	}))
	t.Cleanup(urls.Close)
	reg := pullkittest.NewRegistry(t, pullkittest.WithBasicAuth("alice", "secret"))
	layer := foreignImage(t, reg, "win", "v1", "ftp://nowhere/x", urls.URL+"/layer")
	mu.Lock()
	data = layer.Data
	mu.Unlock()
	st := store.NewMemory()
	img, err := newClient(t, puller.WithKeychain(staticKeychain{"alice", "secret"})).Pull(t.Context(), reg.Ref("win:v1"), st)
	if err != nil {
		t.Fatal(err)
	}
	if !store.Has(t.Context(), st, layer.Digest) || img.Layers[0].URLs == nil || img.Layers[0].MediaType != manifest.MediaTypeDockerForeignLayer {
		t.Errorf("foreign layer not stored, or the model lost its URLs: %+v", img.Layers)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(auth) != 1 || auth[0] != "" {
		t.Errorf("the URL's server saw Authorization %q, want one request without", auth)
	}
	if n := reg.Count(pullkittest.Match{Route: pullkittest.RouteBlob, Ref: layer.Digest.String()}); n == 0 {
		t.Errorf("the registry was not asked for the layer first")
	}
}

// stubTransport stands in for the network: it records every URL and fails every request
// (or, with answer, answers it), so no request leaves the machine.
type stubTransport struct {
	answer func(r *http.Request) *http.Response
	mu     sync.Mutex
	seen   []string
}

func (s *stubTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	s.mu.Lock()
	s.seen = append(s.seen, r.URL.String())
	s.mu.Unlock()
	if s.answer != nil {
		if resp := s.answer(r); resp != nil {
			resp.Request = r
			return resp, nil
		}
	}
	return nil, errors.New("stub: no network")
}

func (s *stubTransport) urls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

// TestPlainHTTPOnlyForLoopback never lets a plain-HTTP request leave for a host that is
// not loopback unless WithPlainHTTP; loopback registries are asked over HTTPS first too,
// and get plain HTTP only when their answer is not TLS (which this transport never
// gives).
func TestPlainHTTPOnlyForLoopback(t *testing.T) {
	for _, tc := range []struct {
		ref       string
		plain     bool
		wantHTTP  bool
		wantHTTPS bool
	}{
		{"10.1.2.3:5000/app:v1", false, false, true},
		{"10.1.2.3:5000/app:v1", true, true, false},
		{"registry.example:5000/app:v1", false, false, true},
		{"registry.example:5000/app:v1", true, true, false},
		{"reg.localhost:5000/app:v1", false, false, true},
		{"localhost:5000/app:v1", false, false, true},
		{"localhost:5000/app:v1", true, true, false},
	} {
		stub := &stubTransport{}
		_, err := newClient(t, puller.WithTransport(stub), puller.WithPlainHTTP(tc.plain)).Pull(t.Context(), tc.ref, store.NewMemory())
		if err == nil {
			t.Fatalf("Pull(%s) through a transport that always fails succeeded", tc.ref)
		}
		var sawHTTP, sawHTTPS bool
		for _, u := range stub.urls() {
			sawHTTP = sawHTTP || strings.HasPrefix(u, "http://")
			sawHTTPS = sawHTTPS || strings.HasPrefix(u, "https://")
		}
		if sawHTTP != tc.wantHTTP || sawHTTPS != tc.wantHTTPS {
			t.Errorf("Pull(%s, plain=%v) sent %v; want http %v https %v", tc.ref, tc.plain, stub.urls(), tc.wantHTTP, tc.wantHTTPS)
		}
		if !errors.Is(err, pullkit.ErrUnreachable) {
			t.Errorf("Pull(%s) err = %v, want ErrUnreachable", tc.ref, err)
		}
		if msg := oneLine(t, err); !strings.Contains(msg, tc.ref) {
			t.Errorf("error %q does not name %s", msg, tc.ref)
		}
	}
}

// TestAuthLearntOnce: the first request of a client to a registry learns its challenge
// from a 401; later pulls (and other repositories) send credentials at once, and nothing
// ever pings /v2/.
func TestAuthLearntOnce(t *testing.T) {
	reg := pullkittest.NewRegistry(t, pullkittest.WithBasicAuth("alice", "secret"))
	seedHello(t, reg, "hello", "v1")
	seedHello(t, reg, "other", "v1")
	c := newClient(t, puller.WithKeychain(staticKeychain{"alice", "secret"}))
	for _, ref := range []string{"hello:v1", "hello:v1", "other:v1"} {
		if _, err := c.Pull(t.Context(), reg.Ref(ref), store.NewMemory()); err != nil {
			t.Fatal(err)
		}
	}
	var unauthorized int
	for _, r := range reg.Requests() {
		if r.Status == http.StatusUnauthorized {
			unauthorized++
		}
	}
	if unauthorized != 1 {
		t.Errorf("%d 401s for 3 pulls with one client, want 1: %q", unauthorized, logLines(reg))
	}
	if n := reg.Count(pullkittest.Match{Route: pullkittest.RoutePing}); n != 0 {
		t.Errorf("%d pings of /v2/, want none", n)
	}
}

// TestMirrors asks mirrors first and falls back to the origin for whatever a mirror does
// not have, serves wrongly, or cannot serve at all.
func TestMirrors(t *testing.T) {
	manifests := pullkittest.Match{Route: pullkittest.RouteManifest}
	layerReq := pullkittest.Match{Route: pullkittest.RouteBlob, Ref: helloLayer.String()}
	for _, tc := range []struct {
		name             string
		seed             bool
		rules            []*pullkittest.Rule
		down             bool
		wantOriginHits   bool // the origin served manifests
		wantBlobFallback bool // the mirror lacks the layer; the origin serves it
	}{
		{name: "mirror has it", seed: true},
		{name: "mirror lacks the tag", wantOriginHits: true},
		{name: "mirror serves other bytes", seed: true, wantOriginHits: true, rules: []*pullkittest.Rule{{
			Match: pullkittest.Match{Method: http.MethodGet, Route: pullkittest.RouteManifest},
			Fault: pullkittest.Rewrite("upper case", func(b []byte, _ http.Header) []byte { return bytes.ToUpper(b) })}}},
		{name: "mirror down", down: true, wantOriginHits: true},
		{name: "mirror lacks a layer", seed: true, wantBlobFallback: true, rules: []*pullkittest.Rule{{
			Match: layerReq, Fault: pullkittest.ErrorResponse(pullkittest.CodeBlobUnknown)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin := pullkittest.NewRegistry(t)
			mirror := pullkittest.NewRegistry(t, pullkittest.WithFaults(tc.rules...))
			seedHello(t, origin, "library/hello", "v1")
			if tc.seed {
				seedHello(t, mirror, "library/hello", "v1")
			}
			if tc.down {
				mirror.Close()
			}
			st := store.NewMemory()
			img, err := newClient(t, puller.WithMirrors(origin.Host(), mirror.Host())).Pull(t.Context(), origin.Ref("library/hello:v1"), st)
			if err != nil {
				t.Fatal(err)
			}
			if img.Digest != helloManifest || img.Config.Digest != helloConfig || !store.Has(t.Context(), st, helloLayer) {
				t.Fatalf("Pull = %s config %s", img.Digest, img.Config.Digest)
			}
			if img.Name != origin.Ref("library/hello:v1") {
				t.Errorf("named %s, want the origin's reference", img.Name)
			}
			if got := origin.Count(manifests) > 0; got != tc.wantOriginHits {
				t.Errorf("origin served manifests: %v, want %v (origin saw %q)", got, tc.wantOriginHits, logLines(origin))
			}
			if got := origin.Count(layerReq) > 0; got != (tc.wantOriginHits || tc.wantBlobFallback) {
				t.Errorf("origin served the layer: %v (origin saw %q)", got, logLines(origin))
			}
		})
	}
	t.Run("everything fails", func(t *testing.T) {
		origin, mirror := pullkittest.NewRegistry(t), pullkittest.NewRegistry(t)
		ref := origin.Ref("library/hello:v1")
		_, err := newClient(t, puller.WithMirrors(origin.Host(), mirror.Host())).Pull(t.Context(), ref, store.NewMemory())
		if !errors.Is(err, pullkit.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
		if msg := oneLine(t, err); !strings.Contains(msg, ref) || strings.Contains(msg, "via mirror") || mirror.Count(manifests) == 0 {
			t.Errorf("error %q should be the origin's, after asking the mirror (mirror saw %q)", msg, logLines(mirror))
		}
	})
	t.Run("bad mirror name", func(t *testing.T) {
		_, err := puller.New(puller.WithMirrors("registry.example", "bad host"))
		if !errors.Is(err, pullkit.ErrInvalid) || !strings.Contains(err.Error(), "bad host") {
			t.Fatalf("err = %v, want ErrInvalid naming the mirror", err)
		}
	})
}

// TestDefaultKeychainCredentialHelper takes credentials from a docker credential helper
// named in config.json, through go-containerregistry's default keychain.
func TestDefaultKeychainCredentialHelper(t *testing.T) {
	reg := pullkittest.NewRegistry(t, pullkittest.WithBasicAuth("alice", "from-helper"))
	seedHello(t, reg, "hello", "v1")
	dir := t.TempDir()
	helper := "#!/bin/sh\nread server\nprintf '{\"ServerURL\":\"%s\",\"Username\":\"alice\",\"Secret\":\"from-helper\"}' \"$server\"\n"
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-pullkit-test"), []byte(helper), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := `{"credHelpers":{"` + reg.Host() + `":"pullkit-test"}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	c, err := puller.New(puller.WithRetry(fastRetry()))
	if err != nil {
		t.Fatal(err)
	}
	img, err := c.Pull(t.Context(), reg.Ref("hello:v1"), store.NewMemory())
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != helloManifest {
		t.Errorf("digest %s", img.Digest)
	}
}

// TestCancelledPull returns the context's error, not a sentinel of the vocabulary.
func TestCancelledPull(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	seedHello(t, reg, "hello", "v1")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := newClient(t).Pull(ctx, reg.Ref("hello:v1"), store.NewMemory())
	if !errors.Is(err, context.Canceled) || errors.Is(err, pullkit.ErrUnreachable) {
		t.Fatalf("err = %v, want context.Canceled only", err)
	}
}

// ggcrRegistry starts go-containerregistry's in-process registry, which indexes a signed
// schema 1 manifest by the sha256 of its bytes and reports that as Docker-Content-Digest.
func ggcrRegistry(t testing.TB, opts ...registry.Option) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(append([]registry.Option{registry.Logger(log.New(io.Discard, "", 0))}, opts...)...))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// putRaw PUTs a manifest's bytes to host as repo:ref with Content-Type mediaType.
func putRaw(t testing.TB, host, repo, ref, mediaType string, raw []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, "http://"+host+"/v2/"+repo+"/manifests/"+ref, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", mediaType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT %s:%s: %s", repo, ref, resp.Status)
	}
}

// TestGGCRRegistrySchema1 inspects a signed schema 1 on go-containerregistry's registry,
// by tag and by the digest it answers to (sha256 of the bytes): the model names the
// canonical digest, and the layers base first.
func TestGGCRRegistrySchema1(t *testing.T) {
	host := ggcrRegistry(t)
	raw, err := os.ReadFile("../testdata/schema1-signed/hello-world-dockerhub-2015.json")
	if err != nil {
		t.Fatal(err)
	}
	putRaw(t, host, "library/hello-world", "2015", manifest.MediaTypeDockerSchema1Signed, raw)
	const canonical = digest.Digest("sha256:02fee8c3220ba806531f606525eceb83f4feb654f62b207191b1c9209188dedd")
	rawDigest := digest.FromBytes(raw)
	c := newClient(t)
	res, err := c.Resolve(t.Context(), host+"/library/hello-world:2015")
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.Digest != rawDigest || res.Pinned() != host+"/library/hello-world@"+rawDigest.String() {
		t.Errorf("Resolve pinned %s, want the digest this registry answers to, %s", res.Pinned(), rawDigest)
	}
	for _, ref := range []string{host + "/library/hello-world:2015", res.Pinned()} {
		img, err := c.Inspect(t.Context(), ref)
		if err != nil {
			t.Fatalf("Inspect(%s): %v", ref, err)
		}
		if img.Digest != canonical || img.Manifest.Digest != canonical || img.MediaType != manifest.MediaTypeDockerSchema1Signed {
			t.Errorf("Inspect(%s) = %s %s, want canonical %s", ref, img.Digest, img.MediaType, canonical)
		}
		if len(img.Layers) != 2 || img.Layers[0].Empty || !img.Layers[1].Empty || img.Layers[1].Digest != manifest.EmptyGzipLayer {
			t.Errorf("Inspect(%s) layers %+v, want base first with the empty layer last", ref, img.Layers)
		}
		if img.Config.Digest != "" {
			t.Errorf("Inspect(%s): schema 1 has no config blob, got %+v", ref, img.Config)
		}
	}
}

// TestTokenRefreshedWhenRefused: a cached token the registry refuses (expired early) is
// dropped and a new one fetched, once, for the request that found out.
func TestTokenRefreshedWhenRefused(t *testing.T) {
	reg := pullkittest.NewRegistry(t, pullkittest.WithTokenAuth(pullkittest.TokenAuth{User: "bob", Password: "pw"}))
	seedHello(t, reg, "hello", "v1")
	c := newClient(t, puller.WithKeychain(staticKeychain{"bob", "pw"}))
	anyPlatform := puller.WithMatcher(platforms.Any()) // one HEAD: no platform to check
	if _, err := c.Resolve(t.Context(), reg.Ref("hello:v1"), anyPlatform); err != nil {
		t.Fatal(err)
	}
	reg.ExpireTokens()
	reg.ResetRequests()
	if _, err := c.Resolve(t.Context(), reg.Ref("hello:v1"), anyPlatform); err != nil {
		t.Fatal(err)
	}
	want := []string{"HEAD manifest v1", "GET token ", "HEAD manifest v1"}
	if got := logLines(reg); !slices.Equal(got, want) {
		t.Errorf("after the tokens expired: %q, want %q", got, want)
	}
	if r := reg.Requests(); len(r) == 3 && (r[0].Status != http.StatusUnauthorized || r[2].Status != http.StatusOK) {
		t.Errorf("statuses %d, %d: want 401 then 200", r[0].Status, r[2].Status)
	}
}

// TestAnonymousToken: a registry that hands tokens to anyone (as Docker Hub does for
// public repositories) costs an anonymous client one 401 and one token request, and the
// token request carries no credentials.
func TestAnonymousToken(t *testing.T) {
	reg := pullkittest.NewRegistry(t, pullkittest.WithTokenAuth(pullkittest.TokenAuth{Anonymous: true}))
	seedHello(t, reg, "library/hello", "v1")
	c := newClient(t)
	for range 2 {
		if _, err := c.Pull(t.Context(), reg.Ref("library/hello:v1"), store.NewMemory()); err != nil {
			t.Fatal(err)
		}
	}
	var unauthorized, tokens int
	for _, r := range reg.Requests() {
		if r.Status == http.StatusUnauthorized {
			unauthorized++
		}
		if r.Route == pullkittest.RouteToken {
			tokens++
			if r.Authorization != "" {
				t.Errorf("the token request carried Authorization %q", r.Authorization)
			}
		}
	}
	if unauthorized != 1 || tokens != 1 {
		t.Errorf("%d 401s and %d token requests for 2 pulls, want 1 and 1: %q", unauthorized, tokens, logLines(reg))
	}
}

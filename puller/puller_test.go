package puller_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/puller"
)

// TestTagResolvesWithHEADThenGETByDigest checks the request sequence and that every
// manifest request carries the complete Accept header.
func TestTagResolvesWithHEADThenGETByDigest(t *testing.T) {
	f := newFake(t)
	seedHello(t, f, "library/hello", "latest")
	img, err := newClient().Pull(context.Background(), f.ref("library/hello:latest"))
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != helloManifest || img.Config.Digest != helloConfig || len(img.Layers) != 1 || img.Layers[0].Digest != helloLayer {
		t.Fatalf("Pull = %+v", img)
	}
	want := []string{
		"GET /v2/",
		"HEAD /v2/library/hello/manifests/latest",
		"GET /v2/library/hello/manifests/" + helloManifest.String(),
		"GET /v2/library/hello/blobs/" + helloConfig.String(),
	}
	if got := f.requests(); !slices.Equal(got, want) {
		t.Errorf("requests:\n got %q\nwant %q", got, want)
	}
	for _, r := range f.recorded() {
		if strings.Contains(r.URL.Path, "/manifests/") && r.Header.Get("Accept") != manifest.AcceptHeader {
			t.Errorf("%s %s Accept = %q, want %q", r.Method, r.URL.Path, r.Header.Get("Accept"), manifest.AcceptHeader)
		}
		if ua := r.Header.Get("User-Agent"); !strings.HasPrefix(ua, puller.DefaultUserAgent) {
			t.Errorf("%s %s User-Agent = %q", r.Method, r.URL.Path, ua)
		}
	}
	for _, ct := range []string{manifest.MediaTypeDockerSchema2, manifest.MediaTypeDockerManifestList, manifest.MediaTypeOCIIndex,
		manifest.MediaTypeOCIManifest, manifest.MediaTypeDockerSchema1Signed} {
		if !strings.Contains(manifest.AcceptHeader, ct) {
			t.Errorf("AcceptHeader lacks %s", ct)
		}
	}
}

// TestTagFallsBackToGET covers registries that refuse HEAD or send no digest, and the
// Docker-Content-Digest check on the GET by tag.
func TestTagFallsBackToGET(t *testing.T) {
	body := regtestHello(t)
	for _, tc := range []struct {
		name         string
		headStatus   int
		digestHeader string
		wantErr      error
	}{
		{"HEAD refused, header matches", http.StatusMethodNotAllowed, "", nil},
		{"HEAD refused, no header", http.StatusMethodNotAllowed, "-", nil},
		{"HEAD without digest", 0, "-", nil},
		{"HEAD refused, header names other content", http.StatusMethodNotAllowed, digest.FromString("other").String(), pullkit.ErrDigestMismatch},
		{"HEAD refused, header malformed", http.StatusMethodNotAllowed, "sha256:nothex", puller.ErrProtocol},
		{"HEAD server error", http.StatusBadGateway, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			seedHello(t, f, "hello", "")
			f.putManifest("hello", "v1", fakeManifest{body: body, contentType: manifest.MediaTypeDockerSchema2, digestHeader: tc.digestHeader})
			if tc.headStatus != 0 {
				f.hook = func(w http.ResponseWriter, r *http.Request) bool {
					if r.Method == http.MethodHead {
						w.WriteHeader(tc.headStatus)
						return true
					}
					return false
				}
			}
			ref := f.ref("hello:v1")
			img, err := newClient().Pull(context.Background(), ref)
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
			if img.Digest != helloManifest {
				t.Errorf("digest %s", img.Digest)
			}
			if !slices.Contains(f.requests(), "GET /v2/hello/manifests/v1") {
				t.Errorf("no GET by tag: %v", f.requests())
			}
		})
	}
}

func regtestHello(t *testing.T) []byte {
	t.Helper()
	return readFixture(t, "schema2/hello-world-amd64-dockerhub-2021.json")
}

// TestManifestVerifiedAgainstDigest serves other bytes than the digest asked for.
func TestManifestVerifiedAgainstDigest(t *testing.T) {
	body := regtestHello(t)
	tampered := bytes.Replace(body, []byte(`"size": 1469`), []byte(`"size": 1470`), 1)
	if bytes.Equal(body, tampered) {
		t.Fatal("fixture changed: nothing tampered")
	}
	f := newFake(t)
	seedHello(t, f, "hello", "")
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/manifests/"+helloManifest.String()) {
			w.Header().Set("Content-Type", manifest.MediaTypeDockerSchema2)
			_, _ = w.Write(tampered)
			return true
		}
		if r.Method == http.MethodHead && strings.HasSuffix(r.URL.Path, "/manifests/v1") {
			w.Header().Set("Docker-Content-Digest", helloManifest.String())
			w.WriteHeader(http.StatusOK)
			return true
		}
		return false
	}
	for _, ref := range []string{f.ref("hello@" + helloManifest.String()), f.ref("hello:v1")} {
		_, err := newClient().Pull(context.Background(), ref)
		if !errors.Is(err, pullkit.ErrDigestMismatch) {
			t.Fatalf("Pull(%s) err = %v, want ErrDigestMismatch", ref, err)
		}
		var pe *puller.Error
		if !errors.As(err, &pe) || pe.Reference != ref {
			t.Errorf("err %v is not a *puller.Error for %s", err, ref)
		}
		msg := oneLine(t, err)
		for _, want := range []string{ref, helloManifest.String(), digest.FromBytes(tampered).String()} {
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not name %s", msg, want)
			}
		}
	}
}

// TestManifestSizeCap reads bodies through the cap, with and without Content-Length.
func TestManifestSizeCap(t *testing.T) {
	body := regtestHello(t) // 525 bytes
	for _, tc := range []struct {
		name    string
		chunked bool
		head    bool
	}{
		{"content-length on GET", false, false},
		{"chunked GET", true, false},
		{"content-length on HEAD", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			seedHello(t, f, "hello", "v1")
			f.hook = func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/manifests/") {
					return false
				}
				if r.Method == http.MethodHead {
					if tc.head {
						return false // the default answer carries Content-Length: 525
					}
					w.WriteHeader(http.StatusMethodNotAllowed)
					return true
				}
				w.Header().Set("Content-Type", manifest.MediaTypeDockerSchema2)
				if tc.chunked {
					_, _ = w.Write(body[:100])
					w.(http.Flusher).Flush()
					_, _ = w.Write(body[100:])
					return true
				}
				w.Header().Set("Content-Length", fmt.Sprint(len(body)))
				_, _ = w.Write(body)
				return true
			}
			_, err := newClient(puller.WithMaxManifestSize(200)).Pull(context.Background(), f.ref("hello:v1"))
			if !errors.Is(err, puller.ErrTooLarge) {
				t.Fatalf("err = %v, want ErrTooLarge", err)
			}
			if msg := oneLine(t, err); !strings.Contains(msg, "200-byte limit") {
				t.Errorf("error %q does not state the limit", msg)
			}
		})
	}
	t.Run("at the cap", func(t *testing.T) {
		f := newFake(t)
		seedHello(t, f, "hello", "v1")
		if _, err := newClient(puller.WithMaxManifestSize(int64(len(body)))).Pull(context.Background(), f.ref("hello:v1")); err == nil {
			t.Fatal("config (1469 bytes) passed a 525-byte cap")
		} else if !errors.Is(err, puller.ErrTooLarge) || !strings.Contains(err.Error(), "fetch config") {
			t.Fatalf("err = %v, want the config to be too large", err)
		}
		if _, err := newClient(puller.WithMaxManifestSize(1469)).Pull(context.Background(), f.ref("hello:v1")); err != nil {
			t.Fatalf("documents exactly at the cap: %v", err)
		}
	})
}

// TestConfigVerified serves a config that does not hash to its descriptor.
func TestConfigVerified(t *testing.T) {
	f := newFake(t)
	seedHello(t, f, "hello", "v1")
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/blobs/"+helloConfig.String()) {
			_, _ = w.Write(bytes.Repeat([]byte("x"), 1469))
			return true
		}
		return false
	}
	ref := f.ref("hello:v1")
	_, err := newClient().Pull(context.Background(), ref)
	if !errors.Is(err, pullkit.ErrDigestMismatch) {
		t.Fatalf("err = %v, want ErrDigestMismatch", err)
	}
	if msg := oneLine(t, err); !strings.Contains(msg, ref) || !strings.Contains(msg, "config") || !strings.Contains(msg, helloConfig.String()) {
		t.Errorf("error %q does not name the reference and config", msg)
	}
}

// TestIndexEntryVerified checks the chosen manifest against the index entry: other
// bytes, or a size that contradicts the index.
func TestIndexEntryVerified(t *testing.T) {
	list := readFixture(t, "manifest-list/hello-world-dockerhub-2022.json")
	for _, tc := range []struct {
		name    string
		list    []byte
		serve   []byte
		wantErr error
	}{
		{"honest", list, nil, nil},
		{"other bytes", list, bytes.Replace(regtestHello(t), []byte("2479"), []byte("2480"), 1), pullkit.ErrDigestMismatch},
		{"index lies about size", bytes.Replace(list, []byte(`"size":525`), []byte(`"size":526`), 1), nil, puller.ErrProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			seedHello(t, f, "hello", "")
			f.putManifest("hello", "latest", fakeManifest{body: tc.list, contentType: manifest.MediaTypeDockerManifestList})
			if tc.serve != nil {
				f.hook = func(w http.ResponseWriter, r *http.Request) bool {
					if strings.HasSuffix(r.URL.Path, "/manifests/"+helloManifest.String()) {
						w.Header().Set("Content-Type", manifest.MediaTypeDockerSchema2)
						_, _ = w.Write(tc.serve)
						return true
					}
					return false
				}
			}
			ref := f.ref("hello:latest")
			img, err := newClient(puller.WithPlatform(platforms.Platform{OS: "linux", Architecture: "amd64"})).Pull(context.Background(), ref)
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

// TestGGCRRegistrySchema1 pulls a signed schema 1 from go-containerregistry's
// registry, which reports sha256 of the raw body as Docker-Content-Digest and indexes
// the manifest by it: both that and the canonical digest must be accepted as a match.
func TestGGCRRegistrySchema1(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(discardLogger())))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	raw := readFixture(t, "schema1-signed/hello-world-dockerhub-2015.json")
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v2/library/hello-world/manifests/2015", bytes.NewReader(raw))
	req.Header.Set("Content-Type", manifest.MediaTypeDockerSchema1Signed)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %s", resp.Status)
	}
	const canonical = digest.Digest("sha256:02fee8c3220ba806531f606525eceb83f4feb654f62b207191b1c9209188dedd")
	rawDigest := digest.FromBytes(raw)
	for _, ref := range []string{host + "/library/hello-world:2015", host + "/library/hello-world@" + rawDigest.String()} {
		img, err := newClient().Pull(context.Background(), ref)
		if err != nil {
			t.Fatalf("Pull(%s): %v", ref, err)
		}
		if img.Digest != canonical || img.MediaType != manifest.MediaTypeDockerSchema1Signed {
			t.Errorf("Pull(%s) = %s %s, want canonical %s", ref, img.Digest, img.MediaType, canonical)
		}
		if len(img.Layers) != 2 || img.Layers[0].Empty || !img.Layers[1].Empty || img.Layers[1].Digest != manifest.EmptyGzipLayer {
			t.Errorf("Pull(%s) layers %+v, want base first with the empty layer last", ref, img.Layers)
		}
		if img.Config.Digest != "" {
			t.Errorf("Pull(%s): schema 1 has no config blob, got %+v", ref, img.Config)
		}
	}
}

// TestErrors covers the failures a user can hit: each is one line naming the
// reference, and matches its sentinel.
func TestErrors(t *testing.T) {
	f := newFake(t)
	seedHello(t, f, "hello", "v1")
	f.putManifest("artifact", "v1", fakeManifest{
		body:        []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.artifact.manifest.v1+json","blobs":[]}`),
		contentType: manifest.MediaTypeOCIArtifact,
	})
	f.putManifest("garbage", "v1", fakeManifest{body: []byte("<html>hello</html>"), contentType: "text/html"})
	for _, tc := range []struct {
		ref     string
		want    error
		mention string
	}{
		{f.ref("hello:nope"), puller.ErrNotFound, `tag "nope"`},
		{f.ref("nothere:v1"), puller.ErrNotFound, "404"},
		{f.ref("hello@" + digest.FromString("x").String()), puller.ErrNotFound, "MANIFEST_UNKNOWN"},
		{f.ref("Upper/Case:v1"), puller.ErrBadReference, "invalid reference"},
		{f.ref("hello@sha256:1234"), puller.ErrBadReference, "invalid reference"},
		{f.ref("artifact:v1"), pullkit.ErrUnsupported, "artifact"},
		{f.ref("garbage:v1"), pullkit.ErrInvalid, "not a JSON object"},
	} {
		_, err := newClient().Pull(context.Background(), tc.ref)
		if !errors.Is(err, tc.want) {
			t.Errorf("Pull(%s) err = %v, want %v", tc.ref, err, tc.want)
			continue
		}
		msg := oneLine(t, err)
		if !strings.Contains(msg, tc.ref) || !strings.Contains(msg, tc.mention) {
			t.Errorf("Pull(%s) error %q should name the reference and %q", tc.ref, msg, tc.mention)
		}
	}
}

// TestBasicAuthFromKeychain authenticates against a registry that wants basic auth.
func TestBasicAuthFromKeychain(t *testing.T) {
	f := newFake(t)
	f.basic = "alice:secret"
	seedHello(t, f, "hello", "v1")
	if _, err := newClient(puller.WithKeychain(staticKeychain{"alice", "secret"})).Pull(context.Background(), f.ref("hello:v1")); err != nil {
		t.Fatal(err)
	}
	_, err := newClient(puller.WithKeychain(staticKeychain{"alice", "wrong"})).Pull(context.Background(), f.ref("hello:v1"))
	if !errors.Is(err, puller.ErrUnauthorized) {
		t.Fatalf("err = %v, want ErrUnauthorized", err)
	}
	var he *puller.HTTPError
	if !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized {
		t.Errorf("err %v carries no 401 *HTTPError", err)
	}
}

// TestBearerTokenFlow authenticates against a registry that wants a bearer token
// from a token server in httptest, asking for the repository's pull scope.
func TestBearerTokenFlow(t *testing.T) {
	const token = "tok-123"
	var mu sync.Mutex
	var scopes []string
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != "bob" || p != "pw" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		mu.Lock()
		scopes = append(scopes, r.URL.Query().Get("scope")+" "+r.URL.Query().Get("service"))
		mu.Unlock()
		_, _ = io.WriteString(w, `{"token":"`+token+`"}`)
	}))
	t.Cleanup(tokens.Close)
	f := newFake(t)
	seedHello(t, f, "team/hello", "v1")
	// The realm must not be a loopback IP literal (go-containerregistry's SSRF guard).
	realm := strings.Replace(tokens.URL, "127.0.0.1", "localhost", 1) + "/token"
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`",service="fake.test"`)
			writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "token required")
			return true
		}
		return false
	}
	img, err := newClient(puller.WithKeychain(staticKeychain{"bob", "pw"})).Pull(context.Background(), f.ref("team/hello:v1"))
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != helloManifest {
		t.Errorf("digest %s", img.Digest)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(scopes, "repository:team/hello:pull fake.test") {
		t.Errorf("token requests %q, want repository:team/hello:pull for fake.test", scopes)
	}
	_, err = newClient(puller.WithKeychain(staticKeychain{"bob", "nope"})).Pull(context.Background(), f.ref("team/hello:v1"))
	if !errors.Is(err, puller.ErrUnauthorized) {
		t.Fatalf("bad password: err = %v, want ErrUnauthorized", err)
	}
}

// TestRedirectDropsAuthorization sends a blob GET from an authenticated registry to
// blob storage on another host (another port of loopback), and within the registry.
func TestRedirectDropsAuthorization(t *testing.T) {
	blob := []byte("layer bytes")
	d := digest.FromBytes(blob)
	var mu sync.Mutex
	var storageAuth []string
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		storageAuth = append(storageAuth, r.Header.Get("Authorization"))
		mu.Unlock()
		_, _ = w.Write(blob)
	}))
	t.Cleanup(storage.Close)
	f := newFake(t)
	f.basic = "alice:secret"
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()):
			http.Redirect(w, r, "/internal/"+d.Encoded(), http.StatusTemporaryRedirect)
		case strings.HasPrefix(r.URL.Path, "/internal/"):
			http.Redirect(w, r, storage.URL+"/bucket/"+d.Encoded()+"?sig=1", http.StatusFound)
		default:
			return false
		}
		return true
	}
	repo, err := newClient(puller.WithKeychain(staticKeychain{"alice", "secret"})).Repository(context.Background(), f.ref("hello"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := repo.FetchBlob(context.Background(), manifest.Descriptor{Digest: d, Size: int64(len(blob))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, blob) {
		t.Fatalf("got %q", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(storageAuth) != 1 || storageAuth[0] != "" {
		t.Errorf("blob storage saw Authorization %q, want none", storageAuth)
	}
	// The registry itself saw credentials on both of its hops (f.basic rejects otherwise).
	var internal int
	for _, r := range f.recorded() {
		if strings.HasPrefix(r.URL.Path, "/internal/") && r.Header.Get("Authorization") != "" {
			internal++
		}
	}
	if internal != 1 {
		t.Errorf("same-host redirect carried credentials %d times, want 1", internal)
	}
}

// TestFetchBlob covers Range headers and the status mapping a layer fetcher relies on.
func TestFetchBlob(t *testing.T) {
	f := newFake(t)
	blob := []byte("0123456789abcdef")
	d := f.putBlob("hello", blob)
	repo, err := newClient().Repository(context.Background(), f.ref("hello"))
	if err != nil {
		t.Fatal(err)
	}
	desc := manifest.Descriptor{Digest: d, Size: int64(len(blob))}
	for _, tc := range []struct {
		rng        *puller.Range
		wantStatus int
		wantBody   string
		wantHeader string
	}{
		{nil, http.StatusOK, string(blob), ""},
		{&puller.Range{Start: 5, End: 9}, http.StatusPartialContent, "56789", "bytes=5-9"},
		{&puller.Range{Start: 10, End: -1}, http.StatusPartialContent, "abcdef", "bytes=10-"},
	} {
		resp, err := repo.FetchBlob(context.Background(), desc, tc.rng)
		if err != nil {
			t.Fatalf("FetchBlob(%v): %v", tc.rng, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.wantStatus || string(body) != tc.wantBody || resp.Request.Header.Get("Range") != tc.wantHeader {
			t.Errorf("FetchBlob(%v) = %d %q (Range %q)", tc.rng, resp.StatusCode, body, resp.Request.Header.Get("Range"))
		}
	}
	for _, tc := range []struct {
		desc   manifest.Descriptor
		rng    *puller.Range
		want   error
		status int
	}{
		{manifest.Descriptor{Digest: digest.FromString("missing")}, nil, puller.ErrNotFound, 404},
		{desc, &puller.Range{Start: 100, End: -1}, puller.ErrRangeNotSatisfiable, 416},
		{manifest.Descriptor{Digest: "sha256:short"}, nil, pullkit.ErrInvalid, 0},
	} {
		_, err := repo.FetchBlob(context.Background(), tc.desc, tc.rng)
		if !errors.Is(err, tc.want) {
			t.Errorf("FetchBlob(%s, %v) err = %v, want %v", tc.desc.Digest, tc.rng, err, tc.want)
			continue
		}
		var he *puller.HTTPError
		if tc.status != 0 && (!errors.As(err, &he) || he.StatusCode != tc.status) {
			t.Errorf("FetchBlob(%s) err = %v, want an *HTTPError %d", tc.desc.Digest, err, tc.status)
		}
		if msg := oneLine(t, err); !strings.Contains(msg, string(tc.desc.Digest)) {
			t.Errorf("error %q does not name the blob", msg)
		}
	}
}

// TestForeignLayerFromURLs fetches a layer the registry does not have from its URLs,
// without the registry's credentials.
func TestForeignLayerFromURLs(t *testing.T) {
	blob := []byte("foreign layer")
	var sawAuth bool
	mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sawAuth = r.Header.Get("Authorization") != ""
		_, _ = w.Write(blob)
	}))
	t.Cleanup(mirror.Close)
	f := newFake(t)
	f.basic = "alice:secret"
	repo, err := newClient(puller.WithKeychain(staticKeychain{"alice", "secret"})).Repository(context.Background(), f.ref("win"))
	if err != nil {
		t.Fatal(err)
	}
	desc := manifest.Descriptor{
		MediaType: manifest.MediaTypeDockerForeignLayer,
		Digest:    digest.FromBytes(blob),
		Size:      int64(len(blob)),
		URLs:      []string{"ftp://nowhere/x", mirror.URL + "/layer"},
	}
	resp, err := repo.FetchBlob(context.Background(), desc, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, blob) || sawAuth {
		t.Errorf("got %q (Authorization sent: %v)", got, sawAuth)
	}
}

// TestPlainHTTPOnlyForLoopback never lets a plain-HTTP request leave for a host that is
// not loopback unless WithPlainHTTP; the stub transport stands in for the network.
func TestPlainHTTPOnlyForLoopback(t *testing.T) {
	for _, tc := range []struct {
		ref       string
		plain     bool
		wantHTTP  bool
		wantHTTPS bool
	}{
		{"10.1.2.3:5000/app:v1", false, false, true},
		{"10.1.2.3:5000/app:v1", true, true, true},
		{"registry.example:5000/app:v1", false, false, true},
		{"registry.example:5000/app:v1", true, true, true},
	} {
		stub := &stubTransport{}
		_, err := newClient(puller.WithTransport(stub), puller.WithPlainHTTP(tc.plain)).Pull(context.Background(), tc.ref)
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
		if !errors.Is(err, puller.ErrUnreachable) && !errors.Is(err, puller.ErrInsecure) {
			t.Errorf("Pull(%s) err = %v, want ErrUnreachable or ErrInsecure", tc.ref, err)
		}
		if msg := oneLine(t, err); !strings.Contains(msg, tc.ref) {
			t.Errorf("error %q does not name %s", msg, tc.ref)
		}
	}
}

// stubTransport records URLs and fails every request, like a network that is down.
type stubTransport struct {
	mu   sync.Mutex
	seen []string
}

func (s *stubTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	s.mu.Lock()
	s.seen = append(s.seen, r.URL.String())
	s.mu.Unlock()
	return nil, errors.New("stub: no network")
}

func (s *stubTransport) urls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

// TestRepositoryCached authenticates once per repository.
func TestRepositoryCached(t *testing.T) {
	f := newFake(t)
	seedHello(t, f, "hello", "v1")
	c := newClient()
	for range 3 {
		if _, err := c.Pull(context.Background(), f.ref("hello:v1")); err != nil {
			t.Fatal(err)
		}
	}
	var pings int
	for _, r := range f.requests() {
		if r == "GET /v2/" {
			pings++
		}
	}
	if pings != 1 {
		t.Errorf("%d pings for 3 pulls of one repository, want 1", pings)
	}
}

// TestMirrors asks mirrors first and falls back to the origin for whatever a mirror
// does not have, serves wrongly, or cannot serve at all.
func TestMirrors(t *testing.T) {
	countPaths := func(f *fakeRegistry, part string) int {
		n := 0
		for _, r := range f.requests() {
			if strings.Contains(r, part) {
				n++
			}
		}
		return n
	}
	for _, tc := range []struct {
		name             string
		setup            func(t *testing.T, mirror *fakeRegistry)
		down             bool
		wantOriginHits   bool // the origin served manifests
		wantBlobFallback bool // the mirror lacks the layer; the origin serves it
	}{
		{name: "mirror has it", setup: func(t *testing.T, m *fakeRegistry) { seedHello(t, m, "library/hello", "v1") }},
		{name: "mirror lacks the tag", setup: func(*testing.T, *fakeRegistry) {}, wantOriginHits: true},
		{name: "mirror serves other bytes", setup: func(t *testing.T, m *fakeRegistry) {
			seedHello(t, m, "library/hello", "v1")
			m.hook = func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/manifests/"+helloManifest.String()) {
					_, _ = w.Write(bytes.ToUpper(regtestHello(t)))
					return true
				}
				return false
			}
		}, wantOriginHits: true},
		{name: "mirror down", setup: func(*testing.T, *fakeRegistry) {}, down: true, wantOriginHits: true},
		{name: "mirror lacks a layer", setup: func(t *testing.T, m *fakeRegistry) {
			seedHello(t, m, "library/hello", "v1")
			m.mu.Lock()
			delete(m.blobs, "library/hello/"+helloLayer.String())
			m.mu.Unlock()
		}, wantBlobFallback: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin, mirror := newFake(t), newFake(t)
			seedHello(t, origin, "library/hello", "v1")
			tc.setup(t, mirror)
			if tc.down {
				mirror.srv.Close()
			}
			c := newClient(puller.WithMirrors(origin.host(), mirror.host()))
			res, img, err := c.PullResolved(context.Background(), origin.ref("library/hello:v1"))
			if err != nil {
				t.Fatal(err)
			}
			if img.Digest != helloManifest || img.Config.Digest != helloConfig {
				t.Fatalf("Pull = %s config %s", img.Digest, img.Config.Digest)
			}
			resp, err := res.Repository.FetchBlob(context.Background(), img.Layers[0].Descriptor(), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if digest.FromBytes(body) != helloLayer {
				t.Fatalf("layer body does not verify")
			}
			if got := countPaths(origin, "/manifests/") > 0; got != tc.wantOriginHits {
				t.Errorf("origin served manifests: %v, want %v (origin saw %v)", got, tc.wantOriginHits, origin.requests())
			}
			if got := countPaths(origin, "/blobs/"+helloLayer.String()) > 0; got != (tc.wantOriginHits || tc.wantBlobFallback) {
				t.Errorf("origin served the layer: %v (origin saw %v)", got, origin.requests())
			}
		})
	}
	t.Run("everything fails", func(t *testing.T) {
		origin, mirror := newFake(t), newFake(t)
		ref := origin.ref("library/hello:v1")
		_, err := newClient(puller.WithMirrors(origin.host(), mirror.host())).Pull(context.Background(), ref)
		if !errors.Is(err, puller.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
		if msg := oneLine(t, err); !strings.Contains(msg, ref) || strings.Contains(msg, "via mirror") || len(mirror.requests()) == 0 {
			t.Errorf("error %q should be the origin's, after asking the mirror (mirror saw %v)", msg, mirror.requests())
		}
	})
	t.Run("bad mirror name", func(t *testing.T) {
		origin := newFake(t)
		_, err := newClient(puller.WithMirrors(origin.host(), "bad host")).Pull(context.Background(), origin.ref("hello:v1"))
		if !errors.Is(err, puller.ErrBadReference) || !strings.Contains(err.Error(), "bad host") {
			t.Fatalf("err = %v, want ErrBadReference naming the mirror", err)
		}
	})
}

// TestDefaultKeychainCredentialHelper takes credentials from a docker credential helper
// named in config.json, through go-containerregistry's default keychain.
func TestDefaultKeychainCredentialHelper(t *testing.T) {
	f := newFake(t)
	f.basic = "alice:from-helper"
	seedHello(t, f, "hello", "v1")
	dir := t.TempDir()
	helper := "#!/bin/sh\nread server\nprintf '{\"ServerURL\":\"%s\",\"Username\":\"alice\",\"Secret\":\"from-helper\"}' \"$server\"\n"
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-pullkit-test"), []byte(helper), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := `{"credHelpers":{"` + f.host() + `":"pullkit-test"}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", dir)
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	img, err := puller.New(puller.WithRetry(1, 0)).Pull(context.Background(), f.ref("hello:v1"))
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != helloManifest {
		t.Errorf("digest %s", img.Digest)
	}
}

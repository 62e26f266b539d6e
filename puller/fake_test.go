package puller_test

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/internal/regtest"
)

// fakeRegistry is a small distribution API in httptest whose every answer a test can
// bend: manifests by tag and digest, blobs, and hooks that run before the defaults.
type fakeRegistry struct {
	srv *httptest.Server

	mu        sync.Mutex
	reqs      []*http.Request
	manifests map[string]fakeManifest // "repo/ident"
	blobs     map[string][]byte       // "repo/digest"
	// hook, when set, may answer a request itself (returning true).
	hook func(w http.ResponseWriter, r *http.Request) bool
	// basic, when set, is the "user:password" every request must carry.
	basic string
}

type fakeManifest struct {
	body        []byte
	contentType string
	// digestHeader is sent as Docker-Content-Digest; "-" sends none; "" sends sha256(body).
	digestHeader string
}

func newFake(t *testing.T) *fakeRegistry {
	t.Helper()
	f := &fakeRegistry{manifests: map[string]fakeManifest{}, blobs: map[string][]byte{}}
	f.srv = httptest.NewServer(f)
	t.Cleanup(f.srv.Close)
	return f
}

// host is the registry's host:port (loopback, so plain HTTP is allowed).
func (f *fakeRegistry) host() string { return strings.TrimPrefix(f.srv.URL, "http://") }

func (f *fakeRegistry) ref(s string) string { return f.host() + "/" + s }

// putManifest serves body under repo:tag and repo@sha256(body).
func (f *fakeRegistry) putManifest(repo, tag string, m fakeManifest) digest.Digest {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := digest.FromBytes(m.body)
	if tag != "" {
		f.manifests[repo+"/"+tag] = m
	}
	f.manifests[repo+"/"+d.String()] = m
	return d
}

func (f *fakeRegistry) putBlob(repo string, b []byte) digest.Digest {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := digest.FromBytes(b)
	f.blobs[repo+"/"+d.String()] = b
	return d
}

// requests returns "METHOD path" of every request so far.
func (f *fakeRegistry) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, r := range f.reqs {
		out = append(out, r.Method+" "+r.URL.Path)
	}
	return out
}

func (f *fakeRegistry) recorded() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*http.Request(nil), f.reqs...)
}

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.reqs = append(f.reqs, r.Clone(r.Context()))
	hook, basic := f.hook, f.basic
	f.mu.Unlock()
	if basic != "" {
		u, p, ok := r.BasicAuth()
		if !ok || u+":"+p != basic {
			w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
			writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
			return
		}
	}
	if hook != nil && hook(w, r) {
		return
	}
	if r.URL.Path == "/v2/" {
		w.WriteHeader(http.StatusOK)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	if i := strings.LastIndex(rest, "/manifests/"); i >= 0 {
		f.mu.Lock()
		m, ok := f.manifests[rest[:i]+"/"+rest[i+len("/manifests/"):]]
		f.mu.Unlock()
		if !ok {
			writeError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
			return
		}
		switch m.digestHeader {
		case "-":
		case "":
			w.Header().Set("Docker-Content-Digest", digest.FromBytes(m.body).String())
		default:
			w.Header().Set("Docker-Content-Digest", m.digestHeader)
		}
		w.Header().Set("Content-Type", m.contentType)
		http.ServeContent(w, r, "", zeroTime, strings.NewReader(string(m.body)))
		return
	}
	if i := strings.LastIndex(rest, "/blobs/"); i >= 0 {
		f.mu.Lock()
		b, ok := f.blobs[rest[:i]+"/"+rest[i+len("/blobs/"):]]
		f.mu.Unlock()
		if !ok {
			writeError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown to registry")
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "", zeroTime, strings.NewReader(string(b)))
		return
	}
	http.NotFound(w, r)
}

// zeroTime makes http.ServeContent send no Last-Modified.
var zeroTime time.Time

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`{"errors":[{"code":"` + code + `","message":"` + msg + `"}]}`))
}

// seedHello serves the real hello-world amd64 image as repo:tag on f.
func seedHello(t *testing.T, f *fakeRegistry, repo, tag string) {
	t.Helper()
	img := regtest.HelloWorldAMD64(t)
	f.putManifest(repo, tag, fakeManifest{body: img.Manifest, contentType: img.MediaType})
	for _, b := range img.Blobs {
		f.putBlob(repo, b)
	}
}

func readFixture(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/" + path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func discardLogger() *log.Logger { return log.New(io.Discard, "", 0) }

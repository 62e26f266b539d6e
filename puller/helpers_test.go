package puller_test

import (
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
)

// Facts about the real hello-world fixture (testdata/SOURCES.md).
const (
	helloManifest = digest.Digest("sha256:f54a58bc1aac5ea1a25d796ae155dc228b3f0e11d046ae276b39c4bf2f13d8c4")
	helloConfig   = digest.Digest("sha256:feb5d9fea6a5e9606aa995e879d862b825965ba48de054caab5ef356dc6b3412")
	helloLayer    = digest.Digest("sha256:2db29710123e3e53a794f2694094b9b4338aa9ee5c40b930cb8063a1be392c54")
	helloDiffID   = digest.Digest("sha256:e07ee1baac5fae6a26f30cabfe54a36d3402f96afda318fe0a96cec4ca393359")
)

// anonymous is a keychain that never finds credentials (so the developer's own docker
// config cannot change a test's outcome).
var anonymous = authn.NewMultiKeychain()

// staticKeychain hands the same credentials to every registry.
type staticKeychain struct{ user, pass string }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return &authn.Basic{Username: k.user, Password: k.pass}, nil
}

// fastRetry retries once, at once: tests see retries happen without waiting for them.
func fastRetry() pullkit.RetryPolicy {
	return pullkit.RetryPolicy{Attempts: 2, Backoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, MaxRetryAfter: time.Minute}
}

// newClient is an anonymous client with fastRetry, configured further by opts.
func newClient(t testing.TB, opts ...puller.Option) *puller.Client {
	t.Helper()
	c, err := puller.New(append([]puller.Option{puller.WithKeychain(anonymous), puller.WithRetry(fastRetry())}, opts...)...)
	if err != nil {
		t.Fatalf("puller.New: %v", err)
	}
	return c
}

var (
	digestPattern = regexp.MustCompile(`sha256:[0-9a-f]{64}`)
	flagPattern   = regexp.MustCompile(`(^|[\s("'])--[a-z]`)
)

// oneLine returns err's message after checking the rules every message of the library
// keeps: one line, each digest named once, no CLI flag, no HTML page echoed.
func oneLine(t testing.TB, err error) string {
	t.Helper()
	msg := err.Error()
	if strings.ContainsAny(msg, "\r\n") {
		t.Errorf("error is not one line: %q", msg)
	}
	seen := map[string]int{}
	for _, d := range digestPattern.FindAllString(msg, -1) {
		seen[d]++
	}
	for d, n := range seen {
		if n > 1 {
			t.Errorf("error names %s %d times: %s", d, n, msg)
		}
	}
	if flagPattern.MatchString(msg) {
		t.Errorf("error names a CLI flag: %s", msg)
	}
	if l := strings.ToLower(msg); strings.Contains(l, "<html") || strings.Contains(l, "<!doctype") || strings.Contains(l, "<body") {
		t.Errorf("error echoes an HTML page: %s", msg)
	}
	return msg
}

// seedHello puts Docker Hub's real hello-world linux/amd64 image (schema 2) into reg as
// repo:tag (by digest only when tag is "").
func seedHello(t testing.TB, reg *pullkittest.Registry, repo, tag string) {
	t.Helper()
	img := regtest.HelloWorldAMD64(t)
	for _, b := range img.Blobs {
		reg.PutBlob(repo, b)
	}
	if d := reg.PutManifest(repo, tag, img.MediaType, img.Manifest); d != helloManifest {
		t.Fatalf("hello-world seeded as %s, want %s", d, helloManifest)
	}
}

// helloBody is the hello-world schema 2 manifest as Docker Hub serves it.
func helloBody(t testing.TB) []byte {
	t.Helper()
	return regtest.HelloWorldAMD64(t).Manifest
}

// recorder is a base transport that remembers every request it sends (below
// authentication and retries, so with its Authorization, User-Agent and Accept).
type recorder struct {
	inner http.RoundTripper
	mu    sync.Mutex
	reqs  []*http.Request
}

func newRecorder() *recorder {
	return &recorder{inner: http.DefaultTransport.(*http.Transport).Clone()}
}

// RoundTrip records the requests a server answered: a first HTTPS attempt that a
// plain-HTTP loopback registry cannot answer (HTTPS first, everywhere) is not a request
// the registry served.
func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	clone := req.Clone(req.Context())
	resp, err := r.inner.RoundTrip(req)
	if err == nil {
		r.mu.Lock()
		r.reqs = append(r.reqs, clone)
		r.mu.Unlock()
	}
	return resp, err
}

// lines returns "METHOD path" of every request so far.
func (r *recorder) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, q := range r.reqs {
		out = append(out, q.Method+" "+q.URL.Path)
	}
	return out
}

func (r *recorder) requests() []*http.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*http.Request(nil), r.reqs...)
}

// layerDigests lists the layers' digests, base first, without the empty ones when
// skipEmpty.
func layerDigests(layers []manifest.Layer, skipEmpty bool) []digest.Digest {
	var out []digest.Digest
	for _, l := range layers {
		if skipEmpty && l.Empty {
			continue
		}
		out = append(out, l.Digest)
	}
	return out
}

// logLines returns "METHOD route ref" of every request reg logged for the routes given
// (every route when none), in arrival order.
func logLines(reg *pullkittest.Registry, routes ...pullkittest.Route) []string {
	var out []string
	for _, r := range reg.Requests() {
		keep := len(routes) == 0
		for _, rt := range routes {
			keep = keep || r.Route == rt
		}
		if keep {
			out = append(out, r.Method+" "+r.Route.String()+" "+r.Ref)
		}
	}
	return out
}

package puller_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/faultproxy"
	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

// The helpers of the fault table, the soak and the hostile-registry tests (issue 12).
// Their names are their own (fault…, hostile…) so that they do not collide with the
// helpers of the puller's other tests.

// faultAnonymous is a keychain that never finds credentials (so the developer's own
// docker config cannot change a test's outcome).
var faultAnonymous = authn.NewMultiKeychain()

// faultKeychain hands the same credentials to every registry.
type faultKeychain struct{ user, pass string }

func (k faultKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return &authn.Basic{Username: k.user, Password: k.pass}, nil
}

// quickRetry is a retry policy with the given number of attempts and waits short
// enough for tests.
func quickRetry(attempts int) pullkit.RetryPolicy {
	return pullkit.RetryPolicy{Attempts: attempts, Backoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond, MaxRetryAfter: 5 * time.Second}
}

// shortTimeouts are deadlines short enough to keep tests of stalls quick, and long
// enough that an honest in-process server on a loaded -race machine does not break them.
func shortTimeouts() puller.Timeouts {
	return puller.Timeouts{Connect: 2 * time.Second, TLSHandshake: 2 * time.Second, ResponseHeader: time.Second,
		Idle: time.Second, MinRate: 1 << 10, RateWindow: 2 * time.Second}
}

// newFaultClient is a client for the tests: no credentials, the retry policy and options
// given.
func newFaultClient(t testing.TB, opts ...puller.Option) *puller.Client {
	t.Helper()
	c, err := puller.New(append([]puller.Option{puller.WithKeychain(faultAnonymous), puller.WithRetry(quickRetry(3))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// faultBed is a real docker-registry with a fault-injecting proxy in front of it: the
// puller talks to the proxy (references name its host), tests seed the registry directly.
type faultBed struct {
	reg   *regtest.Registry
	proxy *faultproxy.Proxy
}

func newFaultBed(t testing.TB, opts ...regtest.Option) *faultBed {
	t.Helper()
	reg := regtest.Start(t, opts...)
	p, err := faultproxy.New("http://" + reg.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return &faultBed{reg: reg, proxy: p}
}

// ref names repoAndTag behind the proxy.
func (b *faultBed) ref(repoAndTag string) string { return b.proxy.Host() + "/" + repoAndTag }

// wireEntry is one HTTP exchange below authentication (so with its Authorization).
type wireEntry struct {
	start, end                            time.Time
	method, host, path, rng, auth, status string
}

// wire is a base transport that records every exchange, token requests included.
type wire struct {
	inner *http.Transport
	mu    sync.Mutex
	log   []wireEntry
}

func newWire() *wire {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = 10 * time.Second
	return &wire{inner: tr}
}

func (w *wire) RoundTrip(req *http.Request) (*http.Response, error) {
	e := wireEntry{start: time.Now(), method: req.Method, host: req.URL.Host, path: req.URL.Path,
		rng: req.Header.Get("Range"), auth: req.Header.Get("Authorization")}
	resp, err := w.inner.RoundTrip(req)
	e.end = time.Now()
	if err != nil {
		e.status = "error: " + err.Error()
	} else {
		e.status = strconv.Itoa(resp.StatusCode)
	}
	w.mu.Lock()
	w.log = append(w.log, e)
	w.mu.Unlock()
	return resp, err
}

func (w *wire) entries() []wireEntry {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.log)
}

// events collects a pull's progress events (give its Add to WithProgress) and picks
// them by kind.
type events struct{ pullkittest.Progress }

// of returns the events of kind k for d (any digest when d is "").
func (e *events) of(k pullkit.EventKind, d digest.Digest) []pullkit.Event {
	var out []pullkit.Event
	for _, ev := range e.Events() {
		if ev.Kind == k && (d == "" || ev.Digest == d) {
			out = append(out, ev)
		}
	}
	return out
}

// checkStore asserts that the layout at dir holds nothing unverified: every file under
// blobs/ is blobs/sha256/<hex> and hashes to <hex>, and, when ingestEmpty, ingest/ holds
// nothing. It returns the digests of the blobs stored.
func checkStore(t testing.TB, dir string, ingestEmpty bool) []digest.Digest {
	t.Helper()
	var stored []digest.Digest
	blobs := filepath.Join(dir, store.BlobsDir)
	err := filepath.WalkDir(blobs, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(blobs, p)
		if d.IsDir() {
			if rel != "." && rel != "sha256" {
				t.Errorf("unexpected directory blobs/%s", rel)
			}
			return nil
		}
		if !d.Type().IsRegular() || filepath.Dir(rel) != "sha256" {
			t.Errorf("unexpected entry blobs/%s (%v)", rel, d.Type())
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != d.Name() {
			t.Errorf("blobs/%s holds content whose sha256 is %s: unverified data under a final name", rel, got)
		}
		stored = append(stored, digest.NewDigestFromEncoded(digest.SHA256, d.Name()))
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("walk %s: %v", blobs, err)
	}
	if ingestEmpty {
		entries, err := os.ReadDir(filepath.Join(dir, store.IngestDir))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("read ingest: %v", err)
		}
		for _, e := range entries {
			t.Errorf("ingest/%s left behind", e.Name())
		}
	}
	return stored
}

// openStore opens (creating) the OCI layout at dir.
func openStore(t testing.TB, dir string) *store.Layout {
	t.Helper()
	st, err := store.OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// testImage builds a linux/amd64 Docker schema 2 image with random gzip layers of the
// given uncompressed sizes, base first.
func testImage(t testing.TB, sizes ...int64) v1.Image {
	t.Helper()
	var ls []v1.Layer
	for _, n := range sizes {
		l, err := random.Layer(n, types.DockerLayer)
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	return imageOf(t, ls...)
}

// imageOf builds a linux/amd64 Docker schema 2 image of the layers, base first.
func imageOf(t testing.TB, ls ...v1.Layer) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.DockerManifestSchema2)
	img = mutate.ConfigMediaType(img, types.DockerConfigJSON)
	img, err := mutate.AppendLayers(img, ls...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// linuxAMD64 is the platform the tests' images are for, asked for explicitly so that
// the tests pass on any host.
var linuxAMD64 = puller.WithPlatform(platformLinuxAMD64)

var platformLinuxAMD64 = platforms.Platform{OS: "linux", Architecture: "amd64"}

// imageFacts are an image's digests, as go-containerregistry computed them.
type imageFacts struct {
	manifest, config digest.Digest
	layers           []digest.Digest
	blobs            map[digest.Digest][]byte // config and layers, compressed
}

func factsOf(t testing.TB, img v1.Image) imageFacts {
	t.Helper()
	f := imageFacts{blobs: map[digest.Digest][]byte{}}
	h, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	f.manifest = digest.Digest(h.String())
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	f.config = digest.FromBytes(raw)
	f.blobs[f.config] = raw
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		d := digest.FromBytes(b)
		f.layers = append(f.layers, d)
		f.blobs[d] = b
	}
	return f
}

// imageBlobs lists an image's config and layers.
func imageBlobs(img *manifest.Image) []digest.Digest {
	out := []digest.Digest{img.Config.Digest}
	for _, l := range img.Layers {
		out = append(out, l.Digest)
	}
	return out
}

// errLine returns err's text, failing the test when it is more than one line or holds
// a control character: what the network sent is never printed raw.
func errLine(t testing.TB, err error) string {
	t.Helper()
	msg := err.Error()
	if i := controlAt(msg); i >= 0 {
		t.Errorf("error holds a control character at byte %d: %q", i, msg)
	}
	return msg
}

// controlAt returns the index of the first control character (C0, DEL or C1) in s, or
// -1.
func controlAt(s string) int {
	for i, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return i
		}
	}
	return -1
}

// memPeak samples the heap in use and the resident set while a test runs.
type memPeak struct {
	stop chan struct{}
	done chan struct{}
	heap uint64 // peak HeapInuse, bytes
	rss  uint64 // peak VmRSS, bytes
	base uint64 // HeapInuse at the start
}

// watchMemory starts sampling every 25 ms; Stop returns the peaks.
func watchMemory() *memPeak {
	m := &memPeak{stop: make(chan struct{}), done: make(chan struct{})}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.base = ms.HeapInuse
	go func() {
		defer close(m.done)
		t := time.NewTicker(25 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			m.heap = max(m.heap, ms.HeapInuse)
			m.rss = max(m.rss, rss())
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

// Stop ends the sampling and logs the peaks.
func (m *memPeak) Stop(t testing.TB) (heap, rssPeak uint64) {
	t.Helper()
	close(m.stop)
	<-m.done
	t.Logf("memory: peak heap in use %.1f MiB (%.1f MiB at the start), peak RSS %.1f MiB",
		float64(m.heap)/(1<<20), float64(m.base)/(1<<20), float64(m.rss)/(1<<20))
	return m.heap, m.rss
}

// rss is the process's resident set size, from /proc (0 where there is none).
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := strings.Fields(string(v))
			if len(f) > 0 {
				n, _ := strconv.ParseUint(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}

// within runs fn and fails the test when it has not returned after limit: a generous
// bound on a hang, never a speed assertion. It returns how long fn took.
func within(t testing.TB, limit time.Duration, fn func()) time.Duration {
	t.Helper()
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
		return time.Since(start)
	case <-time.After(limit):
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Fatalf("still running after %v: a hang\n%s", limit, buf[:n])
		return 0
	}
}

// pullCtx is the context of one pull in a test: a bound far above any honest pull's.
func pullCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

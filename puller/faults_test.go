package puller_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/faultproxy"
	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/puller"
)

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
	return &wire{inner: http.DefaultTransport.(*http.Transport).Clone()}
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

// pullInto is a full pull as an engine does it: PullResolved, then the config and every
// layer through layers.Fetch into the OCI layout at dir (schema 1 layers with their
// diffIDs computed, others checked against the config's). A failure of the blob transfer
// is wrapped with the reference, as examples/pull does: layers' own errors name the blob
// digest, the caller names what it was pulling.
func pullInto(ctx context.Context, c *puller.Client, ref, dir string, lopts ...layers.Option) (*manifest.Image, []layers.Result, error) {
	res, img, err := c.PullResolved(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	store, err := layers.OpenLayout(dir)
	if err != nil {
		return img, nil, err
	}
	schema1 := res.Chosen.Schema1 != nil
	var blobs []layers.Blob
	if img.Config.Digest != "" {
		blobs = append(blobs, layers.Blob{Desc: img.Config})
	}
	for _, l := range img.Layers {
		blobs = append(blobs, layers.Blob{Desc: l.Descriptor(), DiffID: schema1, WantDiffID: l.DiffID})
	}
	results, err := layers.Fetch(ctx, res.Repository, store, blobs, lopts...)
	if err != nil {
		return img, results, fmt.Errorf("pull %s: %w", ref, err)
	}
	return img, results, nil
}

// checkStore asserts that the layout at dir holds nothing unverified: every file under
// blobs/ is blobs/sha256/<hex> and hashes to <hex>, and, when ingestEmpty, ingest/ holds
// nothing. It returns the digests of the blobs stored.
func checkStore(t testing.TB, dir string, ingestEmpty bool) []digest.Digest {
	t.Helper()
	var stored []digest.Digest
	blobs := filepath.Join(dir, layers.BlobsDir)
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
		entries, err := os.ReadDir(filepath.Join(dir, layers.IngestDir))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("read ingest: %v", err)
		}
		for _, e := range entries {
			t.Errorf("ingest/%s left behind", e.Name())
		}
	}
	return stored
}

// testImage builds a linux/amd64 Docker schema 2 image with random gzip layers of the
// given uncompressed sizes, base first.
func testImage(t testing.TB, sizes ...int64) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.DockerManifestSchema2)
	img = mutate.ConfigMediaType(img, types.DockerConfigJSON)
	for _, n := range sizes {
		l, err := random.Layer(n, types.DockerLayer)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	return onLinuxAMD64(t, img)
}

// onLinuxAMD64 sets img's platform to linux/amd64.
func onLinuxAMD64(t testing.TB, img v1.Image) v1.Image {
	t.Helper()
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

// faultOutcome is what one case of the table produced.
type faultOutcome struct {
	img     *manifest.Image
	results []layers.Result
	err     error
	events  []layers.Event
	wire    *wire
	records []faultproxy.Record
	dir     string
}

// resumedAt returns the Done of every EventResumed of blob d.
func (o *faultOutcome) resumedAt(d digest.Digest) []int64 {
	var out []int64
	for _, e := range o.events {
		if e.Digest == d && e.Kind == layers.EventResumed {
			out = append(out, e.Done)
		}
	}
	return out
}

// blobRecords returns the proxy's records of GETs of blob d, in order.
func (o *faultOutcome) blobRecords(d digest.Digest) []faultproxy.Record {
	var out []faultproxy.Record
	for _, r := range o.records {
		if r.Method == http.MethodGet && strings.HasSuffix(r.Path, "/blobs/"+d.String()) {
			out = append(out, r)
		}
	}
	return out
}

// rangeStart parses "bytes=N-" and returns N, or -1.
func rangeStart(h string) int64 {
	s, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return -1
	}
	s, ok = strings.CutSuffix(s, "-")
	if !ok {
		return -1
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// chunkedBody is a Fault that answers 200 with a body of n bytes and no Content-Length
// (chunked), so only a cap applied while reading can stop it.
type chunkedBody struct {
	contentType string
	n           int
}

func (f chunkedBody) Name() string { return fmt.Sprintf("chunked %d-byte body", f.n) }

func (f chunkedBody) Apply(w http.ResponseWriter, r *http.Request, _ http.Handler) {
	w.Header().Set("Content-Type", f.contentType)
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	chunk := bytes.Repeat([]byte(" "), 64<<10)
	for sent := 0; sent < f.n; sent += len(chunk) {
		if _, err := w.Write(chunk[:min(len(chunk), f.n-sent)]); err != nil {
			return
		}
	}
}

// Sizes of the fault table's image: one layer large enough for midway faults, one small.
const (
	faultBigLayer   = 384 << 10
	faultSmallLayer = 512
	faultMidway     = 100 << 10
)

// TestFaults pulls from the real registry through the fault proxy, one fault per case, and
// asserts the outcome (verified content, or a typed error naming the reference and the
// digest) and that nothing unverified is left in the store.
func TestFaults(t *testing.T) {
	ctx := context.Background()
	plain := newFaultBed(t)
	img := testImage(t, faultBigLayer, faultSmallLayer)
	facts := factsOf(t, img)
	plain.reg.Push(t, "img:v1", img)
	big, small := facts.layers[0], facts.layers[1]

	// Schema 1 inside a list, seeded for real: skopeo writes the signed schema 1, and the
	// registry accepts a manifest list naming it by its canonical digest.
	layered := testImage(t, 300, 700, 1100)
	layeredFacts := factsOf(t, layered)
	plain.reg.Push(t, "s1:v2", layered)
	plain.reg.Skopeo(t, "v2s1", "s1:v2", "s1:v2s1")
	s1Canonical := plain.reg.DigestOf(t, "s1", "v2s1", manifest.AcceptHeader)
	_, s1Raw := plain.reg.Get(t, http.MethodGet, "/v2/s1/manifests/v2s1", manifest.AcceptHeader)
	if digest.FromBytes(s1Raw) == s1Canonical {
		t.Fatalf("control: skopeo's schema 1 is not signed (raw sha256 = canonical %s)", s1Canonical)
	}
	list := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[{"mediaType":%q,"size":%d,"digest":%q,"platform":{"architecture":"amd64","os":"linux"}}]}`,
		manifest.MediaTypeDockerManifestList, manifest.MediaTypeDockerSchema1Signed, len(s1Raw), s1Canonical)
	s1List := plain.reg.PushRaw(t, "s1:list", regtest.RawImage{MediaType: manifest.MediaTypeDockerManifestList, Manifest: []byte(list)})

	// The redirect case needs credentials that could leak: a registry with htpasswd, and
	// blob storage on another host (localhost, not the registry's 127.0.0.1:port).
	basic := newFaultBed(t, regtest.WithHtpasswd())
	basic.reg.Push(t, "img:v1", img)
	var storageMu sync.Mutex
	var storageAuth []string
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		storageMu.Lock()
		storageAuth = append(storageAuth, r.Header.Get("Authorization"))
		storageMu.Unlock()
		d, err := digest.Parse(r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:])
		b, ok := facts.blobs[d]
		if err != nil || !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	}))
	t.Cleanup(storage.Close)
	storageURL := "http://localhost:" + strconv.Itoa(storage.Listener.Addr().(*net.TCPAddr).Port)

	// The token case: a registry whose Bearer realm is a token server that answers a
	// request without credentials with a Basic challenge.
	ts := regtest.NewTokenServer(t)
	token := newFaultBed(t, regtest.WithToken(ts))
	token.reg.Push(t, "img:v1", img)

	creds := puller.WithKeychain(staticKeychain{regtest.User, regtest.Password})
	basicAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte(regtest.User+":"+regtest.Password))
	oversize := bytes.Repeat([]byte(" "), puller.DefaultMaxManifestSize+1)
	copy(oversize, `{"schemaVersion":2}`)

	type faultCase struct {
		name  string
		bed   *faultBed
		ref   string
		rules []*faultproxy.Rule
		opts  []puller.Option
		lopts []layers.Option
		// wantErr are sentinels the error must match (nil: the pull must succeed);
		// names must occur in its text (the reference always must).
		wantErr []error
		names   []string
		// keepIngest: an interrupted transfer may leave its partial file for a resume.
		keepIngest bool
		check      func(t *testing.T, o *faultOutcome)
	}
	get := func(path string, times int, f faultproxy.Fault) *faultproxy.Rule {
		return &faultproxy.Rule{Method: http.MethodGet, PathContains: path, Times: times, Fault: f}
	}
	blobPath := func(d digest.Digest) string { return "/blobs/" + d.String() }

	cases := []faultCase{
		{
			name:  "connection reset midway through a blob resumes with Range",
			rules: []*faultproxy.Rule{get(blobPath(big), 1, faultproxy.ResetAfter(faultMidway))},
			check: func(t *testing.T, o *faultOutcome) {
				recs := o.blobRecords(big)
				if len(recs) < 2 || recs[0].Fault == "" || recs[0].Range != "" {
					t.Fatalf("blob requests %+v: want a whole-blob request that was reset, then more", recs)
				}
				// Where the client resumes is where its body stopped: at most what the proxy
				// sent before the reset, and exactly what layers reports it had.
				n := rangeStart(recs[1].Range)
				resumed := o.resumedAt(big)
				if n <= 0 || n > faultMidway || len(resumed) == 0 || resumed[0] != n {
					t.Errorf("resumed with Range %q (resume events at %v), want bytes=N- with 0 < N <= %d, N where the body stopped",
						recs[1].Range, resumed, faultMidway)
				}
			},
		},
		{
			name:  "body truncated resumes from the exact byte",
			rules: []*faultproxy.Rule{get(blobPath(big), 1, faultproxy.TruncateAfter(faultMidway))},
			check: func(t *testing.T, o *faultOutcome) {
				recs := o.blobRecords(big)
				if len(recs) != 2 || recs[1].Range != fmt.Sprintf("bytes=%d-", faultMidway) {
					t.Errorf("blob requests %+v, want a second one with Range bytes=%d-", recs, faultMidway)
				}
			},
		},
		{
			name:  "manifest body truncated is fetched again",
			rules: []*faultproxy.Rule{get("/manifests/", 1, faultproxy.TruncateAfter(40))},
			check: func(t *testing.T, o *faultOutcome) {
				if n := countRecords(o.records, http.MethodGet, "/manifests/"); n != 2 {
					t.Errorf("%d manifest GETs, want 2 (one cut short, one whole)", n)
				}
			},
		},
		{
			name: "500 then success",
			rules: []*faultproxy.Rule{
				get("/manifests/", 1, faultproxy.Status(http.StatusInternalServerError, nil, "")),
				get(blobPath(facts.config), 1, faultproxy.Status(http.StatusInternalServerError, nil, "")),
				get(blobPath(small), 1, faultproxy.Status(http.StatusInternalServerError, nil, "")),
			},
			check: func(t *testing.T, o *faultOutcome) {
				if recs := o.blobRecords(small); len(recs) != 2 || recs[0].Fault != "status 500" || recs[1].Fault != "" {
					t.Errorf("layer %s requests %+v, want a 500 then a success", small, recs)
				}
				// The config is fetched twice by a full pull: by PullResolved (to parse it),
				// then by layers.Fetch (into the store).
				if recs := o.blobRecords(facts.config); len(recs) != 3 || recs[0].Fault != "status 500" || recs[1].Fault != "" || recs[2].Fault != "" {
					t.Errorf("config %s requests %+v, want a 500, a success for PullResolved, one for layers.Fetch", facts.config, recs)
				}
			},
		},
		{
			name:  "429 with Retry-After waits, then succeeds",
			rules: []*faultproxy.Rule{get(blobPath(big), 1, faultproxy.TooManyRequests("1"))},
			check: func(t *testing.T, o *faultOutcome) {
				var at429, next time.Time
				for _, e := range o.wire.entries() {
					if !strings.HasSuffix(e.path, blobPath(big)) {
						continue
					}
					if e.status == "429" && at429.IsZero() {
						at429 = e.end
					} else if !at429.IsZero() && next.IsZero() {
						next = e.start
					}
				}
				if at429.IsZero() || next.IsZero() {
					t.Fatalf("no 429 followed by a retry on the wire: %+v", o.wire.entries())
				}
				if waited := next.Sub(at429); waited < 900*time.Millisecond {
					t.Errorf("retried %v after a 429 with Retry-After: 1, want about 1s", waited)
				}
			},
		},
		{
			name:  "trickle that stalls: the stall timeout fires and the blob resumes",
			rules: []*faultproxy.Rule{get(blobPath(big), 1, faultproxy.StallAfter(faultMidway, time.Minute))},
			lopts: []layers.Option{layers.WithStallTimeout(300 * time.Millisecond)},
			check: func(t *testing.T, o *faultOutcome) {
				recs := o.blobRecords(big)
				if len(recs) != 2 || recs[1].Range != fmt.Sprintf("bytes=%d-", faultMidway) {
					t.Errorf("blob requests %+v, want a stalled one then Range bytes=%d-", recs, faultMidway)
				}
				if r := o.resumedAt(big); len(r) != 1 || r[0] != faultMidway {
					t.Errorf("resume events at %v, want one at %d", r, faultMidway)
				}
			},
		},
		{
			name:       "stalls on every attempt: fails with ErrStalled, keeps nothing unverified",
			rules:      []*faultproxy.Rule{get(blobPath(big), 0, faultproxy.StallAfter(0, time.Minute))},
			lopts:      []layers.Option{layers.WithStallTimeout(200 * time.Millisecond), layers.WithMaxAttempts(2)},
			wantErr:    []error{layers.ErrStalled},
			names:      []string{big.String()},
			keepIngest: true,
		},
		{
			name:    "wrong bytes for a layer",
			rules:   []*faultproxy.Rule{get(blobPath(big), 0, faultproxy.CorruptByte())},
			wantErr: []error{pullkit.ErrDigestMismatch},
			names:   []string{big.String()},
		},
		{
			name:    "wrong bytes for the config",
			rules:   []*faultproxy.Rule{get(blobPath(facts.config), 0, faultproxy.CorruptByte())},
			wantErr: []error{pullkit.ErrDigestMismatch},
			names:   []string{facts.config.String()},
		},
		{
			name: "wrong bytes for the manifest (still valid JSON)",
			rules: []*faultproxy.Rule{get("/manifests/", 0, faultproxy.Rewrite("edit config digest", func(b []byte, _ http.Header) []byte {
				return bytes.Replace(b, []byte(facts.config.Encoded()[:8]), []byte("00000000"), 1)
			}))},
			wantErr: []error{pullkit.ErrDigestMismatch},
			names:   []string{facts.manifest.String()},
		},
		{
			name: "wrong bytes for the manifest (not JSON any more)",
			rules: []*faultproxy.Rule{get("/manifests/", 0, faultproxy.Rewrite("first byte", func(b []byte, _ http.Header) []byte {
				b[0] = 'X'
				return b
			}))},
			wantErr: []error{pullkit.ErrDigestMismatch},
			names:   []string{facts.manifest.String()},
		},
		{
			name: "wrong bytes for the manifest (a media type edited)",
			rules: []*faultproxy.Rule{get("/manifests/", 0, faultproxy.Rewrite("edit media type", func(b []byte, _ http.Header) []byte {
				return bytes.Replace(b, []byte("rootfs.diff"), []byte("rootfs.dXff"), 1)
			}))},
			wantErr: []error{pullkit.ErrDigestMismatch},
			names:   []string{facts.manifest.String()},
		},
		{
			name:    "wrong size: extra bytes after a layer",
			rules:   []*faultproxy.Rule{get(blobPath(big), 0, faultproxy.ExtraBytes(10))},
			wantErr: []error{layers.ErrSizeMismatch},
			names:   []string{big.String()},
		},
		{
			name: "wrong size: a layer cut short under an honest Content-Length",
			rules: []*faultproxy.Rule{get(blobPath(big), 0, faultproxy.Rewrite("short body", func(b []byte, _ http.Header) []byte {
				return b[:len(b)/2]
			}))},
			wantErr: []error{layers.ErrSizeMismatch},
			names:   []string{big.String()},
		},
		{
			name:    "manifest larger than the cap (announced)",
			rules:   []*faultproxy.Rule{{PathContains: "/manifests/", Fault: faultproxy.Body("oversize", manifest.MediaTypeDockerSchema2, oversize)}},
			wantErr: []error{puller.ErrTooLarge},
		},
		{
			name:    "manifest larger than the cap (chunked, no Content-Length)",
			rules:   []*faultproxy.Rule{get("/manifests/", 0, chunkedBody{manifest.MediaTypeDockerSchema2, puller.DefaultMaxManifestSize + 1})},
			wantErr: []error{puller.ErrTooLarge},
			names:   []string{facts.manifest.String()},
		},
		{
			name: "malformed JSON",
			rules: []*faultproxy.Rule{{PathContains: "/manifests/", Fault: faultproxy.Body("malformed", manifest.MediaTypeDockerSchema2,
				[]byte(`{"schemaVersion":2,"mediaType":"`+manifest.MediaTypeDockerSchema2+`","config":{"digest":`))}},
			wantErr: []error{pullkit.ErrInvalid},
		},
		{
			// The digest proves the bytes, not how to read them: a manifest served as an
			// index is refused, as containerd does since the ambiguous-document advisory
			// (GHSA-5j5w-g665-5m35), rather than guessed at.
			name:    "Content-Type lies: a manifest served as an index",
			rules:   []*faultproxy.Rule{get("/manifests/", 0, faultproxy.ContentType(manifest.MediaTypeOCIIndex))},
			wantErr: []error{pullkit.ErrInvalid},
			names:   []string{facts.manifest.String()},
		},
		{
			// A generic type says nothing, so the format is sniffed and the digest
			// verified: registries that serve manifests as text/plain still work.
			name:  "Content-Type generic: text/plain is sniffed and verified",
			rules: []*faultproxy.Rule{get("/manifests/", 0, faultproxy.ContentType("text/plain; charset=utf-8"))},
		},
		{
			name:  "redirect to another host: no Authorization sent there",
			bed:   basic,
			rules: []*faultproxy.Rule{get("/blobs/", 0, faultproxy.RedirectTo(storageURL))},
			opts:  []puller.Option{creds},
			check: func(t *testing.T, o *faultOutcome) {
				storageMu.Lock()
				seen := slices.Clone(storageAuth)
				storageAuth = nil
				storageMu.Unlock()
				if len(seen) < 3 {
					t.Fatalf("blob storage saw %d requests, want config and both layers", len(seen))
				}
				for i, a := range seen {
					if a != "" {
						t.Errorf("blob storage request %d carried Authorization %q", i, a)
					}
				}
				redirected := 0
				for _, r := range o.records {
					if strings.HasPrefix(r.Fault, "redirect") {
						redirected++
						if r.Authorization != basicAuth {
							t.Errorf("the registry request %s %s carried Authorization %q, want the Basic credentials (else the test proves nothing)", r.Method, r.Path, r.Authorization)
						}
					}
				}
				if redirected < 3 {
					t.Errorf("%d redirected requests, want 3", redirected)
				}
			},
		},
		{
			// Like docker's and containerd's token fetch, the credentials go with the token
			// request itself (Basic), so the token server's Basic challenge is never needed.
			name: "token server's Basic challenge after Bearer: credentials sent, pull succeeds",
			bed:  token,
			opts: []puller.Option{creds},
			check: func(t *testing.T, o *faultOutcome) {
				var tokenReqs, bearer int
				for _, e := range o.wire.entries() {
					switch {
					case e.path == "/token":
						tokenReqs++
						if e.auth != basicAuth {
							t.Errorf("token request carried Authorization %q, want the Basic credentials", e.auth)
						}
					case strings.HasPrefix(e.auth, "Bearer "):
						bearer++
					}
				}
				if tokenReqs == 0 || bearer == 0 {
					t.Errorf("%d token requests, %d registry requests with a Bearer token; want both", tokenReqs, bearer)
				}
			},
		},
		{
			name:    "token server's Basic challenge after Bearer, no credentials: ErrUnauthorized naming the realm",
			bed:     token,
			wantErr: []error{puller.ErrUnauthorized},
			names:   []string{ts.Realm()},
		},
		{
			name: "schema 1 inside a list: verified by its canonical digest, layers base first",
			ref:  plain.ref("s1:list"),
			check: func(t *testing.T, o *faultOutcome) {
				if o.img.Digest != s1List || o.img.Manifest.Digest != s1Canonical || o.img.Manifest.MediaType != manifest.MediaTypeDockerSchema1Signed {
					t.Errorf("pulled %s → %s %s, want list %s → signed schema 1 %s", o.img.Digest, o.img.Manifest.Digest, o.img.Manifest.MediaType, s1List, s1Canonical)
				}
				if got := layerDigests(t, o.img.Layers, true); !slices.Equal(got, layeredFacts.layers) {
					t.Errorf("layers %v, want base first %v", got, layeredFacts.layers)
				}
				for i, r := range o.results {
					if r.DiffID == "" {
						t.Errorf("blob %d (%s): no diffID computed", i, r.Desc.Digest)
					}
				}
			},
		},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.bed
			if b == nil {
				b = plain
			}
			r := tc.ref
			if r == "" {
				r = b.ref("img:v1")
			}
			b.proxy.Reset()
			b.proxy.Add(tc.rules...)
			w := newWire()
			defer w.inner.CloseIdleConnections()
			opts := append([]puller.Option{puller.WithKeychain(anonymous), puller.WithRetry(3, time.Millisecond), puller.WithTransport(w)}, tc.opts...)
			var mu sync.Mutex
			o := &faultOutcome{wire: w, dir: t.TempDir()}
			lopts := append([]layers.Option{layers.WithProgress(func(e layers.Event) {
				mu.Lock()
				o.events = append(o.events, e)
				mu.Unlock()
			})}, tc.lopts...)
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			o.img, o.results, o.err = pullInto(cctx, puller.New(opts...), r, o.dir, lopts...)
			o.records = b.proxy.Records()

			stored := checkStore(t, o.dir, !tc.keepIngest)
			if tc.wantErr == nil {
				if o.err != nil {
					t.Fatalf("pull %s: %v\nproxy saw %+v", r, o.err, o.records)
				}
				// Every blob of the image is in the store, verified (checkStore hashed it).
				want := []digest.Digest{}
				if o.img.Config.Digest != "" {
					want = append(want, o.img.Config.Digest)
				}
				want = append(want, layerDigests(t, o.img.Layers, false)...)
				for _, d := range want {
					if !slices.Contains(stored, d) {
						t.Errorf("blob %s is not in the store (stored: %v)", d, stored)
					}
				}
			} else {
				if o.err == nil {
					t.Fatalf("pull %s succeeded; want an error matching %v (proxy saw %+v)", r, tc.wantErr, o.records)
				}
				for _, want := range tc.wantErr {
					if !errors.Is(o.err, want) {
						t.Errorf("error %q does not match %v", o.err, want)
					}
				}
				msg := oneLine(t, o.err)
				t.Logf("error: %s", msg)
				for _, s := range append([]string{r}, tc.names...) {
					if !strings.Contains(msg, s) {
						t.Errorf("error %q does not name %s", msg, s)
					}
				}
				// A failed pull stores nothing of the blob that failed.
				for _, d := range []digest.Digest{big, facts.config} {
					if slices.Contains(tc.names, d.String()) && slices.Contains(stored, d) {
						t.Errorf("blob %s failed but is in the store", d)
					}
				}
			}
			if tc.check != nil {
				tc.check(t, o)
			}
		})
	}
}

// countRecords counts the proxy's records of method whose path contains s.
func countRecords(recs []faultproxy.Record, method, s string) int {
	n := 0
	for _, r := range recs {
		if r.Method == method && strings.Contains(r.Path, s) {
			n++
		}
	}
	return n
}

package puller_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
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

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/faultproxy"
	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/store"
)

// faultOutcome is what one case of the table produced.
type faultOutcome struct {
	img     *manifest.Image
	err     error
	events  *events
	wire    *wire
	records []faultproxy.Record
	dir     string
}

// resumedAt returns where each EventRetrying of blob d goes on from.
func (o *faultOutcome) resumedAt(d digest.Digest) []int64 {
	var out []int64
	for _, e := range o.events.of(pullkit.EventRetrying, d) {
		out = append(out, e.Done)
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

// Sizes of the fault table's image: one layer large enough for midway faults, one small.
const (
	faultBigLayer   = 384 << 10
	faultSmallLayer = 512
	faultMidway     = 100 << 10
)

// TestFaults pulls from the real registry through the fault proxy, one fault per case,
// with Client.Pull into an OCI layout, and asserts the outcome (a verified image, or a
// typed error naming the reference and the digest) and that nothing unverified is left in
// the store.
func TestFaults(t *testing.T) {
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

	creds := puller.WithKeychain(faultKeychain{regtest.User, regtest.Password})
	basicAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte(regtest.User+":"+regtest.Password))
	oversize := bytes.Repeat([]byte(" "), puller.DefaultMaxManifestSize+1)
	copy(oversize, `{"schemaVersion":2}`)
	stallIdle := shortTimeouts()
	stallIdle.Idle = time.Second

	type faultCase struct {
		name  string
		bed   *faultBed
		ref   string
		rules []*faultproxy.Rule
		opts  []puller.Option
		// wantErr are sentinels the error must match (nil: the pull must succeed);
		// names must occur in its text (the reference always must).
		wantErr []error
		names   []string
		// keepIngest: an interrupted transfer may leave its partial file for a resume.
		keepIngest bool
		// interrupts: the failure stops the other blobs' transfers, which may keep what
		// they received for a resume; ingest/ may hold only true prefixes of the image's
		// other blobs, never anything of the blob that failed.
		interrupts bool
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
				// sent before the reset, and exactly what the retry event reports.
				n := rangeStart(recs[1].Range)
				resumed := o.resumedAt(big)
				if n <= 0 || n > faultMidway || len(resumed) == 0 || resumed[0] != n {
					t.Errorf("resumed with Range %q (retry events from %v), want bytes=N- with 0 < N <= %d, N where the body stopped",
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
				// Pull fetches the config once: it parses it and stores those bytes.
				if recs := o.blobRecords(facts.config); len(recs) != 2 || recs[0].Fault != "status 500" || recs[1].Fault != "" {
					t.Errorf("config %s requests %+v, want a 500 then a success", facts.config, recs)
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
				if w := o.events.of(pullkit.EventWaiting, big); len(w) != 1 || w[0].Wait != time.Second {
					t.Errorf("waiting events %+v, want one of 1s", w)
				}
			},
		},
		{
			name:  "trickle that stalls: the idle deadline fires and the blob resumes",
			rules: []*faultproxy.Rule{get(blobPath(big), 1, faultproxy.StallAfter(faultMidway, time.Minute))},
			opts:  []puller.Option{puller.WithTimeouts(stallIdle)},
			check: func(t *testing.T, o *faultOutcome) {
				recs := o.blobRecords(big)
				if len(recs) != 2 || recs[1].Range != fmt.Sprintf("bytes=%d-", faultMidway) {
					t.Errorf("blob requests %+v, want a stalled one then Range bytes=%d-", recs, faultMidway)
				}
				if r := o.resumedAt(big); len(r) != 1 || r[0] != faultMidway {
					t.Errorf("retry events from %v, want one from %d", r, faultMidway)
				}
			},
		},
		{
			name:       "stalls on every attempt: a StallError (ErrUnreachable), nothing unverified kept",
			rules:      []*faultproxy.Rule{get(blobPath(big), 0, faultproxy.StallAfter(0, time.Minute))},
			opts:       []puller.Option{puller.WithTimeouts(stallIdle), puller.WithRetry(quickRetry(2))},
			wantErr:    []error{pullkit.ErrUnreachable},
			names:      []string{big.String(), "stalled"},
			keepIngest: true,
			check: func(t *testing.T, o *faultOutcome) {
				var se *puller.StallError
				if !errors.As(o.err, &se) {
					t.Errorf("error %v is not a *puller.StallError", o.err)
				}
			},
		},
		{
			name:    "wrong bytes for a layer, every time",
			rules:   []*faultproxy.Rule{get(blobPath(big), 0, faultproxy.CorruptByte())},
			wantErr: []error{pullkit.ErrDigestMismatch},
			names:   []string{big.String()},
		},
		{
			name:  "wrong bytes for a layer, once: fetched again from scratch",
			rules: []*faultproxy.Rule{get(blobPath(big), 1, faultproxy.CorruptByte())},
			check: func(t *testing.T, o *faultOutcome) {
				recs := o.blobRecords(big)
				if len(recs) != 2 || recs[1].Range != "" {
					t.Errorf("blob requests %+v, want a corrupt one then a whole one", recs)
				}
			},
		},
		{
			name:       "wrong bytes for the config, every time",
			rules:      []*faultproxy.Rule{get(blobPath(facts.config), 0, faultproxy.CorruptByte())},
			wantErr:    []error{pullkit.ErrDigestMismatch},
			names:      []string{facts.config.String()},
			interrupts: true,
		},
		{
			name: "wrong bytes for the manifest, every time (still valid JSON)",
			rules: []*faultproxy.Rule{get("/manifests/", 0, faultproxy.Rewrite("edit config digest", func(b []byte, _ http.Header) []byte {
				return bytes.Replace(b, []byte(facts.config.Encoded()[:8]), []byte("00000000"), 1)
			}))},
			wantErr: []error{pullkit.ErrDigestMismatch},
			names:   []string{facts.manifest.String()},
		},
		{
			name: "wrong bytes for the manifest, every time (not JSON any more)",
			rules: []*faultproxy.Rule{get("/manifests/", 0, faultproxy.Rewrite("first byte", func(b []byte, _ http.Header) []byte {
				b[0] = 'X'
				return b
			}))},
			wantErr: []error{pullkit.ErrDigestMismatch},
			names:   []string{facts.manifest.String()},
		},
		{
			name: "wrong bytes for the manifest, every time (a media type edited)",
			rules: []*faultproxy.Rule{get("/manifests/", 0, faultproxy.Rewrite("edit media type", func(b []byte, _ http.Header) []byte {
				return bytes.Replace(b, []byte("rootfs.diff"), []byte("rootfs.dXff"), 1)
			}))},
			wantErr: []error{pullkit.ErrDigestMismatch},
			names:   []string{facts.manifest.String()},
		},
		{
			name:  "wrong bytes for the manifest, once: fetched again",
			rules: []*faultproxy.Rule{get("/manifests/", 1, faultproxy.CorruptByte())},
			check: func(t *testing.T, o *faultOutcome) {
				if n := countRecords(o.records, http.MethodGet, "/manifests/"); n != 2 {
					t.Errorf("%d manifest GETs, want 2 (one corrupt, one whole)", n)
				}
			},
		},
		{
			name:    "wrong size: extra bytes after a layer, every time",
			rules:   []*faultproxy.Rule{get(blobPath(big), 0, faultproxy.ExtraBytes(10))},
			wantErr: []error{pullkit.ErrSizeMismatch},
			names:   []string{big.String()},
		},
		{
			name: "wrong size: a layer cut short under an honest Content-Length, every time",
			rules: []*faultproxy.Rule{get(blobPath(big), 0, faultproxy.Rewrite("short body", func(b []byte, _ http.Header) []byte {
				return b[:len(b)/2]
			}))},
			wantErr: []error{pullkit.ErrSizeMismatch},
			names:   []string{big.String()},
		},
		{
			name:    "manifest larger than the cap (announced)",
			rules:   []*faultproxy.Rule{{PathContains: "/manifests/", Fault: faultproxy.Body("oversize", manifest.MediaTypeDockerSchema2, oversize)}},
			wantErr: []error{pullkit.ErrTooLarge},
		},
		{
			// A tag is fetched in one GET, so no digest is known when its body runs past
			// the cap: the error names the reference and the cap.
			name:    "manifest larger than the cap (chunked, no Content-Length)",
			rules:   []*faultproxy.Rule{get("/manifests/", 0, chunkedBody{manifest.MediaTypeDockerSchema2, puller.DefaultMaxManifestSize + 1})},
			wantErr: []error{pullkit.ErrTooLarge},
			names:   []string{strconv.Itoa(puller.DefaultMaxManifestSize)},
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
			wantErr: []error{pullkit.ErrUnauthorized},
			names:   []string{strings.TrimPrefix(ts.Realm(), "http://")},
		},
		{
			name: "schema 1 inside a list: verified by its canonical digest, layers base first",
			ref:  plain.ref("s1:list"),
			check: func(t *testing.T, o *faultOutcome) {
				if o.img.Digest != s1List || o.img.Manifest.Digest != s1Canonical || o.img.Manifest.MediaType != manifest.MediaTypeDockerSchema1Signed {
					t.Errorf("pulled %s → %s %s, want list %s → signed schema 1 %s", o.img.Digest, o.img.Manifest.Digest, o.img.Manifest.MediaType, s1List, s1Canonical)
				}
				var got []digest.Digest
				for _, l := range o.img.Layers {
					if !l.Empty {
						got = append(got, l.Digest)
					}
					if l.DiffID == "" {
						t.Errorf("layer %s: no diffID computed", l.Digest)
					}
				}
				if !slices.Equal(got, layeredFacts.layers) {
					t.Errorf("layers %v, want base first %v", got, layeredFacts.layers)
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
			c := newFaultClient(t, append([]puller.Option{puller.WithTransport(w)}, tc.opts...)...)
			o := &faultOutcome{wire: w, dir: t.TempDir(), events: &events{}}
			st := openStore(t, o.dir)
			within(t, 90*time.Second, func() {
				o.img, o.err = c.Pull(pullCtx(t), r, st, linuxAMD64, puller.WithProgress(o.events.Add))
			})
			o.records = b.proxy.Records()

			stored := checkStore(t, o.dir, !tc.keepIngest && !tc.interrupts)
			if tc.interrupts {
				checkPartials(t, o.dir, facts.blobs, tc.names)
			}
			if tc.wantErr == nil {
				if o.err != nil {
					t.Fatalf("pull %s: %v\nproxy saw %+v", r, o.err, o.records)
				}
				// Every blob of the image is in the store, verified (checkStore hashed it).
				for _, d := range append(imageBlobs(o.img), o.img.Stored.Digest) {
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
				var pe *pullkit.Error
				if !errors.As(o.err, &pe) {
					t.Errorf("error %q is not a *pullkit.Error", o.err)
				}
				msg := errLine(t, o.err)
				t.Logf("error: %s", msg)
				for _, s := range append([]string{r}, tc.names...) {
					if !strings.Contains(msg, s) {
						t.Errorf("error %q does not name %s", msg, s)
					}
				}
				// A failed pull stores nothing of the blob that failed, and names nothing.
				for _, d := range []digest.Digest{big, facts.config} {
					if slices.Contains(tc.names, d.String()) && slices.Contains(stored, d) {
						t.Errorf("blob %s failed but is in the store", d)
					}
				}
				if imgs, err := st.Images(pullCtx(t)); err != nil || len(imgs) != 0 {
					t.Errorf("failed pull left names %v (%v)", imgs, err)
				}
			}
			if tc.check != nil {
				tc.check(t, o)
			}
		})
	}
}

// checkPartials asserts that every file in the layout's ingest/ is the partial of one of
// blobs, holds a prefix of it, and is not of a blob named in failed.
func checkPartials(t *testing.T, dir string, blobs map[digest.Digest][]byte, failed []string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, store.IngestDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read ingest: %v", err)
	}
	for _, e := range entries {
		hex, ok := strings.CutSuffix(strings.TrimPrefix(e.Name(), "sha256-"), ".partial")
		d := digest.NewDigestFromEncoded(digest.SHA256, hex)
		want, known := blobs[d]
		if !ok || !known || slices.Contains(failed, d.String()) {
			t.Errorf("ingest/%s left behind: not a partial of a blob that was still coming", e.Name())
			continue
		}
		got, err := os.ReadFile(filepath.Join(dir, store.IngestDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > len(want) || !bytes.Equal(got, want[:len(got)]) {
			t.Errorf("ingest/%s holds %d bytes that are not a prefix of its blob", e.Name(), len(got))
		}
	}
}

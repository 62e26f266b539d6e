package layers

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/manifest"
)

// randBytes returns n pseudo-random bytes, the same for the same seed.
func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	for i := n - n%8; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// makeTar returns a tar with a few files of random content (half compressible text).
func makeTar(t testing.TB, seed uint64, fileSize int) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := range 3 {
		data := randBytes(seed+uint64(i), fileSize)
		if i == 1 {
			data = bytes.Repeat([]byte("pullkit layer text "), fileSize/19+1)[:fileSize]
		}
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("dir/file%d", i), Mode: 0o644, Size: int64(len(data)),
			ModTime: time.Unix(1700000000, 0)}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstdBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zw.Close()
	return zw.EncodeAll(b, nil)
}

func descOf(mediaType string, b []byte) manifest.Descriptor {
	return manifest.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
}

// request is one GET the test server saw.
type request struct {
	Digest digest.Digest
	Range  string // the Range header, "" when none
}

// blobServer serves blobs by digest at /<digest>, honouring "bytes=a-b" and "bytes=a-"
// Range headers, and records every request. behave, when set, may take over a request:
// n is the 1-based count of requests for that digest so far.
type blobServer struct {
	*httptest.Server
	mu       sync.Mutex
	blobs    map[digest.Digest][]byte
	reqs     []request
	inflight atomic.Int64
	maxIn    atomic.Int64
	behave   func(w http.ResponseWriter, r *http.Request, n int, data []byte) bool
	delay    time.Duration
}

func newBlobServer(t testing.TB, blobs ...[]byte) *blobServer {
	s := &blobServer{blobs: map[digest.Digest][]byte{}}
	for _, b := range blobs {
		s.blobs[digest.FromBytes(b)] = b
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *blobServer) serve(w http.ResponseWriter, r *http.Request) {
	cur := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	for {
		m := s.maxIn.Load()
		if cur <= m || s.maxIn.CompareAndSwap(m, cur) {
			break
		}
	}
	d := digest.Digest(strings.TrimPrefix(r.URL.Path, "/"))
	s.mu.Lock()
	data, ok := s.blobs[d]
	s.reqs = append(s.reqs, request{Digest: d, Range: r.Header.Get("Range")})
	n := 0
	for _, q := range s.reqs {
		if q.Digest == d {
			n++
		}
	}
	behave := s.behave
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	if s.delay > 0 {
		time.Sleep(s.delay)
	}
	if behave != nil && behave(w, r, n, data) {
		return
	}
	serveRange(w, r, data, -1)
}

// serveRange answers r from data, honouring its Range header; cut >= 0 aborts the
// connection after that many body bytes.
func serveRange(w http.ResponseWriter, r *http.Request, data []byte, cut int) {
	start, end := 0, len(data)-1
	status := http.StatusOK
	if h := r.Header.Get("Range"); h != "" {
		spec, ok := strings.CutPrefix(h, "bytes=")
		a, b, ok2 := strings.Cut(spec, "-")
		s, err := strconv.Atoi(a)
		if !ok || !ok2 || err != nil || s >= len(data) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", len(data)))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start = s
		if b != "" {
			e, err := strconv.Atoi(b)
			if err != nil || e < s {
				w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
				return
			}
			end = min(e, len(data)-1)
		}
		status = http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, len(data)))
	}
	body := data[start : end+1]
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if cut >= 0 && cut < len(body) {
		w.Write(body[:cut])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	w.Write(body)
}

func (s *blobServer) requests() []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]request(nil), s.reqs...)
}

func (s *blobServer) gets(d digest.Digest) int {
	n := 0
	for _, q := range s.requests() {
		if q.Digest == d {
			n++
		}
	}
	return n
}

func (s *blobServer) fetcher() *httpFetcher {
	return &httpFetcher{base: s.URL, client: s.Client()}
}

// httpFetcher is a plain net/http Fetcher, as the puller's client would be without auth.
type httpFetcher struct {
	base   string
	client *http.Client
	calls  atomic.Int64
}

func (h *httpFetcher) FetchBlob(ctx context.Context, desc manifest.Descriptor, rng *Range) (*http.Response, error) {
	h.calls.Add(1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.base+"/"+desc.Digest.String(), nil)
	if err != nil {
		return nil, err
	}
	if rng != nil {
		if rng.End < 0 {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", rng.Start))
		} else {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", rng.Start, rng.End))
		}
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", desc.Digest, resp.Status)
	}
	return resp, nil
}

// memFetcher serves blobs from memory without a network, honouring Range.
type memFetcher struct {
	blobs map[digest.Digest][]byte
}

func newMemFetcher(blobs ...[]byte) *memFetcher {
	m := &memFetcher{blobs: map[digest.Digest][]byte{}}
	for _, b := range blobs {
		m.blobs[digest.FromBytes(b)] = b
	}
	return m
}

func (m *memFetcher) FetchBlob(ctx context.Context, desc manifest.Descriptor, rng *Range) (*http.Response, error) {
	data, ok := m.blobs[desc.Digest]
	if !ok {
		return nil, fmt.Errorf("GET %s: 404 Not Found", desc.Digest)
	}
	resp := &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Header: http.Header{}}
	if rng != nil {
		end := rng.End
		if end < 0 || end >= int64(len(data)) {
			end = int64(len(data)) - 1
		}
		resp.StatusCode, resp.Status = http.StatusPartialContent, "206 Partial Content"
		resp.Header.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", rng.Start, end, len(data)))
		data = data[rng.Start : end+1]
	}
	resp.ContentLength = int64(len(data))
	resp.Body = io.NopCloser(bytes.NewReader(data))
	return resp, nil
}

// events collects Events, safe for concurrent use.
type events struct {
	mu sync.Mutex
	ev []Event
}

func (e *events) add(ev Event) {
	e.mu.Lock()
	e.ev = append(e.ev, ev)
	e.mu.Unlock()
}

func (e *events) kinds(d digest.Digest) []EventKind {
	e.mu.Lock()
	defer e.mu.Unlock()
	var k []EventKind
	for _, ev := range e.ev {
		if ev.Digest == d && ev.Kind != EventProgress {
			k = append(k, ev.Kind)
		}
	}
	return k
}

func (e *events) has(d digest.Digest, kind EventKind) bool {
	for _, k := range e.kinds(d) {
		if k == kind {
			return true
		}
	}
	return false
}

// noTmpfile makes the layout use named ingest files for small blobs too.
func noTmpfile(l *Layout) { l.st.tmpOnce.Do(func() {}) }

// fastRetry makes the pause between attempts short, for tests.
func fastRetry(o *options) { o.backoff = time.Millisecond }

// withChunkSize fixes the chunk size of parallel ranged transfers.
func withChunkSize(n int64) Option { return func(o *options) { o.chunkSize = n } }

func openTemp(t testing.TB) *Layout {
	t.Helper()
	l, err := OpenLayout(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// ingestEntries lists the files in the layout's ingest directory.
func ingestEntries(t testing.TB, l *Layout) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(l.Dir(), IngestDir))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// assertStored checks that the layout holds exactly data under d's final name.
func assertStored(t testing.TB, l *Layout, data []byte) {
	t.Helper()
	d := digest.FromBytes(data)
	got, err := os.ReadFile(l.Path(d))
	if err != nil {
		t.Fatalf("blob %s not stored: %v", d, err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("blob %s stored with %d bytes (digest %s), want %d bytes", d, len(got), digest.FromBytes(got), len(data))
	}
}

// withAdaptive sets the adaptive split's parameters (the default mode) at test scale.
func withAdaptive(minSize int64, parts int, probe int64) Option {
	return func(o *options) {
		o.rangeMin, o.rangeParts, o.splitProbe, o.rangeAdaptive = minSize, parts, probe, true
	}
}

// slowWriter sends a response body in pieces with a pause after each, as a link with a
// per-connection limit would.
type slowWriter struct {
	http.ResponseWriter
	piece int
	pause time.Duration
}

func (s slowWriter) Write(p []byte) (int, error) {
	var n int
	for len(p) > 0 {
		k := min(len(p), s.piece)
		m, err := s.ResponseWriter.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		s.ResponseWriter.(http.Flusher).Flush()
		time.Sleep(s.pause)
		p = p[k:]
	}
	return n, nil
}

func (s slowWriter) Flush() { s.ResponseWriter.(http.Flusher).Flush() }

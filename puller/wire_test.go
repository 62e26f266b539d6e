package puller

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

// The wire: a registry and blob storage (a "CDN") of the tests' own, which count what
// they send and see, for the tests of what goes over the wire: every byte once, signed
// redirects that expire, credentials that stay with the registry, HTTP/2 and its
// fallback.

// wireImage is an image's bytes, made by the test kit's builder.
type wireImage struct {
	manifest []byte
	mt       string
	blobs    map[digest.Digest][]byte
	layers   []digest.Digest
	size     int64 // of the layers
}

func newWireImage(t *testing.T, n, size int) *wireImage {
	t.Helper()
	reg := pullkittest.NewRegistry(t)
	img := reg.PushImage("wire/app", "v1", pullkittest.OCI, pullkittest.Layers(n, size), pullkittest.Compression(manifest.Uncompressed))
	w := &wireImage{manifest: img.Raw, mt: img.MediaType, blobs: map[digest.Digest][]byte{img.Config.Digest: img.Config.Data}}
	for _, l := range img.Layers {
		w.blobs[l.Digest] = l.Data
		w.layers = append(w.layers, l.Digest)
		w.size += l.Size
	}
	return w
}

// clock is a settable clock for the client and the CDN.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// wireCount is what a server saw and sent.
type wireCount struct {
	mu        sync.Mutex
	blobGETs  map[digest.Digest]int
	sent      map[digest.Digest]int64 // body bytes written for each blob
	auth      []string                // Authorization headers seen
	refused   int                     // 403s answered
	ranges    []string
	protos    map[string]int // requests per protocol
	conns     map[string]int // blob requests per client connection
	inFlight  int
	maxFlight int
}

func newCount() *wireCount {
	return &wireCount{blobGETs: map[digest.Digest]int{}, sent: map[digest.Digest]int64{}, protos: map[string]int{}, conns: map[string]int{}}
}

// countWriter counts the body bytes written to the connection, as they are.
type countWriter struct {
	http.ResponseWriter
	c *wireCount
	d digest.Digest
}

func (w countWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.c.mu.Lock()
	w.c.sent[w.d] += int64(n)
	w.c.mu.Unlock()
	return n, err
}

// serveBlob serves b (ranges too), counting the bytes written, optionally at rate
// bytes/s (0: at once) in pieces of 32 KiB.
func (c *wireCount) serveBlob(w http.ResponseWriter, r *http.Request, d digest.Digest, b []byte, rate int64) {
	c.mu.Lock()
	c.blobGETs[d]++
	c.ranges = append(c.ranges, r.Header.Get("Range"))
	c.conns[r.RemoteAddr]++
	c.inFlight++
	c.maxFlight = max(c.maxFlight, c.inFlight)
	c.mu.Unlock()
	var rd io.ReadSeeker = bytes.NewReader(b)
	if rate > 0 {
		rd = &paced{ReadSeeker: rd, rate: rate, ctx: r.Context()}
	}
	http.ServeContent(countWriter{w, c, d}, r, "", time.Time{}, rd)
	c.mu.Lock()
	c.inFlight--
	c.mu.Unlock()
}

// paced reads at rate bytes/s, 32 KiB at a time.
type paced struct {
	io.ReadSeeker
	rate  int64
	ctx   context.Context
	start time.Time
	n     int64
}

func (p *paced) Read(b []byte) (int, error) {
	if p.start.IsZero() {
		p.start = time.Now()
	}
	if len(b) > 32<<10 {
		b = b[:32<<10]
	}
	due := p.start.Add(time.Duration(float64(p.n+int64(len(b))) / float64(p.rate) * float64(time.Second)))
	select {
	case <-time.After(time.Until(due)):
	case <-p.ctx.Done():
		return 0, p.ctx.Err()
	}
	n, err := p.ReadSeeker.Read(b)
	p.n += int64(n)
	return n, err
}

// wireRegistry serves one image as wire/app:v1, with basic auth when user is set, and
// redirects the blob GETs of layers of 1 MiB and more to cdn when it is set.
type wireRegistry struct {
	img        *wireImage
	user, pass string
	cdn        *wireCDN
	rate       int64
	count      *wireCount
	// before, when set, runs first for every request (a test's own answers).
	before func(w http.ResponseWriter, r *http.Request) bool
}

func (g *wireRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.count.mu.Lock()
	g.count.auth = append(g.count.auth, r.Header.Get("Authorization"))
	g.count.protos[r.Proto]++
	g.count.mu.Unlock()
	if g.before != nil && g.before(w, r) {
		return
	}
	if g.user != "" {
		if u, p, ok := r.BasicAuth(); !ok || u != g.user || p != g.pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="wire"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return
		}
	}
	switch {
	case r.URL.Path == "/v2/":
		w.WriteHeader(http.StatusOK)
	case r.URL.Path == "/v2/wire/app/manifests/v1" || r.URL.Path == "/v2/wire/app/manifests/"+digest.FromBytes(g.img.manifest).String():
		w.Header().Set("Content-Type", g.img.mt)
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(g.img.manifest).String())
		w.Header().Set("Content-Length", strconv.Itoa(len(g.img.manifest)))
		if r.Method != http.MethodHead {
			w.Write(g.img.manifest)
		}
	case strings.HasPrefix(r.URL.Path, "/v2/wire/app/blobs/"):
		d, err := digest.Parse(strings.TrimPrefix(r.URL.Path, "/v2/wire/app/blobs/"))
		b, ok := g.img.blobs[d]
		if err != nil || !ok {
			http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
			return
		}
		if g.cdn != nil && len(b) >= 1<<20 {
			g.count.mu.Lock()
			g.count.blobGETs[d]++
			g.count.mu.Unlock()
			http.Redirect(w, r, g.cdn.sign(d), http.StatusTemporaryRedirect)
			return
		}
		g.count.serveBlob(w, r, d, b, g.rate)
	default:
		http.NotFound(w, r)
	}
}

// wireCDN is blob storage behind signed URLs that expire ttl after they are made, on
// clock: stated in the URL (expires=<Unix seconds>&sig=…) or, opaque, known only to it
// (token=…). Each request it accepts moves the clock by step.
type wireCDN struct {
	url    string
	clock  *clock
	ttl    time.Duration
	opaque bool
	step   time.Duration
	blobs  map[digest.Digest][]byte
	rate   int64
	count  *wireCount

	mu     sync.Mutex
	tokens map[string]time.Time
	n      int
}

var cdnKey = []byte("wire test key")

func (c *wireCDN) sign(d digest.Digest) string {
	exp := c.clock.now().Add(c.ttl)
	if c.opaque {
		c.mu.Lock()
		c.n++
		tok := fmt.Sprintf("t%d", c.n)
		if c.tokens == nil {
			c.tokens = map[string]time.Time{}
		}
		c.tokens[tok] = exp
		c.mu.Unlock()
		return c.url + "/blobs/" + d.String() + "?token=" + tok
	}
	e := strconv.FormatInt(exp.Unix(), 10)
	mac := hmac.New(sha256.New, cdnKey)
	mac.Write([]byte(d.String() + e))
	return c.url + "/blobs/" + d.String() + "?expires=" + e + "&sig=" + hex.EncodeToString(mac.Sum(nil))
}

func (c *wireCDN) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.count.mu.Lock()
	c.count.auth = append(c.count.auth, r.Header.Get("Authorization"))
	c.count.protos[r.Proto]++
	c.count.mu.Unlock()
	d, err := digest.Parse(strings.TrimPrefix(r.URL.Path, "/blobs/"))
	b, ok := c.blobs[d]
	if err != nil || !ok {
		http.NotFound(w, r)
		return
	}
	var exp time.Time
	q := r.URL.Query()
	if c.opaque {
		c.mu.Lock()
		exp, ok = c.tokens[q.Get("token")]
		c.mu.Unlock()
	} else {
		mac := hmac.New(sha256.New, cdnKey)
		mac.Write([]byte(d.String() + q.Get("expires")))
		n, perr := strconv.ParseInt(q.Get("expires"), 10, 64)
		ok = perr == nil && hmac.Equal([]byte(hex.EncodeToString(mac.Sum(nil))), []byte(q.Get("sig")))
		exp = time.Unix(n, 0)
	}
	if !ok || !c.clock.now().Before(exp) {
		c.count.mu.Lock()
		c.count.refused++
		c.count.mu.Unlock()
		http.Error(w, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>", http.StatusForbidden)
		return
	}
	// The clock moves once a request is accepted: the next one is checked against it.
	c.clock.add(c.step)
	c.count.serveBlob(w, r, d, b, c.rate)
}

// wire is a registry and, with cdn, its blob storage, on loopback (over TLS with h2
// offered, when tls is set).
type wire struct {
	img      *wireImage
	reg      *wireRegistry
	cdn      *wireCDN
	regSrv   *httptest.Server
	cdnSrv   *httptest.Server
	regCount *wireCount
	cdnCount *wireCount
	clock    *clock
}

func startServer(t *testing.T, h http.Handler, tls bool) *httptest.Server {
	s := httptest.NewUnstartedServer(h)
	if tls {
		s.EnableHTTP2 = true
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

// newWire starts a registry for img; with cdn, blob storage behind it.
func newWire(t *testing.T, img *wireImage, tls, cdn bool) *wire {
	w := &wire{img: img, regCount: newCount(), cdnCount: newCount(), clock: &clock{t: time.Unix(1_800_000_000, 0)}}
	w.reg = &wireRegistry{img: img, user: "u", pass: "secret", count: w.regCount}
	if cdn {
		w.cdn = &wireCDN{clock: w.clock, ttl: time.Hour, blobs: img.blobs, count: w.cdnCount}
		w.cdnSrv = startServer(t, w.cdn, tls)
		w.cdn.url = w.cdnSrv.URL
		w.reg.cdn = w.cdn
	}
	w.regSrv = startServer(t, w.reg, tls)
	return w
}

func (w *wire) ref() string {
	return strings.TrimPrefix(strings.TrimPrefix(w.regSrv.URL, "http://"), "https://") + "/wire/app:v1"
}

// client is a client of the wire with the registry's credentials, trusting its servers'
// certificates, on the wire's clock.
func (w *wire) client(t *testing.T, opts ...Option) *Client {
	t.Helper()
	base := []Option{WithKeychain(staticKeys{"u", "secret"})}
	for _, s := range []*httptest.Server{w.regSrv, w.cdnSrv} {
		if s != nil && s.TLS != nil {
			base = append(base, WithRootCAs("", pemOf(s)))
		}
	}
	c, err := New(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	c.now = w.clock.now
	return c
}

type staticKeys struct{ user, pass string }

func (k staticKeys) Resolve(authn.Resource) (authn.Authenticator, error) {
	return &authn.Basic{Username: k.user, Password: k.pass}, nil
}

// pull pulls the wire's image into st with opts.
func (w *wire) pull(t *testing.T, c *Client, ctx context.Context, st store.Store, opts ...PullOption) error {
	_, err := c.Pull(ctx, w.ref(), st, opts...)
	return err
}

// pullOverTLS starts s, a TLS server the test set up in front of the wire's registry,
// as the registry, and pulls the image through a client of the wire into a new memory
// store, failing t unless every layer arrived. It returns the client.
func (w *wire) pullOverTLS(t *testing.T, s *httptest.Server) *Client {
	t.Helper()
	s.StartTLS()
	t.Cleanup(s.Close)
	w.regSrv = s
	c := w.client(t)
	st := store.NewMemory()
	if err := w.pull(t, c, t.Context(), st); err != nil {
		t.Fatal(err)
	}
	w.checkLayers(t, st)
	return c
}

// checkLayers fails t unless st holds every layer of the image.
func (w *wire) checkLayers(t *testing.T, st store.Store) {
	t.Helper()
	for _, d := range w.img.layers {
		got, err := store.ReadBlob(context.Background(), st, d, 1<<30)
		if err != nil || !bytes.Equal(got, w.img.blobs[d]) {
			t.Errorf("layer %s: %v", d, err)
		}
	}
}

// layerBytes is what count sent of the image's layers.
func (w *wire) layerBytes(count *wireCount) int64 {
	count.mu.Lock()
	defer count.mu.Unlock()
	var n int64
	for _, d := range w.img.layers {
		n += count.sent[d]
	}
	return n
}

// pemOf is the PEM of s's certificate.
func pemOf(s *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
}

// descOf is layer d's descriptor in img.
func descOf(img *wireImage, d digest.Digest) manifest.Descriptor {
	return manifest.Descriptor{MediaType: manifest.MediaTypeOCILayer, Digest: d, Size: int64(len(img.blobs[d]))}
}

package pullkittest

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// Registry is an in-process registry that answers the distribution API the way CNCF
// distribution does, from content seeded through its Go methods. It listens on a
// loopback port, with a second server standing for blob storage (the target of
// Redirect) and, with WithTokenAuth, a third for the token realm. Every request is
// logged. Its methods are safe for concurrent use; make one with NewRegistry or Start.
type Registry struct {
	cfg config

	api, storage, token *server
	ctx                 context.Context // cancelled by Close: ends stalls and trickles
	cancel              context.CancelFunc
	handlers            sync.WaitGroup
	closeOnce           sync.Once

	schema1Once sync.Once
	schema1Key  *ecdsa.PrivateKey
	tokenKey    []byte
	tokenGen    atomic.Int64
	// clock tells the time for tokens' validity (time.Now; the package's tests set
	// their own, so that an expiry does not depend on how fast the machine runs).
	clock func() time.Time

	mu     sync.Mutex
	closed bool
	blobs  map[digest.Digest][]byte
	repos  map[string]*repository
	rules  []*Rule
	reqs   []*Request
}

// server is one listening HTTP server of the registry.
type server struct {
	srv  *http.Server
	host string // host:port as clients name it
}

// config is what the options set.
type config struct {
	basic             *basicAuth
	token             *TokenAuth
	schema1Conversion bool
	schema1Resign     bool
	noReferrers       bool
	nameUnknown       bool
	v28               bool
	rules             []*Rule
}

// Option configures a Registry. An option given a value it cannot honour makes
// NewRegistry fail the test and Start return an error.
type Option func(*config) error

// WithDistribution28 makes the registry answer as Debian's docker-registry
// (distribution 2.8) does, which the kit's comparison test checks it against: schema 1
// conversion and re-signing (WithSchema1Conversion, WithSchema1Resigning), no referrers
// API (WithoutReferrersAPI), an OCI index served only to clients that accept it, error
// details as 2.8 writes them ({"Tag":"v1"} rather than "unknown tag=v1"), JSON served as
// "application/json; charset=utf-8", and tags/list answered whole, whatever its n and
// last say (2.8 as Debian ships it does not paginate tags).
func WithDistribution28() Option {
	return func(c *config) error {
		c.v28, c.schema1Conversion, c.schema1Resign, c.noReferrers = true, true, true, true
		return nil
	}
}

// WithSchema1Conversion makes the registry rewrite a schema 2 manifest asked for by tag
// into a signed schema 1 manifest when the client's Accept header lacks schema 2 (and a
// manifest list into its linux/amd64 entry, rewritten the same way), as distribution 2.8
// does. Without it the registry behaves like distribution 3, which serves schema 2 as it
// is and answers MANIFEST_INVALID for a list whose linux/amd64 entry is schema 2.
func WithSchema1Conversion() Option {
	return func(c *config) error { c.schema1Conversion = true; return nil }
}

// WithSchema1Resigning makes the registry serve a signed schema 1 manifest signed anew
// with its own key on every request, as distribution 2.8 does: it keeps only the signed
// payload of what was pushed, so the canonical digest stays while the bytes (and their
// sha256) change from one request to the next, and the pusher's signature is gone.
// Without it the registry serves the bytes as they were put, as registries that store
// manifests whole do.
func WithSchema1Resigning() Option {
	return func(c *config) error { c.schema1Resign = true; return nil }
}

// WithoutReferrersAPI makes /v2/<name>/referrers/<digest> answer 404 as a registry
// without the OCI 1.1 referrers API does (distribution has none), so clients fall back to
// the tag schema: the kit then keeps, for every subject, the tag sha256-<hex> pointing at
// an OCI index of the manifests that refer to it, as pushing clients maintain it.
func WithoutReferrersAPI() Option {
	return func(c *config) error { c.noReferrers = true; return nil }
}

// WithNameUnknown makes manifest and blob requests for a repository that does not exist
// answer 404 NAME_UNKNOWN, as the OCI distribution-spec allows and some registries do.
// Distribution answers MANIFEST_UNKNOWN or BLOB_UNKNOWN there and sends NAME_UNKNOWN only
// for tags/list; a client should handle both.
func WithNameUnknown() Option {
	return func(c *config) error { c.nameUnknown = true; return nil }
}

// WithFaults installs fault rules from the start, so that even the first request can
// fail; Registry.Inject adds rules later.
func WithFaults(rules ...*Rule) Option {
	return func(c *config) error {
		for i, rule := range rules {
			if err := rule.check(); err != nil {
				return fmt.Errorf("WithFaults: rule %d: %w", i, err)
			}
		}
		c.rules = append(c.rules, rules...)
		return nil
	}
}

// NewRegistry starts a registry for the test and closes it when the test ends. It fails
// the test when an option is refused or a port cannot be had.
func NewRegistry(t testing.TB, opts ...Option) *Registry {
	t.Helper()
	r, err := Start(opts...)
	if err != nil {
		t.Fatalf("pullkittest: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

// Start starts a registry outside a test (a demo, a benchmark harness); the caller must
// Close it.
func Start(opts ...Option) (*Registry, error) {
	r := &Registry{
		blobs: map[digest.Digest][]byte{},
		repos: map[string]*repository{},
	}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&r.cfg); err != nil {
			return nil, err
		}
	}
	if r.cfg.basic != nil && r.cfg.token != nil {
		return nil, errors.New("WithBasicAuth and WithTokenAuth cannot both be given: a registry has one auth scheme")
	}
	r.rules = append(r.rules, r.cfg.rules...)
	r.ctx, r.cancel = context.WithCancel(context.Background())
	var err error
	if r.api, err = r.listen("127.0.0.1", serveAPI); err != nil {
		return nil, err
	}
	// Storage is named "localhost" so that, to net/http, it is another host than the
	// registry's 127.0.0.1 (net/http compares host names, not ports, when it decides to
	// keep Authorization across a redirect).
	if r.storage, err = r.listen("localhost", serveStorage); err != nil {
		r.Close()
		return nil, err
	}
	if r.cfg.token != nil {
		r.tokenKey = make([]byte, 32)
		_, _ = rand.Read(r.tokenKey)
		// The realm is named "localhost" too: go-containerregistry refuses a realm on a
		// loopback IP literal other than the registry's own host:port (an SSRF guard).
		if r.token, err = r.listen("localhost", serveToken); err != nil {
			r.Close()
			return nil, err
		}
	}
	return r, nil
}

// The three servers a registry runs.
const (
	serveAPI = iota
	serveStorage
	serveToken
)

func (r *Registry) listen(name string, kind int) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen on loopback: %w", err)
	}
	s := &server{host: name + ":" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)}
	s.srv = &http.Server{
		Handler:           r.front(kind),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return r.ctx },
		ErrorLog:          nil,
	}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Close stops the servers, ends every stalled or trickling response and waits for the
// handlers to return. It is safe to call more than once.
func (r *Registry) Close() {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		r.cancel()
		for _, s := range []*server{r.api, r.storage, r.token} {
			if s != nil {
				_ = s.srv.Close()
			}
		}
		r.handlers.Wait()
	})
}

// URL is the registry's base URL, http://127.0.0.1:port.
func (r *Registry) URL() string { return "http://" + r.api.host }

// Host is the registry's host:port, the first part of an image reference.
func (r *Registry) Host() string { return r.api.host }

// Ref returns Host() + "/" + nameAndRef, e.g. r.Ref("library/hello:latest").
func (r *Registry) Ref(nameAndRef string) string { return r.api.host + "/" + nameAndRef }

// StorageURL is the base URL of the second server, which stands for blob storage on
// another host (http://localhost:port): Redirect sends blob requests there.
func (r *Registry) StorageURL() string { return "http://" + r.storage.host }

// TokenURL is the token realm (http://localhost:port/token) with WithTokenAuth, or "".
func (r *Registry) TokenURL() string {
	if r.token == nil {
		return ""
	}
	return "http://" + r.token.host + "/token"
}

// schema1Signer is the key the registry signs schema 1 with (its "trust key").
func (r *Registry) schema1Signer() *ecdsa.PrivateKey {
	r.schema1Once.Do(func() {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic("pullkittest: schema 1 key: " + err.Error())
		}
		r.schema1Key = k
	})
	return r.schema1Key
}

// front is every server's outer handler: it logs the request, applies the first fault
// rule that matches, and otherwise serves it.
func (r *Registry) front(kind int) http.Handler {
	var inner http.Handler
	switch kind {
	case serveAPI:
		inner = http.HandlerFunc(r.serveAPI)
	case serveStorage:
		inner = http.HandlerFunc(r.serveStorage)
	default:
		inner = http.HandlerFunc(r.serveToken)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return
		}
		r.handlers.Add(1)
		defer r.handlers.Done()
		rec := classify(kind, req)
		var fault Fault
		for _, rule := range r.rules {
			if rule.take(rec) {
				fault = rule.Fault
				break
			}
		}
		if fault != nil {
			rec.Fault = fault.Name()
		}
		r.reqs = append(r.reqs, &rec)
		r.mu.Unlock()

		if kind == serveAPI {
			// distribution sets it on every response, errors and 404s included.
			w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		}
		lw := &logWriter{ResponseWriter: w, r: r, rec: &rec, kind: kind}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				// A bug in the kit must not take the test binary down with a
				// goroutine panic: answer 500 as distribution would, and say why.
				if !lw.wrote {
					writeError(lw, CodeUnknown, fmt.Sprintf("pullkittest panic: %v", v), nil)
				}
			}
		}()
		if fault != nil {
			fault.Apply(lw, req, inner)
			return
		}
		inner.ServeHTTP(lw, req)
	})
}

// classify makes the log record of a request: its route, repository and reference.
func classify(kind int, req *http.Request) Request {
	rec := Request{
		Host:          req.Host,
		Method:        req.Method,
		Path:          req.URL.Path,
		Query:         req.URL.RawQuery,
		Range:         req.Header.Get("Range"),
		Accept:        strings.Join(req.Header.Values("Accept"), ", "),
		Authorization: req.Header.Get("Authorization"),
	}
	if kind == serveToken {
		rec.Route = RouteToken
		for _, scope := range strings.Fields(strings.Join(req.URL.Query()["scope"], " ")) {
			if typ, rest, ok := strings.Cut(scope, ":"); ok && typ == "repository" {
				if i := strings.LastIndexByte(rest, ':'); i > 0 {
					rec.Repo = rest[:i]
					break
				}
			}
		}
		return rec
	}
	rec.Route, rec.Repo, rec.Ref = parsePath(req.URL.Path)
	return rec
}

// parsePath splits a distribution API path into its route, repository and reference.
func parsePath(path string) (Route, string, string) {
	if path == "/v2/" || path == "/v2" {
		return RoutePing, "", ""
	}
	if path == "/v2/_catalog" {
		return RouteCatalog, "", ""
	}
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return RouteOther, "", ""
	}
	// distribution's router takes tags/list with or without a final slash.
	if name, ok := strings.CutSuffix(strings.TrimSuffix(rest, "/"), "/tags/list"); ok && name != "" {
		return RouteTags, name, ""
	}
	best, bestAt, bestLen := RouteOther, -1, 0
	for _, m := range []struct {
		marker string
		route  Route
	}{{"/manifests/", RouteManifest}, {"/blobs/", RouteBlob}, {"/referrers/", RouteReferrers}} {
		i := strings.LastIndex(rest, m.marker)
		if i > 0 && i > bestAt && !strings.Contains(rest[i+len(m.marker):], "/") {
			best, bestAt, bestLen = m.route, i, len(m.marker)
		}
	}
	if bestAt < 0 || bestAt+bestLen == len(rest) {
		return RouteOther, "", ""
	}
	return best, rest[:bestAt], rest[bestAt+bestLen:]
}

// logWriter records the status and body bytes of a response in its record of the
// request log (which ResetRequests may have dropped from the log meanwhile).
type logWriter struct {
	http.ResponseWriter
	r     *Registry
	rec   *Request
	kind  int
	wrote bool
}

func (w *logWriter) WriteHeader(code int) {
	if !w.wrote && code >= 200 {
		w.wrote = true
		w.r.mu.Lock()
		w.rec.Status = code
		w.r.mu.Unlock()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *logWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	w.r.mu.Lock()
	w.rec.Bytes += int64(n)
	w.r.mu.Unlock()
	return n, err
}

func (w *logWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *logWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("pullkittest: connection cannot be hijacked")
	}
	return hj.Hijack()
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *logWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// setFault names the fault a request got, for faults that choose one (Random).
func (w *logWriter) setFault(name string) {
	w.r.mu.Lock()
	w.rec.Fault = name
	w.r.mu.Unlock()
}

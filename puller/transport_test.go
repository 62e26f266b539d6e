package puller

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
)

// waits records the backoffs a client asks for instead of sleeping them.
type waits struct {
	mu sync.Mutex
	d  []time.Duration
}

func (w *waits) sleep(ctx context.Context, d time.Duration) error {
	w.mu.Lock()
	w.d = append(w.d, d)
	w.mu.Unlock()
	return ctx.Err()
}

func (w *waits) all() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Duration(nil), w.d...)
}

// testNow is the clock of testClient.
var testNow = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// testClient returns an anonymous client whose waits are recorded, not slept, and whose
// clock stands at testNow.
func testClient(t testing.TB, opts ...Option) (*Client, *waits) {
	t.Helper()
	c, err := New(append([]Option{WithKeychain(authn.NewMultiKeychain())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	w := &waits{}
	c.sleep = w.sleep
	c.now = func() time.Time { return testNow }
	return c, w
}

// policy is a retry policy of attempts tries, waits from 100ms.
func policy(attempts int) Option {
	return WithRetry(pullkit.RetryPolicy{Attempts: attempts, Backoff: 100 * time.Millisecond, MaxBackoff: 10 * time.Second, MaxRetryAfter: time.Minute})
}

// flaky serves the hello-world manifest at /v2/r/manifests/<its digest>, answering the
// first GETs of it with answers instead.
func flaky(t *testing.T, answers ...func(w http.ResponseWriter)) (*httptest.Server, *atomic.Int32, digest.Digest) {
	t.Helper()
	img := regtest.HelloWorldAMD64(t)
	d := digest.FromBytes(img.Manifest)
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/r/manifests/"+d.String() {
			http.NotFound(w, r)
			return
		}
		i := int(n.Add(1)) - 1
		if i < len(answers) {
			answers[i](w)
			return
		}
		w.Header().Set("Content-Type", img.MediaType)
		w.Header().Set("Docker-Content-Digest", d.String())
		_, _ = w.Write(img.Manifest)
	}))
	t.Cleanup(srv.Close)
	return srv, &n, d
}

func status(code int, header ...string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(code)
	}
}

// hangUp closes the connection without an answer.
func hangUp(w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		conn.Close()
	}
}

func TestRetries(t *testing.T) {
	for _, tc := range []struct {
		name       string
		attempts   int
		answers    []func(http.ResponseWriter)
		wantErr    error
		wantCalls  int32
		wantWaits  []time.Duration // exact waits; nil: only count them
		nWaits     int
		retryAfter time.Duration // the error's, for a 429
	}{
		{name: "503 twice then OK", attempts: 4, answers: []func(http.ResponseWriter){status(503), status(503)}, wantCalls: 3, nWaits: 2},
		{name: "broken connections then OK", attempts: 3, answers: []func(http.ResponseWriter){hangUp, hangUp}, wantCalls: 3, nWaits: 2},
		{name: "broken every time", attempts: 2, answers: []func(http.ResponseWriter){hangUp, hangUp}, wantErr: pullkit.ErrUnreachable, wantCalls: 2, nWaits: 1},
		{name: "500 every time", attempts: 3, answers: []func(http.ResponseWriter){status(500), status(500), status(500)}, wantErr: pullkit.ErrUnreachable, wantCalls: 3, nWaits: 2},
		{name: "501 is final", attempts: 3, answers: []func(http.ResponseWriter){status(501)}, wantErr: pullkit.ErrUnsupported, wantCalls: 1},
		{name: "404 is final", attempts: 3, answers: []func(http.ResponseWriter){status(404)}, wantErr: pullkit.ErrNotFound, wantCalls: 1},
		{name: "429 Retry-After seconds", attempts: 3, answers: []func(http.ResponseWriter){status(429, "Retry-After", "7")}, wantCalls: 2,
			wantWaits: []time.Duration{7 * time.Second}},
		{name: "429 Retry-After date", attempts: 3, answers: []func(http.ResponseWriter){status(429, "Retry-After", "Fri, 02 Jan 2026 03:04:17 GMT")}, wantCalls: 2,
			wantWaits: []time.Duration{12 * time.Second}},
		{name: "429 Retry-After beyond the policy fails at once", attempts: 3, answers: []func(http.ResponseWriter){status(429, "Retry-After", "86400")},
			wantErr: pullkit.ErrTooManyRequests, wantCalls: 1, wantWaits: []time.Duration{}, retryAfter: 24 * time.Hour},
		{name: "429 every time", attempts: 2, answers: []func(http.ResponseWriter){status(429), status(429)}, wantErr: pullkit.ErrTooManyRequests, wantCalls: 2, nWaits: 1},
		{name: "no retries", attempts: 1, answers: []func(http.ResponseWriter){status(503)}, wantErr: pullkit.ErrUnreachable, wantCalls: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, calls, d := flaky(t, tc.answers...)
			// Fresh connections only: net/http silently resends an idempotent request
			// once when a reused connection hangs up, which would blur the count.
			c, w := testClient(t, policy(tc.attempts), WithTransport(&http.Transport{DisableKeepAlives: true}))
			_, err := c.Resolve(t.Context(), strings.TrimPrefix(srv.URL, "http://")+"/r@"+d.String(), WithMatcher(platforms.Any()))
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if got := calls.Load(); got != tc.wantCalls {
				t.Errorf("%d manifest requests, want %d", got, tc.wantCalls)
			}
			if tc.retryAfter != 0 {
				var he *pullkit.HTTPError
				if !errors.As(err, &he) || he.RetryAfter != tc.retryAfter || !strings.Contains(err.Error(), "Retry-After") {
					t.Errorf("err %v does not carry Retry-After %v", err, tc.retryAfter)
				}
			}
			got := w.all()
			if tc.wantWaits != nil {
				if fmt.Sprint(got) != fmt.Sprint(tc.wantWaits) {
					t.Errorf("waits %v, want %v", got, tc.wantWaits)
				}
				return
			}
			if len(got) != tc.nWaits {
				t.Errorf("waits %v, want %d of them", got, tc.nWaits)
			}
			for i, d := range got {
				lo, hi := 50*time.Millisecond<<i, 100*time.Millisecond<<i
				if d < lo || d > hi {
					t.Errorf("wait %d = %v, want jittered in [%v, %v]", i, d, lo, hi)
				}
			}
		})
	}
}

// TestRetryHonoursContext stops waiting when the context ends.
func TestRetryHonoursContext(t *testing.T) {
	arrived := make(chan struct{}, 4)
	srv, calls, d := flaky(t, func(w http.ResponseWriter) {
		arrived <- struct{}{}
		status(429, "Retry-After", "3600")(w)
	})
	c, err := New(WithKeychain(authn.NewMultiKeychain()),
		WithRetry(pullkit.RetryPolicy{Attempts: 3, Backoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxRetryAfter: time.Hour}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := c.Resolve(ctx, strings.TrimPrefix(srv.URL, "http://")+"/r@"+d.String())
		done <- err
	}()
	<-arrived
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Resolve still waiting 30s after its context was cancelled")
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("%d requests, want 1 (no retry after cancel)", got)
	}
}

// TestManifestBodyCutShortIsRefetched retries a manifest whose body breaks mid-way.
func TestManifestBodyCutShortIsRefetched(t *testing.T) {
	img := regtest.HelloWorldAMD64(t)
	body := img.Manifest
	m := digest.FromBytes(body)
	var gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/r/manifests/"+m.String() {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", manifest.MediaTypeDockerSchema2)
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		if gets.Add(1) == 1 {
			_, _ = w.Write(body[:100])
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	c, w := testClient(t, policy(3))
	res, err := c.Resolve(t.Context(), strings.TrimPrefix(srv.URL, "http://")+"/r@"+m.String(), WithMatcher(platforms.Any()))
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifest.Digest != m || gets.Load() != 2 || len(w.all()) != 1 {
		t.Errorf("digest %s after %d GETs and waits %v", res.Manifest.Digest, gets.Load(), w.all())
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestRetryOnlyIdempotent(t *testing.T) {
	var n atomic.Int32
	rt := &retryTransport{
		inner: roundTripFunc(func(*http.Request) (*http.Response, error) {
			n.Add(1)
			return nil, errors.New("connection reset")
		}),
		policy: pullkit.RetryPolicy{Attempts: 3, Backoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxRetryAfter: time.Second},
		sleep:  func(context.Context, time.Duration) error { return nil }, now: time.Now,
	}
	for _, tc := range []struct {
		method string
		body   bool
		want   int32
	}{
		{http.MethodGet, false, 3},
		{http.MethodHead, false, 3},
		{http.MethodPost, false, 1},
		{http.MethodPut, true, 1},
		{http.MethodGet, true, 1},
	} {
		n.Store(0)
		req, _ := http.NewRequest(tc.method, "http://127.0.0.1:1/x", nil)
		if tc.body {
			req, _ = http.NewRequest(tc.method, "http://127.0.0.1:1/x", strings.NewReader("data"))
		}
		if _, err := rt.RoundTrip(req); err == nil {
			t.Fatal("no error")
		}
		if n.Load() != tc.want {
			t.Errorf("%s (body %v): %d attempts, want %d", tc.method, tc.body, n.Load(), tc.want)
		}
	}
	// A request whose caller retries (a blob body) is sent once.
	n.Store(0)
	req, _ := http.NewRequestWithContext(withInfo(context.Background(), &reqInfo{noRetry: true}), http.MethodGet, "http://127.0.0.1:1/x", nil)
	if _, err := rt.RoundTrip(req); err == nil || n.Load() != 1 {
		t.Errorf("noRetry: %d attempts (err %v), want 1", n.Load(), err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"5", 5 * time.Second, true},
		{" 5 ", 5 * time.Second, true},
		{"0", 0, true},
		{"-3", 0, true},
		{"99999999999999999", 24 * time.Hour, true},
		{"Fri, 02 Jan 2026 03:05:05 GMT", time.Minute, true},
		{"Fri, 02 Jan 2026 03:00:00 GMT", 0, true},
		{"Friday, 02-Jan-26 03:04:15 GMT", 10 * time.Second, true},
		{"soon", 0, false},
		{"1.5", 0, false},
	} {
		got, ok := parseRetryAfter(tc.in, testNow)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestCheckRedirect(t *testing.T) {
	mk := func(u string) *http.Request {
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer secret")
		return req
	}
	for _, tc := range []struct {
		from, to string
		keep     bool
	}{
		{"https://reg.example/v2/a/blobs/x", "https://reg.example/other", true},
		{"https://reg.example/v2/a/blobs/x", "https://reg.example:443/other", true},
		{"https://reg.example/v2/a/blobs/x", "https://storage.example/b", false},
		{"https://reg.example/v2/a/blobs/x", "https://sub.reg.example/b", false},
		{"http://127.0.0.1:5000/v2/a/blobs/x", "http://127.0.0.1:5001/b", false},
		{"http://127.0.0.1:5000/v2/a/blobs/x", "https://127.0.0.1:5000/b", true},
		{"https://REG.example/v2/", "https://reg.example/b", true},
	} {
		req := mk(tc.to)
		if err := checkRedirect(req, []*http.Request{mk(tc.from)}); err != nil {
			t.Fatal(err)
		}
		if kept := req.Header.Get("Authorization") != ""; kept != tc.keep {
			t.Errorf("%s → %s: Authorization kept %v, want %v", tc.from, tc.to, kept, tc.keep)
		}
	}
	via := make([]*http.Request, maxRedirects)
	for i := range via {
		via[i] = mk("https://reg.example/")
	}
	if err := checkRedirect(mk("https://reg.example/"), via); !errors.Is(err, pullkit.ErrInvalid) {
		t.Errorf("after too many redirects: err = %v, want ErrInvalid", err)
	}
	if err := checkRedirect(mk("ftp://reg.example/x"), via[:1]); !errors.Is(err, pullkit.ErrDenied) {
		t.Errorf("redirect to ftp: err = %v, want ErrDenied", err)
	}
}

func TestPlainHTTPGuard(t *testing.T) {
	for _, tc := range []struct {
		url    string
		allow  bool
		origin string // the registry the request is for ("" for none)
		pass   bool
	}{
		{"http://127.0.0.1:5000/v2/", false, "", true},
		{"http://127.9.8.7:5000/v2/", false, "", true},
		{"http://localhost:5000/v2/", false, "", true},
		{"http://[::1]:5000/v2/", false, "", true},
		{"http://reg.localhost/v2/", false, "", false},
		{"http://10.0.0.1:5000/v2/", false, "", false},
		{"http://192.168.1.1/v2/", false, "", false},
		{"http://registry.example/v2/", false, "", false},
		{"http://localhost.example/v2/", false, "", false},
		{"http://registry.example/v2/", true, "", true},
		{"https://registry.example/v2/", false, "", true},
		// A registry elsewhere must not lead the puller to this machine or link-local
		// addresses; a loopback registry may.
		{"https://127.0.0.1:8080/x", false, "registry.example", false},
		{"https://169.254.169.254/latest", false, "registry.example", false},
		{"https://[::1]:8080/x", false, "registry.example", false},
		{"http://127.0.0.1:8080/x", false, "127.0.0.1:5000", true},
		{"https://10.0.0.1/x", false, "registry.example", true},
	} {
		var called bool
		g := &guardTransport{plainHTTP: tc.allow, inner: roundTripFunc(func(*http.Request) (*http.Response, error) {
			called = true
			return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
		})}
		u, _ := url.Parse(tc.url)
		ctx := withInfo(context.Background(), &reqInfo{origin: tc.origin})
		_, err := g.RoundTrip((&http.Request{Method: "GET", URL: u, Header: http.Header{}}).WithContext(ctx))
		if called != tc.pass || (err == nil) != tc.pass {
			t.Errorf("%s (allow %v, origin %q): passed %v err %v", tc.url, tc.allow, tc.origin, called, err)
		}
		if err != nil && (!errors.Is(err, pullkit.ErrDenied) || !strings.Contains(err.Error(), u.Hostname())) {
			t.Errorf("%s: err %v should wrap ErrDenied and name the host", tc.url, err)
		}
	}
}

func TestPermanentErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, true},
		{&url.Error{Op: "Get", URL: "https://127.0.0.1/v2/", Err: errors.New("http: server gave HTTP response to HTTPS client")}, true},
		{&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, true},
		{x509.HostnameError{Host: "a"}, true},
		{&net.DNSError{Err: "no such host", Name: "nowhere.invalid", IsNotFound: true}, true},
		{&net.DNSError{Err: "timeout", Name: "slow.example", IsTimeout: true}, false},
		{fmt.Errorf("dial: %w", pullkit.ErrDenied), true},
		{context.Canceled, true},
		{&url.Error{Op: "Get", URL: "https://r/", Err: syscall.ECONNRESET}, false},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, false},
		{io.ErrUnexpectedEOF, false},
	} {
		if got := permanent(tc.err); got != tc.want {
			t.Errorf("permanent(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

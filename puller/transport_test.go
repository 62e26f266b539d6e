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
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/testdata"
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

// testClient returns an anonymous client whose waits are recorded, not slept.
func testClient(opts ...Option) (*Client, *waits) {
	w := &waits{}
	c := New(append([]Option{WithKeychain(authn.NewMultiKeychain())}, opts...)...)
	c.sleep = w.sleep
	c.now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	return c, w
}

// flaky serves /v2/ and a blob, failing the blob GET with the given answers first.
func flaky(t *testing.T, answers ...func(w http.ResponseWriter)) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		i := int(n.Add(1)) - 1
		if i < len(answers) {
			answers[i](w)
			return
		}
		_, _ = w.Write([]byte("blob"))
	}))
	t.Cleanup(srv.Close)
	return srv, &n
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

func fetch(t *testing.T, c *Client, srv *httptest.Server) error {
	t.Helper()
	repo, err := c.Repository(context.Background(), strings.TrimPrefix(srv.URL, "http://")+"/r")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := repo.FetchBlob(context.Background(), manifest.Descriptor{Digest: digest.FromString("blob")}, nil)
	if err == nil {
		resp.Body.Close()
	}
	return err
}

func TestRetries(t *testing.T) {
	for _, tc := range []struct {
		name      string
		attempts  int
		answers   []func(http.ResponseWriter)
		wantErr   error
		wantCalls int32
		wantWaits []time.Duration // exact waits; nil: only count them
		nWaits    int
	}{
		{name: "503 twice then OK", attempts: 4, answers: []func(http.ResponseWriter){status(503), status(503)}, wantCalls: 3, nWaits: 2},
		{name: "broken connections then OK", attempts: 3, answers: []func(http.ResponseWriter){hangUp, hangUp}, wantCalls: 3, nWaits: 2},
		{name: "broken every time", attempts: 2, answers: []func(http.ResponseWriter){hangUp, hangUp}, wantErr: ErrUnreachable, wantCalls: 2, nWaits: 1},
		{name: "500 every time", attempts: 3, answers: []func(http.ResponseWriter){status(500), status(500), status(500)}, wantErr: ErrUnexpectedStatus, wantCalls: 3, nWaits: 2},
		{name: "501 is final", attempts: 3, answers: []func(http.ResponseWriter){status(501)}, wantErr: ErrUnexpectedStatus, wantCalls: 1},
		{name: "404 is final", attempts: 3, answers: []func(http.ResponseWriter){status(404)}, wantErr: ErrNotFound, wantCalls: 1},
		{name: "429 Retry-After seconds", attempts: 3, answers: []func(http.ResponseWriter){status(429, "Retry-After", "7")}, wantCalls: 2,
			wantWaits: []time.Duration{7 * time.Second}},
		{name: "429 Retry-After date", attempts: 3, answers: []func(http.ResponseWriter){status(429, "Retry-After", "Fri, 02 Jan 2026 03:04:17 GMT")}, wantCalls: 2,
			wantWaits: []time.Duration{12 * time.Second}},
		{name: "429 Retry-After capped", attempts: 3, answers: []func(http.ResponseWriter){status(429, "Retry-After", "86400")}, wantCalls: 2,
			wantWaits: []time.Duration{DefaultMaxRetryAfter}},
		{name: "429 every time", attempts: 2, answers: []func(http.ResponseWriter){status(429), status(429)}, wantErr: ErrTooManyRequests, wantCalls: 2, nWaits: 1},
		{name: "no retries", attempts: 1, answers: []func(http.ResponseWriter){status(503)}, wantErr: ErrUnexpectedStatus, wantCalls: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, calls := flaky(t, tc.answers...)
			// Fresh connections only: net/http silently resends an idempotent request
			// once when a reused connection hangs up, which would blur the count.
			c, w := testClient(WithRetry(tc.attempts, 100*time.Millisecond), WithTransport(&http.Transport{DisableKeepAlives: true}))
			err := fetch(t, c, srv)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if got := calls.Load(); got != tc.wantCalls {
				t.Errorf("%d blob requests, want %d", got, tc.wantCalls)
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
	srv, calls := flaky(t, status(429, "Retry-After", "3600"), status(200))
	c := New(WithKeychain(authn.NewMultiKeychain()), WithRetry(3, time.Millisecond), WithMaxRetryAfter(time.Hour))
	repo, err := c.Repository(context.Background(), strings.TrimPrefix(srv.URL, "http://")+"/r")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := repo.FetchBlob(ctx, manifest.Descriptor{Digest: digest.FromString("blob")}, nil)
		done <- err
	}()
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("%d requests, want 1 (no retry after cancel)", got)
	}
}

// TestManifestBodyCutShortIsRefetched retries a manifest whose body breaks mid-way.
func TestManifestBodyCutShortIsRefetched(t *testing.T) {
	blobs, err := testdata.Blobs(testdata.HelloWorldCtrExport)
	if err != nil {
		t.Fatal(err)
	}
	const m = digest.Digest("sha256:f54a58bc1aac5ea1a25d796ae155dc228b3f0e11d046ae276b39c4bf2f13d8c4")
	body := blobs[m]
	var gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v2/r/manifests/"+m.String() {
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
	c, w := testClient(WithRetry(3, time.Millisecond))
	res, err := c.Resolve(context.Background(), strings.TrimPrefix(srv.URL, "http://")+"/r@"+m.String())
	if err != nil {
		t.Fatal(err)
	}
	if res.Digest() != m || gets.Load() != 2 || len(w.all()) != 1 {
		t.Errorf("digest %s after %d GETs and waits %v", res.Digest(), gets.Load(), w.all())
	}
}

func TestRetryOnlyIdempotent(t *testing.T) {
	var n atomic.Int32
	rt := &retryTransport{
		inner: roundTripFunc(func(*http.Request) (*http.Response, error) {
			n.Add(1)
			return nil, errors.New("connection reset")
		}),
		attempts: 3, base: time.Millisecond, maxBackoff: time.Millisecond, maxRetryAfter: time.Second,
		sleep: func(context.Context, time.Duration) error { return nil }, now: time.Now,
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
		var body *strings.Reader
		req, _ := http.NewRequest(tc.method, "http://127.0.0.1:1/x", nil)
		if tc.body {
			body = strings.NewReader("data")
			req, _ = http.NewRequest(tc.method, "http://127.0.0.1:1/x", body)
		}
		if _, err := rt.RoundTrip(req); err == nil {
			t.Fatal("no error")
		}
		if n.Load() != tc.want {
			t.Errorf("%s (body %v): %d attempts, want %d", tc.method, tc.body, n.Load(), tc.want)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
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
		got, ok := parseRetryAfter(tc.in, now)
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
	if err := checkRedirect(mk("https://reg.example/"), via); err == nil {
		t.Error("no error after too many redirects")
	}
}

func TestPlainHTTPGuard(t *testing.T) {
	for _, tc := range []struct {
		url   string
		allow bool
		pass  bool
	}{
		{"http://127.0.0.1:5000/v2/", false, true},
		{"http://127.9.8.7:5000/v2/", false, true},
		{"http://localhost:5000/v2/", false, true},
		{"http://reg.localhost/v2/", false, true},
		{"http://[::1]:5000/v2/", false, true},
		{"http://10.0.0.1:5000/v2/", false, false},
		{"http://192.168.1.1/v2/", false, false},
		{"http://registry.example/v2/", false, false},
		{"http://localhost.example/v2/", false, false},
		{"http://registry.example/v2/", true, true},
		{"https://registry.example/v2/", false, true},
	} {
		var called bool
		g := &plainHTTPGuard{allow: tc.allow, inner: roundTripFunc(func(*http.Request) (*http.Response, error) {
			called = true
			return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
		})}
		u, _ := url.Parse(tc.url)
		_, err := g.RoundTrip(&http.Request{Method: "GET", URL: u, Header: http.Header{}})
		if called != tc.pass || (err == nil) != tc.pass {
			t.Errorf("%s (allow %v): passed %v err %v", tc.url, tc.allow, called, err)
		}
		if err != nil && (!errors.Is(err, ErrInsecure) || !strings.Contains(err.Error(), u.Host)) {
			t.Errorf("%s: err %v should wrap ErrInsecure and name the host", tc.url, err)
		}
	}
}

func TestBackoffGrowsAndIsCapped(t *testing.T) {
	rt := &retryTransport{base: 100 * time.Millisecond, maxBackoff: time.Second}
	for attempt, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 5: time.Second, 30: time.Second} {
		for range 20 {
			if d := rt.backoff(attempt); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", attempt, d, want/2, want)
			}
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
		{fmt.Errorf("dial: %w", ErrInsecure), true},
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

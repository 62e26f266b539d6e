package puller_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

// vocabulary is every sentinel of the module.
var vocabulary = []error{pullkit.ErrNotFound, pullkit.ErrUnauthorized, pullkit.ErrDenied, pullkit.ErrTooManyRequests,
	pullkit.ErrDigestMismatch, pullkit.ErrSizeMismatch, pullkit.ErrNoMatch, pullkit.ErrUnsupported, pullkit.ErrInvalid,
	pullkit.ErrTooLarge, pullkit.ErrUnreachable, pullkit.ErrAlreadyExists}

// wantError checks that err wraps sentinel and no other, is a *pullkit.Error naming ref, keeps the
// message rules (oneLine) and mentions every string of says; it returns the message.
func wantError(t *testing.T, err, sentinel error, ref string, says ...string) string {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("err = %v, want %v", err, sentinel)
	}
	for _, other := range vocabulary {
		if other != sentinel && errors.Is(err, other) {
			t.Errorf("err %v wraps %v as well as %v", err, other, sentinel)
		}
	}
	var pe *pullkit.Error
	if !errors.As(err, &pe) || pe.Reference != ref {
		t.Errorf("err %v is not a *pullkit.Error for %s", err, ref)
	}
	msg := oneLine(t, err)
	t.Log(msg)
	for _, s := range append([]string{ref}, says...) {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q does not say %q", msg, s)
		}
	}
	return msg
}

func httpError(t *testing.T, err error) *pullkit.HTTPError {
	t.Helper()
	var he *pullkit.HTTPError
	if !errors.As(err, &he) {
		t.Fatalf("err %v carries no *pullkit.HTTPError", err)
	}
	return he
}

// TestErrNotFound: a missing repository and a missing tag are told apart when the
// registry's codes do (NAME_UNKNOWN, MANIFEST_UNKNOWN); distribution says
// MANIFEST_UNKNOWN for both. Missing blobs and foreign layers say what was missing.
func TestErrNotFound(t *testing.T) {
	t.Run("missing repository and missing tag, with NAME_UNKNOWN", func(t *testing.T) {
		reg := pullkittest.NewRegistry(t, pullkittest.WithNameUnknown())
		seedHello(t, reg, "hello", "v1")
		c := newClient(t)
		for _, tc := range []struct {
			ref, code, says string
		}{
			{reg.Ref("nothere:v1"), "NAME_UNKNOWN", "repository name not known to registry"},
			{reg.Ref("hello:nope"), "MANIFEST_UNKNOWN", `tag "nope"`},
		} {
			_, rerr := c.Resolve(t.Context(), tc.ref)
			_, perr := c.Pull(t.Context(), tc.ref, store.NewMemory())
			for _, err := range []error{rerr, perr} {
				wantError(t, err, pullkit.ErrNotFound, tc.ref, tc.code, tc.says)
				if he := httpError(t, err); !slices.Equal(he.Codes, []string{tc.code}) || he.StatusCode != http.StatusNotFound {
					t.Errorf("%s: HTTPError %+v, want 404 %s", tc.ref, he, tc.code)
				}
			}
		}
	})
	t.Run("distribution says MANIFEST_UNKNOWN for both", func(t *testing.T) {
		reg := regtest.Start(t)
		reg.PushRaw(t, "hello:v1", regtest.HelloWorldAMD64(t))
		for _, ref := range []string{reg.Ref("nothere:v1"), reg.Ref("hello:nope")} {
			_, err := newClient(t).Resolve(t.Context(), ref)
			wantError(t, err, pullkit.ErrNotFound, ref, "MANIFEST_UNKNOWN")
		}
	})
	t.Run("missing blob", func(t *testing.T) {
		reg := pullkittest.NewRegistry(t, pullkittest.WithFaults(&pullkittest.Rule{
			Match: pullkittest.Match{Route: pullkittest.RouteBlob, Ref: helloLayer.String()}, Fault: pullkittest.ErrorResponse(pullkittest.CodeBlobUnknown)}))
		seedHello(t, reg, "hello", "v1")
		ref := reg.Ref("hello:v1")
		_, err := newClient(t).Pull(t.Context(), ref, store.NewMemory())
		wantError(t, err, pullkit.ErrNotFound, ref, "BLOB_UNKNOWN", helloLayer.String())
	})
	t.Run("foreign layer: the registry lacks it and its URLs fail", func(t *testing.T) {
		page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, "<!DOCTYPE html><html><body><h1>Not Found</h1><p>secret internal page</p></body></html>")
		}))
		t.Cleanup(page.Close)
		reg := pullkittest.NewRegistry(t)
		layer := foreignImage(t, reg, "win", "v1", page.URL+"/layer.tar.gz", "ftp://nowhere/x")
		ref := reg.Ref("win:v1")
		_, err := newClient(t).Pull(t.Context(), ref, store.NewMemory())
		msg := wantError(t, err, pullkit.ErrNotFound, ref, layer.Digest.String(), "the registry does not have it", page.URL+"/layer.tar.gz (404)", "ftp://nowhere/x (not an http(s) URL)")
		if strings.Contains(msg, "secret") || strings.Contains(msg, "Not Found</") {
			t.Errorf("error %q quotes the page a URL answered", msg)
		}
	})
}

// TestErrUnauthorized: no credentials and wrong credentials are told apart
// (HTTPError.CredentialsSent and the message), with the registry's own message.
func TestErrUnauthorized(t *testing.T) {
	t.Run("basic", func(t *testing.T) {
		reg := pullkittest.NewRegistry(t, pullkittest.WithBasicAuth("alice", "secret"))
		seedHello(t, reg, "hello", "v1")
		ref := reg.Ref("hello:v1")
		for _, tc := range []struct {
			name     string
			opts     []puller.Option
			sent     bool
			says     []string
			registry string
		}{
			{"no credentials", nil, false, []string{"no credentials were sent"}, "authentication required"},
			{"wrong credentials", []puller.Option{puller.WithKeychain(staticKeychain{"alice", "wrong"})}, true, []string{"the credentials sent were refused"}, "invalid username or password"},
		} {
			_, err := newClient(t, tc.opts...).Pull(t.Context(), ref, store.NewMemory())
			wantError(t, err, pullkit.ErrUnauthorized, ref, append(tc.says, tc.registry, "UNAUTHORIZED")...)
			if he := httpError(t, err); he.CredentialsSent != tc.sent || he.Message != tc.registry || he.StatusCode != http.StatusUnauthorized {
				t.Errorf("%s: HTTPError %+v, want CredentialsSent %v and the registry's message %q", tc.name, he, tc.sent, tc.registry)
			}
		}
	})
	t.Run("token", func(t *testing.T) {
		reg := pullkittest.NewRegistry(t, pullkittest.WithTokenAuth(pullkittest.TokenAuth{User: "bob", Password: "pw"}))
		seedHello(t, reg, "hello", "v1")
		ref := reg.Ref("hello:v1")
		for _, tc := range []struct {
			name string
			opts []puller.Option
			sent bool
		}{
			{"no credentials", nil, false},
			{"wrong credentials", []puller.Option{puller.WithKeychain(staticKeychain{"bob", "wrong"})}, true},
		} {
			_, err := newClient(t, tc.opts...).Resolve(t.Context(), ref)
			msg := wantError(t, err, pullkit.ErrUnauthorized, ref, "token")
			if he := httpError(t, err); he.CredentialsSent != tc.sent {
				t.Errorf("%s: CredentialsSent %v, want %v (%s)", tc.name, he.CredentialsSent, tc.sent, msg)
			}
		}
	})
}

// TestErrDenied: a registry's 403, and pullkit's own refusals (plain HTTP to a host
// that is not loopback, a registry elsewhere sending the puller to loopback); stub
// transports stand in for hosts that are not loopback, so no request leaves the machine.
func TestErrDenied(t *testing.T) {
	t.Run("403", func(t *testing.T) {
		reg := pullkittest.NewRegistry(t, pullkittest.WithFaults(&pullkittest.Rule{
			Match: pullkittest.Match{Route: pullkittest.RouteManifest}, Fault: pullkittest.ErrorResponse(pullkittest.CodeDenied)}))
		ref := reg.Ref("hello:v1")
		_, err := newClient(t).Pull(t.Context(), ref, store.NewMemory())
		wantError(t, err, pullkit.ErrDenied, ref, "403", "DENIED", "requested access to the resource is denied")
	})
	for _, tc := range []struct {
		name, location, says string
	}{
		{"plain HTTP to a host that is not loopback", "http://cdn.example/bucket/manifest", "plain HTTP to cdn.example"},
		{"a registry elsewhere sending the puller to loopback", "https://127.0.0.1:1/steal", "loopback or link-local"},
		{"a registry elsewhere sending the puller to link-local", "https://169.254.169.254/latest/meta-data", "loopback or link-local"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stub := &stubTransport{answer: func(r *http.Request) *http.Response {
				if r.URL.Host != "registry.example" {
					return nil
				}
				return &http.Response{StatusCode: http.StatusTemporaryRedirect, Header: http.Header{"Location": {tc.location}}, Body: http.NoBody}
			}}
			ref := "registry.example/app:v1"
			_, err := newClient(t, puller.WithTransport(stub)).Pull(t.Context(), ref, store.NewMemory())
			wantError(t, err, pullkit.ErrDenied, ref, tc.says)
			for _, u := range stub.urls() {
				if !strings.HasPrefix(u, "https://registry.example/") {
					t.Errorf("a request went to %s", u)
				}
			}
		})
	}
}

// TestErrTooManyRequests: a 429 asking for longer than the policy allows fails at once,
// carrying the wait asked for; one that persists through the policy fails with it too.
func TestErrTooManyRequests(t *testing.T) {
	for _, tc := range []struct {
		name, retryAfter string
		wantRequests     int
		wantWait         time.Duration
	}{
		{"Retry-After beyond the policy", "3600", 1, time.Hour},
		{"429 through the policy", "0", fastRetry().Attempts, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := pullkittest.NewRegistry(t, pullkittest.WithFaults(&pullkittest.Rule{
				Match: pullkittest.Match{Route: pullkittest.RouteManifest}, Fault: pullkittest.TooManyRequests(tc.retryAfter)}))
			ref := reg.Ref("hello:v1")
			_, err := newClient(t).Resolve(t.Context(), ref)
			says := []string{"429"} // a HEAD's answer has no body, so no code
			if tc.wantWait > 0 {
				says = append(says, "Retry-After 1h0m0s")
			}
			wantError(t, err, pullkit.ErrTooManyRequests, ref, says...)
			if he := httpError(t, err); he.RetryAfter != tc.wantWait {
				t.Errorf("RetryAfter %v, want %v", he.RetryAfter, tc.wantWait)
			}
			if n := reg.Count(pullkittest.Match{Route: pullkittest.RouteManifest}); n != tc.wantRequests {
				t.Errorf("%d requests, want %d", n, tc.wantRequests)
			}
		})
	}
}

// TestErrDigestAndSizeMismatch: a layer that arrives with other bytes, or another size,
// fails the pull after the retries, naming the layer once, and nothing is named.
func TestErrDigestAndSizeMismatch(t *testing.T) {
	for _, tc := range []struct {
		name     string
		fault    pullkittest.Fault
		sentinel error
		says     string
	}{
		{"other bytes", pullkittest.CorruptByte(), pullkit.ErrDigestMismatch, "digest mismatch"},
		{"more bytes", pullkittest.ExtraBytes(7), pullkit.ErrSizeMismatch, "size mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := pullkittest.NewRegistry(t, pullkittest.WithFaults(&pullkittest.Rule{
				Match: pullkittest.Match{Route: pullkittest.RouteBlob, Ref: helloLayer.String()}, Fault: tc.fault}))
			seedHello(t, reg, "hello", "v1")
			ref := reg.Ref("hello:v1")
			st := store.NewMemory()
			_, err := newClient(t).Pull(t.Context(), ref, st)
			wantError(t, err, tc.sentinel, ref, helloLayer.String(), tc.says)
			if imgs, _ := st.Images(t.Context()); len(imgs) != 0 || store.Has(t.Context(), st, helloLayer) {
				t.Errorf("named %v (layer stored: %v)", imgs, store.Has(t.Context(), st, helloLayer))
			}
		})
	}
	t.Run("a manifest by digest", func(t *testing.T) {
		reg := pullkittest.NewRegistry(t, pullkittest.WithFaults(&pullkittest.Rule{
			Match: pullkittest.Match{Route: pullkittest.RouteManifest}, Fault: pullkittest.CorruptByte()}))
		seedHello(t, reg, "hello", "v1")
		ref := reg.Ref("hello@" + helloManifest.String())
		_, err := newClient(t).Inspect(t.Context(), ref)
		wantError(t, err, pullkit.ErrDigestMismatch, ref, "manifest digest mismatch")
	})
}

// TestErrNoMatch: no entry of an index for the platform asked for; the error lists the
// platforms offered.
func TestErrNoMatch(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	reg.PushIndex("multi", "v1", pullkittest.OCIIndex, pullkittest.Attestations(), pullkittest.Layers(1, 64))
	ref := reg.Ref("multi:v1")
	_, err := newClient(t).Resolve(t.Context(), ref, puller.WithPlatform(platforms.Platform{OS: "windows", Architecture: "amd64"}))
	wantError(t, err, pullkit.ErrNoMatch, ref, "windows/amd64", "linux/amd64", "linux/arm64/v8")
	var nm *platforms.NoMatchError
	if !errors.As(err, &nm) || len(nm.Offered) < 2 {
		t.Errorf("err %v: want a *platforms.NoMatchError with the platforms offered", err)
	}
}

// TestErrUnsupported: an artifact pulled as an image, and a blob range a server will
// not serve.
func TestErrUnsupported(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	img := reg.PushImage("app", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
	sig := reg.PushArtifact("app", img.Descriptor(), sigType)
	_, err := newClient(t).Pull(t.Context(), sig.Ref(), store.NewMemory())
	wantError(t, err, pullkit.ErrUnsupported, sig.Ref(), "artifact "+sigType)
	_, err = newClient(t).Pull(t.Context(), img.Ref(), store.NewMemory(), puller.WithAllPlatforms(), puller.WithFormat(puller.FormatSchema1))
	if !errors.Is(err, pullkit.ErrUnsupported) {
		t.Errorf("every platform in schema 1: err = %v, want ErrUnsupported", err)
	}
}

// TestErrInvalid: references, documents and answers that do not parse, and options
// given values they cannot use.
func TestErrInvalid(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	reg.PutManifest("garbage", "v1", "application/json", []byte("not json at all"))
	seedHello(t, reg, "hello", "v1")
	reg.Inject(&pullkittest.Rule{Match: pullkittest.Match{Route: pullkittest.RouteManifest, Repo: "hello", Method: http.MethodGet},
		Fault: withHeader("Docker-Content-Digest", "sha256:nothex")})
	for _, tc := range []struct {
		ref, says string
	}{
		{"Upper/Case:v1", "invalid reference"},
		{reg.Ref("hello@sha256:1234"), "invalid reference"},
		{reg.Ref("garbage:v1"), "not a JSON object"},
		{reg.Ref("hello:v1"), "Docker-Content-Digest sha256:nothex is not a digest"},
	} {
		_, err := newClient(t).Pull(t.Context(), tc.ref, store.NewMemory())
		wantError(t, err, pullkit.ErrInvalid, tc.ref, tc.says)
	}
	for name, opt := range map[string]puller.Option{
		"WithMaxManifestSize(-1)":  puller.WithMaxManifestSize(-1),
		"WithRetry(0 attempts)":    puller.WithRetry(pullkit.RetryPolicy{}),
		"WithTimeouts(zero)":       puller.WithTimeouts(puller.Timeouts{}),
		"WithUserAgent(two lines)": puller.WithUserAgent("a\nb"),
		"WithKeychain(nil)":        puller.WithKeychain(nil),
		"WithTransport(nil)":       puller.WithTransport(nil),
		"nil":                      nil,
	} {
		if _, err := puller.New(opt); !errors.Is(err, pullkit.ErrInvalid) {
			t.Errorf("New(%s): err = %v, want ErrInvalid", name, err)
		}
	}
	for name, opt := range map[string]puller.PullOption{
		"WithJobs(0)":           puller.WithJobs(0),
		"WithFormat(9)":         puller.WithFormat(9),
		"WithPlatform(no arch)": puller.WithPlatform(platforms.Platform{OS: "linux"}),
		"WithMatcher(nil)":      puller.WithMatcher(nil),
		"nil":                   nil,
	} {
		if _, err := newClient(t).Pull(t.Context(), reg.Ref("hello:v1"), store.NewMemory(), opt); !errors.Is(err, pullkit.ErrInvalid) {
			t.Errorf("Pull with %s: err = %v, want ErrInvalid", name, err)
		}
	}
}

// TestErrTooLarge: a manifest over the cap, announced or not.
func TestErrTooLarge(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	seedHello(t, reg, "hello", "v1")
	ref := reg.Ref("hello:v1")
	_, err := newClient(t, puller.WithMaxManifestSize(100)).Pull(t.Context(), ref, store.NewMemory())
	wantError(t, err, pullkit.ErrTooLarge, ref, "525 bytes, over the 100-byte limit")
	var te *pullkit.TooLargeError
	if !errors.As(err, &te) || te.Limit != 100 || te.Size != 525 {
		t.Errorf("err %v: want a *pullkit.TooLargeError of 525 over 100", err)
	}
}

// TestErrUnreachable: nothing listening, and a registry that answers 503 through the
// retry policy.
func TestErrUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	ref := closed + "/app:v1"
	_, err = newClient(t).Pull(t.Context(), ref, store.NewMemory())
	wantError(t, err, pullkit.ErrUnreachable, ref, "connection refused")

	reg := pullkittest.NewRegistry(t, pullkittest.WithFaults(&pullkittest.Rule{
		Match: pullkittest.Match{Route: pullkittest.RouteManifest}, Fault: pullkittest.ErrorResponse(pullkittest.CodeUnavailable)}))
	ref = reg.Ref("hello:v1")
	_, err = newClient(t).Pull(t.Context(), ref, store.NewMemory())
	wantError(t, err, pullkit.ErrUnreachable, ref, "503", "UNAVAILABLE", "service unavailable")
	if n := reg.Count(pullkittest.Match{Route: pullkittest.RouteManifest}); n != fastRetry().Attempts {
		t.Errorf("%d requests, want %d (the policy's attempts)", n, fastRetry().Attempts)
	}

	t.Run("a body that stalls", func(t *testing.T) {
		reg := pullkittest.NewRegistry(t, pullkittest.WithFaults(&pullkittest.Rule{
			Match: pullkittest.Match{Route: pullkittest.RouteBlob, Ref: helloConfig.String()}, Fault: pullkittest.StallAfter(10, 0)}))
		seedHello(t, reg, "hello", "v1")
		ref := reg.Ref("hello:v1")
		timeouts := puller.DefaultTimeouts()
		timeouts.Idle = time.Second
		_, err := newClient(t, puller.WithTimeouts(timeouts)).Pull(t.Context(), ref, store.NewMemory())
		wantError(t, err, pullkit.ErrUnreachable, ref, "stalled", "config")
		var se *puller.StallError
		if !errors.As(err, &se) {
			t.Errorf("err %v: want a *puller.StallError", err)
		}
	})
}

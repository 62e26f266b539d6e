package puller

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-containerregistry/pkg/authn"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
)

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "120", "-1", "Fri, 02 Jan 2026 03:05:05 GMT", "Friday, 02-Jan-26 03:04:15 GMT", "Fri Jan  2 03:04:15 2026", "1e9", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := parseRetryAfter(s, testNow)
		if !ok && d != 0 {
			t.Fatalf("parseRetryAfter(%q) = %v, false", s, d)
		}
		if d < 0 || d > 24*60*60*1e9 {
			t.Fatalf("parseRetryAfter(%q) = %v, outside [0, a day]", s, d)
		}
	})
}

func FuzzParseErrorBody(f *testing.F) {
	for _, s := range []string{
		`{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}`,
		`{"errors":[]}`, `{"errors":[{"code":"A\nB","message":"line1\nline2"}]}`, "<html>\n<b>502</b></html>", "\xff\xfe", "",
		"plain text error", `{"errors":[{"code":"\u001b[31mRED","message":"\u202eevil"}]}`,
	} {
		f.Add([]byte(s), "application/json")
		f.Add([]byte(s), "text/html; charset=utf-8")
	}
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		codes, msg := parseErrorBody(body, contentType)
		for _, s := range append(codes, msg) {
			if strings.ContainsAny(s, "\r\n\x1b") || !utf8.ValidString(s) {
				t.Fatalf("parseErrorBody(%q) gave %q: not one printable line", body, s)
			}
		}
		// At most 200 runes of the body, each escaped in at most 10 characters, and an
		// ellipsis.
		if len(msg) > 200*10+len("…") {
			t.Fatalf("message of %d bytes", len(msg))
		}
		// A registry's error document is read whatever its label; anything else labelled
		// HTML is not quoted.
		var doc struct{ Errors []json.RawMessage }
		isDoc := json.Unmarshal(body, &doc) == nil && len(doc.Errors) > 0
		if strings.Contains(strings.ToLower(contentType), "html") && !isDoc && msg != "" {
			t.Fatalf("an HTML answer was quoted: %q", msg)
		}
	})
}

// FuzzParseContentRange: whatever a server sends, a range accepted is well-formed, and
// every well-formed range is read back as written.
func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-9/10", "bytes 5-9/*", "bytes */10", "bytes 9-5/10", "bytes 0-10/10", "bytes -1-5/10",
		"bytes 0-9/10 ", "BYTES 1-2/3", "bytes  1-2/3", "bytes 1 -2/3", "bytes +1-2/3", "bytes 1-2/99999999999999999999", ""} {
		f.Add(s)
	}
	f.Add(fmt.Sprintf("bytes %d-%d/%d", int64(1)<<62, int64(1)<<62+1, int64(math.MaxInt64)))
	f.Fuzz(func(t *testing.T, h string) {
		start, end, total, err := parseContentRange(h)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		if start < 0 || end < start || (total != -1 && (total <= end || total < 0)) {
			t.Fatalf("parseContentRange(%q) = %d, %d, %d", h, start, end, total)
		}
		again := fmt.Sprintf("bytes %d-%d/%d", start, end, total)
		if total == -1 {
			again = fmt.Sprintf("bytes %d-%d/*", start, end)
		}
		s2, e2, t2, err := parseContentRange(again)
		if err != nil || s2 != start || e2 != end || t2 != total {
			t.Fatalf("%q parsed as %q, which reads back as %d, %d, %d, %v", h, again, s2, e2, t2, err)
		}
	})
}

// FuzzParseChallenge: any WWW-Authenticate values give a challenge the client can
// answer, or none; quoted parameters written by a registry are read back exactly.
func FuzzParseChallenge(f *testing.F) {
	for _, s := range []string{
		`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`,
		`Basic realm="Registry Realm"`, `bearer realm=https://x/token, service=reg`, `Bearer realm="a\"b",error="insufficient_scope"`,
		`Bearer`, `Bearer realm=""`, `Negotiate`, `Bearer ,,,realm="x"`, `Bearer realm="unterminated`, `Bearer =x`, "",
	} {
		f.Add(s, "", "x", "y")
	}
	f.Fuzz(func(t *testing.T, value, other, realm, service string) {
		ch, ok := parseChallenge([]string{value, other})
		if ok {
			switch ch.scheme {
			case "basic":
			case "bearer":
				if ch.realm == "" {
					t.Fatalf("a bearer challenge without a realm from %q", value)
				}
			default:
				t.Fatalf("scheme %q from %q", ch.scheme, value)
			}
		}
		for k := range parseParams(value) {
			if k != strings.ToLower(k) {
				t.Fatalf("parameter name %q not lowercased", k)
			}
		}
		// A challenge as a registry writes it (Go's %q quoting of printable text).
		if realm == "" || !utf8.ValidString(realm+service) || strings.ContainsFunc(realm+service, func(r rune) bool { return r < 0x20 || r > 0x7e }) {
			return
		}
		written := fmt.Sprintf("Bearer realm=%q,service=%q,scope=%q", realm, service, "repository:a/b:pull")
		ch, ok = parseChallenge([]string{written})
		if !ok || ch.scheme != "bearer" || ch.realm != realm || ch.service != service || ch.scope != "repository:a/b:pull" {
			t.Fatalf("%q read as %+v, %v", written, ch, ok)
		}
	})
}

// servedManifest is a transport that plays a registry serving one document for every
// manifest request, with the headers the fuzzer chose; no network is used.
type servedManifest struct {
	body         []byte
	contentType  string
	digestHeader string
	head         bool
}

func (s *servedManifest) RoundTrip(r *http.Request) (*http.Response, error) {
	resp := &http.Response{Request: r, Header: http.Header{}, StatusCode: http.StatusOK, Body: http.NoBody}
	switch {
	case strings.Contains(r.URL.Path, "/manifests/"):
		if r.Method == http.MethodHead && !s.head {
			resp.StatusCode = http.StatusMethodNotAllowed
			break
		}
		resp.Header.Set("Content-Type", s.contentType)
		if s.digestHeader != "" {
			resp.Header.Set("Docker-Content-Digest", s.digestHeader)
		}
		resp.ContentLength = int64(len(s.body))
		if r.Method == http.MethodGet {
			resp.Body = io.NopCloser(bytes.NewReader(s.body))
		}
	default:
		resp.StatusCode = http.StatusNotFound
	}
	return resp, nil
}

// FuzzResolve feeds arbitrary manifests and headers through the whole resolution: it
// must never panic, every error must be one line naming the reference, and a success
// must name an image manifest by a valid digest.
func FuzzResolve(f *testing.F) {
	seeds, _ := filepath.Glob("../testdata/*/*.json")
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "", "", false)
		f.Add(b, mediaTypeFor(p), digest.FromBytes(b).String(), true)
		f.Add(b, "application/json", digest.FromBytes(b).String(), true)
	}
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0}]}`),
		manifest.MediaTypeOCIIndex, "sha256:zz", true)
	f.Fuzz(func(t *testing.T, body []byte, contentType, digestHeader string, head bool) {
		c, err := New(WithKeychain(authn.NewMultiKeychain()), WithRetry(pullkit.RetryPolicy{Attempts: 1}), WithMaxManifestSize(1<<16),
			WithTransport(&servedManifest{body: body, contentType: contentType, digestHeader: digestHeader, head: head}))
		if err != nil {
			t.Fatal(err)
		}
		const ref = "127.0.0.1:5000/fuzz:tag"
		res, err := c.Resolve(context.Background(), ref)
		if err != nil {
			if msg := err.Error(); strings.ContainsAny(msg, "\r\n") || !strings.Contains(msg, ref) {
				t.Fatalf("error %q: not one line naming %s", msg, ref)
			}
			return
		}
		if !isImageType(res.Manifest.MediaType) {
			t.Fatalf("resolved to a %q, not an image manifest: %+v", res.Manifest.MediaType, res)
		}
		if res.Manifest.Digest.Validate() != nil || res.Descriptor.Digest.Validate() != nil {
			t.Fatalf("resolved to invalid digests: %+v", res)
		}
		if res.Descriptor.Digest == res.Manifest.Digest && res.Descriptor.MediaType != res.Manifest.MediaType {
			t.Fatalf("one digest, two media types: %+v", res)
		}
	})
}

func mediaTypeFor(path string) string {
	switch filepath.Base(filepath.Dir(path)) {
	case "schema1-signed", "schema1-invalid":
		return manifest.MediaTypeDockerSchema1Signed
	case "schema1-unsigned":
		return manifest.MediaTypeDockerSchema1
	case "schema2":
		return manifest.MediaTypeDockerSchema2
	case "manifest-list":
		return manifest.MediaTypeDockerManifestList
	case "oci-index":
		return manifest.MediaTypeOCIIndex
	case "oci-manifest":
		return manifest.MediaTypeOCIManifest
	}
	return "application/json"
}

// FuzzNextPage reads a registry's Link header (tags list pagination): no panic, and a
// next page is never on another host or scheme than the page that named it.
func FuzzNextPage(f *testing.F) {
	for _, s := range []string{
		`</v2/app/tags/list?n=2&last=b>; rel="next"`,
		`<https://r.example/v2/app/tags/list?last=c>; rel=next`,
		`</a>; rel="prev", </b>; rel="next"`,
		`<http://other.example/x>; rel="next"`,
		`<//other.example/x>; rel="next"`,
		`<%zz>; rel="next"`, `<>; rel=next`, `garbage`, `;;;,,,<`,
	} {
		f.Add(s)
	}
	base, _ := url.Parse("https://r.example/v2/app/tags/list?n=2")
	f.Fuzz(func(t *testing.T, link string) {
		next, err := nextPage(base, link)
		if err != nil || next == "" {
			return
		}
		u, perr := url.Parse(next)
		if perr != nil || u.Host != base.Host || u.Scheme != base.Scheme {
			t.Fatalf("nextPage(%q) = %q: not on %s", link, next, base.Host)
		}
	})
}

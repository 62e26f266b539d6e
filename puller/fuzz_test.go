package puller

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-containerregistry/pkg/authn"
	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/manifest"
)

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "120", "-1", "Fri, 02 Jan 2026 03:05:05 GMT", "Friday, 02-Jan-26 03:04:15 GMT", "Fri Jan  2 03:04:15 2026", "1e9", "99999999999999999999"} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := parseRetryAfter(s, now)
		if !ok && d != 0 {
			t.Fatalf("parseRetryAfter(%q) = %v, false", s, d)
		}
		if d < 0 {
			t.Fatalf("parseRetryAfter(%q) = %v < 0", s, d)
		}
	})
}

func FuzzParseErrorBody(f *testing.F) {
	for _, s := range []string{
		`{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}`,
		`{"errors":[]}`, `{"errors":[{"code":"A\nB","message":"line1\nline2"}]}`, "<html>\n<b>502</b></html>", "\xff\xfe", "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		codes, msg := parseErrorBody(body)
		for _, s := range append(codes, msg) {
			if strings.ContainsAny(s, "\r\n") || !utf8.ValidString(s) {
				t.Fatalf("parseErrorBody(%q) gave %q: not one printable line", body, s)
			}
		}
		if utf8.RuneCountInString(msg) > 201 {
			t.Fatalf("message of %d runes", utf8.RuneCountInString(msg))
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
	case r.URL.Path == "/v2/":
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
// must be the document served.
func FuzzResolve(f *testing.F) {
	seeds, _ := filepath.Glob("../testdata/*/*.json")
	for _, p := range seeds {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "", "", false)
		f.Add(b, mediaTypeFor(p), digest.FromBytes(b).String(), true)
	}
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0}]}`),
		manifest.MediaTypeOCIIndex, "sha256:zz", true)
	f.Fuzz(func(t *testing.T, body []byte, contentType, digestHeader string, head bool) {
		c := New(WithKeychain(authn.NewMultiKeychain()), WithRetry(1, 0), WithMaxManifestSize(1<<16),
			WithTransport(&servedManifest{body: body, contentType: contentType, digestHeader: digestHeader, head: head}))
		const ref = "127.0.0.1:5000/fuzz:tag"
		res, err := c.Resolve(context.Background(), ref)
		if err != nil {
			if msg := err.Error(); strings.ContainsAny(msg, "\r\n") || !strings.Contains(msg, ref) {
				t.Fatalf("error %q: not one line naming %s", msg, ref)
			}
			return
		}
		if res.Top.Kind == manifest.KindImage && !bytes.Equal(res.Top.Raw, body) {
			t.Fatalf("resolved a document that was not served")
		}
		if res.Chosen == nil || res.Chosen.Kind != manifest.KindImage {
			t.Fatalf("resolved to a non-image %+v", res.Chosen)
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

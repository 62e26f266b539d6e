package puller

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/pullkittest"
)

// blobsOf returns the blob fetcher a pull of repo on reg would use.
func blobsOf(t *testing.T, reg *pullkittest.Registry, repo string) *blobSource {
	t.Helper()
	c, err := New(WithKeychain(authn.NewMultiKeychain()), WithRetry(pullkit.RetryPolicy{Attempts: 1}))
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.Ref(repo + ":latest")
	r, err := c.parse(ref)
	if err != nil {
		t.Fatal(err)
	}
	eps, err := c.endpoints(ref, r, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &blobSource{eps: eps}
}

// ignoreRange serves the request as if it had no Range header.
type ignoreRange struct{}

func (ignoreRange) Name() string { return "ignore range" }

func (ignoreRange) Apply(w http.ResponseWriter, r *http.Request, next http.Handler) {
	r = r.Clone(r.Context())
	r.Header.Del("Range")
	next.ServeHTTP(w, r)
}

// refuseOpenRange answers 416 to an open-ended range, as go-containerregistry's registry
// does, and serves the rest.
type refuseOpenRange struct{}

func (refuseOpenRange) Name() string { return "refuse open range" }

func (refuseOpenRange) Apply(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if strings.HasSuffix(r.Header.Get("Range"), "-") {
		w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		return
	}
	next.ServeHTTP(w, r)
}

// TestFetchBlobRanges covers the Range requests the transfer asks for and how every
// answer a server may give them is read.
func TestFetchBlobRanges(t *testing.T) {
	blob := []byte("0123456789abcdef")
	d := digest.FromBytes(blob)
	desc := manifest.Descriptor{Digest: d, Size: int64(len(blob))}
	contentRange := func(v string) pullkittest.Fault {
		return pullkittest.Rewrite("Content-Range "+v, func(b []byte, h http.Header) []byte { h.Set("Content-Range", v); return b })
	}
	for _, tc := range []struct {
		name           string
		fault          pullkittest.Fault
		offset, length int64
		want           string
		wantRanges     []string // the Range of each request, in order
		whole          bool     // the body is the whole blob, a layers.Served from 0
	}{
		{"whole", nil, 0, -1, string(blob), []string{""}, false},
		{"bounded range", nil, 5, 5, "56789", []string{"bytes=5-9"}, false},
		{"open range", nil, 10, -1, "abcdef", []string{"bytes=10-"}, false},
		{"range to the end, bounded", nil, 10, 6, "abcdef", []string{"bytes=10-15"}, false},
		{"server ignores an open range: its whole blob is the fetch", ignoreRange{}, 10, -1, string(blob), []string{"bytes=10-"}, true},
		{"server ignores a bounded range: its whole blob is the fetch", ignoreRange{}, 5, 5, string(blob), []string{"bytes=5-9"}, true},
		{"open range refused: closed at the known size", refuseOpenRange{}, 10, -1, "abcdef", []string{"bytes=10-", "bytes=10-15"}, false},
		{"another range than asked: the whole blob", contentRange("bytes 11-15/16"), 10, -1, string(blob), []string{"bytes=10-", ""}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := pullkittest.NewRegistry(t)
			reg.PutBlob("hello", blob)
			if tc.fault != nil {
				reg.Inject(&pullkittest.Rule{Match: pullkittest.Match{Route: pullkittest.RouteBlob}, Times: 1, Fault: tc.fault})
			}
			rc, err := blobsOf(t, reg, "hello").Fetch(t.Context(), desc, tc.offset, tc.length)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || string(got) != tc.want {
				t.Fatalf("Fetch(%d, %d) = %q, %v; want %q", tc.offset, tc.length, got, err, tc.want)
			}
			s, served := rc.(layers.Served)
			if served != tc.whole || (served && s.ServedFrom() != 0) {
				t.Errorf("body served as the whole blob: %v, want %v", served, tc.whole)
			}
			var ranges []string
			for _, r := range reg.Requests() {
				ranges = append(ranges, r.Range)
			}
			if strings.Join(ranges, "|") != strings.Join(tc.wantRanges, "|") {
				t.Errorf("requests with Range %q, want %q", ranges, tc.wantRanges)
			}
		})
	}
	for _, tc := range []struct {
		name           string
		fault          pullkittest.Fault
		desc           manifest.Descriptor
		offset, length int64
		want           error
		status         int
	}{
		{"missing", nil, manifest.Descriptor{Digest: digest.FromString("missing"), Size: 3}, 0, -1, pullkit.ErrNotFound, 404},
		{"range past the end", nil, desc, 100, -1, pullkit.ErrInvalid, 416},
		{"bad digest", nil, manifest.Descriptor{Digest: "sha256:short", Size: 3}, 0, -1, pullkit.ErrInvalid, 400},
		{"whole blob of another size", pullkittest.ExtraBytes(3), desc, 0, -1, pullkit.ErrSizeMismatch, 0},
		{"Content-Range of another size", contentRange("bytes 10-15/17"), desc, 10, -1, pullkit.ErrSizeMismatch, 0},
		{"a partial answer to a request for the whole", pullkittest.Status(http.StatusPartialContent, http.Header{"Content-Range": {"bytes 0-3/16"}}, "0123"), desc, 0, -1, pullkit.ErrInvalid, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := pullkittest.NewRegistry(t)
			reg.PutBlob("hello", blob)
			if tc.fault != nil {
				reg.Inject(&pullkittest.Rule{Match: pullkittest.Match{Route: pullkittest.RouteBlob}, Fault: tc.fault})
			}
			rc, err := blobsOf(t, reg, "hello").Fetch(t.Context(), tc.desc, tc.offset, tc.length)
			if err == nil {
				rc.Close()
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Fetch(%s, %d, %d) err = %v, want %v", tc.desc.Digest, tc.offset, tc.length, err, tc.want)
			}
			var he *pullkit.HTTPError
			if tc.status != 0 && (!errors.As(err, &he) || he.StatusCode != tc.status) {
				t.Errorf("err = %v, want an *HTTPError %d", err, tc.status)
			}
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

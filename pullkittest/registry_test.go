package pullkittest

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/manifest"
)

func TestPing(t *testing.T) {
	r := NewRegistry(t)
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		resp, body := get(t, method, r.URL()+"/v2/")
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
			t.Errorf("%s /v2/: %d, API version %q", method, resp.StatusCode, resp.Header.Get("Docker-Distribution-API-Version"))
		}
		want := "{}"
		if method == http.MethodHead {
			want = ""
		}
		if string(body) != want || resp.Header.Get("Content-Length") != "2" {
			t.Errorf("%s /v2/: body %q, Content-Length %q", method, body, resp.Header.Get("Content-Length"))
		}
	}
}

// seeded is a registry with one image or index of each format.
type seeded struct {
	r                *Registry
	s2, oci, s1, s1u *Image
	list, index      *Index
}

func seed(t *testing.T, opts ...Option) *seeded {
	r := NewRegistry(t, opts...)
	return &seeded{
		r:     r,
		s2:    r.PushImage("fmt/schema2", "latest", Schema2),
		oci:   r.PushImage("fmt/oci", "latest", OCI),
		s1:    r.PushImage("fmt/schema1", "latest", Schema1),
		s1u:   r.PushImage("fmt/schema1u", "latest", Schema1Unsigned),
		list:  r.PushIndex("fmt/list", "latest", ManifestList),
		index: r.PushIndex("fmt/index", "latest", OCIIndex, Attestations()),
	}
}

const (
	acceptSchema2 = "Accept: " + manifest.MediaTypeDockerSchema2
	acceptList    = "Accept: " + manifest.MediaTypeDockerManifestList
	acceptOCI     = "Accept: " + manifest.MediaTypeOCIManifest
	acceptSchema1 = "Accept: " + manifest.MediaTypeDockerSchema1Signed
)

func TestManifestNegotiation(t *testing.T) {
	s := seed(t)
	type want struct {
		status    int
		mediaType string
		digest    digest.Digest
		code      string
		message   string
	}
	unknownOCI := want{status: 404, code: "MANIFEST_UNKNOWN", message: "OCI manifest found, but accept header does not support OCI manifests"}
	// Distribution 3 serves an OCI index whatever Accept says (2.8 does not: see
	// TestIndexNegotiation28).
	servedIndex := want{200, manifest.MediaTypeOCIIndex, s.index.Digest, "", ""}
	for _, tc := range []struct {
		name   string
		path   string
		accept []string
		want   want
	}{
		{"schema2 all", "fmt/schema2/manifests/latest", []string{acceptAll}, want{200, manifest.MediaTypeDockerSchema2, s.s2.Digest, "", ""}},
		{"schema2 no accept", "fmt/schema2/manifests/latest", nil, want{200, manifest.MediaTypeDockerSchema2, s.s2.Digest, "", ""}},
		{"oci all", "fmt/oci/manifests/latest", []string{acceptAll}, want{200, manifest.MediaTypeOCIManifest, s.oci.Digest, "", ""}},
		{"oci docker only", "fmt/oci/manifests/latest", []string{acceptSchema2, acceptList}, unknownOCI},
		{"oci by digest docker only", "fmt/oci/manifests/" + s.oci.Digest.String(), []string{acceptSchema2}, unknownOCI},
		{"oci accept with q", "fmt/oci/manifests/latest", []string{"Accept: " + manifest.MediaTypeOCIManifest + ";q=0.5"}, want{200, manifest.MediaTypeOCIManifest, s.oci.Digest, "", ""}},
		{"oci accept in second header", "fmt/oci/manifests/latest", []string{acceptSchema2, acceptOCI}, want{200, manifest.MediaTypeOCIManifest, s.oci.Digest, "", ""}},
		{"index all", "fmt/index/manifests/latest", []string{acceptAll}, want{200, manifest.MediaTypeOCIIndex, s.index.Digest, "", ""}},
		{"index without index type", "fmt/index/manifests/latest", []string{acceptOCI, acceptList}, servedIndex},
		{"index no accept", "fmt/index/manifests/latest", nil, servedIndex},
		{"list all", "fmt/list/manifests/latest", []string{acceptAll}, want{200, manifest.MediaTypeDockerManifestList, s.list.Digest, "", ""}},
		// An old client gets the linux/amd64 entry of a list asked for by tag...
		{"list by tag schema2 only", "fmt/list/manifests/latest", []string{acceptSchema2}, want{200, manifest.MediaTypeDockerSchema2, s.list.Images[0].Digest, "", ""}},
		// ...and, without the schema 1 conversion of 2.8, MANIFEST_INVALID when it
		// accepts no schema 2 either (distribution 3).
		{"list by tag schema1 only", "fmt/list/manifests/latest", []string{acceptSchema1}, want{status: 400, code: "MANIFEST_INVALID", message: "Schema 2 manifest not supported by client"}},
		// By digest the list is what was asked for: served as it is.
		{"list by digest schema2 only", "fmt/list/manifests/" + s.list.Digest.String(), []string{acceptSchema2}, want{200, manifest.MediaTypeDockerManifestList, s.list.Digest, "", ""}},
		{"schema1 signed", "fmt/schema1/manifests/latest", nil, want{200, manifest.MediaTypeDockerSchema1Signed, s.s1.Digest, "", ""}},
		{"schema1 signed by canonical digest", "fmt/schema1/manifests/" + s.s1.Digest.String(), []string{acceptAll}, want{200, manifest.MediaTypeDockerSchema1Signed, s.s1.Digest, "", ""}},
		{"schema1 unsigned", "fmt/schema1u/manifests/latest", []string{acceptAll}, want{200, manifest.MediaTypeDockerSchema1, s.s1u.Digest, "", ""}},
		{"schema2 without conversion, schema1 only", "fmt/schema2/manifests/latest", []string{acceptSchema1}, want{200, manifest.MediaTypeDockerSchema2, s.s2.Digest, "", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, http.MethodGet, s.r.URL()+"/v2/"+tc.path, tc.accept...)
			if resp.StatusCode != tc.want.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode, tc.want.status, body)
			}
			if tc.want.code != "" {
				e := errorsOf(body)
				if len(e) != 1 || e[0].Code != tc.want.code || e[0].Message != tc.want.message {
					t.Fatalf("errors %+v, want %s %q", e, tc.want.code, tc.want.message)
				}
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != tc.want.mediaType {
				t.Errorf("Content-Type %q, want %q", ct, tc.want.mediaType)
			}
			if d := resp.Header.Get("Docker-Content-Digest"); d != tc.want.digest.String() {
				t.Errorf("Docker-Content-Digest %s, want %s", d, tc.want.digest)
			}
			if et := resp.Header.Get("Etag"); et != `"`+tc.want.digest.String()+`"` {
				t.Errorf("Etag %s", et)
			}
			if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(body)) {
				t.Errorf("Content-Length %s for %d bytes", cl, len(body))
			}
			// What a client computes from the body must be what the header says.
			m, err := manifest.Parse(body, resp.Header.Get("Content-Type"))
			if err != nil {
				t.Fatalf("served manifest does not parse: %v", err)
			}
			if m.Digest != tc.want.digest {
				t.Errorf("parsed digest %s, want %s", m.Digest, tc.want.digest)
			}
		})
	}
}

func TestHeadManifest(t *testing.T) {
	s := seed(t)
	for _, img := range []*Manifest{&s.s2.Manifest, &s.s1.Manifest, &s.index.Manifest} {
		for _, ref := range []string{"latest", img.Digest.String()} {
			url := s.r.URL() + "/v2/" + img.Repo + "/manifests/" + ref
			head, hbody := get(t, http.MethodHead, url, acceptAll)
			if head.StatusCode != 200 || len(hbody) != 0 {
				t.Errorf("HEAD %s: %d with %d body bytes", url, head.StatusCode, len(hbody))
			}
			if head.Header.Get("Content-Length") != strconv.Itoa(len(img.Raw)) ||
				head.Header.Get("Docker-Content-Digest") != img.Digest.String() ||
				head.Header.Get("Content-Type") != img.MediaType {
				t.Errorf("HEAD %s: headers %v, want length %d digest %s", url, head.Header, len(img.Raw), img.Digest)
			}
		}
	}
	// HEAD of what does not exist: 404, no body, but the headers the error would have.
	resp, body := get(t, http.MethodHead, s.r.URL()+"/v2/fmt/schema2/manifests/nosuch")
	if resp.StatusCode != 404 || len(body) != 0 || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("HEAD of a missing tag: %d, %d bytes, %v", resp.StatusCode, len(body), resp.Header)
	}
}

func TestManifestETag(t *testing.T) {
	s := seed(t)
	for _, inm := range []string{s.s2.Digest.String(), `"` + s.s2.Digest.String() + `"`} {
		resp, body := get(t, http.MethodGet, s.r.URL()+"/v2/fmt/schema2/manifests/latest", "If-None-Match: "+inm)
		if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
			t.Errorf("If-None-Match %s: %d, %d bytes", inm, resp.StatusCode, len(body))
		}
	}
}

// TestIndexNegotiation28: WithDistribution28 serves an OCI index only to a client that
// accepts it, as 2.8 does.
func TestIndexNegotiation28(t *testing.T) {
	s := seed(t, WithDistribution28())
	resp, body := get(t, http.MethodGet, s.r.URL()+"/v2/fmt/index/manifests/latest", acceptOCI, acceptList)
	if e := errorsOf(body); resp.StatusCode != 404 || len(e) != 1 || e[0].Message != "OCI index found, but accept header does not support OCI indexes" {
		t.Errorf("index without its type: %d %s, want 404 MANIFEST_UNKNOWN", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("2.8's error Content-Type %q", ct)
	}
	if resp, _ := get(t, http.MethodGet, s.r.URL()+"/v2/fmt/index/manifests/latest", acceptAll); resp.StatusCode != 200 {
		t.Errorf("index with its type: %d", resp.StatusCode)
	}
}

func TestNotFound(t *testing.T) {
	for _, mode := range []struct {
		nameUnknown, v28 bool
	}{{false, false}, {true, false}, {false, true}} {
		nameUnknown := mode.nameUnknown
		var opts []Option
		if nameUnknown {
			opts = append(opts, WithNameUnknown())
		}
		if mode.v28 {
			opts = append(opts, WithDistribution28())
		}
		s := seed(t, opts...)
		// The details distribution 3 writes as strings, 2.8 as objects.
		d := func(d3, d28 string) string {
			if mode.v28 {
				return d28
			}
			return d3
		}
		missingRepoCode := map[bool]string{false: "MANIFEST_UNKNOWN", true: "NAME_UNKNOWN"}[nameUnknown]
		missingRepoBlob := map[bool]string{false: "BLOB_UNKNOWN", true: "NAME_UNKNOWN"}[nameUnknown]
		zero := "sha256:" + strings.Repeat("0", 64)
		for _, tc := range []struct {
			name, path string
			status     int
			code       string
			detail     string
		}{
			{"missing tag", "fmt/schema2/manifests/nosuch", 404, "MANIFEST_UNKNOWN", d(`"unknown tag=nosuch"`, `{"Tag":"nosuch"}`)},
			{"missing digest", "fmt/schema2/manifests/" + zero, 404, "MANIFEST_UNKNOWN", d(`"unknown manifest name=fmt/schema2 revision=`+zero+`"`, `{"Name":"fmt/schema2","Revision":"`+zero+`"}`)},
			{"missing repo tag", "no/such/manifests/latest", 404, missingRepoCode, map[bool]string{false: d(`"unknown tag=latest"`, `{"Tag":"latest"}`), true: `{"name":"no/such"}`}[nameUnknown]},
			{"missing repo blob", "no/such/blobs/" + zero, 404, missingRepoBlob, map[bool]string{false: `"` + zero + `"`, true: `{"name":"no/such"}`}[nameUnknown]},
			{"missing blob", "fmt/schema2/blobs/" + zero, 404, "BLOB_UNKNOWN", `"` + zero + `"`},
			{"blob of another repo", "fmt/oci/blobs/" + s.s2.Layers[0].Digest.String(), 404, "BLOB_UNKNOWN", `"` + s.s2.Layers[0].Digest.String() + `"`},
			{"tags of missing repo", "no/such/tags/list", 404, "NAME_UNKNOWN", `{"name":"no/such"}`},
			{"short digest", "fmt/schema2/blobs/sha256:abc", 400, "DIGEST_INVALID", d(`"invalid checksum digest length"`, `{}`)},
			{"bad digest manifest", "fmt/schema2/manifests/sha256:abc", 400, "DIGEST_INVALID", d(`"invalid checksum digest length"`, `{}`)},
			{"not a digest", "fmt/schema2/blobs/latest", 404, "", ""},
			{"bad name", "UPPER/manifests/latest", 404, "", ""},
			{"bad tag", "fmt/schema2/manifests/-x", 404, "", ""},
			{"unknown route", "fmt/schema2/nothing", 404, "", ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, body := get(t, http.MethodGet, s.r.URL()+"/v2/"+tc.path)
				if resp.StatusCode != tc.status {
					t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.status, body)
				}
				if tc.code == "" {
					if string(body) != "404 page not found\n" {
						t.Errorf("body %q, want the mux's 404", body)
					}
					return
				}
				e := errorsOf(body)
				if len(e) != 1 || e[0].Code != tc.code || string(e[0].Detail) != tc.detail {
					t.Errorf("body %s, want %s with detail %s", body, tc.code, tc.detail)
				}
			})
		}
	}
}

func TestBlobs(t *testing.T) {
	r := NewRegistry(t)
	data := []byte("hello blob content 0123456789")
	d := r.PutBlob("x", data)
	url := r.URL() + "/v2/x/blobs/" + d.String()
	for _, tc := range []struct {
		rng, inm     string
		status       int
		body         string
		contentRange string
	}{
		{"", "", 200, string(data), ""},
		{"bytes=5-", "", 206, string(data[5:]), "bytes 5-28/29"},
		{"bytes=5-9", "", 206, string(data[5:10]), "bytes 5-9/29"},
		{"bytes=28-", "", 206, "9", "bytes 28-28/29"},
		{"bytes=5-100", "", 206, string(data[5:]), "bytes 5-28/29"},
		{"bytes=-5", "", 206, string(data[24:]), "bytes 24-28/29"},
		{"bytes=29-", "", 416, "", "bytes */29"},
		{"bytes=100-", "", 416, "", "bytes */29"},
		{"", `"` + d.String() + `"`, 304, "", ""},
	} {
		var hdr []string
		if tc.rng != "" {
			hdr = append(hdr, "Range: "+tc.rng)
		}
		if tc.inm != "" {
			hdr = append(hdr, "If-None-Match: "+tc.inm)
		}
		resp, body := get(t, http.MethodGet, url, hdr...)
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Range") != tc.contentRange {
			t.Errorf("Range %q: %d %q, want %d %q", tc.rng, resp.StatusCode, resp.Header.Get("Content-Range"), tc.status, tc.contentRange)
		}
		if tc.status < 300 && string(body) != tc.body {
			t.Errorf("Range %q: body %q, want %q", tc.rng, body, tc.body)
		}
		if tc.status < 300 && (resp.Header.Get("Docker-Content-Digest") != d.String() || resp.Header.Get("Etag") != `"`+d.String()+`"` ||
			resp.Header.Get("Content-Type") != "application/octet-stream" || resp.Header.Get("Accept-Ranges") != "bytes") {
			t.Errorf("Range %q: headers %v", tc.rng, resp.Header)
		}
	}
	head, body := get(t, http.MethodHead, url)
	if head.StatusCode != 200 || len(body) != 0 || head.Header.Get("Content-Length") != "29" {
		t.Errorf("HEAD: %d, %d bytes, Content-Length %q", head.StatusCode, len(body), head.Header.Get("Content-Length"))
	}
}

func TestSchema1Conversion(t *testing.T) {
	s := seed(t, WithSchema1Conversion())
	for _, tc := range []struct {
		name, path string
		accept     []string
		converted  bool
	}{
		{"schema2 by tag, schema1 only", "fmt/schema2/manifests/latest", []string{acceptSchema1}, true},
		{"schema2 by tag, no Accept", "fmt/schema2/manifests/latest", nil, true},
		{"schema2 by digest", "fmt/schema2/manifests/" + s.s2.Digest.String(), []string{acceptSchema1}, false},
		{"list by tag, schema1 only", "fmt/list/manifests/latest", []string{acceptSchema1}, true},
		{"schema2 by tag, schema2 accepted", "fmt/schema2/manifests/latest", []string{acceptSchema2}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := get(t, http.MethodGet, s.r.URL()+"/v2/"+tc.path, tc.accept...)
			if resp.StatusCode != 200 {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			ct := resp.Header.Get("Content-Type")
			if (ct == manifest.MediaTypeDockerSchema1Signed) != tc.converted {
				t.Fatalf("Content-Type %s, converted want %v", ct, tc.converted)
			}
			m, err := manifest.Parse(body, ct)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Header.Get("Docker-Content-Digest") != m.Digest.String() {
				t.Errorf("Docker-Content-Digest %s, canonical %s", resp.Header.Get("Docker-Content-Digest"), m.Digest)
			}
			if tc.converted && m.Digest == digest.FromBytes(body) {
				t.Errorf("converted schema 1 digest is sha256 of its bytes: not the canonical payload digest")
			}
		})
	}
}

func TestTagsList(t *testing.T) {
	r := NewRegistry(t)
	img := r.PushImage("t", "d", Schema2)
	for _, tag := range []string{"b", "a", "c"} {
		r.Tag("t", tag, img.Digest)
	}
	type page struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	for _, tc := range []struct {
		query  string
		status int
		tags   []string
		link   string
	}{
		{"", 200, []string{"a", "b", "c", "d"}, ""},
		{"?n=2", 200, []string{"a", "b"}, `</v2/t/tags/list?last=b&n=2>; rel="next"`},
		{"?n=2&last=b", 200, []string{"c", "d"}, `</v2/t/tags/list?last=d&n=2>; rel="next"`},
		{"?n=2&last=d", 200, []string{}, ""},
		{"?last=a", 200, []string{"b", "c", "d"}, ""},
		{"?n=0", 200, []string{}, ""},
		{"?n=-1", 400, nil, ""},
		{"?n=x", 400, nil, ""},
	} {
		resp, body := get(t, http.MethodGet, r.URL()+"/v2/t/tags/list"+tc.query)
		if resp.StatusCode != tc.status || resp.Header.Get("Link") != tc.link {
			t.Errorf("%s: %d Link %q, want %d %q", tc.query, resp.StatusCode, resp.Header.Get("Link"), tc.status, tc.link)
			continue
		}
		if tc.status != 200 {
			if codeOf(body) != "PAGINATION_NUMBER_INVALID" {
				t.Errorf("%s: %s", tc.query, body)
			}
			continue
		}
		var p page
		if err := json.Unmarshal(body, &p); err != nil || p.Name != "t" || strings.Join(p.Tags, ",") != strings.Join(tc.tags, ",") || p.Tags == nil {
			t.Errorf("%s: %s (%v), want tags %v", tc.query, body, err, tc.tags)
		}
	}
}

func TestReferrers(t *testing.T) {
	for _, api := range []bool{true, false} {
		name := map[bool]string{true: "api", false: "tag schema"}[api]
		t.Run(name, func(t *testing.T) {
			var opts []Option
			if !api {
				opts = append(opts, WithoutReferrersAPI())
			}
			r := NewRegistry(t, opts...)
			img := r.PushImage("app", "v1", OCI)
			sbom := r.PushArtifact("app", img.Descriptor(), "application/spdx+json")
			sig := r.PushArtifact("app", img.Descriptor(), "application/vnd.dev.cosign.artifact.sig.v1+json",
				ArtifactBlob("application/vnd.dev.cosign.simplesigning.v1+json", []byte(`{"critical":{}}`)),
				Annotations(map[string]string{"dev.cosignproject.cosign/signature": "MEUC"}))
			for _, a := range []*Artifact{sbom, sig} {
				m, err := manifest.Parse(a.Raw, a.MediaType)
				if err == nil || m != nil {
					t.Errorf("an artifact parses as an image: %v", err)
				}
			}
			url := r.URL() + "/v2/app/referrers/" + img.Digest.String()
			if !api {
				resp, body := get(t, http.MethodGet, url)
				if resp.StatusCode != 404 || string(body) != "404 page not found\n" {
					t.Errorf("referrers without the API: %d %q", resp.StatusCode, body)
				}
				url = r.URL() + "/v2/app/manifests/sha256-" + img.Digest.Encoded()
			}
			var idx struct {
				MediaType string                `json:"mediaType"`
				Manifests []manifest.Descriptor `json:"manifests"`
			}
			resp, body := get(t, http.MethodGet, url, acceptAll)
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != manifest.MediaTypeOCIIndex || json.Unmarshal(body, &idx) != nil {
				t.Fatalf("%d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
			if len(idx.Manifests) != 2 || idx.Manifests[0].Digest != sbom.Digest || idx.Manifests[1].Digest != sig.Digest ||
				idx.Manifests[0].ArtifactType != "application/spdx+json" || idx.Manifests[1].Annotations["dev.cosignproject.cosign/signature"] != "MEUC" ||
				idx.Manifests[0].Size != int64(len(sbom.Raw)) || idx.Manifests[0].MediaType != manifest.MediaTypeOCIManifest {
				t.Errorf("referrers %s", body)
			}
			if !api {
				return
			}
			resp, body = get(t, http.MethodGet, url+"?artifactType=application/spdx%2Bjson")
			if err := json.Unmarshal(body, &idx); err != nil || len(idx.Manifests) != 1 || idx.Manifests[0].Digest != sbom.Digest ||
				resp.Header.Get("OCI-Filters-Applied") != "artifactType" {
				t.Errorf("filtered: %v %s", resp.Header, body)
			}
			resp, body = get(t, http.MethodGet, r.URL()+"/v2/app/referrers/sha256:"+strings.Repeat("1", 64))
			if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"manifests":[]`)) {
				t.Errorf("referrers of an unknown digest: %d %s", resp.StatusCode, body)
			}
			resp, body = get(t, http.MethodGet, r.URL()+"/v2/app/referrers/sha256:1")
			if resp.StatusCode != 400 || codeOf(body) != "DIGEST_INVALID" {
				t.Errorf("referrers of a bad digest: %d %s", resp.StatusCode, body)
			}
		})
	}
}

func TestReadOnly(t *testing.T) {
	r := NewRegistry(t)
	img := r.PushImage("x", "latest", Schema2)
	for _, method := range []string{http.MethodPut, http.MethodDelete, http.MethodPost} {
		resp, body := get(t, method, r.URL()+"/v2/x/manifests/"+img.Digest.String())
		if resp.StatusCode != 405 || codeOf(body) != "UNSUPPORTED" {
			t.Errorf("%s: %d %s", method, resp.StatusCode, body)
		}
	}
}

func TestPutManifest(t *testing.T) {
	r := NewRegistry(t)
	img := r.PushImage("src", "", Schema1)
	// PutManifest computes the canonical digest of signed schema 1, and accepts it as ref.
	if d := r.PutManifest("dst", img.Digest.String(), "", img.Raw); d != img.Digest || d == digest.FromBytes(img.Raw) {
		t.Errorf("PutManifest schema 1: %s, want canonical %s", d, img.Digest)
	}
	// Garbage is stored as given, for clients to choke on.
	d := r.PutManifest("dst", "garbage", "application/vnd.oci.image.manifest.v1+json", []byte("not json"))
	resp, body := get(t, http.MethodGet, r.URL()+"/v2/dst/manifests/garbage", acceptAll)
	if resp.StatusCode != 200 || string(body) != "not json" || resp.Header.Get("Docker-Content-Digest") != d.String() {
		t.Errorf("garbage: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	for name, f := range map[string]func(){
		"wrong digest": func() { r.PutManifest("dst", digest.FromString("x").String(), "", img.Raw) },
		"bad tag":      func() { r.PutManifest("dst", "-bad", "", img.Raw) },
		"bad repo":     func() { r.PutBlob("Bad", nil) },
		"tag unknown":  func() { r.Tag("dst", "t", digest.FromString("x")) },
		"bad schema1":  func() { r.PutManifest("dst", "", "", bytes.Replace(img.Raw, []byte(`"src"`), []byte(`"srd"`), 1)) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func TestSchema1Resigning(t *testing.T) {
	r := NewRegistry(t, WithSchema1Resigning())
	img := r.PushImage("s1", "latest", Schema1)
	for _, ref := range []string{"latest", img.Digest.String()} {
		resp, body := get(t, http.MethodGet, r.URL()+"/v2/s1/manifests/"+ref)
		m, err := manifest.Parse(body, resp.Header.Get("Content-Type"))
		if err != nil {
			t.Fatal(err)
		}
		// ECDSA signatures are randomised: a new signature is new bytes.
		if bytes.Equal(body, img.Raw) || m.Digest != img.Digest || resp.Header.Get("Docker-Content-Digest") != img.Digest.String() ||
			resp.Header.Get("Content-Length") != strconv.Itoa(len(body)) {
			t.Errorf("%s: same bytes %v, digest %s, want %s", ref, bytes.Equal(body, img.Raw), m.Digest, img.Digest)
		}
	}
}

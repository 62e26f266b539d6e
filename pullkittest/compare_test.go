package pullkittest

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/manifest"
)

// The comparison tests ask the kit and the real registry (Debian's docker-registry,
// distribution 2.8, started by internal/regtest: skipped when it is not installed unless
// CI is set) the same questions, seeded with the same bytes, and compare the answers.
// The kit runs WithDistribution28 against 2.8, and its defaults against distribution v3
// (built by .ci/run).

// mirrorTo pushes what the kit holds in repo (blobs, then image manifests, then
// indexes, by digest, then the tags) into the real registry through its push API.
func mirrorTo(t *testing.T, real *regtest.Registry, k *Registry, repo string) {
	t.Helper()
	k.mu.Lock()
	rp := k.repos[repo]
	blobs := map[digest.Digest][]byte{}
	for d := range rp.blobs {
		blobs[d] = k.blobs[d]
	}
	var images, indexes []*storedManifest
	for _, m := range rp.manifests {
		switch baseType(m.mediaType) {
		case manifest.MediaTypeOCIIndex, manifest.MediaTypeDockerManifestList:
			indexes = append(indexes, m)
		default:
			images = append(images, m)
		}
	}
	tags := map[string]digest.Digest{}
	for tag, d := range rp.tags {
		tags[tag] = d
	}
	k.mu.Unlock()
	for d, data := range blobs {
		putBlobReal(t, real, repo, d, data)
	}
	for _, m := range append(images, indexes...) {
		putManifestReal(t, real, repo, m.digest.String(), m)
	}
	for tag, d := range tags {
		putManifestReal(t, real, repo, tag, rp.manifests[d])
	}
}

func putBlobReal(t *testing.T, real *regtest.Registry, repo string, d digest.Digest, data []byte) {
	t.Helper()
	resp, err := http.Post("http://"+real.Host+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload to %s: %d %v", repo, resp.StatusCode, err)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	req, _ := http.NewRequest(http.MethodPut, loc.String(), bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload %s to %s: %d", d, repo, resp.StatusCode)
	}
}

func putManifestReal(t *testing.T, real *regtest.Registry, repo, ref string, m *storedManifest) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, "http://"+real.Host+"/v2/"+repo+"/manifests/"+ref, bytes.NewReader(m.raw))
	req.Header.Set("Content-Type", m.mediaType)
	resp, body, err := do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != m.digest.String() {
		t.Fatalf("put %s manifest %s:%s: %d, digest %s, want %s: %s", m.mediaType, repo, ref, resp.StatusCode,
			resp.Header.Get("Docker-Content-Digest"), m.digest, body)
	}
}

func do(req *http.Request) (*http.Response, []byte, error) {
	resp, err := testClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	return resp, b.Bytes(), err
}

// probe is one question asked of both registries.
type probe struct {
	name, method, path string
	headers            []string
	// sameBody says the bodies must be equal byte for byte (false for schema 1
	// conversions, whose signatures differ, and for bodies that differ by design).
	sameBody bool
}

// comparedHeaders are the response headers a client acts on.
var comparedHeaders = []string{"Content-Type", "Content-Length", "Docker-Content-Digest", "Etag", "Content-Range",
	"Accept-Ranges", "Cache-Control", "Docker-Distribution-Api-Version", "Link", "OCI-Filters-Applied"}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func ask(t *testing.T, base string, p probe) answer {
	t.Helper()
	resp, body, err := try(p.method, base+p.path, p.headers...)
	if resp == nil {
		t.Fatalf("%s %s: %v", p.method, base+p.path, err)
	}
	// A body shorter than its Content-Length (2.8's 416, see compare) is read as sent.
	return answer{resp.StatusCode, resp.Header, body}
}

// compare asks both and reports every difference a client could see.
func compare(t *testing.T, kitURL, realURL string, probes []probe) {
	t.Helper()
	for _, p := range probes {
		t.Run(p.name, func(t *testing.T) {
			k, r := ask(t, kitURL, p), ask(t, realURL, p)
			if k.status != r.status {
				t.Fatalf("%s %s: kit %d, distribution %d\nkit: %s\ndistribution: %s", p.method, p.path, k.status, r.status, k.body, r.body)
			}
			for _, h := range comparedHeaders {
				kv, rv := k.header.Get(h), r.header.Get(h)
				if h == "Content-Length" && !p.sameBody {
					continue
				}
				if r.status == http.StatusRequestedRangeNotSatisfiable && (h == "Content-Length" || h == "Etag" || h == "Cache-Control") {
					// Debian's 2.8 is built with a Go whose ServeContent kept the blob's
					// Content-Length (under a shorter body), ETag and Cache-Control on
					// a 416; since Go 1.23 it drops them, as distribution built today
					// does, and the kit with it.
					continue
				}
				if kv != rv {
					t.Errorf("%s %s: %s: kit %q, distribution %q", p.method, p.path, h, kv, rv)
				}
			}
			if kc, rc := codes(k.body), codes(r.body); kc != rc {
				t.Errorf("%s %s: error codes: kit %q, distribution %q", p.method, p.path, kc, rc)
			}
			if p.sameBody && !bytes.Equal(k.body, r.body) {
				t.Errorf("%s %s: bodies differ\nkit:          %s\ndistribution: %s", p.method, p.path, k.body, r.body)
			}
		})
	}
}

func codes(body []byte) string {
	var cs []string
	for _, e := range errorsOf(body) {
		cs = append(cs, e.Code)
	}
	return strings.Join(cs, ",")
}

func TestCompareWithDistribution(t *testing.T) { compareWithDistribution(t, false) }

// TestCompareWithDistributionV3 asks the kit with its defaults and distribution v3 (built
// by .ci/run) the same questions: the kit's defaults are distribution 3's, but for the
// OCI 1.1 referrers API, which distribution does not serve and the kit does by default
// (WithoutReferrersAPI turns it off), so it is not asked here.
func TestCompareWithDistributionV3(t *testing.T) { compareWithDistribution(t, true) }

func compareWithDistribution(t *testing.T, v3 bool) {
	var real *regtest.Registry
	var k *Registry
	if v3 {
		real = regtest.Start(t, regtest.WithV3())
		k = NewRegistry(t)
	} else {
		real = regtest.Start(t)
		k = NewRegistry(t, WithDistribution28())
	}
	s2 := k.PushImage("cmp/schema2", "latest", Schema2, Layers(2, 3000))
	k.PushImage("cmp/schema2", "v2", Schema2, Layers(1, 100))
	k.PushImage("cmp/schema2", "v3", Schema2, Layers(1, 200))
	oci := k.PushImage("cmp/oci", "latest", OCI)
	list := k.PushIndex("cmp/list", "latest", ManifestList)
	index := k.PushIndex("cmp/index", "latest", OCIIndex, Attestations())
	repos := []string{"cmp/schema2", "cmp/oci", "cmp/list", "cmp/index"}
	type named struct {
		name, repo string
		digest     digest.Digest
	}
	images := []named{{"schema2", "cmp/schema2", s2.Digest}, {"oci", "cmp/oci", oci.Digest},
		{"list", "cmp/list", list.Digest}, {"index", "cmp/index", index.Digest}}
	var s1 *Image
	if !v3 {
		// distribution 3 has no schema 1 at all: it refuses the push.
		s1 = k.PushImage("cmp/schema1", "latest", Schema1)
		repos = append(repos, "cmp/schema1")
		images = append(images, named{"schema1", "cmp/schema1", s1.Digest})
		if s1.Digest == digest.FromBytes(s1.Raw) {
			t.Fatal("schema 1 digest is sha256 of the bytes")
		}
	}
	for _, repo := range repos {
		mirrorTo(t, real, k, repo)
	}

	layer := s2.Layers[0]
	blob := "/v2/cmp/schema2/blobs/" + layer.Digest.String()
	size := len(layer.Data)
	zero := "sha256:" + strings.Repeat("0", 64)
	m := func(repo, ref string) string { return "/v2/" + repo + "/manifests/" + ref }
	var probes []probe
	add := func(name, method, path string, sameBody bool, headers ...string) {
		probes = append(probes, probe{name, method, path, headers, sameBody})
	}
	add("ping", "GET", "/v2/", true)
	add("ping HEAD", "HEAD", "/v2/", true)
	add("ping without the slash", "GET", "/v2", true)
	add("ping POST", "POST", "/v2/", true)
	add("ping OPTIONS", "OPTIONS", "/v2/", true)
	for _, tc := range images {
		for _, ref := range []string{"latest", tc.digest.String()} {
			refName := map[bool]string{true: "tag", false: "digest"}[ref == "latest"]
			for _, acc := range []struct {
				name   string
				accept []string
			}{
				{"all types", []string{acceptAll}},
				{"no Accept", nil},
				{"schema2 only", []string{acceptSchema2}},
				{"docker types", []string{acceptSchema2 + ", " + manifest.MediaTypeDockerManifestList}},
				{"oci manifest only", []string{acceptOCI}},
				{"schema1 only", []string{acceptSchema1}},
			} {
				// Schema 1 (stored, or a 2.8 rewrite) is signed anew on every request:
				// compare its digest (the payload's), not its bytes.
				converted := tc.name == "schema1" || !v3 && ref == "latest" && (tc.name == "schema2" || tc.name == "list") && !strings.Contains(strings.Join(acc.accept, ","), manifest.MediaTypeDockerSchema2)
				name := tc.name + " by " + refName + ", " + acc.name
				add(name, "GET", m(tc.repo, ref), !converted, acc.accept...)
				add(name+", HEAD", "HEAD", m(tc.repo, ref), !converted, acc.accept...)
			}
		}
	}
	add("missing tag", "GET", m("cmp/schema2", "nosuch"), true)
	add("missing tag HEAD", "HEAD", m("cmp/schema2", "nosuch"), true)
	add("missing repository", "GET", m("cmp/nosuch", "latest"), true)
	add("missing repository by digest", "GET", m("cmp/nosuch", zero), true)
	add("missing digest", "GET", m("cmp/schema2", zero), true)
	add("manifest If-None-Match", "GET", m("cmp/schema2", "latest"), true, "If-None-Match: \""+s2.Digest.String()+"\"", acceptAll)
	add("blob", "GET", blob, true)
	add("blob HEAD", "HEAD", blob, true)
	add("blob bytes=N-", "GET", blob, true, "Range: bytes=100-")
	add("blob bytes=N-M", "GET", blob, true, "Range: bytes=100-199")
	add("blob bytes=-N", "GET", blob, true, "Range: bytes=-10")
	add("blob bytes=0-0", "GET", blob, true, "Range: bytes=0-0")
	add("blob last byte", "GET", blob, true, "Range: bytes="+strconv.Itoa(size-1)+"-")
	add("blob range past the end", "GET", blob, true, "Range: bytes=100-"+strconv.Itoa(size+100))
	add("blob unsatisfiable", "GET", blob, false, "Range: bytes="+strconv.Itoa(size)+"-")
	add("blob If-None-Match", "GET", blob, true, "If-None-Match: \""+layer.Digest.String()+"\"")
	add("blob HEAD bytes=N-", "HEAD", blob, true, "Range: bytes=100-")
	add("missing blob", "GET", "/v2/cmp/schema2/blobs/"+zero, true)
	add("missing blob HEAD", "HEAD", "/v2/cmp/schema2/blobs/"+zero, true)
	add("blob of another repository", "GET", "/v2/cmp/oci/blobs/"+layer.Digest.String(), true)
	add("blob in a missing repository", "GET", "/v2/cmp/nosuch/blobs/"+layer.Digest.String(), true)
	add("manifest digest as a blob", "GET", "/v2/cmp/schema2/blobs/"+s2.Digest.String(), true)
	add("config blob", "GET", "/v2/cmp/schema2/blobs/"+s2.Config.Digest.String(), true)
	add("short digest", "GET", "/v2/cmp/schema2/blobs/sha256:abc", true)
	add("unsupported digest algorithm", "GET", "/v2/cmp/schema2/blobs/md5:"+strings.Repeat("0", 32), true)
	add("not a digest", "GET", "/v2/cmp/schema2/blobs/latest", true)
	add("uppercase name", "GET", "/v2/CMP/manifests/latest", true)
	add("tags", "GET", "/v2/cmp/schema2/tags/list", true)
	add("tags, a final slash", "GET", "/v2/cmp/schema2/tags/list/", true)
	add("tags HEAD", "HEAD", "/v2/cmp/schema2/tags/list", true)
	add("tags n=1", "GET", "/v2/cmp/schema2/tags/list?n=1", true)
	add("tags n=2 after latest", "GET", "/v2/cmp/schema2/tags/list?n=2&last=latest", true)
	add("tags n=0", "GET", "/v2/cmp/schema2/tags/list?n=0", true)
	add("tags n=-1", "GET", "/v2/cmp/schema2/tags/list?n=-1", true)
	add("tags after v2", "GET", "/v2/cmp/schema2/tags/list?last=v2", true)
	add("tags of a missing repository", "GET", "/v2/cmp/nosuch/tags/list", true)
	add("catalog", "GET", "/v2/_catalog", true)
	add("catalog n=2", "GET", "/v2/_catalog?n=2", true)
	add("catalog n=2 after cmp/list", "GET", "/v2/_catalog?n=2&last=cmp/list", true)
	if !v3 {
		add("referrers (2.8 has no such API)", "GET", "/v2/cmp/oci/referrers/"+oci.Digest.String(), true)
	}
	compare(t, k.URL(), "http://"+real.Host, probes)
	if v3 {
		return
	}

	// Schema 1, stored or rewritten: the same canonical digest (the same payload,
	// signed by another key), and bytes that change from one request to the next.
	for _, tc := range []struct{ path, accept string }{
		{m("cmp/schema2", "latest"), acceptSchema1},
		{m("cmp/list", "latest"), acceptSchema1},
		{m("cmp/schema1", "latest"), acceptAll},
		{m("cmp/schema1", s1.Digest.String()), "Accept: */*"},
	} {
		kr, kb := get(t, "GET", k.URL()+tc.path, tc.accept)
		rr, rb := get(t, "GET", "http://"+real.Host+tc.path, tc.accept)
		km, err1 := manifest.Parse(kb, kr.Header.Get("Content-Type"))
		rm, err2 := manifest.Parse(rb, rr.Header.Get("Content-Type"))
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: %v, %v", tc.path, err1, err2)
		}
		if km.Digest != rm.Digest || kr.Header.Get("Docker-Content-Digest") != km.Digest.String() || rr.Header.Get("Docker-Content-Digest") != rm.Digest.String() {
			t.Errorf("%s rewritten to schema 1: kit %s (header %s), distribution %s (header %s)\nkit payload: %s\ndistribution payload: %s",
				tc.path, km.Digest, kr.Header.Get("Docker-Content-Digest"), rm.Digest, rr.Header.Get("Docker-Content-Digest"), km.Schema1.Payload, rm.Schema1.Payload)
		}
	}
}

// challengeParams splits a WWW-Authenticate challenge into its scheme and parameters.
func challengeParams(ch string) (string, map[string]string) {
	scheme, rest, _ := strings.Cut(ch, " ")
	params := map[string]string{}
	for _, kv := range strings.Split(rest, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			params[k] = strings.Trim(v, `"`)
		}
	}
	return scheme, params
}

// authAnswer is what a client sees of a request: status, error code, detail, message,
// and the challenge's scheme and parameters (realm and service are each registry's
// own, so they are left out).
type authAnswer struct {
	status                int
	code, detail, message string
	scheme                string
	scope, errorParam     string
}

func askAuth(t *testing.T, base, path string, headers ...string) authAnswer {
	t.Helper()
	resp, body := get(t, http.MethodGet, base+path, headers...)
	a := authAnswer{status: resp.StatusCode}
	if e := errorsOf(body); len(e) > 0 {
		a.code, a.detail, a.message = e[0].Code, string(e[0].Detail), e[0].Message
	}
	if ch := resp.Header.Get("WWW-Authenticate"); ch != "" {
		var p map[string]string
		a.scheme, p = challengeParams(ch)
		a.scope, a.errorParam = p["scope"], p["error"]
	}
	return a
}

func basicHeader(user, pass string) string {
	req, _ := http.NewRequest(http.MethodGet, "/", nil)
	req.SetBasicAuth(user, pass)
	return "Authorization: " + req.Header.Get("Authorization")
}

func TestCompareBasicAuthWithDistribution(t *testing.T) {
	real := regtest.Start(t, regtest.WithHtpasswd())
	k := NewRegistry(t, WithBasicAuth(regtest.User, regtest.Password), WithDistribution28())
	for _, tc := range []struct {
		name, path, auth string
		// kitMessage is the kit's message where it says more than distribution's
		// "authentication required", by design; "" when they must be equal.
		kitMessage string
	}{
		{"ping, none", "/v2/", "", ""},
		{"ping, wrong password", "/v2/", basicHeader(regtest.User, "wrong"), msgBadPassword},
		{"ping, right", "/v2/", basicHeader(regtest.User, regtest.Password), ""},
		{"manifest, none", "/v2/x/manifests/latest", "", ""},
		{"manifest, wrong user", "/v2/x/manifests/latest", basicHeader("nobody", regtest.Password), msgBadPassword},
		{"manifest, right", "/v2/x/manifests/latest", basicHeader(regtest.User, regtest.Password), ""},
		{"tags, none", "/v2/x/tags/list", "", ""},
		{"tags, right", "/v2/x/tags/list", basicHeader(regtest.User, regtest.Password), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.auth != "" {
				hdr = append(hdr, tc.auth)
			}
			ka, ra := askAuth(t, k.URL(), tc.path, hdr...), askAuth(t, "http://"+real.Host, tc.path, hdr...)
			if tc.kitMessage != "" {
				if ka.message != tc.kitMessage || ra.message != msgAuthRequired {
					t.Errorf("messages: kit %q (want %q), distribution %q", ka.message, tc.kitMessage, ra.message)
				}
				ka.message = ra.message
			}
			if ka != ra {
				t.Errorf("kit %+v\ndistribution %+v", ka, ra)
			}
		})
	}
}

func TestCompareTokenAuthWithDistribution(t *testing.T) {
	ts := regtest.NewTokenServer(t)
	real := regtest.Start(t, regtest.WithToken(ts))
	k := NewRegistry(t, WithTokenAuth(TokenAuth{User: regtest.User, Password: regtest.Password}), WithDistribution28())
	realURL := "http://" + real.Host
	token := func(base, path string) string {
		resp, _ := get(t, http.MethodGet, base+path)
		tok, tresp := tokenFor(t, resp.Header.Get("WWW-Authenticate"), regtest.User, regtest.Password)
		if tresp.StatusCode != 200 {
			t.Fatalf("token for %s%s: %d", base, path, tresp.StatusCode)
		}
		return "Authorization: Bearer " + tok
	}
	kitX, realX := token(k.URL(), "/v2/x/manifests/latest"), token(realURL, "/v2/x/manifests/latest")
	for _, tc := range []struct {
		name, path        string
		kitAuth, realAuth string
		kitMessage        string
	}{
		{"ping, none", "/v2/", "", "", ""},
		{"manifest, none", "/v2/x/manifests/latest", "", "", ""},
		{"manifest, garbage token", "/v2/x/manifests/latest", "Authorization: Bearer garbage", "Authorization: Bearer garbage", msgBadToken},
		{"manifest, basic credentials", "/v2/x/manifests/latest", basicHeader(regtest.User, regtest.Password), basicHeader(regtest.User, regtest.Password), ""},
		{"manifest, token for it", "/v2/x/manifests/latest", kitX, realX, ""},
		{"ping, token", "/v2/", kitX, realX, ""},
		{"manifest, token for another repository", "/v2/y/manifests/latest", kitX, realX, msgScope},
		{"blob, none", "/v2/x/blobs/sha256:" + strings.Repeat("0", 64), "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var kh, rh []string
			if tc.kitAuth != "" {
				kh, rh = []string{tc.kitAuth}, []string{tc.realAuth}
			}
			ka, ra := askAuth(t, k.URL(), tc.path, kh...), askAuth(t, realURL, tc.path, rh...)
			if tc.kitMessage != "" {
				if ka.message != tc.kitMessage || ra.message != msgAuthRequired {
					t.Errorf("messages: kit %q (want %q), distribution %q", ka.message, tc.kitMessage, ra.message)
				}
				ka.message = ra.message
			}
			if ka != ra {
				t.Errorf("kit %+v\ndistribution %+v", ka, ra)
			}
		})
	}
}

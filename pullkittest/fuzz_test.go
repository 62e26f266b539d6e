package pullkittest

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzServe sends arbitrary requests straight to the three servers' handlers: none may
// panic (front turns a panic into a 500 that names it, which this looks for), and every
// answer must be a status the registry sends.
func FuzzServe(f *testing.F) {
	r, err := Start(WithTokenAuth(TokenAuth{User: "u", Password: "p", Anonymous: true}), WithSchema1Conversion(), WithSchema1Resigning())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(r.Close)
	s2 := r.PushImage("a/b", "latest", Schema2)
	r.PushImage("a/s1", "latest", Schema1)
	r.PushIndex("a/list", "latest", ManifestList)
	r.PushIndex("a/idx", "latest", OCIIndex, Attestations())
	r.PushArtifact("a/b", s2.Descriptor(), "application/spdx+json")
	r.PutManifest("a/junk", "junk", "", []byte("{\"schemaVersion\":1,\"signatures\":[]"))
	r.PutManifest("a/junk", "list", manifest2List, []byte(`{"schemaVersion":2,"manifests":[{"digest":"sha256:zz","platform":{"os":"linux","architecture":"amd64"}}]}`))
	r.PutManifest("a/junk", "s2", "application/vnd.docker.distribution.manifest.v2+json", []byte(`{"config":7}`))
	tok := r.signToken(tokenClaims{Issuer: tokenIssuer, Audience: "pullkittest", Expiration: 1 << 40, ExpiresMs: 1 << 50,
		Access: []tokenAccess{{Type: "repository", Name: "a/junk", Actions: []string{"pull"}}}})
	for _, seed := range []struct{ method, target, accept, rng, auth string }{
		{"GET", "/v2/", "", "", ""},
		{"GET", "/v2/a/b/manifests/latest", acceptSchema1, "", ""},
		{"GET", "/v2/a/junk/manifests/list", "text/plain", "", "Bearer " + tok},
		{"GET", "/v2/a/junk/manifests/s2", "x", "", "Bearer " + tok},
		{"GET", "/v2/a/junk/manifests/junk", "", "", "Bearer " + tok},
		{"HEAD", "/v2/a/b/blobs/" + s2.Layers[0].Digest.String(), "", "bytes=-0", ""},
		{"GET", "/v2/a/b/blobs/" + s2.Layers[0].Digest.String(), "", "bytes=1-0,5-,-3", "Bearer x.y.z"},
		{"GET", "/v2/a/b/tags/list?n=99999999999999999999&last=%ff", "", "", "Basic dTpw"},
		{"GET", "/v2/a/b/referrers/" + s2.Digest.String() + "?artifactType=", "", "", ""},
		{"POST", "/token", "", "", ""},
		{"GET", "/token?scope=repository:a:b:c:pull&scope=repository::pull&service=pullkittest", "", "", "Basic dTpw"},
		{"GET", "/v2//manifests/", "", "", ""},
		{"DELETE", "/v2/a/b/blobs/uploads/x", "", "", ""},
	} {
		for kind := range 3 {
			f.Add(kind, seed.method, seed.target, seed.accept, seed.rng, seed.auth)
		}
	}
	handlers := []http.Handler{r.front(serveAPI), r.front(serveStorage), r.front(serveToken)}
	f.Fuzz(func(t *testing.T, kind int, method, target, accept, rng, auth string) {
		if kind < 0 || kind > 2 || method == "" || strings.ContainsAny(method, " \t\r\n") {
			return
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		req := &http.Request{Method: method, URL: u, RequestURI: target, Header: http.Header{}, Host: r.Host(), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Body: http.NoBody}
		req = req.WithContext(r.ctx)
		for k, v := range map[string]string{"Accept": accept, "Range": rng, "Authorization": auth} {
			if v != "" {
				req.Header.Set(k, v)
			}
		}
		if method == http.MethodPost {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Body = http.NoBody
		}
		rec := httptest.NewRecorder()
		handlers[kind].ServeHTTP(rec, req)
		if bytes.Contains(rec.Body.Bytes(), []byte("pullkittest panic")) {
			t.Fatalf("%s %s (Accept %q, Range %q): %s", method, target, accept, rng, rec.Body.Bytes())
		}
		if rec.Code < 200 || rec.Code > 599 {
			t.Fatalf("%s %s: status %d", method, target, rec.Code)
		}
		r.ResetRequests() // keep the log small over a long run
	})
}

const manifest2List = "application/vnd.docker.distribution.manifest.list.v2+json"

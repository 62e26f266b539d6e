package pullkittest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/manifest"
)

// accessRecord is distribution's auth.Access as it writes it into an UNAUTHORIZED
// error's detail.
type accessRecord struct {
	Type   string
	Class  string
	Name   string
	Action string
}

// serveAPI answers the distribution API: the ping, manifests, blobs, tags/list and the
// OCI 1.1 referrers API.
func (r *Registry) serveAPI(w http.ResponseWriter, req *http.Request) {
	route, repo, ref := parsePath(req.URL.Path)
	switch route {
	case RoutePing:
		// Any method: distribution's base route takes them all.
		if !r.authorize(w, req, "") {
			return
		}
		w.Header().Set("Content-Type", jsonType(w))
		w.Header().Set("Content-Length", "2")
		if req.Method != http.MethodHead {
			_, _ = w.Write([]byte("{}"))
		}
		return
	case RouteCatalog:
		if req.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
			return
		}
		if r.authorize(w, req, "") {
			r.serveCatalog(w, req)
		}
		return
	case RouteTags:
		if req.Method != http.MethodGet {
			// distribution's router: the route takes GET alone.
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
			return
		}
	case RouteManifest, RouteBlob, RouteReferrers:
	default:
		http.NotFound(w, req)
		return
	}
	if route == RouteReferrers && r.cfg.noReferrers {
		http.NotFound(w, req) // a registry without the route: distribution's mux 404
		return
	}
	if !repoPattern.MatchString(repo) {
		http.NotFound(w, req) // distribution's routes do not match such a name
		return
	}
	var dgst digest.Digest
	if route != RouteTags {
		switch {
		case digestPattern.MatchString(ref):
			d, err := digest.Parse(ref)
			if err != nil {
				if !r.authorize(w, req, repo) {
					return
				}
				writeError(w, CodeDigestInvalid, "", detail28(w, struct{}{}, err.Error()))
				return
			}
			dgst = d
		case route == RouteManifest && tagPattern.MatchString(ref):
		default:
			http.NotFound(w, req)
			return
		}
	}
	if !r.authorize(w, req, repo) {
		return
	}
	if len(repo) > 255 {
		writeError(w, CodeNameInvalid, "", map[string]string{"name": repo})
		return
	}
	if !methodIs(w, req, http.MethodGet, http.MethodHead) {
		return
	}
	switch route {
	case RouteManifest:
		r.serveManifest(w, req, repo, ref, dgst)
	case RouteBlob:
		r.serveBlob(w, req, repo, dgst, true)
	case RouteTags:
		r.serveTags(w, req, repo)
	case RouteReferrers:
		r.serveReferrers(w, req, repo, dgst)
	}
}

// methodIs answers 405 UNSUPPORTED (a read-only registry: the kit takes no pushes) to
// other methods.
func methodIs(w http.ResponseWriter, req *http.Request, methods ...string) bool {
	for _, m := range methods {
		if req.Method == m {
			return true
		}
	}
	writeError(w, CodeUnsupported, "", nil)
	return false
}

// serveManifest is distribution's GetManifest: tag lookup, If-None-Match, then Accept
// negotiation.
func (r *Registry) serveManifest(w http.ResponseWriter, req *http.Request, repo, tag string, dgst digest.Digest) {
	if dgst != "" {
		tag = ""
	}
	// Accept is parsed as distribution parses it: comma-separated, parameters dropped.
	var supports struct{ schema2, list, oci, index bool }
	for _, h := range req.Header.Values("Accept") {
		for _, mt := range strings.Split(h, ",") {
			switch baseType(mt) {
			case manifest.MediaTypeDockerSchema2:
				supports.schema2 = true
			case manifest.MediaTypeDockerManifestList:
				supports.list = true
			case manifest.MediaTypeOCIManifest:
				supports.oci = true
			case manifest.MediaTypeOCIIndex:
				supports.index = true
			}
		}
	}

	r.mu.Lock()
	rp := r.repos[repo]
	if rp == nil && r.cfg.nameUnknown {
		r.mu.Unlock()
		writeError(w, CodeNameUnknown, "", map[string]string{"name": repo})
		return
	}
	if tag != "" {
		d, ok := digest.Digest(""), false
		if rp != nil {
			d, ok = rp.tags[tag]
		}
		if !ok {
			r.mu.Unlock()
			writeError(w, CodeManifestUnknown, "", detail28(w, map[string]string{"Tag": tag}, "unknown tag="+tag))
			return
		}
		dgst = d
	}
	var m *storedManifest
	if rp != nil {
		m = rp.manifests[dgst]
	}
	r.mu.Unlock()

	if etagMatch(req, dgst.String()) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	if m == nil {
		writeError(w, CodeManifestUnknown, "", unknownRevision(w, repo, dgst))
		return
	}
	kind := baseType(m.mediaType)
	switch {
	case kind == manifest.MediaTypeOCIManifest && !supports.oci:
		writeError(w, CodeManifestUnknown, "OCI manifest found, but accept header does not support OCI manifests", nil)
		return
	case kind == manifest.MediaTypeOCIIndex && !supports.index && r.cfg.v28:
		// 2.8 checks an index against Accept; 3 serves it to any client.
		writeError(w, CodeManifestUnknown, "OCI index found, but accept header does not support OCI indexes", nil)
		return
	}
	ct, body, served := m.mediaType, m.raw, m.digest
	switch {
	case kind == manifest.MediaTypeDockerSchema1Signed && r.cfg.schema1Resign:
		var err error
		if body, err = r.resign(m); err != nil {
			writeError(w, CodeUnknown, "", err.Error())
			return
		}
	case tag != "" && kind == manifest.MediaTypeDockerSchema2 && !supports.schema2 && r.cfg.schema1Conversion:
		var err error
		if body, served, err = r.toSchema1(repo, tag, m); err != nil {
			writeError(w, CodeManifestInvalid, "", err.Error())
			return
		}
		ct = manifest.MediaTypeDockerSchema1Signed
	case tag != "" && kind == manifest.MediaTypeDockerManifestList && !supports.list:
		// An old client: serve the linux/amd64 entry instead, as distribution does.
		child, missing := r.defaultChild(repo, m)
		if missing != "" {
			writeError(w, CodeManifestUnknown, "", unknownRevision(w, repo, missing))
			return
		}
		if child == nil {
			writeError(w, CodeManifestUnknown, "", nil)
			return
		}
		ct, body, served = child.mediaType, child.raw, child.digest
		if baseType(child.mediaType) == manifest.MediaTypeDockerSchema2 && !supports.schema2 {
			if !r.cfg.schema1Conversion {
				writeError(w, CodeManifestInvalid, "Schema 2 manifest not supported by client", nil)
				return
			}
			var err error
			if body, served, err = r.toSchema1(repo, tag, child); err != nil {
				writeError(w, CodeManifestInvalid, "", err.Error())
				return
			}
			ct = manifest.MediaTypeDockerSchema1Signed
		}
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Docker-Content-Digest", served.String())
	w.Header().Set("Etag", `"`+served.String()+`"`)
	if req.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	_, _ = w.Write(body)
}

// unknownRevision is the detail of a MANIFEST_UNKNOWN for a digest, as 2.8 or 3 writes it.
func unknownRevision(w http.ResponseWriter, repo string, d digest.Digest) any {
	return detail28(w, map[string]string{"Name": repo, "Revision": d.String()}, "unknown manifest name="+repo+" revision="+d.String())
}

// pageQuery reads a paginated list's n (-1 when absent: no limit) and last, as
// distribution does; an invalid n is answered with PAGINATION_NUMBER_INVALID and ok false.
func pageQuery(w http.ResponseWriter, q url.Values) (limit int, last string, ok bool) {
	limit = -1
	if n := q.Get("n"); n != "" {
		v, err := strconv.Atoi(n)
		if err != nil || v < 0 {
			writeError(w, CodePaginationNumberInvalid, "", map[string]int{"n": v})
			return 0, "", false
		}
		limit = v
	}
	return limit, q.Get("last"), true
}

// setNextPage sets the Link header to the page after last, n entries long.
func setNextPage(w http.ResponseWriter, req *http.Request, limit int, last string) {
	v := url.Values{}
	v.Add("n", strconv.Itoa(limit))
	v.Add("last", last)
	next := url.URL{Path: req.URL.Path, RawQuery: v.Encode()}
	w.Header().Set("Link", fmt.Sprintf(`<%s>; rel="next"`, next.String()))
}

// serveCatalog is distribution's catalog: the repositories, sorted, paginated by n and
// last as tags are (a Link to the next page while more are left).
func (r *Registry) serveCatalog(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	limit, last, ok := pageQuery(w, q)
	if !ok {
		return
	}
	r.mu.Lock()
	var all []string
	for name, rp := range r.repos {
		if len(rp.manifests) > 0 || len(rp.blobs) > 0 {
			all = append(all, name)
		}
	}
	r.mu.Unlock()
	sort.Strings(all)
	page := []string{}
	more := false
	for _, name := range all {
		if limit == 0 {
			break
		}
		if last != "" && name <= last {
			continue
		}
		if limit > 0 && len(page) == limit {
			more = true // as distribution's catalog: a Link only while repositories are left
			break
		}
		page = append(page, name)
	}
	w.Header().Set("Content-Type", jsonType(w))
	if more {
		setNextPage(w, req, limit, page[len(page)-1])
	}
	body, _ := json.Marshal(struct {
		Repositories []string `json:"repositories"`
	}{page})
	body = append(body, '\n')
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// etagMatch is distribution's: If-None-Match equal to the digest, quoted or not.
func etagMatch(req *http.Request, etag string) bool {
	for _, v := range req.Header.Values("If-None-Match") {
		if v == etag || v == `"`+etag+`"` {
			return true
		}
	}
	return false
}

// defaultChild is the manifest list entry distribution serves to a client that does not
// accept lists: the first linux/amd64 one (nil when there is none, or the entry's digest
// when the repository lacks it).
func (r *Registry) defaultChild(repo string, list *storedManifest) (*storedManifest, digest.Digest) {
	var idx struct {
		Manifests []manifest.Descriptor `json:"manifests"`
	}
	if json.Unmarshal(list.raw, &idx) != nil {
		return nil, ""
	}
	for _, d := range idx.Manifests {
		if d.Platform != nil && d.Platform.OS == "linux" && d.Platform.Architecture == "amd64" {
			r.mu.Lock()
			child := r.repos[repo].manifests[d.Digest]
			r.mu.Unlock()
			if child == nil {
				return nil, d.Digest
			}
			return child, ""
		}
	}
	return nil, ""
}

// toSchema1 rewrites a schema 2 manifest as distribution 2.8 does for old clients: a
// signed schema 1 manifest built from the config, served under its canonical digest.
func (r *Registry) toSchema1(repo, tag string, m *storedManifest) ([]byte, digest.Digest, error) {
	parsed, err := manifest.Parse(m.raw, m.mediaType)
	if err != nil {
		return nil, "", err
	}
	r.mu.Lock()
	var config []byte
	if r.repos[repo].blobs[parsed.Config.Digest] {
		config = r.blobs[parsed.Config.Digest]
	}
	r.mu.Unlock()
	if config == nil {
		return nil, "", fmt.Errorf("blob unknown to registry")
	}
	signed, err := manifest.ToSchema1(parsed, config, repo, tag, r.schema1Signer())
	if err != nil {
		return nil, "", err
	}
	s1, err := manifest.Parse(signed, manifest.MediaTypeDockerSchema1Signed)
	if err != nil {
		return nil, "", err
	}
	return signed, s1.Digest, nil
}

// resign signs a stored schema 1 manifest's payload anew with the registry's key, as
// distribution 2.8 does on every GET (it stores the payload only).
func (r *Registry) resign(m *storedManifest) ([]byte, error) {
	parsed, err := manifest.Parse(m.raw, m.mediaType)
	if err != nil {
		return nil, err
	}
	return manifest.SignSchema1(parsed.Schema1.Payload, r.schema1Signer(), nil)
}

// blobData returns the blob d of repo, or nil.
func (r *Registry) blobData(repo string, d digest.Digest) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rp := r.repos[repo]
	if rp == nil {
		return nil, false
	}
	if !rp.blobs[d] {
		return nil, true
	}
	return r.blobs[d], true
}

// serveBlob is distribution's GetBlob (http.ServeContent, as its blobServer uses):
// Range with 206 and Content-Range, 416 for an unsatisfiable range, ETag and
// If-None-Match. The storage server serves the same bytes without the registry's headers.
func (r *Registry) serveBlob(w http.ResponseWriter, req *http.Request, repo string, d digest.Digest, registryHeaders bool) {
	data, repoExists := r.blobData(repo, d)
	if data == nil {
		if !repoExists && r.cfg.nameUnknown && registryHeaders {
			writeError(w, CodeNameUnknown, "", map[string]string{"name": repo})
			return
		}
		writeError(w, CodeBlobUnknown, "", d.String())
		return
	}
	h := w.Header()
	if registryHeaders {
		h.Set("Etag", `"`+d.String()+`"`)
		h.Set("Cache-Control", "max-age=31536000")
		h.Set("Docker-Content-Digest", d.String())
	}
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(len(data)))
	http.ServeContent(w, req, "", time.Time{}, bytes.NewReader(data))
}

// serveStorage is the storage server: blobs by the registry's path, no auth, no
// registry headers, as object storage behind a redirect serves them.
func (r *Registry) serveStorage(w http.ResponseWriter, req *http.Request) {
	route, repo, ref := parsePath(req.URL.Path)
	d, err := digest.Parse(ref)
	if route != RouteBlob || err != nil || (req.Method != http.MethodGet && req.Method != http.MethodHead) {
		http.NotFound(w, req)
		return
	}
	r.serveBlob(w, req, repo, d, false)
}

// serveTags is distribution 3's tags/list: sorted, n and last, and a Link header whenever
// a page was filled (even when it holds the last tag).
func (r *Registry) serveTags(w http.ResponseWriter, req *http.Request, repo string) {
	q := req.URL.Query()
	if r.cfg.v28 {
		q = url.Values{} // 2.8 as Debian ships it answers every tag, whatever n and last say
	}
	limit, last, ok := pageQuery(w, q)
	if !ok {
		return
	}
	r.mu.Lock()
	rp := r.repos[repo]
	var all []string
	if rp != nil {
		all = rp.sortedTags()
	}
	r.mu.Unlock()
	if len(all) == 0 {
		writeError(w, CodeNameUnknown, "", map[string]string{"name": repo})
		return
	}
	page := []string{}
	more := false
	if limit != 0 {
		for _, t := range all {
			if last != "" && t <= last {
				continue
			}
			page = append(page, t)
			if limit > 0 && len(page) == limit {
				more = true
				break
			}
		}
	}
	w.Header().Set("Content-Type", jsonType(w))
	if more {
		setNextPage(w, req, limit, page[len(page)-1])
	}
	body, _ := json.Marshal(struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{repo, page})
	body = append(body, '\n')
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if req.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

// serveReferrers is the OCI 1.1 referrers API: an OCI index of the manifests whose
// subject is the digest (empty, never 404, for an unknown one), filtered by artifactType.
func (r *Registry) serveReferrers(w http.ResponseWriter, req *http.Request, repo string, d digest.Digest) {
	filter := req.URL.Query()["artifactType"]
	r.mu.Lock()
	body := r.referrersIndexLocked(repo, d, filter)
	r.mu.Unlock()
	if len(filter) > 0 {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	w.Header().Set("Content-Type", manifest.MediaTypeOCIIndex)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if req.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

package pullkittest

import (
	"encoding/json"
	"fmt"
	"mime"
	"regexp"
	"sort"
	"strings"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/manifest"
)

// repository is what one repository holds. Blob bytes live in Registry.blobs, shared;
// a repository only links the digests it was given, as distribution links blobs per
// repository (a blob pushed to one repository is BLOB_UNKNOWN in another).
type repository struct {
	blobs     map[digest.Digest]bool
	manifests map[digest.Digest]*storedManifest
	tags      map[string]digest.Digest
	// referrers lists, per subject digest, the manifests whose subject it is, in the
	// order they were put.
	referrers map[digest.Digest][]digest.Digest
}

// storedManifest is a manifest as it was put, with what serving it needs.
type storedManifest struct {
	mediaType string
	raw       []byte
	digest    digest.Digest
	// subject, artifactType and annotations are read from OCI manifests and indexes for
	// the referrers API.
	subject      digest.Digest
	artifactType string
	annotations  map[string]string
}

func (r *Registry) repo(name string) *repository {
	rp := r.repos[name]
	if rp == nil {
		rp = &repository{
			blobs:     map[digest.Digest]bool{},
			manifests: map[digest.Digest]*storedManifest{},
			tags:      map[string]digest.Digest{},
			referrers: map[digest.Digest][]digest.Digest{},
		}
		r.repos[name] = rp
	}
	return rp
}

// Repository names and tags as distribution's reference grammar writes them.
var (
	repoPattern   = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*)*$`)
	tagPattern    = regexp.MustCompile(`^[\w][\w.-]{0,127}$`)
	digestPattern = regexp.MustCompile(`^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`)
)

// checkRepo panics on a repository name distribution would refuse: seeding one would
// make content no client can name.
func checkRepo(name string) {
	if !repoPattern.MatchString(name) || len(name) > 255 {
		panic(fmt.Sprintf("pullkittest: repository name %q is not valid (lowercase path components, at most 255 characters)", name))
	}
}

// PutBlob stores data as a blob of repository repo and returns its digest. A blob is
// served only from the repositories it was put in, as distribution does.
func (r *Registry) PutBlob(repo string, data []byte) digest.Digest {
	checkRepo(repo)
	d := digest.FromBytes(data)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.blobs[d]; !ok {
		r.blobs[d] = append([]byte(nil), data...)
	}
	r.repo(repo).blobs[d] = true
	return d
}

// PutManifest stores raw as a manifest of repository repo and returns the digest the
// registry answers to: sha256 of raw, or for a signed schema 1 manifest the canonical
// digest of its signed payload, as distribution computes it. mediaType is what the kit
// serves as Content-Type; "" sniffs it from the document. ref is a tag to point at the
// manifest, a digest that must be the one computed, or "" to store it by digest only.
//
// The kit does not check that the blobs a manifest names exist (so a test can seed a
// manifest whose layer is missing) and stores any bytes, even a document that is not
// JSON. A manifest with a subject is listed by the referrers API, or, with
// WithoutReferrersAPI, added to the index tagged sha256-<hex> of its subject. PutManifest
// panics when ref is neither a valid tag nor the manifest's digest, or when a signed
// schema 1 manifest does not verify (its canonical digest cannot be known).
func (r *Registry) PutManifest(repo, ref, mediaType string, raw []byte) digest.Digest {
	checkRepo(repo)
	m, err := newStoredManifest(mediaType, raw)
	if err != nil {
		panic("pullkittest: PutManifest " + repo + ": " + err.Error())
	}
	switch {
	case ref == "":
	case digestPattern.MatchString(ref):
		if digest.Digest(ref) != m.digest {
			panic(fmt.Sprintf("pullkittest: PutManifest %s@%s: the manifest's digest is %s", repo, ref, m.digest))
		}
		ref = ""
	case !tagPattern.MatchString(ref):
		panic(fmt.Sprintf("pullkittest: PutManifest %s: %q is neither a tag nor a digest", repo, ref))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.putManifestLocked(repo, ref, m)
	return m.digest
}

func (r *Registry) putManifestLocked(repo, tag string, m *storedManifest) {
	rp := r.repo(repo)
	if _, ok := rp.manifests[m.digest]; !ok {
		rp.manifests[m.digest] = m
		if m.subject != "" {
			rp.referrers[m.subject] = append(rp.referrers[m.subject], m.digest)
			if r.cfg.noReferrers {
				r.updateReferrersTagLocked(repo, m.subject)
			}
		}
	}
	if tag != "" {
		rp.tags[tag] = m.digest
	}
}

// Tag points tag of repository repo at the manifest d, which the repository must hold
// (it panics otherwise).
func (r *Registry) Tag(repo, tag string, d digest.Digest) {
	if !tagPattern.MatchString(tag) {
		panic(fmt.Sprintf("pullkittest: Tag %s: %q is not a valid tag", repo, tag))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rp := r.repos[repo]
	if rp == nil || rp.manifests[d] == nil {
		panic(fmt.Sprintf("pullkittest: Tag %s:%s: the repository has no manifest %s", repo, tag, d))
	}
	rp.tags[tag] = d
}

// referrersTag is the OCI 1.1 fallback tag for a subject: <alg>-<encoded>, cut to 128
// characters.
func referrersTag(subject digest.Digest) string {
	t := subject.Algorithm().String() + "-" + subject.Encoded()
	if len(t) > 128 {
		t = t[:128]
	}
	return t
}

// updateReferrersTagLocked rewrites the fallback tag's index for subject, as an OCI 1.1
// client pushing to a registry without the referrers API maintains it.
func (r *Registry) updateReferrersTagLocked(repo string, subject digest.Digest) {
	raw := r.referrersIndexLocked(repo, subject, nil)
	m, err := newStoredManifest(manifest.MediaTypeOCIIndex, raw)
	if err != nil {
		panic("pullkittest: referrers index: " + err.Error()) // the kit's own JSON
	}
	r.putManifestLocked(repo, referrersTag(subject), m)
}

// referrersIndexLocked is the OCI index the referrers API answers for subject, keeping
// only the artifact types in filter when it is not empty.
func (r *Registry) referrersIndexLocked(repo string, subject digest.Digest, filter []string) []byte {
	descs := []manifest.Descriptor{}
	if rp := r.repos[repo]; rp != nil {
		for _, d := range rp.referrers[subject] {
			m := rp.manifests[d]
			if len(filter) > 0 && !contains(filter, m.artifactType) {
				continue
			}
			descs = append(descs, manifest.Descriptor{
				MediaType:    m.mediaType,
				Digest:       m.digest,
				Size:         int64(len(m.raw)),
				ArtifactType: m.artifactType,
				Annotations:  m.annotations,
			})
		}
	}
	b, err := json.Marshal(struct {
		SchemaVersion int                   `json:"schemaVersion"`
		MediaType     string                `json:"mediaType"`
		Manifests     []manifest.Descriptor `json:"manifests"`
	}{2, manifest.MediaTypeOCIIndex, descs})
	if err != nil {
		panic("pullkittest: referrers index: " + err.Error())
	}
	return b
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// sortedTags returns the repository's tags in distribution's (lexical) order.
func (rp *repository) sortedTags() []string {
	tags := make([]string, 0, len(rp.tags))
	for t := range rp.tags {
		tags = append(tags, t)
	}
	sort.Strings(tags)
	return tags
}

// newStoredManifest computes what serving raw needs: its media type (sniffed when
// mediaType is ""), its digest, and its subject and artifact type.
func newStoredManifest(mediaType string, raw []byte) (*storedManifest, error) {
	var probe struct {
		SchemaVersion int                             `json:"schemaVersion"`
		MediaType     string                          `json:"mediaType"`
		ArtifactType  string                          `json:"artifactType"`
		Config        *json.RawMessage                `json:"config"`
		Manifests     *json.RawMessage                `json:"manifests"`
		Signatures    *json.RawMessage                `json:"signatures"`
		Subject       *struct{ Digest digest.Digest } `json:"subject"`
		Annotations   map[string]string               `json:"annotations"`
	}
	isJSON := json.Unmarshal(raw, &probe) == nil
	if mediaType == "" {
		switch {
		case !isJSON:
			mediaType = "application/octet-stream"
		case probe.SchemaVersion == 1 && probe.Signatures != nil:
			mediaType = manifest.MediaTypeDockerSchema1Signed
		case probe.SchemaVersion == 1:
			mediaType = manifest.MediaTypeDockerSchema1
		case probe.MediaType != "":
			mediaType = probe.MediaType
		case probe.Manifests != nil:
			mediaType = manifest.MediaTypeOCIIndex
		default:
			mediaType = manifest.MediaTypeOCIManifest
		}
	}
	m := &storedManifest{mediaType: mediaType, raw: append([]byte(nil), raw...), digest: digest.FromBytes(raw)}
	if isJSON && probe.SchemaVersion == 1 && probe.Signatures != nil {
		parsed, err := manifest.Parse(raw, mediaType)
		if err != nil {
			return nil, fmt.Errorf("signed schema 1 manifest does not verify, so its canonical digest is unknown: %w", err)
		}
		m.digest = parsed.Digest
	}
	if isJSON && probe.SchemaVersion == 2 {
		if probe.Subject != nil && probe.Subject.Digest.Validate() == nil {
			m.subject = probe.Subject.Digest
		}
		m.artifactType = probe.ArtifactType
		if m.artifactType == "" && probe.Config != nil {
			var c struct{ MediaType string }
			_ = json.Unmarshal(*probe.Config, &c)
			m.artifactType = c.MediaType
		}
		m.annotations = probe.Annotations
	}
	return m, nil
}

// baseType is a Content-Type without parameters, lowercase.
func baseType(ct string) string {
	if t, _, err := mime.ParseMediaType(ct); err == nil {
		return t
	}
	t, _, _ := strings.Cut(ct, ";")
	return strings.ToLower(strings.TrimSpace(t))
}

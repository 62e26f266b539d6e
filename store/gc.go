package store

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
)

// Collector is a store that collects garbage: Layout and Memory are. storetest runs its
// GC tests on a store that is one.
type Collector interface {
	// GC removes exactly the committed blobs that no name (or unnamed index entry)
	// reaches, through manifests and indexes, and no lease holds (with what the leased
	// manifests reference), and reports them sorted with their total size. It expires
	// the partial ingests no writer holds that are older than the expiry
	// (DefaultIngestExpiry, or WithIngestExpiry; 0 expires all of them), never one a
	// writer holds; a negative expiry is refused with an error wrapping
	// pullkit.ErrInvalid.
	GC(ctx context.Context, opts ...GCOption) (GCResult, error)
}

// GCResult says what a garbage collection removed.
type GCResult struct {
	// Blobs are the committed blobs removed, sorted.
	Blobs []digest.Digest
	// Bytes is their total size.
	Bytes int64
	// Ingests is how many partial ingests expired.
	Ingests int
	// IngestBytes is their total size.
	IngestBytes int64
	// Leases is how many stale leases (of processes that ended without releasing them)
	// were removed.
	Leases int
}

// gcOptions are the settings of one garbage collection.
type gcOptions struct {
	expiry time.Duration
}

// DefaultIngestExpiry is how old a partial ingest nobody writes must be before GC
// removes it, unless WithIngestExpiry says otherwise: a pull interrupted today can
// still resume tomorrow.
const DefaultIngestExpiry = 24 * time.Hour

// A GCOption changes what GC does. It returns an error for a value it cannot take.
type GCOption func(*gcOptions) error

// WithIngestExpiry sets how long a partial ingest that no writer holds is kept for a
// later writer to resume (the time since it was last written). 0 expires every one
// that no writer holds; a negative age is refused.
func WithIngestExpiry(d time.Duration) GCOption {
	return func(o *gcOptions) error {
		if d < 0 {
			return &pullkit.InvalidError{What: "ingest expiry", Reason: "negative: " + d.String()}
		}
		o.expiry = d
		return nil
	}
}

func gcConfig(opts []GCOption) (gcOptions, error) {
	o := gcOptions{expiry: DefaultIngestExpiry}
	for _, opt := range opts {
		if opt == nil {
			return o, &pullkit.Error{Op: pullkit.OpGC, Err: &pullkit.InvalidError{What: "gc option", Reason: "nil"}}
		}
		if err := opt(&o); err != nil {
			return o, &pullkit.Error{Op: pullkit.OpGC, Err: err}
		}
	}
	return o, nil
}

// expired reports whether an ingest last written at t is past the expiry.
func (o gcOptions) expired(t time.Time, now time.Time) bool {
	return o.expiry == 0 || now.Sub(t) > o.expiry
}

// Checker is a store that checks its blobs against their digests: Layout and Memory
// are. storetest runs its Check tests on a store that is one.
type Checker interface {
	// Check hashes every committed blob again (honouring ctx) and reports those whose
	// content does not hash to their digest: damaged or truncated under their name. With
	// repair it removes them, so that a later pull fetches them again. A healthy store
	// reports every blob Checked, their sizes in Bytes, and nothing Damaged. Errors are
	// *pullkit.Error with Op pullkit.OpCheck.
	Check(ctx context.Context, repair bool) (CheckResult, error)
}

var (
	_ Checker   = (*Layout)(nil)
	_ Checker   = (*Memory)(nil)
	_ Collector = (*Layout)(nil)
	_ Collector = (*Memory)(nil)
)

// CheckResult says what Check found.
type CheckResult struct {
	// Checked is how many blobs were hashed.
	Checked int
	// Bytes is how many bytes were hashed.
	Bytes int64
	// Damaged are the blobs whose content does not hash to their name, sorted.
	Damaged []digest.Digest
	// Removed are the damaged blobs that were removed (all of them, with repair).
	Removed []digest.Digest
	// Partials is how many partial ingests (that no writer held) were looked at.
	Partials int
	// PartialsDamaged is how many of them had a record of held stretches that does not
	// read whole or lists bytes the partial does not have, or a record without a
	// partial; PartialsRepaired how many of those were repaired (the record rewritten
	// to what it validly lists, or removed), with repair.
	PartialsDamaged, PartialsRepaired int
}

// manifestLimit is the largest blob the garbage collector reads as a manifest, the cap
// a pull puts on manifests.
const manifestLimit = 4 << 20

// marker finds what a store's roots reach. read returns a blob's bytes, or an error
// for one that is missing or larger than manifestLimit.
type marker struct {
	read   func(digest.Digest) ([]byte, error)
	marked map[digest.Digest]bool
	queue  []digest.Digest
}

func newMarker(read func(digest.Digest) ([]byte, error)) *marker {
	return &marker{read: read, marked: map[digest.Digest]bool{}}
}

// mark keeps d without reading it.
func (m *marker) mark(d digest.Digest) { m.marked[d] = true }

// walk keeps d and, when d is a manifest or an index, what it references.
func (m *marker) walk(d digest.Digest) {
	if !m.marked[d] {
		m.marked[d] = true
		m.queue = append(m.queue, d)
	}
}

// run reads the queued blobs until nothing new is reached. A blob that is missing, too
// large or not a manifest reaches nothing more; one that manifest.Parse refuses (an
// artifact, a schema 1 whose signature fails, a format to come) is searched for
// anything that looks like a reference, so that GC never removes what such a
// document may need.
func (m *marker) run(ctx context.Context) error {
	for len(m.queue) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		d := m.queue[len(m.queue)-1]
		m.queue = m.queue[:len(m.queue)-1]
		b, err := m.read(d)
		if err != nil || !looksLikeObject(b) {
			continue // missing, too large, or not JSON (a layer)
		}
		man, err := manifest.Parse(b, "")
		if err != nil {
			m.generic(b)
			continue
		}
		if man.Config != nil {
			m.mark(man.Config.Digest)
		}
		for _, l := range man.Layers {
			m.mark(l.Digest)
		}
		for _, c := range man.Manifests {
			m.walk(c.Digest)
		}
	}
	return nil
}

// generic marks every digest a JSON document names in a "digest" or "blobSum" field,
// and walks those that an index's "manifests" list or a manifest media type says are
// manifests.
func (m *marker) generic(b []byte) {
	refs(b, func(d digest.Digest, isManifest bool) {
		if isManifest {
			m.walk(d)
		} else {
			m.mark(d)
		}
	})
}

// refs calls fn for every valid digest in a "digest" or "blobSum" field of the JSON
// document b, saying whether it is listed as a manifest.
func refs(b []byte, fn func(d digest.Digest, isManifest bool)) {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return
	}
	var visit func(v any, key string)
	visit = func(v any, key string) {
		switch v := v.(type) {
		case map[string]any:
			for _, f := range []string{"digest", "blobSum"} {
				if s, ok := v[f].(string); ok {
					if d := digest.Digest(s); d.Validate() == nil {
						mt, _ := v["mediaType"].(string)
						fn(d, f == "digest" && (key == "manifests" || isManifestType(mt)))
					}
				}
			}
			for k, c := range v {
				visit(c, k)
			}
		case []any:
			for _, c := range v {
				visit(c, key)
			}
		}
	}
	visit(v, "")
}

func isManifestType(mt string) bool {
	return strings.Contains(mt, "manifest") || strings.Contains(mt, "index")
}

// sortDigests sorts ds in place and returns it.
func sortDigests(ds []digest.Digest) []digest.Digest {
	slices.Sort(ds)
	return ds
}

// looksLikeObject reports whether b starts like a JSON object.
func looksLikeObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

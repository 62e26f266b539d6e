package layers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"

	// Register the hashes go-digest's algorithms need.
	_ "crypto/sha256"
	_ "crypto/sha512"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
)

// Names inside an OCI image layout directory.
const (
	// LayoutFile is the layout's marker file.
	LayoutFile = "oci-layout"
	// IndexFile is the layout's index.
	IndexFile = "index.json"
	// BlobsDir holds the blobs, as blobs/<algorithm>/<encoded digest>.
	BlobsDir = "blobs"
	// IngestDir holds the temporary and partial files of transfers in progress. It is not
	// part of the OCI layout; readers of the layout ignore it.
	IngestDir = "ingest"
	// LayoutVersion is the imageLayoutVersion written to oci-layout.
	LayoutVersion = "1.0.0"
	// AnnotationRefName is the index annotation that names a manifest (the "tag" of
	// skopeo's oci:<dir>:<ref>).
	AnnotationRefName = "org.opencontainers.image.ref.name"
)

// Store is what the puller and the CLI need of a content store; *Layout implements it.
type Store interface {
	// Has reports whether the store holds the verified blob d.
	Has(d digest.Digest) bool
	// Path returns where blob d lives (or would live) on disk; "" for an invalid digest.
	Path(d digest.Digest) string
	// PutBlob stores data as the blob desc after checking its digest and size.
	PutBlob(ctx context.Context, desc manifest.Descriptor, data []byte) error
	// AddManifest records the manifest desc (already stored) in the index under refName.
	AddManifest(desc manifest.Descriptor, refName string) error
}

var _ Store = (*Layout)(nil)

// Layout is an OCI image layout directory used as a content store: verified blobs under
// blobs/<alg>/<hex>, an index.json naming the pulled manifests, and an ingest/ directory
// for transfers in progress. It is safe for concurrent use, and the Layouts of one
// directory opened in one process share their index lock and their download dedupe.
type Layout struct {
	dir string
	st  *layoutState
}

// layoutState is shared by every Layout of one directory in this process.
type layoutState struct {
	index   sync.Mutex         // serialises index.json updates
	dl      singleflight.Group // one download per digest at a time
	tmpOnce sync.Once
	tmpOK   bool // unnamed temporary files work in ingest/
	dioOnce sync.Once
	dioOK   bool // O_DIRECT writes work in ingest/
}

var (
	layoutsMu sync.Mutex
	layouts   = map[string]*layoutState{}
)

// OpenLayout opens the OCI image layout in dir, creating the directory, the oci-layout
// file, an empty index.json and blobs/sha256/ when they are missing. An existing
// oci-layout must name version 1.x and an existing index.json must be a JSON object.
func OpenLayout(dir string) (*Layout, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open layout %s: %w", dir, err)
	}
	for _, d := range []string{filepath.Join(abs, BlobsDir, string(digest.SHA256)), filepath.Join(abs, IngestDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("open layout %s: %w", dir, err)
		}
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	l := &Layout{dir: abs}
	layoutsMu.Lock()
	l.st = layouts[abs]
	if l.st == nil {
		l.st = &layoutState{}
		layouts[abs] = l.st
	}
	layoutsMu.Unlock()

	l.st.index.Lock()
	defer l.st.index.Unlock()
	if err := l.initFile(LayoutFile, []byte(`{"imageLayoutVersion":"`+LayoutVersion+`"}`), checkLayoutFile); err != nil {
		return nil, err
	}
	emptyIndex := []byte(`{"schemaVersion":2,"mediaType":"` + manifest.MediaTypeOCIIndex + `","manifests":[]}`)
	if err := l.initFile(IndexFile, emptyIndex, func(b []byte) error { _, err := parseIndex(b); return err }); err != nil {
		return nil, err
	}
	return l, nil
}

// initFile checks the layout file name with check, or writes it with content when absent.
func (l *Layout) initFile(name string, content []byte, check func([]byte) error) error {
	p := filepath.Join(l.dir, name)
	b, err := os.ReadFile(p)
	switch {
	case err == nil:
		if err := check(b); err != nil {
			return fmt.Errorf("open layout %s: %s: %w", l.dir, name, err)
		}
		return nil
	case errors.Is(err, fs.ErrNotExist):
		if err := l.writeAtomic(p, content); err != nil {
			return fmt.Errorf("open layout %s: %w", l.dir, err)
		}
		return nil
	default:
		return fmt.Errorf("open layout %s: %w", l.dir, err)
	}
}

func checkLayoutFile(b []byte) error {
	var f struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("%w: %v", ErrBadLayout, err)
	}
	if !strings.HasPrefix(f.Version, "1.") {
		return fmt.Errorf("%w: imageLayoutVersion %q, want 1.x", ErrBadLayout, f.Version)
	}
	return nil
}

// Dir returns the layout's directory (absolute).
func (l *Layout) Dir() string { return l.dir }

// Path returns the file of blob d: <dir>/blobs/<alg>/<encoded>. It returns "" when d is
// not a valid digest of an available algorithm, so a digest from the network can never
// name a path outside blobs/.
func (l *Layout) Path(d digest.Digest) string {
	if d.Validate() != nil {
		return ""
	}
	return filepath.Join(l.dir, BlobsDir, string(d.Algorithm()), d.Encoded())
}

// Has reports whether the layout holds blob d. Files get their final name only once
// verified, so presence means a verified blob.
func (l *Layout) Has(d digest.Digest) bool {
	p := l.Path(d)
	if p == "" {
		return false
	}
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// PutBlob stores data as blob desc: it checks the digest (and the size when desc.Size >=
// 0) first, then writes a temporary file in ingest/ and renames it into place. A blob
// the layout already has is left as is. Meant for manifests and configs; use Fetch for
// layers.
func (l *Layout) PutBlob(ctx context.Context, desc manifest.Descriptor, data []byte) error {
	if err := ctx.Err(); err != nil {
		return blobErr(desc.Digest, OpStore, err)
	}
	if err := desc.Digest.Validate(); err != nil {
		return blobErr(desc.Digest, OpVerify, err)
	}
	if desc.Size >= 0 && int64(len(data)) != desc.Size {
		return blobErr(desc.Digest, OpVerify, &SizeMismatchError{Want: desc.Size, Got: int64(len(data)), Source: "data"})
	}
	if got := desc.Digest.Algorithm().FromBytes(data); got != desc.Digest {
		return blobErr(desc.Digest, OpVerify, &pullkit.DigestMismatchError{What: "blob", Want: desc.Digest, Got: got})
	}
	if l.Has(desc.Digest) {
		return nil
	}
	if err := l.writeAtomic(l.Path(desc.Digest), data); err != nil {
		return blobErr(desc.Digest, OpStore, err)
	}
	return nil
}

// writeAtomic writes data to a temporary file in ingest/ and renames it to path.
func (l *Layout) writeAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Join(l.dir, IngestDir), "put-*.tmp")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// AddManifest records manifest desc in index.json, annotated with refName as
// org.opencontainers.image.ref.name. An entry with the same refName is replaced; with
// refName "", an entry with the same digest and no name is replaced. The manifest blob
// must already be in the layout. The index is rewritten atomically (temporary file and
// rename), the entries and fields it does not touch are kept (compacted), and concurrent
// calls in one process are serialised. Concurrent writers in other processes are not
// locked out: the last rename wins.
func (l *Layout) AddManifest(desc manifest.Descriptor, refName string) error {
	if err := desc.Digest.Validate(); err != nil {
		return fmt.Errorf("add manifest %s to %s: %w", desc.Digest, l.dir, err)
	}
	if !l.Has(desc.Digest) {
		return fmt.Errorf("add manifest %s to %s: %w", desc.Digest, l.dir, ErrBlobMissing)
	}
	entry := desc
	entry.Annotations = make(map[string]string, len(desc.Annotations)+1)
	for k, v := range desc.Annotations {
		entry.Annotations[k] = v
	}
	if refName != "" {
		entry.Annotations[AnnotationRefName] = refName
	} else {
		delete(entry.Annotations, AnnotationRefName)
	}
	if len(entry.Annotations) == 0 {
		entry.Annotations = nil
	}
	raw, err := json.Marshal(entry)
	if err != nil {
		return fmt.Errorf("add manifest %s to %s: %w", desc.Digest, l.dir, err)
	}

	l.st.index.Lock()
	defer l.st.index.Unlock()
	p := filepath.Join(l.dir, IndexFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("add manifest %s to %s: %w", desc.Digest, l.dir, err)
	}
	idx, err := parseIndex(b)
	if err != nil {
		return fmt.Errorf("add manifest %s to %s: %s: %w", desc.Digest, l.dir, IndexFile, err)
	}
	kept := make([]json.RawMessage, 0, len(idx.manifests)+1)
	for _, m := range idx.manifests {
		var e struct {
			Digest      digest.Digest     `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		}
		if json.Unmarshal(m, &e) == nil {
			name, named := e.Annotations[AnnotationRefName]
			if (refName != "" && named && name == refName) || (refName == "" && !named && e.Digest == desc.Digest) {
				continue
			}
		}
		kept = append(kept, m)
	}
	kept = append(kept, raw)
	out, err := idx.encode(kept)
	if err != nil {
		return fmt.Errorf("add manifest %s to %s: %w", desc.Digest, l.dir, err)
	}
	if err := l.writeAtomic(p, out); err != nil {
		return fmt.Errorf("add manifest %s to %s: %w", desc.Digest, l.dir, err)
	}
	return nil
}

// index is index.json with its fields kept raw, so rewriting it changes only manifests.
type index struct {
	fields    map[string]json.RawMessage
	manifests []json.RawMessage
}

func parseIndex(b []byte) (*index, error) {
	idx := &index{}
	if err := json.Unmarshal(b, &idx.fields); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadLayout, err)
	}
	if idx.fields == nil {
		return nil, fmt.Errorf("%w: index is null", ErrBadLayout)
	}
	if m, ok := idx.fields["manifests"]; ok && !bytes.Equal(bytes.TrimSpace(m), []byte("null")) {
		// Docker 25's docker save writes "manifests": null; anything else must be a list.
		if err := json.Unmarshal(m, &idx.manifests); err != nil {
			return nil, fmt.Errorf("%w: manifests: %v", ErrBadLayout, err)
		}
	}
	return idx, nil
}

func (idx *index) encode(manifests []json.RawMessage) ([]byte, error) {
	fields := make(map[string]json.RawMessage, len(idx.fields)+3)
	for k, v := range idx.fields {
		// Go's decoder (and so go-containerregistry) matches keys without regard to
		// case: a "MediaType" next to "mediaType" would shadow or break ours.
		if strings.EqualFold(k, "schemaVersion") || strings.EqualFold(k, "mediaType") || strings.EqualFold(k, "manifests") {
			continue
		}
		fields[k] = v
	}
	if manifests == nil {
		manifests = []json.RawMessage{}
	}
	fields["schemaVersion"] = json.RawMessage("2")
	fields["mediaType"] = json.RawMessage(strconv.Quote(manifest.MediaTypeOCIIndex))
	m, err := json.Marshal(manifests)
	if err != nil {
		return nil, err
	}
	fields["manifests"] = m
	return json.Marshal(fields)
}

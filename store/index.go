package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
)

// The annotations of an index entry that name an image. PutImage writes both with the
// image's full reference; an entry carrying either one is named by it.
const (
	// AnnotationRefName is the OCI name of an entry: skopeo's oci:<dir>:<name>, umoci's
	// <dir>:<name>. Tools that write a layout often put only a tag here ("latest").
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationImageName is the name containerd and nerdctl read and write (ctr
	// export, ctr import): the full reference.
	AnnotationImageName = "io.containerd.image.name"
)

// indexLock is the file whose flock serialises index updates across processes.
const indexLock = "index.lock"

func emptyIndex() []byte {
	return []byte(`{"schemaVersion":2,"mediaType":"` + manifest.MediaTypeOCIIndex + `","manifests":[]}`)
}

// index is index.json with its fields kept raw, so that rewriting it changes nothing
// but the entries that were meant to change.
type index struct {
	fields    map[string]json.RawMessage
	manifests []json.RawMessage
}

// isIndexKey reports whether a top-level key is one the rewrite owns. Go's decoder (and
// so go-containerregistry) matches keys without regard to case: a "MediaType" next to
// "mediaType" would shadow or break ours.
func isIndexKey(k string) bool {
	return strings.EqualFold(k, "schemaVersion") || strings.EqualFold(k, "mediaType") || strings.EqualFold(k, "manifests")
}

func parseIndex(b []byte) (*index, error) {
	idx := &index{}
	if err := json.Unmarshal(b, &idx.fields); err != nil {
		return nil, err
	}
	if idx.fields == nil {
		return nil, errors.New("index is null")
	}
	m, ok := idx.fields["manifests"]
	if !ok {
		// As Go's decoder would read it: the last key that matches without case.
		for k, v := range idx.fields {
			if strings.EqualFold(k, "manifests") {
				m, ok = v, true
			}
		}
	}
	// Docker 25's docker save writes "manifests": null; anything else must be a list.
	if ok && !bytes.Equal(bytes.TrimSpace(m), []byte("null")) {
		if err := json.Unmarshal(m, &idx.manifests); err != nil {
			return nil, errors.New("manifests is not a list: " + err.Error())
		}
	}
	return idx, nil
}

func (idx *index) encode() ([]byte, error) {
	fields := make(map[string]json.RawMessage, len(idx.fields)+3)
	for k, v := range idx.fields {
		if !isIndexKey(k) {
			fields[k] = v
		}
	}
	ms := idx.manifests
	if ms == nil {
		ms = []json.RawMessage{}
	}
	fields["schemaVersion"] = json.RawMessage("2")
	fields["mediaType"] = json.RawMessage(strconv.Quote(manifest.MediaTypeOCIIndex))
	m, err := json.Marshal(ms)
	if err != nil {
		return nil, err
	}
	fields["manifests"] = m
	return json.Marshal(fields)
}

// entry is one decoded index entry.
type entry struct {
	desc manifest.Descriptor
	ok   bool // it decoded as a descriptor with a valid digest
}

func decodeEntry(raw json.RawMessage) entry {
	var e entry
	if json.Unmarshal(raw, &e.desc) == nil && e.desc.Digest.Validate() == nil {
		e.ok = true
	}
	return e
}

// primary returns the entry's name for listing: the containerd name, which is the full
// reference, before the OCI one, which may be a bare tag.
func (e entry) primary() string {
	if n := e.desc.Annotations[AnnotationImageName]; n != "" {
		return n
	}
	return e.desc.Annotations[AnnotationRefName]
}

// carries reports whether either name annotation of the entry is name.
func (e entry) carries(name string) bool {
	return e.desc.Annotations[AnnotationImageName] == name || e.desc.Annotations[AnnotationRefName] == name
}

// carriesPlatformNameOf reports whether either name annotation of the entry is one of
// name's platform names.
func (e entry) carriesPlatformNameOf(name string) bool {
	return isPlatformNameOf(e.desc.Annotations[AnnotationImageName], name) || isPlatformNameOf(e.desc.Annotations[AnnotationRefName], name)
}

// namedEntry returns the index entry of img: its target with both name annotations
// set (the target's own annotations and platform are kept).
func namedEntry(img Image) manifest.Descriptor {
	t := img.Target
	a := make(map[string]string, len(t.Annotations)+2)
	for k, v := range t.Annotations {
		a[k] = v
	}
	a[AnnotationRefName] = img.Name
	a[AnnotationImageName] = img.Name
	t.Annotations = a
	return t
}

func (l *Layout) readIndex() (*index, error) {
	b, err := os.ReadFile(filepath.Join(l.dir, IndexFile))
	if err != nil {
		return nil, err
	}
	idx, err := parseIndex(b)
	if err != nil {
		return nil, &pullkit.InvalidError{What: "index " + cleanPath(filepath.Join(l.dir, IndexFile)), Reason: "unreadable", Err: err}
	}
	return idx, nil
}

// lockIndex takes the index lock of the layout: one holder per process, and a flock of
// .pullkit/index.lock across processes. The returned function releases it.
func (l *Layout) lockIndex(ctx context.Context) (func(), error) {
	if err := l.st.index.lock(ctx); err != nil {
		return nil, err
	}
	f, err := lockPath(ctx, filepath.Join(l.dir, StateDir, indexLock), os.O_CREATE, false)
	if err != nil {
		l.st.index.unlock()
		return nil, err
	}
	return func() {
		f.Close()
		l.st.index.unlock()
	}, nil
}

// updateIndex applies fn to index.json under the index lock, and writes the result
// (temporary file and rename) when fn says it changed something.
func (l *Layout) updateIndex(ctx context.Context, fn func(*index) (bool, error)) error {
	unlock, err := l.lockIndex(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	return l.updateIndexLocked(fn)
}

func (l *Layout) updateIndexLocked(fn func(*index) (bool, error)) error {
	idx, err := l.readIndex()
	if err != nil {
		return err
	}
	changed, err := fn(idx)
	if err != nil || !changed {
		return err
	}
	out, err := idx.encode()
	if err != nil {
		return err
	}
	return l.writeAtomic(filepath.Join(l.dir, IndexFile), out)
}

// PutImage names img.Target img.Name in index.json: the entries that carry the name in
// either name annotation are replaced by one new entry, appended last; every other
// entry, and every field of the index, is kept as it was. Updates are serialised across
// goroutines and processes, and index.json is replaced atomically, so that readers
// never see a half-written index and no concurrent update is lost.
func (l *Layout) PutImage(ctx context.Context, img Image) error {
	const op = pullkit.OpPutImage
	if err := checkName(op, img.Name); err != nil {
		return err
	}
	if err := checkDigest(op, img.Target.Digest); err != nil {
		return nameErr(op, img.Name, err)
	}
	raw, err := json.Marshal(namedEntry(img))
	if err != nil {
		return nameErr(op, img.Name, &pullkit.InvalidError{What: "target", Reason: "cannot be encoded", Err: err})
	}
	err = l.updateIndex(ctx, func(idx *index) (bool, error) {
		// Under the lock, so that garbage collection cannot remove the target between
		// this check and the rename.
		if !Has(ctx, l, img.Target.Digest) {
			return false, blobErr("", img.Target.Digest, pullkit.ErrNotFound)
		}
		kept := idx.manifests[:0:0]
		for _, m := range idx.manifests {
			if e := decodeEntry(m); e.ok && e.carries(img.Name) {
				continue
			}
			kept = append(kept, m)
		}
		idx.manifests = append(kept, raw)
		return true, nil
	})
	return nameErr(op, img.Name, err)
}

// Image returns the entry that carries name in either name annotation (the last one,
// if other tools wrote several).
func (l *Layout) Image(ctx context.Context, name string) (Image, error) {
	const op = pullkit.OpLookUpImage
	idx, err := l.readIndex()
	if err != nil {
		return Image{}, nameErr(op, name, err)
	}
	for _, m := range slices.Backward(idx.manifests) {
		if e := decodeEntry(m); e.ok && e.carries(name) {
			return Image{Name: name, Target: e.desc}, nil
		}
	}
	return Image{}, nameErr(op, name, pullkit.ErrNotFound)
}

// Images lists the named entries of index.json, sorted by name. An entry is listed once,
// by its io.containerd.image.name when it has one, else by its
// org.opencontainers.image.ref.name; entries with neither are not images by name (GC
// still keeps what they reach).
func (l *Layout) Images(ctx context.Context) ([]Image, error) {
	idx, err := l.readIndex()
	if err != nil {
		return nil, &pullkit.Error{Op: pullkit.OpListImages, Err: err}
	}
	var out []Image
	for _, m := range idx.manifests {
		if e := decodeEntry(m); e.ok && e.primary() != "" {
			out = append(out, Image{Name: e.primary(), Target: e.desc})
		}
	}
	sortImages(out)
	return out, nil
}

func sortImages(imgs []Image) {
	slices.SortStableFunc(imgs, func(a, b Image) int { return strings.Compare(a.Name, b.Name) })
}

// DeleteImage removes every entry that carries name, or one of name's platform names
// (PlatformName), in either name annotation.
func (l *Layout) DeleteImage(ctx context.Context, name string) error {
	const op = pullkit.OpDeleteImage
	err := l.updateIndex(ctx, func(idx *index) (bool, error) {
		kept := idx.manifests[:0:0]
		for _, m := range idx.manifests {
			if e := decodeEntry(m); e.ok && (e.carries(name) || e.carriesPlatformNameOf(name)) {
				continue
			}
			kept = append(kept, m)
		}
		if len(kept) == len(idx.manifests) {
			return false, pullkit.ErrNotFound
		}
		idx.manifests = kept
		return true, nil
	})
	return nameErr(op, name, err)
}

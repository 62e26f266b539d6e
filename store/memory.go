package store

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
)

// Memory is a Store that keeps everything in memory: for tests (it is the store of the
// test kit), and for engines that stream images elsewhere. It has the semantics of a
// Layout within one process: one writer per digest (others wait), resumable partial
// ingests, names, leases and garbage collection. It is safe for concurrent use.
type Memory struct {
	writers slots        // one open writer per digest
	gc      sync.RWMutex // Lease.Add (read) against GC (write)

	mu      sync.Mutex
	blobs   map[digest.Digest]memBlob
	ingests map[digest.Digest]memIngest // what closed writers left
	images  map[string]Image
	leases  map[*memLease]struct{}
}

type memBlob struct {
	data      []byte
	committed time.Time
}

type memIngest struct {
	data    []byte
	held    []memHeld // stretches beyond data, sorted, disjoint, not touching
	updated time.Time
}

// memHeld is a stretch of a blob held beyond a writer's prefix.
type memHeld struct {
	off  int64
	data []byte
}

// NewMemory returns an empty memory store.
func NewMemory() *Memory {
	return &Memory{
		blobs:   map[digest.Digest]memBlob{},
		ingests: map[digest.Digest]memIngest{},
		images:  map[string]Image{},
		leases:  map[*memLease]struct{}{},
	}
}

var (
	_ Store     = (*Memory)(nil)
	_ Collector = (*Memory)(nil)
	_ Store     = (*Layout)(nil)
	_ Collector = (*Layout)(nil)
)

// Info describes blob d.
func (m *Memory) Info(ctx context.Context, d digest.Digest) (Info, error) {
	if err := checkDigest("stat blob", d); err != nil {
		return Info{}, err
	}
	m.mu.Lock()
	b, ok := m.blobs[d]
	m.mu.Unlock()
	if !ok {
		return Info{}, blobErr(pullkit.OpStatBlob, d, pullkit.ErrNotFound)
	}
	return Info{Digest: d, Size: int64(len(b.data)), Committed: b.committed}, nil
}

// ReaderAt opens blob d for reading.
func (m *Memory) ReaderAt(ctx context.Context, d digest.Digest) (ReaderAt, error) {
	if err := checkDigest("open blob", d); err != nil {
		return nil, err
	}
	m.mu.Lock()
	b, ok := m.blobs[d]
	m.mu.Unlock()
	if !ok {
		return nil, blobErr(pullkit.OpReadBlob, d, pullkit.ErrNotFound)
	}
	return memReader{bytes.NewReader(b.data)}, nil
}

type memReader struct{ *bytes.Reader }

func (memReader) Close() error { return nil }

// Walk calls fn for every committed blob, over a snapshot taken when it starts.
func (m *Memory) Walk(ctx context.Context, fn func(Info) error) error {
	m.mu.Lock()
	infos := make([]Info, 0, len(m.blobs))
	for d, b := range m.blobs {
		infos = append(infos, Info{Digest: d, Size: int64(len(b.data)), Committed: b.committed})
	}
	m.mu.Unlock()
	for _, i := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(i); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes blob d.
func (m *Memory) Delete(ctx context.Context, d digest.Digest) error {
	if err := checkDigest("delete blob", d); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.blobs[d]; !ok {
		return blobErr(pullkit.OpDeleteBlob, d, pullkit.ErrNotFound)
	}
	delete(m.blobs, d)
	return nil
}

// Writer returns a writer for blob desc, waiting while another writer of the digest is
// open; see Ingester. A writer closed without committing leaves its bytes for the next
// writer of the digest, until GC expires them.
func (m *Memory) Writer(ctx context.Context, desc manifest.Descriptor) (Writer, error) {
	const op = pullkit.OpOpenWriter
	d := desc.Digest
	if err := checkDigest(op, d); err != nil {
		return nil, err
	}
	release, err := m.writers.acquire(ctx, d)
	if err != nil {
		return nil, blobErr(op, d, err)
	}
	m.mu.Lock()
	_, done := m.blobs[d]
	in, resumed := m.ingests[d]
	delete(m.ingests, d)
	m.mu.Unlock()
	if done {
		release()
		return nil, blobErr(op, d, pullkit.ErrAlreadyExists)
	}
	w := &memWriter{m: m, d: d, size: desc.Size, h: d.Algorithm().Digester(), release: release}
	if resumed && (desc.Size < 0 || int64(len(in.data)) <= desc.Size) {
		if len(in.data) > 0 {
			ReportWriterWait(ctx, WaitRehash, int64(len(in.data)))
		}
		w.data = in.data
		w.h.Hash().Write(w.data)
		w.held = in.held
	}
	return w, nil
}

// memWriter is a writer of a Memory.
type memWriter struct {
	m       *Memory
	d       digest.Digest
	size    int64
	data    []byte
	held    []memHeld
	h       digest.Digester
	closed  bool
	release func()
}

var _ RangeWriter = (*memWriter)(nil)

func (w *memWriter) Write(p []byte) (int, error) {
	const op = pullkit.OpWriteBlob
	if w.closed {
		return 0, blobErr(op, w.d, errClosed)
	}
	if w.size >= 0 && int64(len(w.data)+len(p)) > w.size {
		return 0, blobErr(op, w.d, &pullkit.SizeMismatchError{What: "blob", Want: w.size, Got: int64(len(w.data) + len(p)), Source: "written"})
	}
	start := int64(len(w.data))
	w.data = append(w.data, p...)
	w.h.Hash().Write(p)
	w.held = cutHeld(w.held, start, int64(len(w.data)))
	return len(p), nil
}

// WriteAt keeps a copy of p at off, beyond Offset.
func (w *memWriter) WriteAt(p []byte, off int64) (int, error) {
	const op = pullkit.OpWriteBlob
	if w.closed {
		return 0, blobErr(op, w.d, errClosed)
	}
	end := off + int64(len(p))
	if off < int64(len(w.data)) || (w.size >= 0 && end > w.size) {
		return 0, blobErr(op, w.d, &pullkit.InvalidError{What: "write at", Reason: fmt.Sprintf("[%d, %d) is not between Offset %d and the size %d", off, end, len(w.data), w.size)})
	}
	if len(p) == 0 {
		return 0, nil
	}
	w.held = addHeld(w.held, off, p)
	return len(p), nil
}

// Held lists the stretches held beyond Offset.
func (w *memWriter) Held() []Range {
	var out []Range
	for _, h := range w.held {
		out = append(out, Range{Start: h.off, End: h.off + int64(len(h.data))})
	}
	return out
}

// Absorb takes held bytes at Offset in order.
func (w *memWriter) Absorb(p []byte) (int, error) {
	if w.closed {
		return 0, blobErr(pullkit.OpReadBlob, w.d, errClosed)
	}
	off := int64(len(w.data))
	if len(w.held) == 0 || w.held[0].off != off || len(p) == 0 {
		return 0, nil
	}
	n := copy(p, w.held[0].data)
	w.data = append(w.data, p[:n]...)
	w.h.Hash().Write(p[:n])
	w.held = cutHeld(w.held, off, off+int64(n))
	return n, nil
}

// addHeld returns hs with b held at off, merged with what it overlaps or touches (b's
// bytes win).
func addHeld(hs []memHeld, off int64, b []byte) []memHeld {
	start, end := off, off+int64(len(b))
	var out []memHeld
	var merged []memHeld
	for _, h := range hs {
		hEnd := h.off + int64(len(h.data))
		if hEnd < start || h.off > end {
			out = append(out, h)
			continue
		}
		merged = append(merged, h)
		start, end = min(start, h.off), max(end, hEnd)
	}
	buf := make([]byte, end-start)
	for _, h := range merged {
		copy(buf[h.off-start:], h.data)
	}
	copy(buf[off-start:], b)
	out = append(out, memHeld{off: start, data: buf})
	slices.SortFunc(out, func(a, b memHeld) int { return cmp.Compare(a.off, b.off) })
	return out
}

// cutHeld returns hs without [start, end).
func cutHeld(hs []memHeld, start, end int64) []memHeld {
	var out []memHeld
	for _, h := range hs {
		hEnd := h.off + int64(len(h.data))
		if hEnd <= start || h.off >= end {
			out = append(out, h)
			continue
		}
		if h.off < start {
			out = append(out, memHeld{off: h.off, data: h.data[:start-h.off]})
		}
		if hEnd > end {
			out = append(out, memHeld{off: end, data: h.data[end-h.off:]})
		}
	}
	return out
}

func (w *memWriter) Offset() int64 { return int64(len(w.data)) }

func (w *memWriter) Truncate(n int64) error {
	const op = pullkit.OpWriteBlob
	if w.closed {
		return blobErr(op, w.d, errClosed)
	}
	if n < 0 || n > int64(len(w.data)) {
		return blobErr(op, w.d, &pullkit.InvalidError{What: "truncate", Reason: "offset out of range"})
	}
	w.data = w.data[:n]
	w.held = nil
	w.h = w.d.Algorithm().Digester()
	w.h.Hash().Write(w.data)
	return nil
}

func (w *memWriter) Commit(ctx context.Context, size int64, expected digest.Digest) error {
	const op = pullkit.OpCommitBlob
	if w.closed {
		return blobErr(op, w.d, errClosed)
	}
	if expected == "" {
		expected = w.d
	}
	if expected != w.d {
		w.Close()
		return blobErr(op, expected, &pullkit.InvalidError{What: "commit", Reason: "the writer is for " + string(w.d)})
	}
	if err := ctx.Err(); err != nil {
		w.Close()
		return blobErr(op, w.d, err)
	}
	for len(w.held) > 0 && w.held[0].off == int64(len(w.data)) {
		w.Absorb(w.held[0].data)
	}
	n := int64(len(w.data))
	for _, want := range []int64{size, w.size} {
		if want >= 0 && n != want {
			w.finish()
			return blobErr(op, w.d, &pullkit.SizeMismatchError{What: "blob", Want: want, Got: n, Source: "written"})
		}
	}
	if got := w.h.Digest(); got != w.d {
		w.finish()
		return blobErr(op, w.d, &pullkit.DigestMismatchError{What: "blob", Want: w.d, Got: got})
	}
	w.m.mu.Lock()
	if _, ok := w.m.blobs[w.d]; !ok {
		w.m.blobs[w.d] = memBlob{data: w.data, committed: time.Now()}
	}
	w.m.mu.Unlock()
	w.finish()
	return nil
}

func (w *memWriter) Close() error {
	if w.closed {
		return nil
	}
	if len(w.data) > 0 || len(w.held) > 0 {
		w.m.mu.Lock()
		if _, ok := w.m.blobs[w.d]; !ok {
			w.m.ingests[w.d] = memIngest{data: w.data, held: w.held, updated: time.Now()}
		}
		w.m.mu.Unlock()
	}
	w.finish()
	return nil
}

// finish releases the writer; what it holds is dropped.
func (w *memWriter) finish() {
	w.closed = true
	w.data, w.held = nil, nil
	w.release()
}

// PutImage names img.Target img.Name, replacing that name's entry.
func (m *Memory) PutImage(ctx context.Context, img Image) error {
	const op = pullkit.OpPutImage
	if err := checkName(op, img.Name); err != nil {
		return err
	}
	if err := checkDigest(op, img.Target.Digest); err != nil {
		return nameErr(op, img.Name, err)
	}
	t := namedEntry(img)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.blobs[t.Digest]; !ok {
		return nameErr(op, img.Name, blobErr("", t.Digest, pullkit.ErrNotFound))
	}
	m.images[img.Name] = Image{Name: img.Name, Target: t}
	return nil
}

// Image returns the entry for name.
func (m *Memory) Image(ctx context.Context, name string) (Image, error) {
	m.mu.Lock()
	img, ok := m.images[name]
	m.mu.Unlock()
	if !ok {
		return Image{}, nameErr(pullkit.OpLookUpImage, name, pullkit.ErrNotFound)
	}
	return copyImage(img), nil
}

// copyImage returns img with annotations of its own, so that callers cannot change the
// store's.
func copyImage(img Image) Image {
	a := make(map[string]string, len(img.Target.Annotations))
	for k, v := range img.Target.Annotations {
		a[k] = v
	}
	img.Target.Annotations = a
	return img
}

// Images lists every named entry, sorted by name.
func (m *Memory) Images(ctx context.Context) ([]Image, error) {
	m.mu.Lock()
	out := make([]Image, 0, len(m.images))
	for _, img := range m.images {
		out = append(out, copyImage(img))
	}
	m.mu.Unlock()
	sortImages(out)
	return out, nil
}

// DeleteImage removes name's entry and those of its platform names (PlatformName).
func (m *Memory) DeleteImage(ctx context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	found := false
	for n := range m.images {
		if n == name || isPlatformNameOf(n, name) {
			delete(m.images, n)
			found = true
		}
	}
	if !found {
		return nameErr(pullkit.OpDeleteImage, name, pullkit.ErrNotFound)
	}
	return nil
}

// Lease starts a lease, which lasts until it is released.
func (m *Memory) Lease(ctx context.Context) (Lease, error) {
	ls := &memLease{m: m, ds: map[digest.Digest]struct{}{}}
	m.mu.Lock()
	m.leases[ls] = struct{}{}
	m.mu.Unlock()
	return ls, nil
}

// memLease is a lease of a Memory; its digests are guarded by the Memory's mu.
type memLease struct {
	m        *Memory
	ds       map[digest.Digest]struct{}
	released bool
}

func (ls *memLease) Add(ctx context.Context, ds ...digest.Digest) error {
	const op = pullkit.OpLease
	for _, d := range ds {
		if err := checkDigest(op, d); err != nil {
			return err
		}
	}
	ls.m.gc.RLock()
	defer ls.m.gc.RUnlock()
	ls.m.mu.Lock()
	defer ls.m.mu.Unlock()
	if ls.released {
		return &pullkit.Error{Op: op, Err: &pullkit.InvalidError{What: "lease", Reason: "released"}}
	}
	for _, d := range ds {
		ls.ds[d] = struct{}{}
	}
	return nil
}

func (ls *memLease) Release() error {
	ls.m.mu.Lock()
	defer ls.m.mu.Unlock()
	ls.released = true
	delete(ls.m.leases, ls)
	return nil
}

// GC removes the blobs that no name reaches and no lease holds, and expires partial
// ingests that no writer holds; see Layout.GC.
func (m *Memory) GC(ctx context.Context, opts ...GCOption) (GCResult, error) {
	var res GCResult
	o, err := gcConfig(opts)
	if err != nil {
		return res, err
	}
	m.gc.Lock()
	defer m.gc.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	mk := newMarker(func(d digest.Digest) ([]byte, error) {
		b, ok := m.blobs[d]
		if !ok {
			return nil, pullkit.ErrNotFound
		}
		if len(b.data) > manifestLimit {
			return nil, pullkit.ErrTooLarge
		}
		return b.data, nil
	})
	for _, img := range m.images {
		mk.walk(img.Target.Digest)
	}
	for ls := range m.leases {
		for d := range ls.ds {
			mk.walk(d)
		}
	}
	if err := mk.run(ctx); err != nil {
		return res, &pullkit.Error{Op: pullkit.OpGC, Err: err}
	}
	for d, b := range m.blobs {
		if !mk.marked[d] {
			delete(m.blobs, d)
			res.Blobs = append(res.Blobs, d)
			res.Bytes += int64(len(b.data))
		}
	}
	sortDigests(res.Blobs)
	now := time.Now()
	for d, in := range m.ingests {
		if o.expired(in.updated, now) {
			delete(m.ingests, d)
			res.Ingests++
			res.IngestBytes += int64(len(in.data))
			for _, h := range in.held {
				res.IngestBytes += int64(len(h.data))
			}
		}
	}
	return res, nil
}

// Check hashes every blob again and reports (and with repair, removes) those that do
// not match their digest. Blobs in memory are only damaged by a program that changed
// the bytes a ReaderAt gave it.
func (m *Memory) Check(ctx context.Context, repair bool) (CheckResult, error) {
	var res CheckResult
	m.mu.Lock()
	defer m.mu.Unlock()
	for d, b := range m.blobs {
		if err := ctx.Err(); err != nil {
			return res, &pullkit.Error{Op: pullkit.OpCheck, Err: err}
		}
		res.Checked++
		res.Bytes += int64(len(b.data))
		if d.Algorithm().FromBytes(b.data) != d {
			res.Damaged = append(res.Damaged, d)
			if repair {
				delete(m.blobs, d)
				res.Removed = append(res.Removed, d)
			}
		}
	}
	// Partial ingests in memory are what their writers left, always consistent.
	res.Partials = len(m.ingests)
	sortDigests(res.Damaged)
	sortDigests(res.Removed)
	return res, nil
}

// ReadAt reads back what the writer holds, as a resumed transfer needs.
func (w *memWriter) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(w.data)) {
		return 0, io.EOF
	}
	n := copy(p, w.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/ranges"
	"github.com/pullkit/pullkit/internal/scratch"
	"github.com/pullkit/pullkit/manifest"
)

// Writer returns a writer for blob desc. Among goroutines of this process, a writer of
// a digest that is already open makes Writer wait for it to be committed or closed
// (the holder hands over: there is no polling); across processes, the writer holds a
// flock on its partial file, ingest/<alg>-<hex>.partial, and Writer polls that lock
// with a short, growing sleep. Once it holds the digest, it returns an error wrapping
// pullkit.ErrAlreadyExists if the blob is committed by then; otherwise it takes over
// whatever partial file a writer that was closed (or a process that died) left, hashing
// its bytes again (honouring ctx) and starting at its length.
//
// A blob of known size under 1 MiB is written to an unnamed file (O_TMPFILE, where the
// system has it) that is linked to its name once verified, which saves a create and a
// rename, most of the cost of such a blob. It is kept apart from other writers of its
// digest only within this process: two processes may both download it, which costs
// less than the lock would, and either one's verified copy is the blob. Closed without
// committing, it is linked to the partial name, to be resumed like any other.
//
// A committed blob whose size differs from a known desc.Size is hashed again: when it
// does not match its digest (a file truncated or damaged on disk), it is removed and
// the writer writes it anew.
func (l *Layout) Writer(ctx context.Context, desc manifest.Descriptor) (Writer, error) {
	const op = pullkit.OpOpenWriter
	d := desc.Digest
	if err := checkDigest(op, d); err != nil {
		return nil, err
	}
	release, err := l.st.writers.acquire(ctx, d)
	if err != nil {
		return nil, blobErr(op, d, err)
	}
	w, err := l.openWriter(ctx, desc)
	if err != nil {
		release()
		return nil, err
	}
	w.release = release
	return w, nil
}

// openWriter opens the file of a writer of desc, holding the in-process slot of its
// digest.
func (l *Layout) openWriter(ctx context.Context, desc manifest.Descriptor) (*layoutWriter, error) {
	const op = pullkit.OpOpenWriter
	d := desc.Digest
	partial := l.partialPath(d)
	if desc.Size >= 0 && desc.Size < smallBlob && l.tmpfileOK() {
		if _, err := os.Lstat(partial); errors.Is(err, fs.ErrNotExist) {
			done, err := l.committed(ctx, d, desc.Size)
			if err != nil {
				return nil, err
			}
			if done {
				return nil, blobErr(op, d, pullkit.ErrAlreadyExists)
			}
			if f, err := scratch.Unnamed(filepath.Join(l.dir, IngestDir)); err == nil {
				return l.newWriter(desc, f, ""), nil
			}
			// ingest/ is gone, or the file system changed: the named file recreates it.
		}
	}
	f, err := lockPathWaiting(ctx, partial, os.O_CREATE, false, func() { ReportWriterWait(ctx, WaitOtherWriter, 0) })
	if err != nil {
		return nil, blobErr(op, d, err)
	}
	done, err := l.committed(ctx, d, desc.Size)
	if err != nil || done {
		// A partial left next to a committed blob is of no use: remove it while it is
		// locked.
		if done {
			os.Remove(partial)
			err = blobErr(op, d, pullkit.ErrAlreadyExists)
		}
		f.Close()
		return nil, err
	}
	w := l.newWriter(desc, f, partial)
	fi, err := f.Stat()
	if err != nil {
		w.abandon()
		return nil, blobErr(op, d, err)
	}
	n := fi.Size()
	limit := n
	if desc.Size >= 0 {
		limit = min(n, desc.Size)
	}
	rec, found, _, rerr := readRecord(partial, limit)
	switch {
	case rerr != nil:
		// The record cannot be read: what the partial holds beyond a prefix is unknown.
		n = -1
	case found:
		// The record says what the partial holds: its prefix, and stretches beyond.
		n = 0
		if r, ok := rec.At(0); ok {
			n = r.End
		}
		w.held = rec.Sub(0, n)
		// Rewritten whole: a torn last line goes, and the record is fresh for GC.
		if w.rec, err = writeRecord(partial, rec, l.o.sync); err != nil {
			w.abandon()
			return nil, blobErr(op, d, err)
		}
		w.recorded = rec
	case desc.Size >= 0 && n > desc.Size:
		n = -1 // longer than the blob: not a prefix of it
	}
	if n < 0 {
		if err := w.truncateAll(); err != nil {
			w.abandon()
			return nil, blobErr(op, d, err)
		}
		n = 0
	}
	if n > 0 {
		ReportWriterWait(ctx, WaitRehash, n)
		if err := w.rehash(ctx, n); err != nil {
			w.abandon()
			return nil, blobErr(op, d, err)
		}
	}
	return w, nil
}

// truncateAll empties the partial file and removes its record.
func (w *layoutWriter) truncateAll() error {
	if w.rec != nil {
		w.rec.Close()
		w.rec = nil
	}
	w.held, w.recorded, w.pending = nil, nil, nil
	if w.path != "" {
		if err := os.Remove(recordPath(w.path)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return w.f.Truncate(0)
}

// committed reports whether the layout holds blob d. A blob whose size is not the
// known size is verified, and removed when damaged.
func (l *Layout) committed(ctx context.Context, d digest.Digest, size int64) (bool, error) {
	p := l.Path(d)
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, blobErr(pullkit.OpOpenWriter, d, err)
	}
	if size < 0 || fi.Size() == size {
		return true, nil
	}
	ok, err := l.verify(ctx, d)
	if err != nil || ok {
		return ok, err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, blobErr(pullkit.OpOpenWriter, d, err)
	}
	return false, nil
}

// verify reports whether blob d hashes to d.
func (l *Layout) verify(ctx context.Context, d digest.Digest) (bool, error) {
	f, err := os.Open(l.Path(d))
	if err != nil {
		return false, statErr(pullkit.OpOpenWriter, d, err)
	}
	defer f.Close()
	got, err := hashReader(ctx, d.Algorithm(), f)
	if err != nil {
		return false, blobErr(pullkit.OpOpenWriter, d, err)
	}
	return got == d, nil
}

// hashReader hashes what r holds through a bounded buffer, honouring ctx.
func hashReader(ctx context.Context, alg digest.Algorithm, r io.Reader) (digest.Digest, error) {
	dg := alg.Digester()
	buf := make([]byte, hashBuf)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := r.Read(buf)
		dg.Hash().Write(buf[:n])
		if errors.Is(err, io.EOF) {
			return dg.Digest(), nil
		}
		if err != nil {
			return "", err
		}
	}
}

func (l *Layout) newWriter(desc manifest.Descriptor, f *os.File, path string) *layoutWriter {
	return &layoutWriter{l: l, d: desc.Digest, size: desc.Size, f: f, path: path, h: desc.Digest.Algorithm().Digester()}
}

// layoutWriter writes one blob into a file of ingest/: a named partial file, flock'ed
// while the writer is open, or an unnamed one.
//
// A Write hashes its bytes in the calling goroutine while a goroutine of the writer
// writes them, so that writing a block costs no more than hashing it. Aligned blocks go
// through a second, O_DIRECT descriptor of the file; the rest through the page cache,
// in pieces of cachedPiece.
type layoutWriter struct {
	l        *Layout
	d        digest.Digest
	size     int64 // the descriptor's size, or -1
	f        *os.File
	path     string   // the partial file; "" for an unnamed one
	dio      *os.File // the O_DIRECT descriptor, once opened
	noDirect bool     // O_DIRECT is not (or no longer) used
	h        digest.Digester
	off      int64
	err      error // a failed write: the writer holds less than it hashed
	closed   bool
	release  func()

	// Bytes held beyond off (a RangeWriter's), and the record that lists them with the
	// prefix once the partial holds any (record.go): what it lists, and, under WithSync,
	// stretches written but not yet made durable, to be recorded after the next fsync.
	held     ranges.Set
	rec      *os.File
	recLen   int64
	recorded ranges.Set
	pending  ranges.Set

	wq    chan wreq  // blocks for the writer goroutine
	wr    chan error // its results, one per block
	wdone chan struct{}

	// What the writer measures of O_DIRECT: how long Write waited for the disk after
	// hashing a block, against how long it hashed, over the direct bytes so far.
	directN    int64
	directWait time.Duration
	directHash time.Duration
}

// O_DIRECT writes cost no page cache and little CPU, but they wait for the disk: on a
// disk slower than sha256 (a cloud volume, a busy host) they are what limits a pull.
// After directProbe bytes written directly, a writer whose Writes waited for the disk
// more than a fifth of the time they spent hashing goes through the page cache for the
// rest of its blob, and the layout's other writers do for directRetry.
const (
	directProbe = 16 << 20
	directRetry = 5 * time.Minute
)

// wreq is one block for the writer goroutine.
type wreq struct {
	p   []byte
	off int64
}

// Write appends p. It returns once p is both hashed and written (the caller keeps p).
// A Write that would take the blob past its descriptor's size writes nothing and
// fails with pullkit.ErrSizeMismatch.
func (w *layoutWriter) Write(p []byte) (int, error) {
	const op = pullkit.OpWriteBlob
	if w.closed {
		return 0, blobErr(op, w.d, errClosed)
	}
	if w.err != nil {
		return 0, w.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.size >= 0 && w.off+int64(len(p)) > w.size {
		return 0, blobErr(op, w.d, &pullkit.SizeMismatchError{What: "blob", Want: w.size, Got: w.off + int64(len(p)), Source: "written"})
	}
	var err error
	if len(p) < inlineMax {
		w.h.Hash().Write(p)
		err = w.writeAt(p, w.off)
	} else {
		if w.wq == nil {
			w.startWriter()
		}
		direct := w.willDirect(p, w.off)
		w.wq <- wreq{p: p, off: w.off}
		t0 := time.Now()
		w.h.Hash().Write(p)
		t1 := time.Now()
		err = <-w.wr
		if direct {
			w.measureDirect(int64(len(p)), t1.Sub(t0), time.Since(t1))
		}
	}
	if err != nil {
		w.err = blobErr(op, w.d, err)
		return 0, w.err
	}
	start := w.off
	w.off += int64(len(p))
	if len(w.held) > 0 {
		w.held = w.held.Sub(start, w.off)
	}
	if w.rec != nil {
		w.note(start, w.off)
	}
	return len(p), nil
}

var _ RangeWriter = (*layoutWriter)(nil)

// syncRecordEvery is how many bytes a writer of a layout opened WithSync writes between
// two fsyncs of its partial file, after which they are recorded.
const syncRecordEvery = 16 << 20

// WriteAt keeps p at off, beyond Offset, through the page cache (Absorb reads it back
// from there), and records the stretch once it is written: at once, or under WithSync
// after the next fsync of the partial. The first stretch held creates the partial's
// record. A writer of an unnamed file (a blob under 1 MiB) keeps no record: what it
// holds beyond Offset is dropped when it is closed.
func (w *layoutWriter) WriteAt(p []byte, off int64) (int, error) {
	const op = pullkit.OpWriteBlob
	if w.closed {
		return 0, blobErr(op, w.d, errClosed)
	}
	if w.err != nil {
		return 0, w.err
	}
	end := off + int64(len(p))
	if off < w.off || (w.size >= 0 && end > w.size) {
		return 0, blobErr(op, w.d, &pullkit.InvalidError{What: "write at", Reason: fmt.Sprintf("[%d, %d) is not between Offset %d and the size %d", off, end, w.off, w.size)})
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.path != "" && w.rec == nil {
		// The record exists before the partial holds anything beyond its prefix.
		var pre ranges.Set
		pre = pre.Add(0, w.off)
		rec, err := writeRecord(w.path, pre, w.l.o.sync)
		if err != nil {
			return 0, blobErr(op, w.d, err)
		}
		w.rec, w.recorded, w.recLen = rec, pre, 0
	}
	if err := writeCached(w.f, p, off); err != nil {
		// Bytes held there may be half overwritten: no longer held.
		w.held = w.held.Sub(off, end)
		if len(w.recorded.Clip(off, end)) > 0 {
			w.recorded = w.recorded.Sub(off, end)
			w.compact()
		}
		return 0, blobErr(op, w.d, err)
	}
	w.held = w.held.Add(off, end)
	if w.rec != nil {
		w.note(off, end)
	}
	return len(p), nil
}

// note records that [start, end) is written (under WithSync, once an fsync has made it
// durable). Failing to record costs a later writer those bytes, not correctness: a
// record never lists what was not written.
func (w *layoutWriter) note(start, end int64) {
	if w.l.o.sync {
		w.pending = w.pending.Add(start, end)
		if w.pending.Total() >= syncRecordEvery {
			w.flushPending()
		}
		return
	}
	w.appendRecord(ranges.Range{Start: start, End: end})
}

// flushPending makes the stretches written since the last fsync durable, then records
// them.
func (w *layoutWriter) flushPending() {
	if len(w.pending) == 0 || w.rec == nil {
		return
	}
	if w.f.Sync() != nil {
		return
	}
	for _, r := range w.pending {
		w.appendRecord(r)
	}
	w.pending = nil
}

// appendRecord adds a line for r to the record, rewriting it whole when it has grown
// long.
func (w *layoutWriter) appendRecord(r ranges.Range) {
	w.recorded = w.recorded.Add(r.Start, r.End)
	if w.recLen > recordCompact {
		w.compact()
		return
	}
	line := recordLine(r)
	if n, err := w.rec.Write(line); err == nil {
		w.recLen += int64(n)
	}
}

// compact rewrites the record to list what is recorded, in as few lines as it takes.
func (w *layoutWriter) compact() {
	rec, err := writeRecord(w.path, w.recorded, w.l.o.sync)
	if err != nil {
		return
	}
	w.rec.Close()
	w.rec, w.recLen = rec, 0
}

// Held lists the stretches held beyond Offset.
func (w *layoutWriter) Held() []Range { return toRanges(w.held) }

// Absorb takes held bytes at Offset in order: it reads them back from the partial file,
// hashes them and moves Offset past them.
func (w *layoutWriter) Absorb(p []byte) (int, error) {
	const op = pullkit.OpReadBlob
	if w.closed {
		return 0, blobErr(op, w.d, errClosed)
	}
	if w.err != nil {
		return 0, w.err
	}
	r, ok := w.held.At(w.off)
	if !ok || len(p) == 0 {
		return 0, nil
	}
	n := int(min(int64(len(p)), r.End-w.off))
	if m, err := w.f.ReadAt(p[:n], w.off); m < n {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, blobErr(op, w.d, err)
	}
	w.h.Hash().Write(p[:n])
	w.held = w.held.Sub(w.off, w.off+int64(n))
	w.off += int64(n)
	return n, nil
}

// absorbAll takes every held byte that follows Offset without a gap.
func (w *layoutWriter) absorbAll() error {
	if _, ok := w.held.At(w.off); !ok {
		return nil
	}
	buf := make([]byte, hashBuf)
	for {
		n, err := w.Absorb(buf)
		if err != nil || n == 0 {
			return err
		}
	}
}

func toRanges(s ranges.Set) []Range {
	if len(s) == 0 {
		return nil
	}
	out := make([]Range, len(s))
	for i, r := range s {
		out[i] = Range{Start: r.Start, End: r.End}
	}
	return out
}

func (w *layoutWriter) startWriter() {
	w.wq = make(chan wreq)
	w.wr = make(chan error)
	w.wdone = make(chan struct{})
	go func() {
		defer close(w.wdone)
		for r := range w.wq {
			w.wr <- w.writeAt(r.p, r.off)
		}
	}()
}

// stopWriter ends the writer goroutine, if there is one.
func (w *layoutWriter) stopWriter() {
	if w.wq != nil {
		close(w.wq)
		<-w.wdone
		w.wq = nil
	}
}

// willDirect reports whether writeAt would try p at off with O_DIRECT.
func (w *layoutWriter) willDirect(p []byte, off int64) bool {
	return w.l.o.direct && !w.noDirect && w.path != "" && len(p) >= inlineMax && isAligned(p, off) && !w.l.directSlow()
}

// measureDirect adds a direct write of n bytes to the writer's measure, and turns
// O_DIRECT off when the disk is what it waits for.
func (w *layoutWriter) measureDirect(n int64, hashed, waited time.Duration) {
	w.directN += n
	w.directHash += hashed
	w.directWait += waited
	if w.directN >= directProbe && w.directWait*5 > w.directHash {
		w.noDirect = true
		w.l.st.slowDirect.Store(time.Now().UnixNano())
	}
}

// directSlow reports whether a writer found O_DIRECT slower than hashing lately.
func (l *Layout) directSlow() bool {
	t := l.st.slowDirect.Load()
	return t != 0 && time.Since(time.Unix(0, t)) < directRetry
}

// writeAt writes p at off: with O_DIRECT when p is large (inlineMax or more: a small
// O_DIRECT write waits for the disk for little gain) and aligned, through the page
// cache otherwise. A file system that refuses an O_DIRECT write (EINVAL) gets buffered
// writes from then on.
func (w *layoutWriter) writeAt(p []byte, off int64) error {
	if w.willDirect(p, off) {
		if w.dio == nil {
			if w.l.directOK() {
				w.dio, _ = openDirect(w.path)
			}
			if w.dio == nil {
				w.noDirect = true
			}
		}
		if w.dio != nil {
			_, err := w.dio.WriteAt(p, off)
			if err == nil {
				directBytes.Add(int64(len(p)))
				return nil
			}
			if !isDirectRefused(err) {
				return err
			}
			w.dio.Close()
			w.dio, w.noDirect = nil, true
		}
	}
	return writeCached(w.f, p, off)
}

// Offset is how many bytes the writer holds.
func (w *layoutWriter) Offset() int64 { return w.off }

// Truncate keeps the first n bytes (n at most Offset), hashing them again, and clears
// a failed write.
func (w *layoutWriter) Truncate(n int64) error {
	const op = pullkit.OpWriteBlob
	if w.closed {
		return blobErr(op, w.d, errClosed)
	}
	if n < 0 || n > w.off {
		return blobErr(op, w.d, &pullkit.InvalidError{What: "truncate", Reason: "offset out of range"})
	}
	if w.rec != nil || len(w.held) > 0 {
		// Back to a plain prefix: the held bytes and the record go.
		if err := w.truncateAll(); err != nil {
			return blobErr(op, w.d, err)
		}
	}
	if err := w.f.Truncate(n); err != nil {
		return blobErr(op, w.d, err)
	}
	w.h = w.d.Algorithm().Digester()
	w.off, w.err = 0, nil
	if n > 0 {
		if err := w.rehash(context.Background(), n); err != nil {
			w.err = blobErr(op, w.d, err)
			return w.err
		}
	}
	return nil
}

// rehash hashes the first n bytes of the file, which become the writer's content.
func (w *layoutWriter) rehash(ctx context.Context, n int64) error {
	buf := make([]byte, min(n, hashBuf))
	var off int64
	for off < n {
		if err := ctx.Err(); err != nil {
			return err
		}
		k, err := w.f.ReadAt(buf[:min(int64(len(buf)), n-off)], off)
		w.h.Hash().Write(buf[:k])
		off += int64(k)
		if err != nil && !(errors.Is(err, io.EOF) && off == n) {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	w.off = n
	return nil
}

// Commit verifies what was written and gives the blob its name: a rename of the
// partial file, or a link of the unnamed one, after an fsync when the layout was
// opened WithSync. A blob that fails verification is discarded.
func (w *layoutWriter) Commit(ctx context.Context, size int64, expected digest.Digest) error {
	const op = pullkit.OpCommitBlob
	if w.closed {
		return blobErr(op, w.d, errClosed)
	}
	w.stopWriter()
	if w.err != nil {
		err := w.err
		w.abandon()
		return err
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
	if err := w.absorbAll(); err != nil {
		w.abandon()
		return err
	}
	for _, want := range []int64{size, w.size} {
		if want >= 0 && w.off != want {
			w.abandon()
			return blobErr(op, w.d, &pullkit.SizeMismatchError{What: "blob", Want: want, Got: w.off, Source: "written"})
		}
	}
	if got := w.h.Digest(); got != w.d {
		w.abandon()
		return blobErr(op, w.d, &pullkit.DigestMismatchError{What: "blob", Want: w.d, Got: got})
	}
	if err := w.publish(); err != nil {
		w.abandon()
		return blobErr(op, w.d, err)
	}
	w.removeRecord()
	w.finish()
	return nil
}

// removeRecord removes the partial's record, if it has one (while the lock is held).
func (w *layoutWriter) removeRecord() {
	if w.rec != nil {
		w.rec.Close()
		w.rec = nil
		os.Remove(recordPath(w.path))
	}
}

// publish gives the verified file the blob's name.
func (w *layoutWriter) publish() error {
	dst := w.l.Path(w.d)
	if w.l.o.sync {
		if err := w.f.Sync(); err != nil {
			return err
		}
	}
	// The partial is renamed while its lock is held, so that no other process resumes
	// a file that is becoming the blob (and one that waited for the lock sees that the
	// name has gone).
	do := func() error { return os.Rename(w.path, dst) }
	if w.path == "" {
		do = func() error {
			err := linkTmpfile(w.f, dst)
			if errors.Is(err, fs.ErrExist) {
				return nil // another process stored it meanwhile
			}
			return err
		}
	}
	err := do()
	if errors.Is(err, fs.ErrNotExist) {
		// blobs/<alg>/ does not exist yet (a first sha512 blob), or was removed.
		if err = os.MkdirAll(filepath.Dir(dst), 0o755); err == nil {
			err = do()
		}
	}
	if err != nil {
		return err
	}
	if w.l.o.sync {
		if d, err := os.Open(filepath.Dir(dst)); err == nil {
			d.Sync()
			d.Close()
		}
	}
	return nil
}

// Close releases the writer and keeps what it holds for a later writer of the digest:
// a named partial stays, an unnamed file is linked to the partial name. An empty
// partial is removed.
func (w *layoutWriter) Close() error {
	if w.closed {
		return nil
	}
	w.stopWriter()
	if w.err != nil && w.rec == nil {
		// A failed write may have left bytes past Offset: they are not hashed. (With a
		// record, the record says what the partial holds.)
		w.f.Truncate(w.off)
	}
	w.flushPending()
	switch {
	case w.path != "" && w.off == 0 && len(w.held) == 0:
		w.removeRecord()
		os.Remove(w.path)
	case w.path == "" && w.off > 0:
		if len(w.held) > 0 {
			// No record for an unnamed file: its held bytes are not kept.
			w.f.Truncate(w.off)
		}
		// Another writer's partial of this digest may be there already: that one stays.
		linkTmpfile(w.f, w.l.partialPath(w.d))
	}
	if w.rec != nil {
		w.rec.Close()
		w.rec = nil
	}
	w.finish()
	return nil
}

// abandon discards what the writer holds and releases it.
func (w *layoutWriter) abandon() {
	w.stopWriter()
	if w.path != "" {
		w.removeRecord()
		os.Remove(recordPath(w.path))
		os.Remove(w.path) // while it is locked
	}
	w.finish()
}

// finish closes the files (releasing the lock) and hands the digest over.
func (w *layoutWriter) finish() {
	if w.dio != nil {
		w.dio.Close()
		w.dio = nil
	}
	w.f.Close()
	w.closed = true
	if w.release != nil {
		w.release()
	}
}

// ReadAt reads back what the writer holds (bytes before Offset), for a transfer that
// resumes and must give its taps the bytes an earlier writer left.
func (w *layoutWriter) ReadAt(p []byte, off int64) (int, error) {
	if w.closed {
		return 0, blobErr(pullkit.OpReadBlob, w.d, errClosed)
	}
	if off >= w.off {
		return 0, io.EOF
	}
	n := len(p)
	if int64(n) > w.off-off {
		n = int(w.off - off)
	}
	m, err := w.f.ReadAt(p[:n], off)
	if err == nil && m < len(p) {
		err = io.EOF
	}
	return m, err
}

// TempFile returns an unnamed scratch file in the layout's ingest directory, on the same
// file system as the blobs: the transfer parks out-of-order bytes of parallel ranges
// there. It disappears when closed (or, on systems without unnamed files, is removed
// at once and disappears when closed).
func (l *Layout) TempFile() (*os.File, error) {
	return scratch.File(filepath.Join(l.dir, IngestDir), "spill-*.tmp")
}

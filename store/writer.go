package store

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
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
	if desc.Size >= 0 && n > desc.Size {
		// Longer than the blob: not a prefix of it.
		if err := f.Truncate(0); err != nil {
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
	w.off += int64(len(p))
	return len(p), nil
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
	w.finish()
	return nil
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
	if w.err != nil {
		// A failed write may have left bytes past Offset: they are not hashed.
		w.f.Truncate(w.off)
	}
	switch {
	case w.path != "" && w.off == 0:
		os.Remove(w.path)
	case w.path == "" && w.off > 0:
		// Another writer's partial of this digest may be there already: that one stays.
		linkTmpfile(w.f, w.l.partialPath(w.d))
	}
	w.finish()
	return nil
}

// abandon discards what the writer holds and releases it.
func (w *layoutWriter) abandon() {
	w.stopWriter()
	if w.path != "" {
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

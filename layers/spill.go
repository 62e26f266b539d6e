package layers

import (
	"context"
	"errors"
	"io"
	"os"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/internal/ranges"
	"github.com/pullkit/pullkit/internal/scratch"
	"github.com/pullkit/pullkit/store"
)

// spillWriter gives a store's writer that is not a store.RangeWriter what a transfer
// needs of one: the bytes that arrive ahead are kept in a scratch file (the store's own,
// when it offers TempFile, else the system's) and written in order once the bytes before
// them are. What it holds lasts as long as the writer: a later transfer resumes only
// from the store writer's prefix.
type spillWriter struct {
	store.Writer
	s    store.Content
	f    *os.File
	held ranges.Set
}

func (w *spillWriter) file() (*os.File, error) {
	if w.f != nil {
		return w.f, nil
	}
	var err error
	if t, ok := w.s.(interface{ TempFile() (*os.File, error) }); ok {
		w.f, err = t.TempFile()
	} else {
		w.f, err = scratch.File("", "pullkit-spill-*")
	}
	return w.f, err
}

func (w *spillWriter) Write(p []byte) (int, error) {
	off := w.Writer.Offset()
	n, err := w.Writer.Write(p)
	w.held = w.held.Sub(off, off+int64(n))
	return n, err
}

func (w *spillWriter) WriteAt(p []byte, off int64) (int, error) {
	f, err := w.file()
	if err != nil {
		return 0, err
	}
	n, err := f.WriteAt(p, off)
	if err != nil {
		w.held = w.held.Sub(off, off+int64(len(p)))
		return n, err
	}
	w.held = w.held.Add(off, off+int64(n))
	return n, nil
}

func (w *spillWriter) Held() []store.Range {
	out := make([]store.Range, len(w.held))
	for i, r := range w.held {
		out[i] = store.Range{Start: r.Start, End: r.End}
	}
	return out
}

func (w *spillWriter) Absorb(p []byte) (int, error) {
	off := w.Writer.Offset()
	r, ok := w.held.At(off)
	if !ok || len(p) == 0 {
		return 0, nil
	}
	n := int(min(int64(len(p)), r.End-off))
	if m, err := w.f.ReadAt(p[:n], off); m < n {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	return w.Write(p[:n])
}

func (w *spillWriter) Truncate(n int64) error {
	w.held = nil
	return w.Writer.Truncate(n)
}

func (w *spillWriter) Commit(ctx context.Context, size int64, expected digest.Digest) error {
	defer w.drop()
	return w.Writer.Commit(ctx, size, expected)
}

func (w *spillWriter) Close() error {
	w.drop()
	return w.Writer.Close()
}

func (w *spillWriter) drop() {
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	w.held = nil
}

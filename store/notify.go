package store

import "context"

// WriterWait says why a store's Writer has not returned yet, to a caller that asked with
// WithWriterWait: a transfer shows it as progress rather than as a silent pause.
type WriterWait int

const (
	// WaitOtherWriter: another writer of the digest (another pull, another process)
	// holds it; Writer waits until it commits (then ErrAlreadyExists) or closes (then
	// the new writer resumes from what it left).
	WaitOtherWriter WriterWait = iota + 1
	// WaitRehash: the store hashes again the n bytes an earlier writer of the digest left
	// (an interrupted pull's partial file), so that the new writer goes on after them;
	// Writer returns once they are hashed, with Offset n.
	WaitRehash
)

func (w WriterWait) String() string {
	switch w {
	case WaitOtherWriter:
		return "another writer"
	case WaitRehash:
		return "hashing the bytes held"
	}
	return "unknown wait"
}

type writerWaitKey struct{}

// WithWriterWait returns a copy of ctx that makes a store's Writer, given it, call fn
// when it is about to make its caller wait, saying why (n is the bytes to hash again for
// WaitRehash, 0 otherwise). fn is called from the Writer's goroutine, at most once per
// reason, and must be quick. Layout and Memory call it; a store that does not is still
// correct, only quieter.
func WithWriterWait(ctx context.Context, fn func(why WriterWait, n int64)) context.Context {
	if fn == nil {
		return ctx
	}
	return context.WithValue(ctx, writerWaitKey{}, fn)
}

// ReportWriterWait calls the function WithWriterWait put in ctx, if there is one: for
// implementations of Ingester, before Writer makes its caller wait.
func ReportWriterWait(ctx context.Context, why WriterWait, n int64) {
	if fn, ok := ctx.Value(writerWaitKey{}).(func(WriterWait, int64)); ok {
		fn(why, n)
	}
}

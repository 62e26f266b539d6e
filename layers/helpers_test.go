package layers

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/stream"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/store"
)

// memStore is a minimal store.Content for the engine's tests: one writer per digest
// (others wait), partials kept for resume, writers readable back.
type memStore struct {
	mu       sync.Mutex
	blobs    map[digest.Digest][]byte
	partial  map[digest.Digest][]byte
	open     map[digest.Digest]chan struct{}
	commits  atomic.Int64
	noReadAt bool
	// written, when set, is told each blob's offset after every write to its writer.
	written func(d digest.Digest, offset int64)
}

func newMemStore() *memStore {
	return &memStore{blobs: map[digest.Digest][]byte{}, partial: map[digest.Digest][]byte{}, open: map[digest.Digest]chan struct{}{}}
}

func (m *memStore) put(b []byte) digest.Digest {
	d := digest.FromBytes(b)
	m.mu.Lock()
	m.blobs[d] = append([]byte(nil), b...)
	m.mu.Unlock()
	return d
}

func (m *memStore) get(d digest.Digest) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[d]
	return b, ok
}

func (m *memStore) ReaderAt(ctx context.Context, d digest.Digest) (store.ReaderAt, error) {
	b, ok := m.get(d)
	if !ok {
		return nil, fmt.Errorf("%w: %s", pullkit.ErrNotFound, d)
	}
	return readerAt{bytes.NewReader(b)}, nil
}

type readerAt struct{ *bytes.Reader }

func (readerAt) Close() error { return nil }

func (m *memStore) Info(ctx context.Context, d digest.Digest) (store.Info, error) {
	b, ok := m.get(d)
	if !ok {
		return store.Info{}, fmt.Errorf("%w: %s", pullkit.ErrNotFound, d)
	}
	return store.Info{Digest: d, Size: int64(len(b))}, nil
}

func (m *memStore) Walk(ctx context.Context, fn func(store.Info) error) error {
	m.mu.Lock()
	var infos []store.Info
	for d, b := range m.blobs {
		infos = append(infos, store.Info{Digest: d, Size: int64(len(b))})
	}
	m.mu.Unlock()
	for _, i := range infos {
		if err := fn(i); err != nil {
			return err
		}
	}
	return nil
}

func (m *memStore) Delete(ctx context.Context, d digest.Digest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.blobs[d]; !ok {
		return pullkit.ErrNotFound
	}
	delete(m.blobs, d)
	return nil
}

func (m *memStore) Writer(ctx context.Context, desc manifest.Descriptor) (store.Writer, error) {
	d := desc.Digest
	for {
		m.mu.Lock()
		if _, ok := m.blobs[d]; ok {
			m.mu.Unlock()
			return nil, pullkit.ErrAlreadyExists
		}
		ch, busy := m.open[d]
		if !busy {
			m.open[d] = make(chan struct{})
			w := &memWriter{m: m, d: d, b: m.partial[d]}
			delete(m.partial, d)
			m.mu.Unlock()
			if m.noReadAt {
				return noReadAtWriter{w}, nil
			}
			return w, nil
		}
		m.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

type memWriter struct {
	m    *memStore
	d    digest.Digest
	b    []byte
	done bool
}

type noReadAtWriter struct{ *memWriter }

func (w noReadAtWriter) ReadAt() {} // hides memWriter.ReadAt

func (w *memWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	if w.m.written != nil {
		w.m.written(w.d, int64(len(w.b)))
	}
	return len(p), nil
}

func (w *memWriter) Offset() int64          { return int64(len(w.b)) }
func (w *memWriter) Truncate(n int64) error { w.b = w.b[:n]; return nil }
func (w *memWriter) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(w.b)) {
		return 0, io.EOF
	}
	n := copy(p, w.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (w *memWriter) release(keep bool) {
	w.m.mu.Lock()
	if keep && len(w.b) > 0 {
		w.m.partial[w.d] = w.b
	}
	close(w.m.open[w.d])
	delete(w.m.open, w.d)
	w.m.mu.Unlock()
	w.done = true
}

func (w *memWriter) Commit(ctx context.Context, size int64, expected digest.Digest) error {
	defer w.release(false)
	if size >= 0 && int64(len(w.b)) != size {
		return &pullkit.SizeMismatchError{What: "blob", Want: size, Got: int64(len(w.b))}
	}
	if got := expected.Algorithm().FromBytes(w.b); got != expected {
		return &pullkit.DigestMismatchError{What: "blob", Want: expected, Got: got}
	}
	w.m.mu.Lock()
	w.m.blobs[expected] = w.b
	w.m.mu.Unlock()
	w.m.commits.Add(1)
	return nil
}

func (w *memWriter) Close() error {
	if !w.done {
		w.release(true)
	}
	return nil
}

// fakeFetcher serves blobs from memory, with faults and link emulation.
type fakeFetcher struct {
	blobs map[digest.Digest][]byte
	// fault, when set, may replace or wrap a request's answer.
	fault func(req fetchReq, body io.ReadCloser) (io.ReadCloser, error)
	// noRanges refuses what a server without ranges cannot serve: a range that starts
	// after the first byte or ends before the last.
	noRanges bool
	// ignoreRanges answers every request with the whole blob, as a server that ignores
	// Range does (a Served body from offset 0).
	ignoreRanges bool
	// latency is added before each answer; rate caps each body (bytes/s; 0: none).
	latency time.Duration
	rate    int64

	mu       sync.Mutex
	reqs     []fetchReq
	bodies   []*slowBody
	inFlight int
	maxIn    int
	ranged   chan struct{} // closed at the first request from an offset after 0 (see holdUntilRanged)
}

// holdUntilRanged makes the first request of a blob stop after n bytes until a request
// from a later offset has been made (or, so that a broken engine fails its test rather
// than hangs it, a minute has passed): the engine's decision to split then meets a
// stream that has not finished, however fast the machine runs.
func (f *fakeFetcher) holdUntilRanged(n int64) {
	f.mu.Lock()
	f.ranged = make(chan struct{})
	f.mu.Unlock()
	f.fault = func(r fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
		if r.n == 1 && r.offset == 0 {
			return &heldBody{ReadCloser: body, left: n, until: f.ranged}, nil
		}
		return body, nil
	}
}

// sent is what the fake server sent for each blob: the bytes every body gave, and the
// bytes bodies were closed with unread (a real server would have sent those too, into
// the connection, before it saw the close: the waste of a request cut short).
func (f *fakeFetcher) sent() (read, unread map[digest.Digest]int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	read, unread = map[digest.Digest]int64{}, map[digest.Digest]int64{}
	for _, b := range f.bodies {
		b.mu.Lock()
		read[b.d] += b.n
		if b.closedEarly {
			unread[b.d] += b.size - b.n
		}
		b.mu.Unlock()
	}
	return read, unread
}

// requested is the union of the stretches asked for, per blob, and whether any two
// requests of a blob overlapped.
func (f *fakeFetcher) overlaps() []fetchReq {
	var out []fetchReq
	reqs := f.requests()
	for i, a := range reqs {
		for _, b := range reqs[:i] {
			if a.d != b.d {
				continue
			}
			ae, be := a.offset+a.length, b.offset+b.length
			if a.length < 0 {
				ae = 1 << 62
			}
			if b.length < 0 {
				be = 1 << 62
			}
			if a.offset < be && b.offset < ae {
				out = append(out, a)
			}
		}
	}
	return out
}

// heldBody reads left bytes, then waits for until before it goes on.
type heldBody struct {
	io.ReadCloser
	left  int64
	until chan struct{}
}

func (h *heldBody) Read(p []byte) (int, error) {
	if h.left <= 0 && h.until != nil {
		var done <-chan struct{}
		if sb, ok := h.ReadCloser.(*slowBody); ok {
			done = sb.ctx.Done() // the request's end ends the wait
		}
		select {
		case <-h.until:
		case <-done:
			return 0, sb0ctx(h.ReadCloser)
		case <-time.After(time.Minute):
		}
		h.until = nil
	}
	if h.until != nil && int64(len(p)) > h.left {
		p = p[:h.left]
	}
	n, err := h.ReadCloser.Read(p)
	h.left -= int64(n)
	return n, err
}

type fetchReq struct {
	d              digest.Digest
	offset, length int64
	n              int // this digest's request number, from 1
	stream         any // the stream its context names (internal/stream)
}

func newFetcher(blobs ...[]byte) *fakeFetcher {
	f := &fakeFetcher{blobs: map[digest.Digest][]byte{}}
	for _, b := range blobs {
		f.blobs[digest.FromBytes(b)] = b
	}
	return f
}

func (f *fakeFetcher) Fetch(ctx context.Context, desc manifest.Descriptor, offset, length int64) (io.ReadCloser, error) {
	f.mu.Lock()
	n := 1
	for _, r := range f.reqs {
		if r.d == desc.Digest {
			n++
		}
	}
	req := fetchReq{d: desc.Digest, offset: offset, length: length, n: n, stream: stream.Of(ctx)}
	f.reqs = append(f.reqs, req)
	if f.ranged != nil && (offset > 0 || length >= 0) {
		select {
		case <-f.ranged:
		default:
			close(f.ranged)
		}
	}
	f.inFlight++
	f.maxIn = max(f.maxIn, f.inFlight)
	f.mu.Unlock()
	done := func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}
	if f.latency > 0 {
		if err := pullkit.Sleep(ctx, f.latency); err != nil {
			done()
			return nil, err
		}
	}
	b, ok := f.blobs[desc.Digest]
	if !ok {
		done()
		return nil, &pullkit.HTTPError{Method: "GET", URL: "fake/" + string(desc.Digest), StatusCode: 404}
	}
	if b == nil && f.fault != nil {
		// A blob the fault makes up whole.
		return f.fault(req, &slowBody{ctx: ctx, r: bytes.NewReader(nil), done: done})
	}
	if f.ignoreRanges {
		offset, length = 0, -1
	}
	if f.noRanges && (offset > 0 || length >= 0 && offset+length < int64(len(b))) {
		done()
		return nil, fmt.Errorf("%w: no ranges here", pullkit.ErrUnsupported)
	}
	end := int64(len(b))
	if length >= 0 {
		end = min(end, offset+length)
	}
	if offset > int64(len(b)) {
		done()
		return nil, &pullkit.HTTPError{Method: "GET", URL: "fake", StatusCode: 416}
	}
	sb := &slowBody{ctx: ctx, r: bytes.NewReader(b[offset:end]), rate: f.rate, done: done, d: desc.Digest, size: end - offset}
	f.mu.Lock()
	f.bodies = append(f.bodies, sb)
	f.mu.Unlock()
	var body io.ReadCloser = sb
	if f.ignoreRanges {
		body = servedBody{body}
	}
	if f.fault != nil {
		return f.fault(req, body)
	}
	return body, nil
}

// servedBody is the whole blob, whatever was asked for.
type servedBody struct{ io.ReadCloser }

func (servedBody) ServedFrom() int64 { return 0 }

func (f *fakeFetcher) requests() []fetchReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fetchReq(nil), f.reqs...)
}

// slowBody reads at most rate bytes per second, honouring ctx.
type slowBody struct {
	ctx    context.Context
	r      io.Reader
	rate   int64
	start  time.Time
	done   func()
	closed atomic.Bool
	d      digest.Digest
	size   int64 // what the request asked for

	mu          sync.Mutex
	n           int64 // read so far
	closedEarly bool  // closed before the end without a read error
}

func (s *slowBody) Read(p []byte) (int, error) {
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	if s.rate > 0 {
		if s.start.IsZero() {
			s.start = time.Now()
		}
		if len(p) > 32<<10 {
			p = p[:32<<10]
		}
		due := s.start.Add(time.Duration(float64(s.n+int64(len(p))) / float64(s.rate) * float64(time.Second)))
		if err := pullkit.Sleep(s.ctx, time.Until(due)); err != nil {
			return 0, err
		}
	}
	n, err := s.r.Read(p)
	s.mu.Lock()
	s.n += int64(n)
	s.mu.Unlock()
	return n, err
}

func (s *slowBody) Close() error {
	if s.closed.CompareAndSwap(false, true) {
		s.mu.Lock()
		s.closedEarly = s.n < s.size && s.ctx.Err() == nil
		s.mu.Unlock()
		s.done()
	}
	return nil
}

// cutAfter returns a body that breaks after n bytes.
type cutBody struct {
	io.ReadCloser
	left int64
}

func (c *cutBody) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errors.New("connection reset (test)")
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.ReadCloser.Read(p)
	c.left -= int64(n)
	return n, err
}

// flipBody flips one byte of the body at position at.
type flipBody struct {
	io.ReadCloser
	at, pos int64
}

func (f *flipBody) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if f.at >= f.pos && f.at < f.pos+int64(n) {
		p[f.at-f.pos] ^= 0xff
	}
	f.pos += int64(n)
	return n, err
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func desc(b []byte) manifest.Descriptor {
	return manifest.Descriptor{MediaType: manifest.MediaTypeOCILayerGzip, Digest: digest.FromBytes(b), Size: int64(len(b))}
}

// eventLog records events for assertions.
type eventLog struct {
	mu  sync.Mutex
	evs []pullkit.Event
}

func (l *eventLog) add(e pullkit.Event) {
	l.mu.Lock()
	l.evs = append(l.evs, e)
	l.mu.Unlock()
}

func (l *eventLog) kinds(d digest.Digest) []pullkit.EventKind {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []pullkit.EventKind
	for _, e := range l.evs {
		if e.Digest == d {
			out = append(out, e.Kind)
		}
	}
	return out
}

// sb0ctx is the error of a request whose context ended.
func sb0ctx(rc io.ReadCloser) error {
	if sb, ok := rc.(*slowBody); ok && sb.ctx.Err() != nil {
		return sb.ctx.Err()
	}
	return context.Canceled
}

package layers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/internal/ztest"
	"github.com/pullkit/pullkit/store"
)

// TestRealStores runs the transfer's paths into the module's two stores: inline, one
// stream, a split stream (whose bytes ahead are held by the store's writer), and a
// resume whose taps are given back the bytes an earlier writer left.
func TestRealStores(t *testing.T) {
	small := randomBytes(t, 100<<10)
	large := randomBytes(t, 12<<20+5)
	split := randomBytes(t, 24<<20)
	layer := ztest.Gzip(t, randomBytes(t, 3<<20))
	for name, open := range map[string]func(t *testing.T) store.Store{
		"layout": func(t *testing.T) store.Store {
			l, err := store.OpenLayout(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return l
		},
		"memory": func(t *testing.T) store.Store { return store.NewMemory() },
	} {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			f := newFetcher(small, large, split, layer)
			f.latency = time.Millisecond
			slow := newFetcher(split)
			slow.rate, slow.latency = 8<<20, 2*time.Millisecond
			slow.holdUntilRanged(2 << 20)
			if _, err := Fetch(context.Background(), f, st, []Blob{{Desc: desc(small)}, {Desc: desc(large)}}); err != nil {
				t.Fatal(err)
			}
			// Split (pinned: the decision is TestStreamsLimit's), so that bytes ahead
			// are held by the store's writer and taken back in order.
			if _, err := Fetch(context.Background(), slow, st, []Blob{{Desc: desc(split)}}, withJudgement(judgeAlways)); err != nil {
				t.Fatal(err)
			}
			// An interrupted layer (its body breaks half way, and the registry then
			// fails every request; one attempt), then its resume with the diffID asked
			// for.
			cut := newFetcher(layer)
			cut.fault = func(r fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
				if r.n > 1 {
					body.Close()
					return nil, errors.New("connection refused (test)")
				}
				return &cutBody{ReadCloser: body, left: int64(len(layer) / 2)}, nil
			}
			once := fastRetry()
			once.Attempts = 1
			if _, err := Fetch(context.Background(), cut, st, []Blob{{Desc: desc(layer)}}, WithRetry(once), withJudgement(judgeNever)); err == nil {
				t.Fatal("a layer whose body always breaks half way was fetched")
			}
			res, err := Fetch(context.Background(), f, st, []Blob{{Desc: desc(layer), DiffID: true}})
			if err != nil {
				t.Fatal(err)
			}
			if want := uncompressedDigest(t, layer); res[0].DiffID != want {
				t.Errorf("diffID after resume %s, want %s", res[0].DiffID, want)
			}
			for _, b := range [][]byte{small, large, split, layer} {
				got, err := store.ReadBlob(context.Background(), st, digest.FromBytes(b), 64<<20)
				if err != nil || !bytes.Equal(got, b) {
					t.Errorf("blob of %d bytes: %v", len(b), err)
				}
			}
			var ranged int
			for _, r := range slow.requests() {
				if r.length >= 0 {
					ranged++
				}
			}
			if ranged == 0 {
				t.Errorf("the capped blob was not split")
			}
		})
	}
}

// stores are the module's two stores, whose writers hold bytes out of order.
func stores() map[string]func(t *testing.T) store.Store {
	return map[string]func(t *testing.T) store.Store{
		"layout": func(t *testing.T) store.Store {
			l, err := store.OpenLayout(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return l
		},
		"memory": func(t *testing.T) store.Store { return store.NewMemory() },
	}
}

// holding reports what st's writer of b holds: its prefix and the stretches beyond.
func holding(t *testing.T, st store.Store, b []byte) (int64, []store.Range) {
	t.Helper()
	w, err := st.Writer(context.Background(), desc(b))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	return w.Offset(), w.(store.RangeWriter).Held()
}

// TestSparseResumeAfterCancel: a split transfer cancelled part way keeps every byte it
// received, in order or not, and the next transfer asks only for the rest: what the
// server sends over both adds up to the blob, and no request of the second overlaps
// what the first kept. The first request stops after 1 MiB (so the blob cannot be
// whole), and the cancel comes once a later range has sent 2 MiB, whenever that is; the
// assertions hold for whatever the engine had received by then.
func TestSparseResumeAfterCancel(t *testing.T) {
	for name, open := range stores() {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			b := randomBytes(t, 20<<20+333)
			d := digest.FromBytes(b)
			f := newFetcher(b)
			f.rate, f.latency = 16<<20, time.Millisecond
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			f.fault = func(r fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
				if r.offset > 0 {
					return &afterBody{ReadCloser: body, left: 2 << 20, fn: cancel}, nil
				}
				return &heldBody{ReadCloser: body, left: 1 << 20, until: make(chan struct{})}, nil
			}
			_, err := Fetch(ctx, f, st, []Blob{{Desc: desc(b)}}, withJudgement(judgeAlways))
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("%v, want the cancel", err)
			}
			read1, _ := f.sent()
			prefix, held := holding(t, st, b)
			kept := prefix
			for _, r := range held {
				kept += r.End - r.Start
			}
			if kept != read1[d] {
				t.Errorf("the store keeps %d bytes (prefix %d, held %v), the server sent %d: every byte received must be kept", kept, prefix, held, read1[d])
			}
			if len(held) == 0 {
				t.Errorf("nothing held beyond the prefix %d of a split transfer", prefix)
			}

			f2 := newFetcher(b)
			if _, err := Fetch(context.Background(), f2, st, []Blob{{Desc: desc(b)}}, withJudgement(judgeAlways)); err != nil {
				t.Fatal(err)
			}
			got, err := store.ReadBlob(context.Background(), st, d, 64<<20)
			if err != nil || !bytes.Equal(got, b) {
				t.Fatalf("after the resume: %v", err)
			}
			read2, unread2 := f2.sent()
			if read2[d] != int64(len(b))-kept || unread2[d] != 0 {
				t.Errorf("the resume was sent %d bytes (%d thrown away), want the %d missing", read2[d], unread2[d], int64(len(b))-kept)
			}
			for _, r := range f2.requests() {
				end := r.offset + r.length
				if r.length < 0 {
					end = int64(len(b))
				}
				if r.offset < prefix {
					t.Errorf("the resume asked for %+v, before the prefix %d", r, prefix)
				}
				for _, h := range held {
					if r.offset < h.End && h.Start < end {
						t.Errorf("the resume asked for %+v, which overlaps the held %v", r, h)
					}
				}
			}
		})
	}
}

// afterBody calls fn once left bytes have been read.
type afterBody struct {
	io.ReadCloser
	left int64
	fn   func()
}

func (a *afterBody) Read(p []byte) (int, error) {
	n, err := a.ReadCloser.Read(p)
	if a.left -= int64(n); a.left <= 0 && a.fn != nil {
		a.fn()
		a.fn = nil
	}
	return n, err
}

// TestCancelSettles: a cancelled split transfer reads the answers to the requests it
// had made to their ends (within the grace, a minute here: the fake link ends them
// well before) and keeps every byte of them: nothing the server sent is thrown away,
// and the store holds exactly what was sent. With no grace it stops at once, keeping
// what it had. The cancel comes once a range has sent 2 MiB, whenever that is (four
// jobs: the blob cannot be whole by then).
func TestCancelSettles(t *testing.T) {
	for name, open := range stores() {
		for _, grace := range []time.Duration{time.Minute, 0} {
			t.Run(fmt.Sprintf("%s/grace %v", name, grace), func(t *testing.T) {
				st := open(t)
				b := randomBytes(t, 24<<20+77)
				d := digest.FromBytes(b)
				f := newFetcher(b)
				f.rate, f.latency = 32<<20, time.Millisecond
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				f.fault = func(r fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
					if r.offset > 0 {
						return &afterBody{ReadCloser: body, left: 2 << 20, fn: cancel}, nil
					}
					return body, nil
				}
				_, err := Fetch(ctx, f, st, []Blob{{Desc: desc(b)}}, WithJobs(4), withJudgement(judgeAlways), WithCancelGrace(grace))
				if !errors.Is(err, context.Canceled) {
					t.Skipf("%v: the transfer ended before the cancel could matter", err)
				}
				read, unread := f.sent()
				prefix, held := holding(t, st, b)
				kept := prefix
				for _, r := range held {
					kept += r.End - r.Start
				}
				if kept != read[d] {
					t.Errorf("the store keeps %d bytes, the server sent %d: every byte received must be kept", kept, read[d])
				}
				if grace > 0 && unread[d] != 0 {
					t.Errorf("%d bytes of answers in flight were thrown away; with the grace they are read to their ends", unread[d])
				}
				if len(f.requests()) < 2 {
					t.Errorf("%d requests: the transfer was not split", len(f.requests()))
				}
			})
		}
	}
}

// TestCancelSettlesInline: a cancelled call reads the answers to the requests of small
// blobs (received inline) to their ends within the grace, and keeps every byte the
// server sent, for the next call: nothing is committed after the cancel, and nothing
// sent is thrown away. With no grace it stops at once, keeping what it had in hand. The
// cancel comes once the first blob's body has given 50 KiB, whenever that is.
func TestCancelSettlesInline(t *testing.T) {
	for name, open := range stores() {
		for _, grace := range []time.Duration{time.Minute, 0} {
			t.Run(fmt.Sprintf("%s/grace %v", name, grace), func(t *testing.T) {
				st := open(t)
				var blobs [][]byte
				var bs []Blob
				for range 4 {
					b := randomBytes(t, 200<<10)
					blobs = append(blobs, b)
					bs = append(bs, Blob{Desc: desc(b)})
				}
				f := newFetcher(blobs...)
				f.rate = 4 << 20
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				f.fault = func(r fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
					if r.d == bs[0].Desc.Digest {
						return &afterBody{ReadCloser: body, left: 50 << 10, fn: cancel}, nil
					}
					return body, nil
				}
				_, err := Fetch(ctx, f, st, bs, WithCancelGrace(grace))
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("Fetch: %v, want the cancel", err)
				}
				read, unread := f.sent()
				for i, b := range blobs {
					d := digest.FromBytes(b)
					if store.Has(context.Background(), st, d) {
						if read[d] != int64(len(b)) {
							t.Errorf("blob %d committed after %d bytes of %d", i, read[d], len(b))
						}
						continue
					}
					if prefix, _ := holding(t, st, b); prefix != read[d] {
						t.Errorf("blob %d: the store keeps %d bytes, the server sent %d: every byte received must be kept", i, prefix, read[d])
					}
					if grace > 0 && unread[d] != 0 {
						t.Errorf("blob %d: %d bytes of its answer were thrown away; with the grace it is read to its end", i, unread[d])
					}
				}
				if grace > 0 && read[bs[0].Desc.Digest] != int64(len(blobs[0])) {
					t.Errorf("the first blob's answer gave %d bytes of %d: with the grace it is read to its end", read[bs[0].Desc.Digest], len(blobs[0]))
				}
			})
		}
	}
}

// heldInProcess is a body that gives its first bytes at once, then waits for its
// request's context to end (a stream whose window is full, nobody reading), and then
// still gives hold bytes, at most 16 KiB a read, before it ends: what a reset HTTP/2
// stream's buffer holds, which Go's client keeps readable after the reset.
type heldInProcess struct {
	ctx         context.Context
	data        []byte
	first, hold int
	pos         int
	onFirst     func()
}

func (h *heldInProcess) Read(p []byte) (int, error) {
	if h.pos >= h.first && h.ctx.Err() == nil {
		if h.onFirst != nil {
			h.onFirst()
			h.onFirst = nil
		}
		select {
		case <-h.ctx.Done():
		case <-time.After(time.Minute):
		}
	}
	limit := h.first
	if h.ctx.Err() != nil {
		limit += h.hold
	}
	limit = min(limit, len(h.data), h.pos+16<<10)
	if h.pos >= limit {
		if err := h.ctx.Err(); err != nil {
			return 0, err
		}
		return 0, io.EOF
	}
	n := copy(p, h.data[h.pos:limit])
	h.pos += n
	return n, nil
}

func (h *heldInProcess) Close() error { return nil }

// TestCancelKeepsWhatTheBodyHolds: once the cancel grace is over (here at once: a grace
// of 0), what a request's body holds already in the process is still taken and kept:
// the cancel comes when the first request has given its first bytes, and the body then
// gives hold bytes more before it ends; the store keeps both, for a large blob's part
// and for a small blob received inline.
func TestCancelKeepsWhatTheBodyHolds(t *testing.T) {
	old := drainWait
	drainWait = time.Minute // a copy takes microseconds; the test must not depend on it
	t.Cleanup(func() { drainWait = old })
	for name, open := range stores() {
		for _, tc := range []struct {
			what        string
			size        int
			first, hold int
		}{
			{"large", 4 << 20, 1 << 20, 256 << 10},
			{"small", 200 << 10, 64 << 10, 64 << 10},
		} {
			t.Run(name+"/"+tc.what, func(t *testing.T) {
				st := open(t)
				b := randomBytes(t, tc.size)
				f := newFetcher(b)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				f.fault = func(r fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
					if r.n != 1 {
						return body, nil
					}
					sb := body.(*slowBody)
					end := int64(len(b))
					if r.length >= 0 {
						end = r.offset + r.length
					}
					return &heldInProcess{ctx: sb.ctx, data: b[r.offset:end], first: tc.first, hold: tc.hold, onFirst: cancel}, nil
				}
				_, err := Fetch(ctx, f, st, []Blob{{Desc: desc(b)}}, WithJobs(1), withJudgement(judgeNever), WithCancelGrace(0))
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("Fetch: %v, want the cancel", err)
				}
				prefix, held := holding(t, st, b)
				kept := prefix
				for _, r := range held {
					kept += r.End - r.Start
				}
				if kept != int64(tc.first+tc.hold) {
					t.Errorf("the store keeps %d bytes (%d and %v), want %d: the %d the body gave before the cancel and the %d it held", kept, prefix, held, tc.first+tc.hold, tc.first, tc.hold)
				}
			})
		}
	}
}

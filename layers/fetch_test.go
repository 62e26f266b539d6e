package layers

import (
	"bytes"
	"context"
	"errors"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/ztest"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/store"
)

// TestFetchStoresVerifiedBlobs fetches blobs of every path (empty, small, large, of
// unknown size, listed twice) and checks what the store holds and the results.
func TestFetchStoresVerifiedBlobs(t *testing.T) {
	empty := []byte{}
	small := randomBytes(t, 1000)
	large := randomBytes(t, 5<<20+123)
	unknown := randomBytes(t, 3<<20+7)
	f := newFetcher(empty, small, large, unknown)
	s := newMemStore()
	ud := desc(unknown)
	ud.Size = -1
	blobs := []Blob{{Desc: desc(empty)}, {Desc: desc(small), What: "config"}, {Desc: desc(large)}, {Desc: ud}, {Desc: desc(small)}}
	res, err := Fetch(context.Background(), f, s, blobs)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range [][]byte{empty, small, large, unknown, small} {
		got, ok := s.get(digest.FromBytes(want))
		if !ok || !bytes.Equal(got, want) {
			t.Errorf("blob %d: stored %d bytes (present %v), want %d", i, len(got), ok, len(want))
		}
		if res[i].Desc.Size != int64(len(want)) || res[i].Desc.Digest != digest.FromBytes(want) {
			t.Errorf("result %d: %+v", i, res[i].Desc)
		}
		if i < 4 && !res[i].Fetched {
			t.Errorf("result %d: Fetched false", i)
		}
	}
	if n := s.commits.Load(); n != 4 {
		t.Errorf("%d commits, want 4 (the duplicate fetched once)", n)
	}
	for _, r := range f.requests() {
		if r.d == digest.FromBytes(empty) {
			t.Errorf("the empty blob was requested: %+v", r)
		}
	}
}

func TestPresentBlobIsSkippedAndDamagedOneRefetched(t *testing.T) {
	a, b := randomBytes(t, 2000), randomBytes(t, 3000)
	f := newFetcher(a, b)
	s := newMemStore()
	s.put(a)
	s.mu.Lock()
	s.blobs[digest.FromBytes(b)] = b[:100] // truncated under its name
	s.mu.Unlock()
	var log eventLog
	res, err := Fetch(context.Background(), f, s, []Blob{{Desc: desc(a)}, {Desc: desc(b)}}, WithProgress(log.add))
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Fetched || !res[1].Fetched {
		t.Errorf("Fetched = %v, %v; want false, true", res[0].Fetched, res[1].Fetched)
	}
	if got, _ := s.get(digest.FromBytes(b)); !bytes.Equal(got, b) {
		t.Errorf("damaged blob not repaired: %d bytes", len(got))
	}
	for _, r := range f.requests() {
		if r.d == digest.FromBytes(a) {
			t.Errorf("present blob requested")
		}
	}
	if k := log.kinds(digest.FromBytes(a)); k[len(k)-1] != pullkit.EventSkipped {
		t.Errorf("present blob's events %v, want it to end skipped", k)
	}
}

// TestResumeAfterBrokenBody breaks bodies part way and checks that the next request
// starts at exactly the byte reached, for a small and a large blob.
func TestResumeAfterBrokenBody(t *testing.T) {
	for _, size := range []int{300 << 10, 6<<20 + 5} {
		b := randomBytes(t, size)
		f := newFetcher(b)
		cut := int64(size / 3)
		f.fault = func(r fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
			if r.n == 1 {
				return &cutBody{ReadCloser: body, left: cut}, nil
			}
			return body, nil
		}
		s := newMemStore()
		// One stream, however fast the machine: the request count is the engine's
		// resume, not a split it would decide by timing.
		if _, err := Fetch(context.Background(), f, s, []Blob{{Desc: desc(b)}}, withJudgement(judgeNever)); err != nil {
			t.Fatal(err)
		}
		reqs := f.requests()
		if len(reqs) != 2 {
			t.Fatalf("%d bytes: %d requests, want 2: %+v", size, len(reqs), reqs)
		}
		// A large blob is received in aligned blocks: the cut lands inside one, which is
		// delivered up to the cut.
		if reqs[1].offset != cut {
			t.Errorf("%d bytes: resumed at %d, want %d", size, reqs[1].offset, cut)
		}
		if got, _ := s.get(digest.FromBytes(b)); !bytes.Equal(got, b) {
			t.Errorf("%d bytes: stored content differs", size)
		}
	}
}

// TestResumeFromEarlierPartial: what an earlier transfer left in the store's writer is
// continued, not fetched again; the diffID still covers the whole blob.
func TestResumeFromEarlierPartial(t *testing.T) {
	layer := ztest.Gzip(t, randomBytes(t, 4<<20))
	f := newFetcher(layer)
	s := newMemStore()
	d := digest.FromBytes(layer)
	s.partial[d] = append([]byte(nil), layer[:len(layer)/2]...)
	// One stream (pinned): the requests counted are the resume's, not a split's.
	res, err := Fetch(context.Background(), f, s, []Blob{{Desc: desc(layer), DiffID: true}}, withJudgement(judgeNever))
	if err != nil {
		t.Fatal(err)
	}
	if reqs := f.requests(); len(reqs) != 1 || reqs[0].offset != int64(len(layer)/2) {
		t.Fatalf("requests %+v, want one from %d", reqs, len(layer)/2)
	}
	if want := uncompressedDigest(t, layer); res[0].DiffID != want {
		t.Errorf("diffID %s, want %s", res[0].DiffID, want)
	}
	// A writer that cannot be read back starts over, so the diffID is still right.
	s2 := newMemStore()
	s2.noReadAt = true
	s2.partial[d] = append([]byte(nil), layer[:len(layer)/2]...)
	f2 := newFetcher(layer)
	res, err = Fetch(context.Background(), f2, s2, []Blob{{Desc: desc(layer), DiffID: true}}, withJudgement(judgeNever))
	if err != nil {
		t.Fatal(err)
	}
	if reqs := f2.requests(); len(reqs) != 1 || reqs[0].offset != 0 {
		t.Errorf("without read-back: requests %+v, want one from 0", reqs)
	}
	if want := uncompressedDigest(t, layer); res[0].DiffID != want {
		t.Errorf("without read-back: diffID %s, want %s", res[0].DiffID, want)
	}
}

// TestWrongBytesAreFetchedAgain: a body with one wrong byte fails its digest, and the
// blob is fetched again from scratch; a blob that is always wrong fails with
// ErrDigestMismatch and leaves nothing under its name.
func TestWrongBytesAreFetchedAgain(t *testing.T) {
	for _, size := range []int{5000, 3 << 20} {
		b := randomBytes(t, size)
		f := newFetcher(b)
		f.fault = func(r fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
			if r.n == 1 {
				return &flipBody{ReadCloser: body, at: int64(size / 2)}, nil
			}
			return body, nil
		}
		s := newMemStore()
		if _, err := Fetch(context.Background(), f, s, []Blob{{Desc: desc(b)}}, WithRetry(fastRetry())); err != nil {
			t.Fatalf("%d bytes, one wrong answer: %v", size, err)
		}
		if got, _ := s.get(digest.FromBytes(b)); !bytes.Equal(got, b) {
			t.Errorf("%d bytes: stored content differs", size)
		}
		f.fault = func(r fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
			return &flipBody{ReadCloser: body, at: 7}, nil
		}
		s = newMemStore()
		_, err := Fetch(context.Background(), f, s, []Blob{{Desc: desc(b)}}, WithRetry(fastRetry()))
		if !errors.Is(err, pullkit.ErrDigestMismatch) {
			t.Fatalf("%d bytes, always wrong: %v, want ErrDigestMismatch", size, err)
		}
		var pe *pullkit.Error
		if !errors.As(err, &pe) || pe.Digest != digest.FromBytes(b) {
			t.Errorf("error %v does not name the blob", err)
		}
		if _, ok := s.get(digest.FromBytes(b)); ok {
			t.Errorf("%d bytes: a wrong blob got its name", size)
		}
	}
}

func fastRetry() pullkit.RetryPolicy {
	p := pullkit.DefaultRetryPolicy()
	p.Backoff, p.MaxBackoff = time.Millisecond, 5*time.Millisecond
	return p
}

// TestLongBodyFails: a body with more bytes than the descriptor says is not the blob.
func TestLongBodyFails(t *testing.T) {
	for _, size := range []int{5000, 2<<20 + 3} {
		b := randomBytes(t, size)
		f := newFetcher(append(append([]byte(nil), b...), 'x'))
		f.blobs = map[digest.Digest][]byte{digest.FromBytes(b): append(append([]byte(nil), b...), "extra"...)}
		s := newMemStore()
		_, err := Fetch(context.Background(), f, s, []Blob{{Desc: desc(b)}}, WithRetry(fastRetry()))
		if !errors.Is(err, pullkit.ErrSizeMismatch) {
			t.Errorf("%d bytes: %v, want ErrSizeMismatch", size, err)
		}
		if _, ok := s.get(digest.FromBytes(b)); ok {
			t.Errorf("%d bytes: stored", size)
		}
	}
}

func TestDeclaredSizeOverTheCapFailsAtOnce(t *testing.T) {
	d := manifest.Descriptor{Digest: digest.FromString("x"), Size: 1<<63 - 1}
	f := newFetcher()
	_, err := Fetch(context.Background(), f, newMemStore(), []Blob{{Desc: d}})
	if !errors.Is(err, pullkit.ErrTooLarge) {
		t.Fatalf("%v, want ErrTooLarge", err)
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("%d requests for a blob over the cap", n)
	}
}

// TestHugeDeclaredSizeTrickleIsBounded declares a blob of 64 TiB (under a raised cap)
// whose body trickles: memory stays flat and cancelling stops it at once.
func TestHugeDeclaredSizeTrickleIsBounded(t *testing.T) {
	d := manifest.Descriptor{Digest: digest.FromString("never"), Size: 64 << 40}
	f := newFetcher()
	f.blobs[d.Digest] = nil
	f.fault = func(r fetchReq, _ io.ReadCloser) (io.ReadCloser, error) {
		return io.NopCloser(&trickle{}), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	_, err := Fetch(ctx, f, newMemStore(), []Blob{{Desc: d}}, WithMaxBlobSize(1<<50))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v, want the deadline", err)
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Errorf("took %v after cancellation", el)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 64<<20 {
		t.Errorf("heap grew by %d MiB", grew>>20)
	}
}

// trickle sends a byte every millisecond.
type trickle struct{}

func (trickle) Read(p []byte) (int, error) {
	time.Sleep(time.Millisecond)
	p[0] = 0
	return 1, nil
}

// TestEmptyReadsDoNotSpin: a body that returns nothing forever, without an error, is
// given up on rather than read in a busy loop.
func TestEmptyReadsDoNotSpin(t *testing.T) {
	b := randomBytes(t, 2<<20)
	f := newFetcher(b)
	f.fault = func(r fetchReq, body io.ReadCloser) (io.ReadCloser, error) { return io.NopCloser(emptyReader{}), nil }
	start := time.Now()
	_, err := Fetch(context.Background(), f, newMemStore(), []Blob{{Desc: desc(b)}}, WithRetry(fastRetry()))
	if !errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("%v, want io.ErrNoProgress", err)
	}
	if el := time.Since(start); el > 30*time.Second {
		t.Errorf("took %v", el)
	}
}

type emptyReader struct{}

func (emptyReader) Read([]byte) (int, error) { return 0, nil }

func TestJobsBoundRequests(t *testing.T) {
	var blobs [][]byte
	for range 12 {
		blobs = append(blobs, randomBytes(t, 50<<10))
	}
	f := newFetcher(blobs...)
	// Every answer waits until a second request has been made, so that "at least two
	// at once" does not depend on how fast the machine runs (the first request to come
	// is held until another comes while it is in flight).
	f.fault = func(r fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if len(f.requests()) >= 2 {
				break
			}
		}
		return body, nil
	}
	var bs []Blob
	for _, b := range blobs {
		bs = append(bs, Blob{Desc: desc(b)})
	}
	if _, err := Fetch(context.Background(), f, newMemStore(), bs, WithJobs(3)); err != nil {
		t.Fatal(err)
	}
	if f.maxIn > 3 || f.maxIn < 2 {
		t.Errorf("%d requests in flight at most, want 2-3", f.maxIn)
	}
	f.fault = nil
	if _, err := Fetch(context.Background(), f, newMemStore(), bs, WithJobs(0)); !errors.Is(err, pullkit.ErrInvalid) {
		t.Errorf("WithJobs(0): %v, want ErrInvalid", err)
	}
}

// TestSplitOnALimitedLink: a blob judged link-limited (pinned: the measurement that
// decides it is TestStreamsLimit's) is split into parallel ranges and still verifies,
// and every byte is asked for once: no two requests overlap, no body is closed before
// its end, and what the server sent adds up to the blob. After the first request (a
// range), the parts take chunks from the front. A server that refuses ranges keeps one
// stream; one that answers a range with the whole blob has that answer taken as the
// whole fetch; WithRanges(false) never splits.
func TestSplitOnALimitedLink(t *testing.T) {
	for _, size := range []int{24 << 20, 9<<20 + 12345} {
		b := randomBytes(t, size)
		f := newFetcher(b)
		f.rate = 8 << 20 // 8 MiB/s per connection
		f.latency = 2 * time.Millisecond
		f.holdUntilRanged(2 << 20)
		s := newMemStore()
		if _, err := Fetch(context.Background(), f, s, []Blob{{Desc: desc(b)}}, withJudgement(judgeAlways)); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.get(digest.FromBytes(b)); !bytes.Equal(got, b) {
			t.Errorf("%d bytes: stored content differs", size)
		}
		reqs := f.requests()
		if len(reqs) < 3 {
			t.Errorf("%d bytes: %d requests for a link-limited blob, want it split: %+v", size, len(reqs), reqs)
		}
		for _, r := range reqs {
			if r.length < 0 {
				r.length = int64(size) - r.offset // the last stretch
			}
			if r.length > chunkSize*3/2 {
				t.Errorf("%d bytes: request %+v: not a range of at most a chunk and a half", size, r)
			}
		}
		if o := f.overlaps(); len(o) > 0 {
			t.Errorf("%d bytes: overlapping requests %+v (all: %+v)", size, o, reqs)
		}
		read, unread := f.sent()
		d := digest.FromBytes(b)
		if read[d] != int64(size) || unread[d] != 0 {
			t.Errorf("%d bytes: the server sent %d bytes and %d more that were thrown away, want %d and none", size, read[d], unread[d], size)
		}
	}

	b := randomBytes(t, 6<<20)
	d := digest.FromBytes(b)
	// A server that refuses ranges: the first request (a range) is refused, the second
	// is the whole blob, and nothing else is tried.
	norange := newFetcher(b)
	norange.rate, norange.noRanges = 8<<20, true
	s := newMemStore()
	if _, err := Fetch(context.Background(), norange, s, []Blob{{Desc: desc(b)}}, withJudgement(judgeAlways)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.get(d); !bytes.Equal(got, b) {
		t.Errorf("without ranges: stored content differs")
	}
	if reqs := norange.requests(); len(reqs) != 2 || reqs[0].length < 0 || reqs[1].offset != 0 || reqs[1].length >= 0 {
		t.Errorf("without ranges: requests %+v, want one refused range and the whole blob", reqs)
	}
	// A server that answers a range with the whole blob: that answer is the fetch.
	whole := newFetcher(b)
	whole.rate, whole.ignoreRanges = 8<<20, true
	s = newMemStore()
	if _, err := Fetch(context.Background(), whole, s, []Blob{{Desc: desc(b)}}, withJudgement(judgeAlways)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.get(d); !bytes.Equal(got, b) {
		t.Errorf("whole answers: stored content differs")
	}
	if reqs := whole.requests(); len(reqs) != 1 {
		t.Errorf("whole answers: requests %+v, want the first one only", reqs)
	}
	if read, unread := whole.sent(); read[d] != int64(len(b)) || unread[d] != 0 {
		t.Errorf("whole answers: sent %d (and %d thrown away), want %d", read[d], unread[d], len(b))
	}
	// And WithRanges(false) never splits, even a blob judged link-limited.
	off := newFetcher(b)
	off.rate = 8 << 20
	if _, err := Fetch(context.Background(), off, newMemStore(), []Blob{{Desc: desc(b)}}, WithRanges(false), withJudgement(judgeAlways)); err != nil {
		t.Fatal(err)
	}
	if reqs := off.requests(); len(reqs) != 1 || reqs[0].length >= 0 {
		t.Errorf("WithRanges(false): requests %+v, want the whole blob once", reqs)
	}
}

// TestStreamsLimit checks the measured judgement of whether a blob's streams limit it,
// on made-up measurements: the decision the engine takes from the clock, without it.
func TestStreamsLimit(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name                  string
		el, rtt, busy, waited time.Duration
		parts                 int
		want                  bool
	}{
		{"too early to tell on a fast link", 20 * ms, ms, 0, 0, 1, false},
		{"too early to tell on a long link", 150 * ms, 400 * ms, 0, 0, 1, false},
		{"idle writer, receiver never waits: the stream limits", 100 * ms, ms, 10 * ms, 0, 1, true},
		{"half a round trip on a long link is enough", 200 * ms, 400 * ms, 0, 0, 1, true},
		{"writer busy most of the time: the machine limits", 100 * ms, ms, 60 * ms, 0, 1, false},
		{"writer busy exactly half the time", 100 * ms, ms, 50 * ms, 0, 1, false},
		{"receiver waits for the writer", 100 * ms, ms, 0, 20 * ms, 1, false},
		{"waits shared by four parts", 100 * ms, ms, 0, 20 * ms, 4, true},
		{"waits over four parts still too long", 100 * ms, ms, 0, 80 * ms, 4, false},
	} {
		if got := streamsLimit(tc.el, tc.rtt, tc.busy, tc.waited, tc.parts); got != tc.want {
			t.Errorf("%s: streamsLimit(%v, %v, %v, %v, %d) = %v, want %v", tc.name, tc.el, tc.rtt, tc.busy, tc.waited, tc.parts, got, tc.want)
		}
	}
}

// TestControllerFindsTheLinkFull feeds the controller made-up samples: the best rate per
// connection is learnt over steady stretches, and once the rate per connection falls
// under 60% of it the connections then flowing are the most it uses.
func TestControllerFindsTheLinkFull(t *testing.T) {
	var c controller
	c.init(judgeMeasured)
	c.noteRTT(10 * time.Millisecond)
	t0 := time.Unix(1000, 0)
	n := int64(0)
	feed := func(from, to time.Duration, parts int64, perConn float64) {
		for at := from; at <= to; at += tickPeriod {
			c.sample(t0.Add(at), n, parts)
			n += int64(perConn * float64(parts) * tickPeriod.Seconds())
		}
	}
	// One connection at 10 MB/s for a second, two at 10 MB/s each: not full.
	feed(0, time.Second, 1, 10e6)
	feed(time.Second+tickPeriod, 2*time.Second, 2, 10e6)
	if c.maxParts != 0 || c.best < 9e6 || c.best > 11e6 {
		t.Fatalf("after two steady stretches at 10 MB/s per connection: maxParts %d, best %.0f", c.maxParts, c.best)
	}
	// Eight connections sharing 25 MB/s (3.1 MB/s each): the link is full at eight.
	feed(2*time.Second+tickPeriod, 3*time.Second, 8, 25e6/8)
	if c.maxParts != 8 {
		t.Errorf("at 31%% of the best rate per connection: maxParts %d, want 8", c.maxParts)
	}
	// Pinned, the controller learns nothing from samples.
	var p controller
	p.init(judgeAlways)
	p.sample(t0, 0, 2)
	p.sample(t0.Add(time.Second), 1e6, 2)
	if p.best != 0 || p.maxParts != 0 || len(p.samples) != 0 {
		t.Errorf("pinned controller learnt from samples: best %.0f, maxParts %d", p.best, p.maxParts)
	}
}

// TestCancelKeepsPartial: a cancelled transfer returns the context's error and leaves
// what it wrote for the next one, which resumes from exactly there. The cancel comes
// once the store holds a MiB of the blob, not after a time.
func TestCancelKeepsPartial(t *testing.T) {
	b := randomBytes(t, 8<<20)
	f := newFetcher(b)
	f.rate = 4 << 20 // so that the blob cannot be whole when the cancel lands
	s := newMemStore()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.written = func(d digest.Digest, off int64) {
		if off >= 1<<20 {
			cancel()
		}
	}
	var log eventLog
	_, err := Fetch(ctx, f, s, []Blob{{Desc: desc(b)}}, WithRanges(false), WithProgress(log.add))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("%v, want the cancel", err)
	}
	s.written = nil
	s.mu.Lock()
	kept := len(s.partial[digest.FromBytes(b)])
	s.mu.Unlock()
	if kept < 1<<20 || kept >= len(b) {
		t.Errorf("%d bytes kept for resume, want at least the MiB written before the cancel", kept)
	}
	k := log.kinds(digest.FromBytes(b))
	if k[len(k)-1] != pullkit.EventCancelled {
		t.Errorf("events %v, want the last to be cancelled", k)
	}
	f.rate = 0
	before := len(f.requests())
	if _, err := Fetch(context.Background(), f, s, []Blob{{Desc: desc(b)}}, withJudgement(judgeNever)); err != nil {
		t.Fatal(err)
	}
	if r := f.requests()[before:]; len(r) != 1 || r[0].offset != int64(kept) {
		t.Errorf("resumed with requests %+v, want one from %d", r, kept)
	}
	if got, _ := s.get(digest.FromBytes(b)); !bytes.Equal(got, b) {
		t.Errorf("stored content differs after the resume")
	}
}

func uncompressedDigest(t testing.TB, blob []byte) digest.Digest {
	rc, _, err := Decompress(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	dg := digest.SHA256.Digester()
	if _, err := io.Copy(dg.Hash(), rc); err != nil {
		t.Fatal(err)
	}
	return dg.Digest()
}

func TestDiffIDs(t *testing.T) {
	content := randomBytes(t, 3<<20)
	plain := content
	gz := ztest.Gzip(t, content)
	zs := ztest.Zstd(t, content)
	f := newFetcher(plain, gz, zs)
	s := newMemStore()
	blobs := []Blob{{Desc: desc(plain), DiffID: true}, {Desc: desc(gz), DiffID: true}, {Desc: desc(zs), DiffID: true}, {Desc: desc(gz)}}
	res, err := Fetch(context.Background(), f, s, blobs)
	if err != nil {
		t.Fatal(err)
	}
	want := digest.FromBytes(content)
	for i := range 3 {
		if res[i].DiffID != want {
			t.Errorf("blob %d: diffID %s, want %s", i, res[i].DiffID, want)
		}
	}
	if res[3].DiffID != "" {
		t.Errorf("diffID given where not asked: %s", res[3].DiffID)
	}
	// From the store, when the blob is there already.
	res, err = Fetch(context.Background(), f, s, []Blob{{Desc: desc(zs), DiffID: true}})
	if err != nil || res[0].DiffID != want || res[0].Fetched {
		t.Errorf("present blob: %+v, %v", res[0], err)
	}
	// A layer that does not decompress fails, naming it.
	bad := append([]byte{0x1f, 0x8b}, randomBytes(t, 2000)...)
	f = newFetcher(bad)
	_, err = Fetch(context.Background(), f, newMemStore(), []Blob{{Desc: desc(bad), DiffID: true}})
	if !errors.Is(err, pullkit.ErrInvalid) {
		t.Errorf("undecompressable layer: %v, want ErrInvalid", err)
	}
}

// TestDecompressionBombStopsOnCancel: a small zstd stream that expands to far more is
// stopped by cancelling, not decompressed to its end.
func TestDecompressionBombStopsOnCancel(t *testing.T) {
	// One frame of 64 MiB of zeros is a few KiB; 256 of them in a row are 16 GiB.
	frame := ztest.Zstd(t, make([]byte, 64<<20))
	bomb := bytes.Repeat(frame, 256)
	f := newFetcher(bomb)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Fetch(ctx, f, newMemStore(), []Blob{{Desc: desc(bomb), DiffID: true}})
	if err == nil {
		t.Fatal("a 16 GiB layer's diffID finished within 300 ms")
	}
	if el := time.Since(start); el > 30*time.Second { // catches a hang, not a measure of speed
		t.Errorf("stopped after %v", el)
	}
}

// TestNothingHappensAfterFetchReturns: a cancelled call returns only once its large
// transfers are done with their blobs, so no event (and no write to the store) comes
// after it, even when a diffID was still being computed.
func TestNothingHappensAfterFetchReturns(t *testing.T) {
	frame := ztest.Zstd(t, make([]byte, 64<<20))
	bomb := bytes.Repeat(frame, 2*smallBlob/len(frame)+1) // large: a transfer with a writer goroutine
	f := newFetcher(bomb)
	var returned atomic.Bool
	var late atomic.Int32
	progress := func(e pullkit.Event) {
		if returned.Load() {
			late.Add(1)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := Fetch(ctx, f, newMemStore(), []Blob{{Desc: desc(bomb), DiffID: true}}, WithProgress(progress))
	returned.Store(true)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want the deadline", err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := late.Load(); n > 0 {
		t.Errorf("%d events after Fetch returned", n)
	}
}

type recordTee struct {
	opens  atomic.Int32
	buf    bytes.Buffer
	closed []error
}

func (r *recordTee) Open(manifest.Descriptor) (io.Writer, error) {
	r.opens.Add(1)
	r.buf.Reset()
	return &r.buf, nil
}

func (r *recordTee) Close(err error) error {
	r.closed = append(r.closed, err)
	return nil
}

func TestTeeSeesVerifiedBytes(t *testing.T) {
	for _, size := range []int{4000, 3<<20 + 1} {
		b := randomBytes(t, size)
		f := newFetcher(b)
		f.fault = func(r fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
			if r.n == 1 {
				return &flipBody{ReadCloser: body, at: 3}, nil
			}
			return body, nil
		}
		tee := &recordTee{}
		if _, err := Fetch(context.Background(), f, newMemStore(), []Blob{{Desc: desc(b), Tee: tee}}, WithRetry(fastRetry())); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(tee.buf.Bytes(), b) {
			t.Errorf("%d bytes: tee got %d bytes, not the blob", size, tee.buf.Len())
		}
		if tee.opens.Load() != 2 || len(tee.closed) != 2 || !errors.Is(tee.closed[0], pullkit.ErrDigestMismatch) || tee.closed[1] != nil {
			t.Errorf("%d bytes: %d opens, closes %v; want 2, [mismatch, nil]", size, tee.opens.Load(), tee.closed)
		}
	}
}

func TestEventsTellTheWholeStory(t *testing.T) {
	a, b := randomBytes(t, 100), randomBytes(t, 3<<20)
	var log eventLog
	_, err := Fetch(context.Background(), newFetcher(a, b), newMemStore(), []Blob{{Desc: desc(a), What: "config"}, {Desc: desc(b)}}, WithProgress(log.add))
	if err != nil {
		t.Fatal(err)
	}
	if e := log.evs[0]; e.Kind != pullkit.EventPlanned || e.Blobs != 2 || e.Total != int64(len(a)+len(b)) {
		t.Errorf("first event %+v, want planned with the totals", e)
	}
	for _, d := range []digest.Digest{digest.FromBytes(a), digest.FromBytes(b)} {
		k := log.kinds(d)
		if k[0] != pullkit.EventQueued || k[1] != pullkit.EventStarted || k[len(k)-1] != pullkit.EventVerified {
			t.Errorf("%s: events %v", d, k)
		}
	}
	var last int64
	for _, e := range log.evs {
		if e.Digest == digest.FromBytes(b) && e.Kind == pullkit.EventProgress {
			if e.Done < last {
				t.Errorf("progress went back: %d after %d", e.Done, last)
			}
			last = e.Done
		}
	}
}

func TestRetryAfterIsHonouredOrRefused(t *testing.T) {
	b := randomBytes(t, 1000)
	f := newFetcher(b)
	f.fault = func(r fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
		if r.n == 1 {
			body.Close()
			return nil, &pullkit.HTTPError{Method: "GET", URL: "fake", StatusCode: 429, RetryAfter: 50 * time.Millisecond}
		}
		return body, nil
	}
	var log eventLog
	if _, err := Fetch(context.Background(), f, newMemStore(), []Blob{{Desc: desc(b)}}, WithProgress(log.add)); err != nil {
		t.Fatal(err)
	}
	waited := false
	for _, e := range log.evs {
		if e.Kind == pullkit.EventWaiting && e.Wait == 50*time.Millisecond {
			waited = true
		}
	}
	if !waited {
		t.Errorf("no waiting event for the 429")
	}
	f = newFetcher(b)
	f.fault = func(r fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
		body.Close()
		return nil, &pullkit.HTTPError{Method: "GET", URL: "fake", StatusCode: 429, RetryAfter: 24 * time.Hour}
	}
	start := time.Now()
	_, err := Fetch(context.Background(), f, newMemStore(), []Blob{{Desc: desc(b)}})
	var he *pullkit.HTTPError
	if !errors.Is(err, pullkit.ErrTooManyRequests) || !errors.As(err, &he) || he.RetryAfter != 24*time.Hour {
		t.Fatalf("%v, want ErrTooManyRequests carrying Retry-After", err)
	}
	if time.Since(start) > 30*time.Second || len(f.requests()) != 1 { // a day's wait would hang it
		t.Errorf("a day's Retry-After was waited for or retried (%d requests)", len(f.requests()))
	}
}

// TestRequestSizes checks the sizes requests ask for, on made-up measurements: growing
// while a blob is not split, chunks once it is (larger on a long fast link), shares of
// what is left near the end, the whole stretch for one stream.
func TestRequestSizes(t *testing.T) {
	newX := func(judge judgement, best float64, rtt time.Duration, todo int64, parts int) *xfer {
		e := &engine{o: defaultOptions()}
		e.ctl.init(judge)
		e.ctl.best = best
		e.ctl.noteRTT(rtt)
		x := &xfer{e: e, size: todo, grow: firstRequest}
		x.todo = x.todo.Add(0, todo)
		x.parts = make([]*part, parts)
		return x
	}
	ms := time.Millisecond
	// Not split: 4, 8, 16, 32, 64, 64 MiB.
	x := newX(judgeMeasured, 0, ms, 1<<40, 1)
	for i, want := range []int64{4 << 20, 8 << 20, 16 << 20, 32 << 20, 64 << 20, 64 << 20} {
		if got := x.request(x.todo[0]); got != want {
			t.Errorf("unsplit request %d: %d, want %d", i, got, want)
		}
	}
	for _, tc := range []struct {
		name      string
		best      float64
		rtt       time.Duration
		todo      int64
		parts     int
		want      int64
		wantChunk int64
	}{
		{"a chunk on a link measured slow", 1e6, 40 * ms, 1 << 30, 4, 4 << 20, 4 << 20},
		{"eight round trips at 12.5 MB/s over 100 ms", 12.5e6, 100 * ms, 1 << 30, 4, 9 << 20, 9 << 20},
		{"near the end: a share of what is left", 1e6, 40 * ms, 24 << 20, 4, 3 << 20, 4 << 20},
		{"never under two round trips' worth", 12.5e6, 100 * ms, 8 << 20, 16, 2 << 20, 9 << 20},
		{"never under a block", 0, ms, 100 << 10, 16, 1 << 20, 4 << 20},
	} {
		x := newX(judgeMeasured, tc.best, tc.rtt, tc.todo, tc.parts)
		x.split = true
		chunk, _ := x.e.ctl.sizes()
		if got := x.request(x.todo[0]); got != tc.want || chunk != tc.wantChunk {
			t.Errorf("%s: request %d (chunk %d), want %d (chunk %d)", tc.name, got, chunk, tc.want, tc.wantChunk)
		}
	}
	// Not split, but its stream judged link-limited (made-up measurements: receiving
	// for a second, its writer and its part never waiting): a chunk, as if split,
	// never more, so that what it has not asked for is left for the parts a split
	// starts once connections are free (growing, a blob that waited for them would
	// ask for its whole rest in one request, and its tail would run on one
	// connection).
	now := time.Now()
	x = newX(judgeMeasured, 5e6, 100*ms, 60<<20, 1)
	x.since = now.Add(-time.Second)
	for i := range 3 {
		if got := x.request(x.todo[0]); got != 4<<20 {
			t.Errorf("unsplit, link-limited, request %d: %d, want a chunk (4 MiB)", i, got)
		}
	}
	// The same blob with its writer busy most of the time (the stream is not what
	// limits it): growing requests.
	x = newX(judgeMeasured, 5e6, 100*ms, 1<<30, 1)
	x.since = now.Add(-time.Second)
	x.busy.Store(int64(900 * ms))
	if a, b := x.request(x.todo[0]), x.request(x.todo[0]); a != 4<<20 || b != 8<<20 {
		t.Errorf("unsplit, writer-limited: %d then %d, want 4 then 8 MiB", a, b)
	}
	// Pinned always link-limited: chunks from the second request on.
	x = newX(judgeAlways, 0, ms, 1<<30, 1)
	x.since = now
	if got := x.request(x.todo[0]); got != 4<<20 {
		t.Errorf("unsplit, judged always link-limited: %d, want a chunk", got)
	}
	// One stream: the whole stretch, whatever its size.
	x = newX(judgeNever, 1e6, 40*ms, 100<<20, 1)
	if got := x.request(x.todo[0]); got != 100<<20 {
		t.Errorf("judged never to split: %d, want the whole stretch", got)
	}
	x = newX(judgeMeasured, 1e6, 40*ms, 100<<20, 1)
	x.noRanges = true
	if got := x.request(x.todo[0]); got != 100<<20 {
		t.Errorf("no ranges: %d, want the whole stretch", got)
	}
}

// TestPrefetchAt checks, on made-up measurements, how long before the end of its request
// a part asks for its next one: two round trips' worth at the best rate per connection,
// a MiB at least, 2 MiB when nothing is measured or the judgement is pinned.
func TestPrefetchAt(t *testing.T) {
	for _, tc := range []struct {
		judge      judgement
		best, hint float64
		rtt        time.Duration
		want       int64
	}{
		{judgeMeasured, 0, 0, 40 * time.Millisecond, 2 << 20},
		{judgeMeasured, 12.5e6, 0, 40 * time.Millisecond, 1 << 20},
		{judgeMeasured, 12.5e6, 0, 100 * time.Millisecond, 2.5e6},
		{judgeMeasured, 0, 50e6, 100 * time.Millisecond, 10e6},
		{judgeAlways, 50e6, 0, 100 * time.Millisecond, 2 << 20},
	} {
		var c controller
		c.init(tc.judge)
		c.best, c.hint = tc.best, tc.hint
		c.noteRTT(tc.rtt)
		if got := c.prefetchAt(); got != tc.want {
			t.Errorf("judge %d, best %.0f, hint %.0f, rtt %v: prefetchAt %d, want %d", tc.judge, tc.best, tc.hint, tc.rtt, got, tc.want)
		}
	}
}

// TestStreamNamed: every request of a part names the part's stream in its context
// (internal/stream), so that a transport keeps its requests on one connection; the
// requests of one blob received by one part (one job: no split) name the same one.
func TestStreamNamed(t *testing.T) {
	b := randomBytes(t, 12<<20)
	f := newFetcher(b)
	if _, err := Fetch(t.Context(), f, newMemStore(), []Blob{{Desc: desc(b)}}, WithJobs(1), withJudgement(judgeAlways)); err != nil {
		t.Fatal(err)
	}
	reqs := f.requests()
	if len(reqs) < 2 {
		t.Fatalf("%d requests, want the blob in chunks", len(reqs))
	}
	for i, r := range reqs {
		if r.stream == nil || r.stream != reqs[0].stream {
			t.Errorf("request %d (%d+%d) names stream %v, want the part's, %v", i, r.offset, r.length, r.stream, reqs[0].stream)
		}
	}
}

// TestHandOff checks, on made-up engine states, where a part whose blob has nothing
// left to ask for hands its connection: a new part of another blob whose streams limit
// it, its first request asked for at once and naming the ending part's stream; none
// while a queued blob would be started first, when the workers were cut, when the link
// has no room even with the ending part gone, or when no other blob takes ranges.
func TestHandOff(t *testing.T) {
	a, b := randomBytes(t, 2<<20), randomBytes(t, 16<<20)
	type state struct {
		queued   bool // a small blob waits in the queue
		busy     int  // workers running a task (of 2 slots)
		maxParts int
		noRanges bool // the other blob's server answered a range with the whole blob
		ranges   bool // WithRanges
	}
	for _, tc := range []struct {
		name string
		s    state
		want bool
	}{
		{"another blob has stretches nobody asked for", state{busy: 2, ranges: true}, true},
		{"the link is full, with room for the ending part's successor", state{busy: 2, maxParts: 2, ranges: true}, true},
		{"the link is full without the ending part", state{busy: 2, maxParts: 1, ranges: true}, false},
		{"a queued blob comes first", state{queued: true, busy: 2, ranges: true}, false},
		{"workers cut by a 429", state{busy: 3, ranges: true}, false},
		{"the other blob's server does not serve ranges", state{busy: 2, noRanges: true, ranges: true}, false},
		{"ranges off", state{busy: 2}, false},
	} {
		f := newFetcher(a, b)
		e := &engine{f: f, o: defaultOptions(), pool: &blocks{pool: getBufPool(blockSize)}}
		e.o.ranges = tc.s.ranges
		e.ctx, e.cancel = context.WithCancel(t.Context())
		e.ctl.init(judgeAlways)
		e.ctl.maxParts = tc.s.maxParts
		e.busy, e.slots = tc.s.busy, 2
		if tc.s.queued {
			e.queue = []*job{{desc: desc(randomBytes(t, 100))}}
		}
		mk := func(blob []byte, todo int64) *xfer {
			x := &xfer{e: e, j: &job{desc: desc(blob), what: "layer"}, size: int64(len(blob)), grow: firstRequest, rangesOK: true, since: time.Now()}
			x.ctx, x.cancel = context.WithCancel(e.ctx)
			x.todo = x.todo.Add(x.size-todo, x.size)
			x.parts = []*part{{x: x}}
			x.running.Add(1)
			return x
		}
		from, to := mk(a, 0), mk(b, 12<<20)
		to.noRanges = tc.s.noRanges
		e.active = []*xfer{from, to}
		e.parts.Store(2)
		p := from.parts[0]
		q := e.handOff(p)
		if (q != nil) != tc.want {
			t.Errorf("%s: handed over %v, want %v", tc.name, q != nil, tc.want)
		}
		if q == nil {
			if e.parts.Load() != 2 || len(to.parts) != 1 {
				t.Errorf("%s: no hand-off, yet %d parts counted, %d on the other blob", tc.name, e.parts.Load(), len(to.parts))
			}
			e.cancel()
			continue
		}
		o := <-q.first.done
		if o.err != nil {
			t.Fatalf("%s: %v", tc.name, o.err)
		}
		o.body.Close()
		reqs := f.requests()
		switch {
		case q.x != to || e.parts.Load() != 3 || len(to.parts) != 2:
			t.Errorf("%s: the successor is not a new part of the other blob, counted", tc.name)
		case q.streamID() != p:
			t.Errorf("%s: the successor's stream is %v, want the ending part's", tc.name, q.streamID())
		case len(reqs) != 1 || reqs[0].d != digest.FromBytes(b) || reqs[0].offset != 4<<20 || reqs[0].stream != p:
			t.Errorf("%s: requests %+v, want one for the other blob's first stretch nobody asked for (at 4 MiB), naming the ending part's stream", tc.name, reqs)
		case q.pos.Load() != q.end.Load():
			t.Errorf("%s: the successor holds [%d, %d) besides its first request", tc.name, q.pos.Load(), q.end.Load())
		}
		q.rc.close()
		e.cancel()
	}
}

// TestHandOffKeepsConnection: with two blobs and two jobs, the part of the smaller blob,
// which has nothing left to ask for, hands its connection to the larger one before its
// last request ends: a request of the larger blob names the smaller one's stream, so
// that a transport keeps it on the same connection. Pinned: the judgement is always
// link-limited, the smaller blob's requests after its first wait until the larger one
// has started (so that it is there to take the connection), and the larger blob's own
// part waits, after its second request, until the hand-off has come (so that its
// stretches are still there for it), each wait bounded by a minute so that an engine
// that does not hand over fails rather than hangs.
func TestHandOffKeepsConnection(t *testing.T) {
	a, b := randomBytes(t, 8<<20), randomBytes(t, 32<<20)
	da, db := digest.FromBytes(a), digest.FromBytes(b)
	f := newFetcher(a, b)
	var (
		mu         sync.Mutex
		sA, sB     any
		bStarted   = make(chan struct{})
		handed     = make(chan struct{})
		handedOnce sync.Once
	)
	wait := func(ch chan struct{}) {
		select {
		case <-ch:
		case <-time.After(time.Minute):
		}
	}
	f.fault = func(r fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
		mu.Lock()
		switch {
		case r.d == da && r.n == 1:
			sA = r.stream
		case r.d == db && r.n == 1:
			sB = r.stream
		}
		ownA, ownB := r.stream == sA, r.stream == sB
		mu.Unlock()
		switch {
		case r.d == da && r.n > 1:
			wait(bStarted)
		case r.d == db && r.n == 2:
			close(bStarted)
		case r.d == db && ownA:
			handedOnce.Do(func() { close(handed) })
		case r.d == db && ownB && r.n > 2:
			wait(handed)
		}
		return body, nil
	}
	s := newMemStore()
	if _, err := Fetch(t.Context(), f, s, []Blob{{Desc: desc(a)}, {Desc: desc(b)}}, WithJobs(2), withJudgement(judgeAlways)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-handed:
	default:
		t.Fatalf("no request of the larger blob named the smaller one's stream: requests %+v", f.requests())
	}
	for _, blob := range [][]byte{a, b} {
		if got, ok := s.get(digest.FromBytes(blob)); !ok || !bytes.Equal(got, blob) {
			t.Errorf("blob of %d bytes not stored whole", len(blob))
		}
	}
	if ov := f.overlaps(); len(ov) > 0 {
		t.Errorf("requests overlap: %+v", ov)
	}
}

// TestNextAskedBeforeBlock: a part asks for its next stretch before it reads a block of
// a request that ends within the prefetch distance, so that a request of one block (a
// gap between stretches a store holds, or the last small requests of a blob) has its
// successor on the way while it is read, not a round trip after. Pinned: the first
// body gives nothing until the second request has been made (within a minute).
func TestNextAskedBeforeBlock(t *testing.T) {
	b := randomBytes(t, 12<<20)
	d := digest.FromBytes(b)
	st := store.NewMemory()
	// A store that holds all but [4, 5) and [8, 9) MiB: two requests of one block each.
	w, err := st.Writer(t.Context(), desc(b))
	if err != nil {
		t.Fatal(err)
	}
	rw := w.(store.RangeWriter)
	if _, err := rw.Write(b[:4<<20]); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int{{5 << 20, 8 << 20}, {9 << 20, 12 << 20}} {
		if _, err := rw.WriteAt(b[r[0]:r[1]], int64(r[0])); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	f := newFetcher(b)
	second := make(chan struct{})
	var early atomic.Bool
	f.fault = func(r fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
		switch r.n {
		case 1:
			return &firstReadGate{ReadCloser: body, gate: second, opened: &early}, nil
		case 2:
			close(second)
		}
		return body, nil
	}
	if _, err := Fetch(t.Context(), f, st, []Blob{{Desc: desc(b)}}, WithJobs(1), withJudgement(judgeAlways)); err != nil {
		t.Fatal(err)
	}
	got, err := store.ReadBlob(t.Context(), st, d, 64<<20)
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("blob not stored whole: %v", err)
	}
	reqs := f.requests()
	if len(reqs) != 2 || reqs[0].offset != 4<<20 || reqs[0].length != 1<<20 || reqs[1].offset != 8<<20 || reqs[1].length != 1<<20 {
		t.Fatalf("requests %+v, want the two missing MiBs", reqs)
	}
	if !early.Load() {
		t.Errorf("the second request was made after the first one's block was read, not before")
	}
}

// firstReadGate's first Read waits until gate is closed (a minute at most), and records in
// opened whether it was.
type firstReadGate struct {
	io.ReadCloser
	gate   chan struct{}
	opened *atomic.Bool
	once   sync.Once
}

func (g *firstReadGate) Read(p []byte) (int, error) {
	g.once.Do(func() {
		select {
		case <-g.gate:
			g.opened.Store(true)
		case <-time.After(time.Minute):
		}
	})
	return g.ReadCloser.Read(p)
}

// TestBlockLimit checks, on made-up states, how many blocks a part may hold: a share
// of the memory budget less what the Fetcher holds of bodies in flight, so that blocks
// and those buffers add up to the budget whatever the number of parts (down to the
// least a part holds: one block).
func TestBlockLimit(t *testing.T) {
	for _, tc := range []struct {
		parts    int64
		split    bool
		buffered int64
		want     int
	}{
		{1, false, 0, seqWindow/blockSize + 1},
		{4, true, 0, 3},
		{8, true, 0, 3},
		{12, true, 0, 2},
		{13, true, 0, 1}, // two each would go over the budget
		{16, true, 0, 1},
		{32, true, 0, 1}, // the least: over the budget (jobs above 24)
		{16, true, 4 << 20, 1},
		{6, true, 4 << 20, 2},
		{4, false, 4 << 20, 4},
		{32, true, 4 << 20, 1},
	} {
		e := &engine{buffered: tc.buffered}
		e.parts.Store(tc.parts)
		x := &xfer{e: e, split: tc.split}
		got := x.limit()
		if got != tc.want {
			t.Errorf("%d parts, split %v, %d buffered: limit %d, want %d", tc.parts, tc.split, tc.buffered, got, tc.want)
		}
		if got > 1 && int64(got)*blockSize*tc.parts+tc.buffered > memBudget {
			t.Errorf("%d parts, %d buffered: %d blocks each go over the budget", tc.parts, tc.buffered, got)
		}
	}
}

// TestCancelGraceOption: a negative grace is refused by name.
func TestCancelGraceOption(t *testing.T) {
	var ie *pullkit.InvalidError
	b := randomBytes(t, 10)
	if _, err := Fetch(t.Context(), newFetcher(b), newMemStore(), []Blob{{Desc: desc(b)}}, WithCancelGrace(-1)); !errors.As(err, &ie) || ie.What != "option WithCancelGrace" {
		t.Errorf("WithCancelGrace(-1): %v, want an InvalidError naming the option", err)
	}
}

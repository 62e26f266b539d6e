package layers

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/pullkit/pullkit/manifest"
)

// A stream that a link limits (the hash and the disk wait for it) has the rest of its
// blob split into parallel ranged requests; the ranges start at the chunk boundaries
// past the point where the first stream stopped and tile the rest of the blob.
func TestAdaptiveSplit(t *testing.T) {
	data := randBytes(90, 6<<20+777)
	const chunk = 512 << 10
	for _, tc := range []struct {
		name string
		cut  bool // the first ranged request is cut after 1000 bytes
		jobs int  // 2: the parts must hand the request slots around, or they deadlock
	}{{"clean", false, 4}, {"a chunk cut midway", true, 4}, {"two request slots", false, 2}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newBlobServer(t, data)
			srv.behave = func(w http.ResponseWriter, r *http.Request, n int, data []byte) bool {
				cut := -1
				if tc.cut && n == 2 {
					cut = 1000
				}
				serveRange(slowWriter{w, 32 << 10, 2 * time.Millisecond}, r, data, cut)
				return true
			}
			l := openTemp(t)
			if _, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: descOf("", data)}},
				withAdaptive(1, 4, 1<<20), withChunkSize(chunk), WithJobs(tc.jobs), fastRetry); err != nil {
				t.Fatal(err)
			}
			assertStored(t, l, data)
			reqs := srv.requests()
			if reqs[0].Range != "" {
				t.Fatalf("first request asked for %q, want the whole blob", reqs[0].Range)
			}
			// The ranged requests, minus the resumed one, must tile [split, size) in
			// chunk-aligned pieces.
			ends := map[int64]int64{}
			var first int64 = -1
			for _, q := range reqs[1:] {
				s, e := parseRangeHeader(t, q.Range)
				if e < 0 {
					t.Fatalf("ranged request %q is open-ended", q.Range)
				}
				if s%chunk != 0 {
					if !tc.cut || (s-1000)%chunk != 0 {
						t.Fatalf("range %q does not start at a chunk boundary", q.Range)
					}
					continue
				}
				ends[s] = e
				if first < 0 || s < first {
					first = s
				}
			}
			if len(ends) < 3 {
				t.Fatalf("requests %v: want the rest split into several ranges", reqs)
			}
			if first < 1<<20 {
				t.Errorf("split at %d, before the 1 MiB probe", first)
			}
			for at := first; at < int64(len(data)); {
				e, ok := ends[at]
				if !ok {
					t.Fatalf("no range starts at %d: %v", at, reqs)
				}
				at = e + 1
			}
		})
	}
}

// A limited stream from a server that ignores Range stays one stream: the split's probe
// gets a 200, which is dropped, and the first stream carries on to the end.
func TestAdaptiveSplitWithoutRanges(t *testing.T) {
	data := randBytes(91, 3<<20+5)
	srv := newBlobServer(t, data)
	srv.behave = func(w http.ResponseWriter, r *http.Request, n int, data []byte) bool {
		r.Header.Del("Range")
		serveRange(slowWriter{w, 32 << 10, 2 * time.Millisecond}, r, data, -1)
		return true
	}
	l := openTemp(t)
	if _, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: descOf("", data)}},
		withAdaptive(1, 4, 1<<20), withChunkSize(256<<10), fastRetry); err != nil {
		t.Fatal(err)
	}
	assertStored(t, l, data)
	if reqs := srv.requests(); len(reqs) != 2 || reqs[0].Range != "" || reqs[1].Range == "" {
		t.Errorf("requests %v, want the stream and one refused probe", reqs)
	}
}

// WithParallelRanges(0, 1) and a fast server: the stream is never split.
func TestNoSplitWhenRangesOff(t *testing.T) {
	data := randBytes(92, 3<<20)
	srv := newBlobServer(t, data)
	l := openTemp(t)
	if _, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: descOf("", data)}}, WithParallelRanges(0, 1)); err != nil {
		t.Fatal(err)
	}
	assertStored(t, l, data)
	if reqs := srv.requests(); len(reqs) != 1 {
		t.Errorf("requests %v, want one", reqs)
	}
}

// Direct and buffered writes store the same bytes, for sizes that end inside an aligned
// block and for a transfer resumed at an unaligned offset; with direct I/O on, a file
// system that takes it gets the aligned blocks that way.
func TestDirectIO(t *testing.T) {
	for _, size := range []int{1 << 20, 3<<20 + 4097, 5 << 20} {
		data := randBytes(uint64(size), size)
		for _, direct := range []bool{true, false} {
			for _, cutAt := range []int{-1, size/2 + 333} {
				name := fmt.Sprintf("%d bytes, direct %v, cut at %d", size, direct, cutAt)
				t.Run(name, func(t *testing.T) {
					srv := newBlobServer(t, data)
					if cutAt >= 0 {
						srv.behave = func(w http.ResponseWriter, r *http.Request, n int, data []byte) bool {
							if n == 1 {
								serveRange(w, r, data, cutAt)
								return true
							}
							return false
						}
					}
					l := openTemp(t)
					before := directBytes.Load()
					if _, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: manifest.Descriptor{Digest: descOf("", data).Digest, Size: int64(size)}}},
						WithDirectIO(direct), WithParallelRanges(0, 1), fastRetry); err != nil {
						t.Fatal(err)
					}
					assertStored(t, l, data)
					wrote := directBytes.Load() - before
					switch {
					case !direct && wrote != 0:
						// Other tests run in parallel only if marked so; none is.
						t.Errorf("%d bytes written with O_DIRECT with direct I/O off", wrote)
					case direct && l.directOK() && wrote < int64(size)-2<<20:
						t.Errorf("%d of %d bytes written with O_DIRECT", wrote, size)
					}
					if cutAt >= 0 {
						if reqs := srv.requests(); len(reqs) != 2 || reqs[1].Range == "" {
							t.Errorf("requests %v, want a resumed second one", reqs)
						}
					}
				})
			}
		}
	}
}

// emptyReads returns nothing and no error for its first n reads, then one byte.
type emptyReads struct{ n int }

func (e *emptyReads) Read(p []byte) (int, error) {
	if e.n > 0 {
		e.n--
		return 0, nil
	}
	p[0] = 'x'
	return 1, nil
}

// A body that keeps returning nothing without an error ends with io.ErrNoProgress after
// 100 such reads in a row; data in between starts the count over.
func TestBodyReaderNoProgress(t *testing.T) {
	buf := make([]byte, 8)
	for _, tc := range []struct {
		empty int
		want  error
	}{{100, nil}, {101, io.ErrNoProgress}} {
		br := bodyReader{r: &emptyReads{n: tc.empty}}
		var err error
		for i := 0; i <= tc.empty && err == nil; i++ {
			_, err = br.read(buf)
		}
		if err != tc.want {
			t.Errorf("%d empty reads: error %v, want %v", tc.empty, err, tc.want)
		}
	}
	// 100 empty reads, data, 100 more: still no error.
	br := bodyReader{r: &emptyReads{n: 100}}
	for range 101 {
		if _, err := br.read(buf); err != nil {
			t.Fatal(err)
		}
	}
	br.r = &emptyReads{n: 100}
	for range 100 {
		if _, err := br.read(buf); err != nil {
			t.Fatalf("after data, empty reads failed: %v", err)
		}
	}
}

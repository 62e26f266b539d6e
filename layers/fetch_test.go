package layers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
)

func TestFetchStoresVerifiedBlobs(t *testing.T) {
	for _, tc := range []struct {
		name        string
		size        int
		unknownSize bool
	}{
		{"empty", 0, false},
		{"one byte", 1, false},
		{"64KiB", 64 << 10, false},
		{"odd 1MiB", 1<<20 + 3, false},
		{"unknown size", 300<<10 + 7, true},
		{"unknown size empty", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := randBytes(uint64(tc.size)+1, tc.size)
			srv := newBlobServer(t, data)
			l := openTemp(t)
			desc := descOf(manifest.MediaTypeDockerLayer, data)
			if tc.unknownSize {
				desc.Size = -1
			}
			var ev events
			res, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: desc}}, WithProgress(ev.add))
			if err != nil {
				t.Fatal(err)
			}
			assertStored(t, l, data)
			if res[0].Size != int64(tc.size) || res[0].Desc.Size != int64(tc.size) || !res[0].Fetched {
				t.Errorf("result %+v, want size %d and Fetched", res[0], tc.size)
			}
			if got, want := ev.kinds(desc.Digest), []EventKind{EventStarted, EventVerified}; !slices.Equal(got, want) {
				t.Errorf("events %v, want %v", got, want)
			}
			if left := ingestEntries(t, l); len(left) != 0 {
				t.Errorf("ingest not empty after success: %v", left)
			}
		})
	}
}

func TestProgressEventsAreMonotonic(t *testing.T) {
	data := randBytes(7, 5<<20+11)
	for _, opts := range [][]Option{nil, {WithParallelRanges(1, 4), withChunkSize(1 << 20)}} {
		l := openTemp(t)
		var ev events
		if _, err := Fetch(context.Background(), newMemFetcher(data), l, []Blob{{Desc: descOf("", data)}},
			append(opts, WithProgress(ev.add))...); err != nil {
			t.Fatal(err)
		}
		last, n := int64(-1), 0
		for _, e := range ev.ev {
			if e.Kind != EventProgress {
				continue
			}
			n++
			if e.Done <= last || e.Done > int64(len(data)) || e.Total != int64(len(data)) {
				t.Fatalf("progress %d/%d after %d", e.Done, e.Total, last)
			}
			last = e.Done
		}
		if n < 4 {
			t.Errorf("%d progress events for 5 MiB, want one per MiB", n)
		}
	}
}

// cutFirst makes the server send only cut body bytes on the first request for a blob.
func cutFirst(cut int) func(http.ResponseWriter, *http.Request, int, []byte) bool {
	return func(w http.ResponseWriter, r *http.Request, n int, data []byte) bool {
		if n == 1 {
			serveRange(w, r, data, cut)
			return true
		}
		return false
	}
}

func TestResumeAfterCut(t *testing.T) {
	tarball := makeTar(t, 3, 700<<10)
	gz := gzipBytes(t, tarball)
	for _, tc := range []struct {
		name        string
		data        []byte
		cut         int
		diffID      bool
		unknownSize bool
	}{
		{"cut after 1 byte", randBytes(1, 1<<20), 1, false, false},
		{"cut mid-body", randBytes(2, 3<<20+5), 1<<20 + 123, false, false},
		{"cut one byte before the end", randBytes(3, 100000), 99999, false, false},
		{"gzip layer with diffID", gz, len(gz) / 3, true, false},
		{"schema 1: unknown size, diffID", gz, len(gz) / 2, true, true},
	} {
		for _, named := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/named=%v", tc.name, named), func(t *testing.T) {
				srv := newBlobServer(t, tc.data)
				srv.behave = cutFirst(tc.cut)
				l := openTemp(t)
				if named {
					noTmpfile(l)
				}
				desc := descOf(manifest.MediaTypeDockerLayer, tc.data)
				var ev events
				res, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: desc, DiffID: tc.diffID}},
					WithProgress(ev.add), fastRetry)
				if err != nil {
					t.Fatal(err)
				}
				reqs := srv.requests()
				if len(reqs) != 2 {
					t.Fatalf("requests %v, want 2", reqs)
				}
				if reqs[0].Range != "" {
					t.Errorf("first request Range %q, want none", reqs[0].Range)
				}
				if want := fmt.Sprintf("bytes=%d-", tc.cut); reqs[1].Range != want {
					t.Errorf("second request Range %q, want %q", reqs[1].Range, want)
				}
				assertStored(t, l, tc.data)
				if !ev.has(desc.Digest, EventResumed) {
					t.Errorf("no Resumed event: %v", ev.kinds(desc.Digest))
				}
				if tc.diffID {
					if want := digest.FromBytes(tarball); res[0].DiffID != want {
						t.Errorf("diffID %s, want %s", res[0].DiffID, want)
					}
				}
				if left := ingestEntries(t, l); len(left) != 0 {
					t.Errorf("ingest not empty: %v", left)
				}
			})
		}
	}
}

func TestLockedPartialIsLeftAlone(t *testing.T) {
	// Another process is downloading this blob (it holds the partial's lock): this
	// one must neither resume nor clobber that file, and uses a private one.
	data := randBytes(24, 2<<20)
	d := digest.FromBytes(data)
	srv := newBlobServer(t, data)
	l := openTemp(t)
	p := filepath.Join(l.Dir(), IngestDir, "sha256-"+d.Encoded()+".partial")
	theirs := data[:12345]
	if err := os.WriteFile(p, theirs, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !tryLock(f) {
		t.Fatal("could not lock the partial")
	}
	if _, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: descOf("", data)}}); err != nil {
		t.Fatal(err)
	}
	assertStored(t, l, data)
	if reqs := srv.requests(); len(reqs) != 1 || reqs[0].Range != "" {
		t.Errorf("requests %v, want one whole-blob GET", reqs)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, theirs) {
		t.Errorf("the locked partial was changed (%d bytes)", len(got))
	}
	if left := ingestEntries(t, l); len(left) != 1 {
		t.Errorf("ingest %v, want only the other process's partial", left)
	}
}

func TestServerIgnoringRangeStartsOver(t *testing.T) {
	data := randBytes(9, 2<<20+77)
	tarball := makeTar(t, 9, 300<<10)
	gz := gzipBytes(t, tarball)
	for _, tc := range []struct {
		name   string
		data   []byte
		diffID bool
	}{{"plain", data, false}, {"gzip with diffID", gz, true}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newBlobServer(t, tc.data)
			cut := len(tc.data) / 2
			srv.behave = func(w http.ResponseWriter, r *http.Request, n int, data []byte) bool {
				r.Header.Del("Range") // this server always sends the whole blob with 200
				if n == 1 {
					serveRange(w, r, data, cut)
				} else {
					serveRange(w, r, data, -1)
				}
				return true
			}
			l := openTemp(t)
			desc := descOf(manifest.MediaTypeOCILayerGzip, tc.data)
			var ev events
			res, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: desc, DiffID: tc.diffID}}, WithProgress(ev.add), fastRetry)
			if err != nil {
				t.Fatal(err)
			}
			if reqs := srv.requests(); len(reqs) != 2 || reqs[1].Range != fmt.Sprintf("bytes=%d-", cut) {
				t.Fatalf("requests %v, want a second one with Range bytes=%d-", reqs, cut)
			}
			assertStored(t, l, tc.data) // nothing appended twice
			if !ev.has(desc.Digest, EventRestarted) {
				t.Errorf("no Restarted event: %v", ev.kinds(desc.Digest))
			}
			if tc.diffID && res[0].DiffID != digest.FromBytes(tarball) {
				t.Errorf("diffID %s, want %s", res[0].DiffID, digest.FromBytes(tarball))
			}
		})
	}
}

func TestBadContentRangeIsNotAppended(t *testing.T) {
	data := randBytes(10, 1<<20)
	cut := 4000
	for _, tc := range []struct {
		name   string
		header func(total int) string
	}{
		{"wrong start", func(total int) string { return fmt.Sprintf("bytes 0-%d/%d", total-1, total) }},
		{"missing", func(int) string { return "" }},
		{"garbage", func(int) string { return "bytes lots" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newBlobServer(t, data)
			srv.behave = func(w http.ResponseWriter, r *http.Request, n int, data []byte) bool {
				switch {
				case n == 1:
					serveRange(w, r, data, cut)
				case r.Header.Get("Range") != "":
					// 206 with the whole blob and a Content-Range that does not start
					// where asked.
					if h := tc.header(len(data)); h != "" {
						w.Header().Set("Content-Range", h)
					}
					w.WriteHeader(http.StatusPartialContent)
					w.Write(data)
				default:
					serveRange(w, r, data, -1)
				}
				return true
			}
			l := openTemp(t)
			if _, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: descOf("", data)}}, fastRetry); err != nil {
				t.Fatal(err)
			}
			reqs := srv.requests()
			if len(reqs) != 3 || reqs[1].Range == "" || reqs[2].Range != "" {
				t.Fatalf("requests %v, want: whole, ranged (bad answer), whole", reqs)
			}
			assertStored(t, l, data)
		})
	}
}

func TestVerificationFailuresLeaveNothing(t *testing.T) {
	data := randBytes(11, 200<<10)
	other := randBytes(12, len(data))
	for _, tc := range []struct {
		name    string
		desc    manifest.Descriptor
		serve   []byte
		chunked bool
		want    error
		opts    []Option
	}{
		{"wrong bytes", descOf("", data), other, false, ErrDigestMismatch, nil},
		{"wrong bytes, unknown size", manifest.Descriptor{Digest: digest.FromBytes(data), Size: -1}, other, false, ErrDigestMismatch, nil},
		{"wrong bytes, ranged", descOf("", data), other, false, ErrDigestMismatch, []Option{WithParallelRanges(1, 3), withChunkSize(50 << 10)}},
		{"Content-Length shorter than size", descOf("", data), data[:len(data)-1], false, ErrSizeMismatch, nil},
		{"Content-Length longer than size", descOf("", data), append(bytes.Clone(data), 0), false, ErrSizeMismatch, nil},
		{"chunked body longer than size", descOf("", data), append(bytes.Clone(data), 1, 2, 3), true, ErrSizeMismatch, nil},
		{"descriptor size wrong", manifest.Descriptor{Digest: digest.FromBytes(data), Size: int64(len(data)) + 10}, data, false, ErrSizeMismatch, nil},
	} {
		for _, named := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/named=%v", tc.name, named), func(t *testing.T) {
				srv := newBlobServer(t)
				srv.blobs[tc.desc.Digest] = tc.serve
				if tc.chunked {
					srv.behave = func(w http.ResponseWriter, r *http.Request, n int, data []byte) bool {
						w.WriteHeader(http.StatusOK)
						w.(http.Flusher).Flush() // no Content-Length: chunked
						w.Write(data)
						return true
					}
				}
				l := openTemp(t)
				if named {
					noTmpfile(l)
				}
				var ev events
				_, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: tc.desc}}, append(tc.opts, WithProgress(ev.add), fastRetry)...)
				if !errors.Is(err, tc.want) {
					t.Fatalf("error %v, want %v", err, tc.want)
				}
				var be *BlobError
				if !errors.As(err, &be) || be.Digest != tc.desc.Digest {
					t.Fatalf("error %v is not a *BlobError for %s", err, tc.desc.Digest)
				}
				if !strings.Contains(err.Error(), string(tc.desc.Digest)) {
					t.Errorf("error %q does not name the digest", err)
				}
				if tc.want == ErrDigestMismatch {
					var dm *pullkit.DigestMismatchError
					if !errors.As(err, &dm) || dm.Want != tc.desc.Digest || dm.Got != digest.FromBytes(tc.serve) {
						t.Errorf("error %v: want a DigestMismatchError naming want and got", err)
					}
				}
				if l.Has(tc.desc.Digest) {
					t.Error("a blob that failed verification has its final name")
				}
				if _, err := os.Stat(l.Path(tc.desc.Digest)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("final path: %v, want not exist", err)
				}
				if left := ingestEntries(t, l); len(left) != 0 {
					t.Errorf("temp files left: %v", left)
				}
				if !ev.has(tc.desc.Digest, EventFailed) {
					t.Errorf("no Failed event: %v", ev.kinds(tc.desc.Digest))
				}
			})
		}
	}
}

func TestDedupeInOneFetch(t *testing.T) {
	a := randBytes(20, 100<<10)
	b := randBytes(21, 50<<10)
	srv := newBlobServer(t, a, b)
	l := openTemp(t)
	blobs := []Blob{
		{Desc: descOf("", a)},
		{Desc: descOf("", b)},
		{Desc: manifest.Descriptor{Digest: digest.FromBytes(a), Size: -1}}, // schema 1 repeats blobSums
		{Desc: descOf("", a)},
	}
	res, err := Fetch(context.Background(), srv.fetcher(), l, blobs, WithJobs(4))
	if err != nil {
		t.Fatal(err)
	}
	if n := srv.gets(digest.FromBytes(a)); n != 1 {
		t.Errorf("%d GETs for a blob listed 3 times, want 1", n)
	}
	for i, r := range res {
		if r.Desc.Digest != blobs[i].Desc.Digest || r.Size != int64(len(srv.blobs[r.Desc.Digest])) {
			t.Errorf("result %d: %+v", i, r)
		}
	}
}

func TestDedupeAcrossConcurrentFetches(t *testing.T) {
	data := randBytes(22, 2<<20)
	d := digest.FromBytes(data)
	srv := newBlobServer(t, data)
	release := make(chan struct{})
	started := make(chan struct{})
	var once sync.Once
	srv.behave = func(w http.ResponseWriter, r *http.Request, n int, data []byte) bool {
		if n == 1 {
			once.Do(func() { close(started) })
			// Hold the first body until a second GET shows up (broken dedupe) or a
			// while has passed; either way the count below decides.
			select {
			case <-release:
			case <-time.After(300 * time.Millisecond):
			}
		} else {
			close(release)
		}
		return false
	}
	dir := t.TempDir()
	l1, err := OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := OpenLayout(filepath.Join(dir, ".", "")) // the same directory, another Layout
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var res [2][]Result
	var errs [2]error
	var ev2 events
	wg.Add(1)
	go func() {
		defer wg.Done()
		res[0], errs[0] = Fetch(context.Background(), srv.fetcher(), l1, []Blob{{Desc: descOf("", data)}})
	}()
	<-started
	wg.Add(1)
	go func() {
		defer wg.Done()
		res[1], errs[1] = Fetch(context.Background(), srv.fetcher(), l2, []Blob{{Desc: descOf("", data), DiffID: true}}, WithProgress(ev2.add))
	}()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("fetch %d: %v", i, err)
		}
	}
	if n := srv.gets(d); n != 1 {
		t.Errorf("%d GETs for one digest pulled twice at once, want 1", n)
	}
	if !res[0][0].Fetched || res[1][0].Fetched {
		t.Errorf("Fetched = %v, %v; want the first call to have fetched it", res[0][0].Fetched, res[1][0].Fetched)
	}
	if res[1][0].DiffID != d { // uncompressed: the diffID is the digest
		t.Errorf("second caller's diffID %s, want %s", res[1][0].DiffID, d)
	}
	if !ev2.has(d, EventSkipped) {
		t.Errorf("second caller's events %v, want Skipped", ev2.kinds(d))
	}
	assertStored(t, l1, data)
}

func TestCancelledLeaderDoesNotFailFollower(t *testing.T) {
	data := randBytes(23, 1<<20)
	d := digest.FromBytes(data)
	srv := newBlobServer(t, data)
	started := make(chan struct{})
	srv.behave = func(w http.ResponseWriter, r *http.Request, n int, data []byte) bool {
		if n == 1 {
			// Send a part, then hang until the client goes away.
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.WriteHeader(http.StatusOK)
			w.Write(data[:1000])
			w.(http.Flusher).Flush()
			close(started)
			<-r.Context().Done()
			return true
		}
		return false
	}
	l := openTemp(t)
	ctx1, cancel1 := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var err1, err2 error
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, err1 = Fetch(ctx1, srv.fetcher(), l, []Blob{{Desc: descOf("", data)}})
	}()
	<-started
	go func() {
		defer wg.Done()
		_, err2 = Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: descOf("", data)}})
	}()
	time.Sleep(50 * time.Millisecond) // let the second call join the first one's download
	cancel1()
	wg.Wait()
	if !errors.Is(err1, context.Canceled) {
		t.Errorf("cancelled call: %v, want context.Canceled", err1)
	}
	if err2 != nil {
		t.Fatalf("second call failed with the first one: %v", err2)
	}
	assertStored(t, l, data)
	if n := srv.gets(d); n != 2 {
		t.Errorf("%d GETs, want 2", n)
	}
}

func TestPresentBlobIsSkipped(t *testing.T) {
	tarball := makeTar(t, 30, 10<<10)
	gz := gzipBytes(t, tarball)
	srv := newBlobServer(t, gz)
	l := openTemp(t)
	desc := descOf(manifest.MediaTypeDockerLayer, gz)
	if err := l.PutBlob(context.Background(), desc, gz); err != nil {
		t.Fatal(err)
	}
	var ev events
	res, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: desc, WantDiffID: digest.FromBytes(tarball)}}, WithProgress(ev.add))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(srv.requests()); n != 0 {
		t.Errorf("%d GETs for a present blob, want 0", n)
	}
	if got := ev.kinds(desc.Digest); !slices.Equal(got, []EventKind{EventSkipped}) {
		t.Errorf("events %v, want [skipped]", got)
	}
	if res[0].Fetched || res[0].DiffID != digest.FromBytes(tarball) || res[0].Size != int64(len(gz)) {
		t.Errorf("result %+v", res[0])
	}
}

func TestBoundedConcurrency(t *testing.T) {
	var blobs [][]byte
	for i := range 24 {
		blobs = append(blobs, randBytes(uint64(100+i), 32<<10+i))
	}
	big := randBytes(99, 4<<20)
	for _, jobs := range []int{1, 3} {
		t.Run(fmt.Sprint("jobs=", jobs), func(t *testing.T) {
			srv := newBlobServer(t, append(blobs, big)...)
			srv.delay = 5 * time.Millisecond
			l := openTemp(t)
			var list []Blob
			for _, b := range blobs {
				list = append(list, Blob{Desc: descOf("", b)})
			}
			// The big blob comes last: when it starts no blob is waiting, so it is
			// split into ranges whose requests share the same bound.
			list = append(list, Blob{Desc: descOf("", big)})
			if _, err := Fetch(context.Background(), srv.fetcher(), l, list, WithJobs(jobs),
				WithParallelRanges(1<<20, 4), withChunkSize(256<<10)); err != nil {
				t.Fatal(err)
			}
			if m := srv.maxIn.Load(); m > int64(jobs) {
				t.Errorf("%d requests in flight at once, want <= %d", m, jobs)
			}
			ranged := 0
			for _, q := range srv.requests() {
				if q.Digest == digest.FromBytes(big) && q.Range != "" {
					ranged++
				}
			}
			if jobs > 1 && ranged < 16 {
				t.Errorf("%d ranged requests for the last, big blob; want it split", ranged)
			}
			t.Logf("max in flight %d (jobs %d), %d requests", srv.maxIn.Load(), jobs, len(srv.requests()))
			for _, b := range append(blobs, big) {
				assertStored(t, l, b)
			}
		})
	}
}

// parseRangeHeader parses "bytes=a-b" as sent by httpFetcher.
func parseRangeHeader(t *testing.T, h string) (int64, int64) {
	t.Helper()
	spec, ok := strings.CutPrefix(h, "bytes=")
	a, b, ok2 := strings.Cut(spec, "-")
	s, err1 := strconv.ParseInt(a, 10, 64)
	e, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || !ok2 || err1 != nil || err2 != nil {
		t.Fatalf("Range %q is not a closed bytes=a-b range", h)
	}
	return s, e
}

func TestParallelRanges(t *testing.T) {
	tarball := makeTar(t, 40, 3<<20)
	gz := gzipBytes(t, tarball)
	plain := randBytes(41, 9<<20+1234)
	for _, tc := range []struct {
		name   string
		data   []byte
		diffID digest.Digest
		cut    bool
	}{
		{"random blob", plain, "", false},
		{"gzip layer with diffID", gz, digest.FromBytes(tarball), false},
		{"a chunk cut midway", plain, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newBlobServer(t, tc.data)
			if tc.cut {
				srv.behave = func(w http.ResponseWriter, r *http.Request, n int, data []byte) bool {
					if n == 3 {
						serveRange(w, r, data, 1000)
						return true
					}
					return false
				}
			}
			l := openTemp(t)
			desc := descOf(manifest.MediaTypeOCILayerGzip, tc.data)
			res, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: desc, WantDiffID: tc.diffID}},
				WithParallelRanges(1<<20, 4), withChunkSize(1<<20), WithJobs(4), fastRetry)
			if err != nil {
				t.Fatal(err)
			}
			assertStored(t, l, tc.data)
			if tc.diffID != "" && res[0].DiffID != tc.diffID {
				t.Errorf("diffID %s, want %s", res[0].DiffID, tc.diffID)
			}
			reqs := srv.requests()
			if len(reqs) < 3 {
				t.Fatalf("%d requests, want several ranged ones", len(reqs))
			}
			// The ranges must tile the blob: sort by start, each continuing the last
			// (a resumed chunk starts inside the one it continues).
			type span struct{ s, e int64 }
			var spans []span
			for _, q := range reqs {
				s, e := parseRangeHeader(t, q.Range)
				spans = append(spans, span{s, e})
			}
			slices.SortFunc(spans, func(a, b span) int { return int(a.s - b.s) })
			var covered int64
			for _, sp := range spans {
				if sp.s > covered {
					t.Fatalf("ranges %v leave a gap at %d", spans, covered)
				}
				covered = max(covered, sp.e+1)
			}
			if covered != int64(len(tc.data)) {
				t.Errorf("ranges cover %d bytes of %d", covered, len(tc.data))
			}
			if tc.cut {
				var resumed bool
				for _, sp := range spans {
					resumed = resumed || (sp.s-1000)%(1<<20) == 0 && sp.s%(1<<20) != 0
				}
				if !resumed {
					t.Errorf("no ranged request resumed the cut chunk at +1000: %v", spans)
				}
			}
		})
	}
}

func TestParallelRangesFallBackWhenRangeIgnored(t *testing.T) {
	data := randBytes(42, 5<<20)
	srv := newBlobServer(t, data)
	srv.behave = func(w http.ResponseWriter, r *http.Request, n int, data []byte) bool {
		r.Header.Del("Range")
		serveRange(w, r, data, -1)
		return true
	}
	l := openTemp(t)
	if _, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: descOf("", data)}}, WithParallelRanges(1<<20, 4), withChunkSize(1<<20)); err != nil {
		t.Fatal(err)
	}
	assertStored(t, l, data)
	if reqs := srv.requests(); len(reqs) != 2 || reqs[1].Range != "" {
		t.Errorf("requests %v, want a ranged probe then one plain GET", reqs)
	}
}

func TestDiffID(t *testing.T) {
	tarball := makeTar(t, 50, 200<<10)
	want := digest.FromBytes(tarball)
	gz := gzipBytes(t, tarball)
	multi := append(gzipBytes(t, tarball[:10240]), gzipBytes(t, tarball[10240:])...)
	zst := zstdBytes(t, tarball)
	for _, tc := range []struct {
		name      string
		mediaType string
		blob      []byte
	}{
		{"gzip", manifest.MediaTypeDockerLayer, gz},
		{"gzip multi-member", manifest.MediaTypeOCILayerGzip, multi},
		{"zstd", manifest.MediaTypeOCILayerZstd, zst},
		{"uncompressed", manifest.MediaTypeOCILayer, tarball},
		{"zstd served as gzip media type", manifest.MediaTypeDockerLayer, zst},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, mode := range []string{"stream", "present", "ranged"} {
				srv := newBlobServer(t, tc.blob)
				l := openTemp(t)
				desc := descOf(tc.mediaType, tc.blob)
				opts := []Option{WithBufferSize(16 << 10)}
				switch mode {
				case "present":
					if err := l.PutBlob(context.Background(), desc, tc.blob); err != nil {
						t.Fatal(err)
					}
				case "ranged":
					opts = append(opts, WithParallelRanges(1, 4), withChunkSize(32<<10))
				}
				res, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: desc, DiffID: true}}, opts...)
				if err != nil {
					t.Fatalf("%s: %v", mode, err)
				}
				if res[0].DiffID != want {
					t.Errorf("%s: diffID %s, want sha256 of the tar %s", mode, res[0].DiffID, want)
				}
				// The same blob with the right and a wrong expected diffID.
				if _, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: desc, WantDiffID: want}}); err != nil {
					t.Errorf("%s: right WantDiffID: %v", mode, err)
				}
				wrong := digest.FromString("not the tar")
				_, err = Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: desc, WantDiffID: wrong}})
				var me *DiffIDMismatchError
				if !errors.Is(err, ErrDiffIDMismatch) || !errors.As(err, &me) || me.Want != wrong || me.Got != want {
					t.Errorf("%s: wrong WantDiffID: %v, want a DiffIDMismatchError", mode, err)
				}
			}
		})
	}
}

func TestDiffIDMismatchOnFirstFetch(t *testing.T) {
	tarball := makeTar(t, 51, 50<<10)
	gz := gzipBytes(t, tarball)
	srv := newBlobServer(t, gz)
	l := openTemp(t)
	desc := descOf(manifest.MediaTypeDockerLayer, gz)
	wrong := digest.FromString("x")
	_, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: desc, WantDiffID: wrong}})
	var be *BlobError
	if !errors.Is(err, ErrDiffIDMismatch) || !errors.As(err, &be) || be.Op != OpDiffID || be.Digest != desc.Digest {
		t.Fatalf("error %v, want a diffid BlobError wrapping ErrDiffIDMismatch", err)
	}
	if !strings.Contains(err.Error(), string(wrong)) || !strings.Contains(err.Error(), string(digest.FromBytes(tarball))) {
		t.Errorf("error %q does not name wanted and computed diffIDs", err)
	}
	// The blob itself verified: it is stored under its name.
	assertStored(t, l, gz)
}

func TestUndecompressableLayer(t *testing.T) {
	bad := append([]byte{0x1f, 0x8b, 8, 0}, randBytes(52, 5000)...)
	srv := newBlobServer(t, bad)
	l := openTemp(t)
	_, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: descOf(manifest.MediaTypeDockerLayer, bad), DiffID: true}})
	if !errors.Is(err, ErrDecompress) {
		t.Fatalf("error %v, want ErrDecompress", err)
	}
}

func TestResumeKilledPartial(t *testing.T) {
	data := randBytes(60, 3<<20+99)
	d := digest.FromBytes(data)
	partial := func(l *Layout) string {
		return filepath.Join(l.Dir(), IngestDir, "sha256-"+d.Encoded()+".partial")
	}
	for _, tc := range []struct {
		name      string
		file      []byte
		sidecar   string
		wantRange []string
		opts      []Option
	}{
		{"sequential partial", data[:777777], "", []string{"bytes=777777-"}, nil},
		{"complete partial", data, "", nil, nil},
		{"ranged partial with sidecar", append(bytes.Clone(data[:1<<20]), make([]byte, 1<<20)...), "524288\n", []string{"bytes=524288-"}, nil},
		{"garbage sidecar", data[:1000], "x", []string{""}, nil},
		{"partial of other bytes", randBytes(61, 5000), "", []string{"bytes=5000-", ""}, nil},
		{"partial longer than the blob", append(bytes.Clone(data), 1), "", []string{""}, nil},
		{"sequential partial, ranged rest", data[:1<<20], "", nil, []Option{WithParallelRanges(1, 2), withChunkSize(1 << 20)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newBlobServer(t, data)
			l := openTemp(t)
			if err := os.WriteFile(partial(l), tc.file, 0o644); err != nil {
				t.Fatal(err)
			}
			if tc.sidecar != "" {
				if err := os.WriteFile(partial(l)+".prefix", []byte(tc.sidecar), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var ev events
			if _, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: descOf("", data)}},
				append(tc.opts, WithProgress(ev.add))...); err != nil {
				t.Fatal(err)
			}
			assertStored(t, l, data)
			var got []string
			for _, q := range srv.requests() {
				got = append(got, q.Range)
			}
			if tc.opts != nil {
				// Ranged: the first request starts where the partial ends.
				if len(got) < 2 || !strings.HasPrefix(got[0], fmt.Sprintf("bytes=%d-", len(tc.file))) {
					t.Errorf("requests %q, want ranged ones from %d", got, len(tc.file))
				}
			} else if !slices.Equal(got, tc.wantRange) {
				t.Errorf("requests with Range %q, want %q", got, tc.wantRange)
			}
			if left := ingestEntries(t, l); len(left) != 0 {
				t.Errorf("ingest not empty: %v", left)
			}
			if len(tc.file) > 0 && tc.sidecar != "x" && len(tc.file) <= len(data) && !ev.has(d, EventResumed) {
				t.Errorf("no Resumed event: %v", ev.kinds(d))
			}
		})
	}
}

func TestInterruptedTransferIsKeptAndResumed(t *testing.T) {
	// A first Fetch gives up (the server breaks every body after 64 KiB and the attempt
	// budget is 1); the partial stays in ingest/ and a second Fetch continues from it.
	data := randBytes(62, 1<<20)
	srv := newBlobServer(t, data)
	var broken atomic.Bool
	broken.Store(true)
	l := openTemp(t)
	srv.behave = func(w http.ResponseWriter, r *http.Request, n int, data []byte) bool {
		if n == 1 {
			serveRange(w, r, data, 64<<10)
			return true
		}
		if broken.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}
		return false
	}
	_, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: descOf("", data)}}, fastRetry)
	if err == nil || l.Has(digest.FromBytes(data)) {
		t.Fatalf("first fetch: %v, want a failure", err)
	}
	if left := ingestEntries(t, l); len(left) != 1 {
		t.Fatalf("ingest %v, want the partial kept", left)
	}
	broken.Store(false)
	if _, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: descOf("", data)}}); err != nil {
		t.Fatal(err)
	}
	reqs := srv.requests()
	if last := reqs[len(reqs)-1]; last.Range != fmt.Sprintf("bytes=%d-", 64<<10) {
		t.Errorf("last request %+v, want a resume from 65536", last)
	}
	assertStored(t, l, data)
}

func TestRetriesAreBounded(t *testing.T) {
	data := randBytes(63, 100<<10)
	srv := newBlobServer(t, data)
	srv.behave = func(w http.ResponseWriter, r *http.Request, n int, data []byte) bool {
		serveRange(w, r, data, 0) // headers, then the connection drops
		return true
	}
	l := openTemp(t)
	_, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: descOf("", data)}}, WithMaxAttempts(3), fastRetry)
	if err == nil || !strings.Contains(err.Error(), "3 attempts without progress") {
		t.Fatalf("error %v, want giving up after 3 attempts", err)
	}
	if n := len(srv.requests()); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
	// Attempts that progress do not count: a server that sends 10 KiB per request
	// gets the blob through with the same budget.
	srv2 := newBlobServer(t, data)
	srv2.behave = func(w http.ResponseWriter, r *http.Request, n int, data []byte) bool {
		serveRange(w, r, data, 10<<10)
		return true
	}
	if _, err := Fetch(context.Background(), srv2.fetcher(), l, []Blob{{Desc: descOf("", data)}}, WithMaxAttempts(2), fastRetry); err != nil {
		t.Fatal(err)
	}
	assertStored(t, l, data)
}

func TestStallTimeout(t *testing.T) {
	data := randBytes(64, 300<<10)
	for _, ranged := range []bool{false, true} {
		t.Run(fmt.Sprint("ranged=", ranged), func(t *testing.T) {
			srv := newBlobServer(t, data)
			srv.behave = func(w http.ResponseWriter, r *http.Request, n int, data []byte) bool {
				w.Header().Set("Content-Length", strconv.Itoa(len(data)))
				if rh := r.Header.Get("Range"); rh != "" {
					a, b, _ := strings.Cut(strings.TrimPrefix(rh, "bytes="), "-")
					s, _ := strconv.ParseInt(a, 10, 64)
					e := int64(len(data) - 1)
					if b != "" {
						e, _ = strconv.ParseInt(b, 10, 64)
					}
					w.Header().Set("Content-Length", strconv.FormatInt(e-s+1, 10))
					w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", s, e, len(data)))
					w.WriteHeader(http.StatusPartialContent)
				} else {
					w.WriteHeader(http.StatusOK)
				}
				if n == 1 {
					w.Write(data[:100])
				}
				w.(http.Flusher).Flush()
				<-r.Context().Done() // then nothing, until the client gives up
				return true
			}
			l := openTemp(t)
			opts := []Option{WithStallTimeout(50 * time.Millisecond), WithMaxAttempts(2), fastRetry}
			if ranged {
				opts = append(opts, WithParallelRanges(1, 2), withChunkSize(100<<10))
			}
			_, err := Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: descOf("", data)}}, opts...)
			var be *BlobError
			if !errors.Is(err, ErrStalled) || !errors.As(err, &be) || be.Digest != digest.FromBytes(data) {
				t.Fatalf("error %v, want a BlobError wrapping ErrStalled", err)
			}
			if l.Has(digest.FromBytes(data)) {
				t.Error("stalled blob stored")
			}
		})
	}
}

func TestContextCancelKeepsPartial(t *testing.T) {
	data := randBytes(65, 1<<20)
	srv := newBlobServer(t, data)
	srv.behave = func(w http.ResponseWriter, r *http.Request, n int, data []byte) bool {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(http.StatusOK)
		w.Write(data[:300<<10])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return true
	}
	l := openTemp(t)
	partial := filepath.Join(l.Dir(), IngestDir, "sha256-"+digest.FromBytes(data).Encoded()+".partial")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// Cancel once the client has written some of what it received.
		for {
			if fi, err := os.Stat(partial); err == nil && fi.Size() >= 200<<10 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	_, err := Fetch(ctx, srv.fetcher(), l, []Blob{{Desc: descOf("", data)}}, WithBufferSize(64<<10))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if left := ingestEntries(t, l); len(left) != 1 || filepath.Base(partial) != left[0] {
		t.Fatalf("ingest %v, want the partial kept for resume", left)
	}
}

func TestFetchRejectsInvalidDigest(t *testing.T) {
	l := openTemp(t)
	for _, d := range []digest.Digest{"sha256:../../../etc/passwd", "md5:abc", "", "sha256:ABCDEF"} {
		_, err := Fetch(context.Background(), newMemFetcher(), l, []Blob{{Desc: manifest.Descriptor{Digest: d, Size: 1}}})
		var be *BlobError
		if !errors.As(err, &be) || be.Op != OpVerify {
			t.Errorf("digest %q: error %v, want a verify BlobError", d, err)
		}
	}
}

func TestSHA512Blob(t *testing.T) {
	data := randBytes(70, 10000)
	d := digest.SHA512.FromBytes(data)
	f := &memFetcher{blobs: map[digest.Digest][]byte{d: data}}
	l := openTemp(t)
	res, err := Fetch(context.Background(), f, l, []Blob{{Desc: manifest.Descriptor{Digest: d, Size: int64(len(data))}, DiffID: true}})
	if err != nil {
		t.Fatal(err)
	}
	if !l.Has(d) || !strings.Contains(l.Path(d), filepath.Join(BlobsDir, "sha512")) {
		t.Errorf("sha512 blob not under blobs/sha512: %s", l.Path(d))
	}
	if want := digest.Digest(fmt.Sprintf("sha256:%x", sha256.Sum256(data))); res[0].DiffID != want {
		t.Errorf("diffID %s, want sha256 of the bytes %s", res[0].DiffID, want)
	}
}

func TestResumeAgainstGoContainerRegistry(t *testing.T) {
	// go-containerregistry's registry answers 416 to "bytes=N-": the resume must fall
	// back to "bytes=N-<last>", which it serves.
	data := randBytes(80, 300<<10+1)
	d := digest.FromBytes(data)
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	var mu sync.Mutex
	var ranges []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			reg.ServeHTTP(w, r)
			return
		}
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		n := len(ranges)
		mu.Unlock()
		if n > 1 {
			reg.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		reg.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes()[:1000])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}))
	t.Cleanup(srv.Close)
	resp, err := http.Post(srv.URL+"/v2/test/blobs/uploads/?digest="+string(d), "application/octet-stream", bytes.NewReader(data))
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %v %v", err, resp)
	}
	resp.Body.Close()
	l := openTemp(t)
	f := &httpFetcher{base: srv.URL + "/v2/test/blobs", client: srv.Client()}
	if _, err := Fetch(context.Background(), f, l, []Blob{{Desc: descOf("", data)}}, fastRetry); err != nil {
		t.Fatal(err)
	}
	assertStored(t, l, data)
	want := []string{"", "bytes=1000-", fmt.Sprintf("bytes=1000-%d", len(data)-1)}
	if !slices.Equal(ranges, want) {
		t.Errorf("Range headers %q, want %q", ranges, want)
	}
}

package layers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/pullkit/pullkit/manifest"
)

// -layers.full runs the store benchmarks on the target shapes (8 x 64 MiB,
// 200 x 64 KiB, 1 x 1 GiB) instead of smaller ones.
var benchFull = flag.Bool("layers.full", false, "benchmark the full-size shapes (8x64MiB, 200x64KiB, 1x1GiB)")

// synthBlob is a large pseudo-random blob generated on the fly (seekable, at memcpy
// speed: each 4 MiB block is a different rotation of one random block), so a 1 GiB
// benchmark does not hold the blob in memory, RSS shows what the transfer uses, and
// the source costs little CPU.
type synthBlob struct {
	size int64
	seed uint64
}

const synthBlock = 4 << 20

var synthPatterns sync.Map // seed -> []byte

func (s synthBlob) pattern() []byte {
	if p, ok := synthPatterns.Load(s.seed); ok {
		return p.([]byte)
	}
	p, _ := synthPatterns.LoadOrStore(s.seed, randBytes(s.seed, synthBlock))
	return p.([]byte)
}

func (s synthBlob) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.size {
		return 0, io.EOF
	}
	pat := s.pattern()
	n := int(min(int64(len(p)), s.size-off))
	for i := 0; i < n; {
		pos := off + int64(i)
		rot := int((pos/synthBlock*1234567 + pos%synthBlock) % synthBlock)
		m := copy(p[i:n], pat[rot:])
		if rest := synthBlock - int(pos%synthBlock); m > rest {
			m = rest // the next block has another rotation
		}
		i += m
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

var (
	synthMu      sync.Mutex
	synthDigests = map[synthBlob]digest.Digest{}
)

func (s synthBlob) digest() digest.Digest {
	synthMu.Lock()
	defer synthMu.Unlock()
	d, ok := synthDigests[s]
	if !ok {
		d, _ = digest.FromReader(io.NewSectionReader(s, 0, s.size))
		synthDigests[s] = d
	}
	return d
}

// source serves benchmark blobs (byte slices or synthetic) without a network.
type source struct {
	descs []manifest.Descriptor
	open  map[digest.Digest]io.ReaderAt
	size  map[digest.Digest]int64
}

func newSource(n int, size int64, synthetic bool) *source {
	s := &source{open: map[digest.Digest]io.ReaderAt{}, size: map[digest.Digest]int64{}}
	for i := range n {
		var r io.ReaderAt
		var d digest.Digest
		if synthetic {
			sb := synthBlob{size: size, seed: uint64(i) + 1}
			r, d = sb, sb.digest()
		} else {
			b := randBytes(uint64(i)+1000, int(size))
			r, d = bytesReaderAt(b), digest.FromBytes(b)
		}
		s.open[d], s.size[d] = r, size
		s.descs = append(s.descs, manifest.Descriptor{MediaType: manifest.MediaTypeOCILayer, Digest: d, Size: size})
	}
	return s
}

type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (s *source) FetchBlob(_ context.Context, desc manifest.Descriptor, rng *Range) (*http.Response, error) {
	r, ok := s.open[desc.Digest]
	if !ok {
		return nil, fmt.Errorf("GET %s: 404", desc.Digest)
	}
	size := s.size[desc.Digest]
	resp := &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Header: http.Header{}}
	start, end := int64(0), size-1
	if rng != nil {
		start = rng.Start
		if rng.End >= 0 {
			end = min(rng.End, size-1)
		}
		resp.StatusCode, resp.Status = http.StatusPartialContent, "206 Partial Content"
		resp.Header.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
	}
	resp.ContentLength = end - start + 1
	resp.Body = io.NopCloser(io.NewSectionReader(r, start, end-start+1))
	return resp, nil
}

func (s *source) total() int64 {
	var t int64
	for _, d := range s.descs {
		t += d.Size
	}
	return t
}

type shape struct {
	name      string
	n         int
	size      int64
	synthetic bool
}

var (
	shapeMu   sync.Mutex
	shapeSrcs = map[shape]*source{}
)

// source builds the shape's blobs on first use (so a -bench filter that skips a shape
// does not pay for it) and keeps them for the other benchmarks of the run.
func (sh shape) source() *source {
	shapeMu.Lock()
	defer shapeMu.Unlock()
	s := shapeSrcs[sh]
	if s == nil {
		s = newSource(sh.n, sh.size, sh.synthetic)
		shapeSrcs[sh] = s
	}
	return s
}

func (s *source) blobs() []Blob {
	blobs := make([]Blob, len(s.descs))
	for i, d := range s.descs {
		blobs[i] = Blob{Desc: d}
	}
	return blobs
}

func benchShapes() []shape {
	if *benchFull {
		return []shape{{"8x64MiB", 8, 64 << 20, false}, {"200x64KiB", 200, 64 << 10, false}, {"1x1GiB", 1, 1 << 30, true}}
	}
	return []shape{{"8x8MiB", 8, 8 << 20, false}, {"200x64KiB", 200, 64 << 10, false}, {"1x256MiB", 1, 256 << 20, false}}
}

// BenchmarkVerifier measures hashing throughput through go-digest's Verifier, in writes
// of the default buffer size, as the transfer hashes.
func BenchmarkVerifier(b *testing.B) {
	data := randBytes(1, 64<<20)
	d := digest.FromBytes(data)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		v := d.Verifier()
		for off := 0; off < len(data); off += DefaultBufferSize {
			v.Write(data[off:min(off+DefaultBufferSize, len(data))])
		}
		if !v.Verified() {
			b.Fatal("not verified")
		}
	}
}

// BenchmarkDiffID measures the diffID pipeline (decompression and sha256 of the tar) per
// compressed byte.
func BenchmarkDiffID(b *testing.B) {
	tarball := makeTar(b, 2, 8<<20)
	for _, c := range []struct {
		name string
		blob []byte
	}{{"gzip", gzipBytes(b, tarball)}, {"zstd", zstdBytes(b, tarball)}, {"none", tarball}} {
		b.Run(c.name, func(b *testing.B) {
			d := digest.FromBytes(c.blob)
			pool := getBufPool(DefaultBufferSize)
			b.SetBytes(int64(len(c.blob)))
			for b.Loop() {
				di := newDiffIDer(d, pool)
				for rest := c.blob; len(rest) > 0; {
					buf := di.next()
					n := copy(buf, rest)
					rest = rest[n:]
					di.feed(buf[:n])
				}
				if _, err := di.finish(pool); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStoreWrite measures Fetch of each shape from an in-memory Fetcher into a
// fresh layout (b.SetBytes: MB/s of blob bytes). Compare with BenchmarkFloor.
func BenchmarkStoreWrite(b *testing.B) {
	for _, sh := range benchShapes() {
		variants := []struct {
			name string
			opts []Option
		}{{"default", nil}}
		if sh.n == 1 {
			variants = append(variants, struct {
				name string
				opts []Option
			}{"noranges", []Option{WithParallelRanges(0, 1)}})
		}
		for _, v := range variants {
			b.Run(sh.name+"/"+v.name, func(b *testing.B) {
				src := sh.source()
				blobs := src.blobs()
				b.SetBytes(src.total())
				root := b.TempDir()
				i := 0
				for b.Loop() {
					dir := filepath.Join(root, fmt.Sprint(i))
					i++
					l, err := OpenLayout(dir)
					if err != nil {
						b.Fatal(err)
					}
					if _, err := Fetch(context.Background(), src, l, blobs, v.opts...); err != nil {
						b.Fatal(err)
					}
					b.StopTimer()
					os.RemoveAll(dir)
					b.StartTimer()
				}
			})
		}
	}
}

// BenchmarkFloor does the least a pull must do for the same shapes: concurrent (as many
// as DefaultJobs) GET + sha256 + write to a file, in 1 MiB copies, nothing else.
func BenchmarkFloor(b *testing.B) {
	for _, sh := range benchShapes() {
		b.Run(sh.name, func(b *testing.B) {
			src := sh.source()
			b.SetBytes(src.total())
			root := b.TempDir()
			i := 0
			for b.Loop() {
				dir := filepath.Join(root, fmt.Sprint(i))
				i++
				if err := os.MkdirAll(dir, 0o755); err != nil {
					b.Fatal(err)
				}
				var g errgroup.Group
				g.SetLimit(DefaultJobs)
				for _, d := range src.descs {
					g.Go(func() error { return floorOne(src, d, dir) })
				}
				if err := g.Wait(); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				os.RemoveAll(dir)
				b.StartTimer()
			}
		})
	}
}

var floorBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

func floorOne(src Fetcher, d manifest.Descriptor, dir string) error {
	resp, err := src.FetchBlob(context.Background(), d, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(filepath.Join(dir, d.Digest.Encoded()))
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	buf := floorBufs.Get().(*[]byte)
	defer floorBufs.Put(buf)
	if _, err := io.CopyBuffer(io.MultiWriter(f, h), resp.Body, *buf); err != nil {
		return err
	}
	if got := digest.NewDigest(digest.SHA256, h); got != d.Digest {
		return fmt.Errorf("floor: %s != %s", got, d.Digest)
	}
	return nil
}

// BenchmarkStoreVsFloor runs Fetch and the floor alternately on each shape, so both see
// the same machine load, and reports their throughputs and the wall-time ratio
// (store/floor; 1.0 means no overhead).
func BenchmarkStoreVsFloor(b *testing.B) {
	for _, sh := range benchShapes() {
		for _, tr := range []string{"mem", "http"} {
			b.Run(sh.name+"/"+tr, func(b *testing.B) {
				src := sh.source()
				var f Fetcher = src
				if tr == "http" {
					f = src.serve(b)
				}
				benchStoreVsFloor(b, f, src, src.blobs())
			})
		}
	}
}

// serve starts a loopback HTTP server for the source's blobs (Range handled by
// http.ServeContent) and returns a Fetcher for it.
func (s *source) serve(b *testing.B) Fetcher {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := digest.Digest(strings.TrimPrefix(r.URL.Path, "/"))
		ra, ok := s.open[d]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, io.NewSectionReader(ra, 0, s.size[d]))
	}))
	b.Cleanup(srv.Close)
	tr := srv.Client().Transport.(*http.Transport)
	tr.MaxIdleConnsPerHost = 16
	return &httpFetcher{base: srv.URL, client: srv.Client()}
}

func benchStoreVsFloor(b *testing.B, src Fetcher, srcInfo *source, blobs []Blob) {
	root := b.TempDir()
	var store, floor time.Duration
	i := 0
	runFloor := func(dir string) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		var g errgroup.Group
		g.SetLimit(DefaultJobs)
		for _, d := range srcInfo.descs {
			g.Go(func() error { return floorOne(src, d, dir) })
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		floor += time.Since(start)
	}
	runStore := func(dir string) {
		start := time.Now()
		l, err := OpenLayout(dir)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Fetch(context.Background(), src, l, blobs); err != nil {
			b.Fatal(err)
		}
		store += time.Since(start)
	}
	for b.Loop() {
		// Alternate which runs first: the second one may pay for the
		// write-back of the first.
		for k := range 2 {
			dir := filepath.Join(root, fmt.Sprint(i, "-", k))
			if (i+k)%2 == 0 {
				runFloor(dir)
			} else {
				runStore(dir)
			}
			os.RemoveAll(dir)
		}
		i++
	}
	mb := float64(srcInfo.total()) * float64(i) / 1e6
	b.ReportMetric(mb/store.Seconds(), "store-MB/s")
	b.ReportMetric(mb/floor.Seconds(), "floor-MB/s")
	b.ReportMetric(store.Seconds()/floor.Seconds(), "ratio")
}

// TestMemoryIsFlat checks that a transfer allocates a bounded amount whatever the blob
// size: a 256 MiB blob, streamed and in parallel ranges, with and without a diffID,
// must allocate far less than its size.
func TestMemoryIsFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 1 GiB")
	}
	sb := synthBlob{size: 256 << 20, seed: 77}
	src := &source{open: map[digest.Digest]io.ReaderAt{sb.digest(): sb}, size: map[digest.Digest]int64{sb.digest(): sb.size}}
	desc := manifest.Descriptor{Digest: sb.digest(), Size: sb.size}
	for _, tc := range []struct {
		name string
		blob Blob
		opts []Option
	}{
		{"stream", Blob{Desc: desc}, []Option{WithParallelRanges(0, 1)}},
		{"stream with diffID", Blob{Desc: desc, DiffID: true}, []Option{WithParallelRanges(0, 1)}},
		{"ranged", Blob{Desc: desc}, []Option{WithParallelRanges(1, 4)}},
		{"ranged with diffID", Blob{Desc: desc, DiffID: true}, []Option{WithParallelRanges(1, 4)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := openTemp(t)
			runtime.GC()
			// Flat means the live heap stays bounded while the blob moves. (Total bytes
			// allocated is not the measure: a GC may empty the buffer pool, and under
			// load GCs come often, so churn varies while the peak does not.)
			base := heapObjects()
			stop, peak := make(chan struct{}), make(chan uint64)
			go func() {
				var max uint64
				tick := time.NewTicker(2 * time.Millisecond)
				defer tick.Stop()
				for {
					if h := heapObjects(); h > max {
						max = h
					}
					select {
					case <-stop:
						peak <- max
						return
					case <-tick.C:
					}
				}
			}()
			res, err := Fetch(context.Background(), src, l, []Blob{tc.blob}, tc.opts...)
			close(stop)
			grew := int64(<-peak) - int64(base)
			if err != nil {
				t.Fatal(err)
			}
			if tc.blob.DiffID && res[0].DiffID != desc.Digest {
				t.Errorf("diffID %s, want the digest of this uncompressed blob", res[0].DiffID)
			}
			t.Logf("live heap grew by at most %d KiB while moving %d MiB", grew>>10, sb.size>>20)
			if grew > 32<<20 {
				t.Errorf("live heap grew by %d MiB to move a %d MiB blob; want a bounded amount", grew>>20, sb.size>>20)
			}
		})
	}
}

// TestSynthBlob checks that the benchmark's synthetic blob reads the same bytes whatever
// the offsets and lengths of the reads, as ranged transfers need.
func TestSynthBlob(t *testing.T) {
	sb := synthBlob{size: 3*synthBlock + 12345, seed: 5}
	whole := make([]byte, sb.size)
	if n, err := sb.ReadAt(whole, 0); n != len(whole) || (err != nil && err != io.EOF) {
		t.Fatalf("read %d, %v", n, err)
	}
	if bytes.Equal(whole[:synthBlock], whole[synthBlock:2*synthBlock]) {
		t.Fatal("blocks repeat")
	}
	for _, c := range []struct{ off, n int64 }{{0, 1}, {synthBlock - 3, 10}, {1, 2*synthBlock + 5}, {sb.size - 7, 7}, {123456, 999999}} {
		p := make([]byte, c.n)
		if n, _ := sb.ReadAt(p, c.off); int64(n) != c.n || !bytes.Equal(p, whole[c.off:c.off+c.n]) {
			t.Errorf("ReadAt(%d, %d) differs from the whole read", c.off, c.n)
		}
	}
}

// heapObjects is the live heap in bytes, read without stopping the world.
func heapObjects() uint64 {
	m := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(m)
	return m[0].Value.Uint64()
}

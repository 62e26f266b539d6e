package inflate_test

import (
	"archive/tar"
	"bytes"
	stdgzip "compress/gzip"
	"context"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"

	"github.com/pullkit/pullkit/internal/inflate"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
)

// shrink divides the sizes of the generated corpus (race_test.go sets it).
var shrink = 1

// serial is the reference: what layers.Decompress (one core) reads, and its error.
func serial(blob []byte) ([]byte, error) {
	rc, _, err := layers.Decompress(bytes.NewReader(blob))
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// parallel reads blob with cfg and returns what it read, its error and its stats.
func parallel(t testing.TB, blob []byte, cfg inflate.Config) ([]byte, inflate.Stats, error) {
	t.Helper()
	r, err := inflate.NewGzip(context.Background(), bytes.NewReader(blob), int64(len(blob)), cfg)
	if err != nil {
		return nil, inflate.Stats{}, err
	}
	defer r.Close()
	out, err := io.ReadAll(r)
	return out, r.Stats(), err
}

// pinned makes every decision a test depends on: two workers, small parts, and a reader
// that waits for them, so that a stream of a few hundred KiB is decoded in several
// speculative parts on any machine.
func pinned(part int64) inflate.Config {
	return inflate.Config{Workers: 2, PartSize: part, Search: 64 << 10, MinSize: 1, Patient: true}
}

func gz(t testing.TB, b []byte, level int) []byte {
	var buf bytes.Buffer
	w, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func stdgz(t testing.TB, b []byte, level int) []byte {
	var buf bytes.Buffer
	w, err := stdgzip.NewWriterLevel(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

// treeTar is a tar of real files: this module's sources and part of Go's own, so about
// as compressible as a layer of a real image.
func treeTar(t testing.TB, limit int) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(root string) {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || buf.Len() > limit {
				return filepath.SkipDir
			}
			if !d.Type().IsRegular() {
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(p, "/"), Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg})
			tw.Write(b)
			return nil
		})
	}
	if goroot, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		add(filepath.Join(strings.TrimSpace(string(goroot)), "src"))
	}
	add("../..")
	tw.Close()
	return buf.Bytes()
}

type corpusCase struct {
	name string
	blob []byte
}

func corpus(t testing.TB) []corpusCase {
	rnd := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 1<<20/shrink)
	for i := range random {
		random[i] = byte(rnd.Uint32())
	}
	text := treeTar(t, 3<<20/shrink)
	zeros := make([]byte, 4<<20/shrink)
	repeat := bytes.Repeat([]byte("pullkit unpacks layers on every core. "), 50000/shrink)
	var mixed []byte
	for i := 0; i < 40/shrink; i++ {
		mixed = append(mixed, text[i*50000:i*50000+30000]...)
		mixed = append(mixed, random[i*20000:i*20000+20000]...)
	}
	m := len(text) / 3
	cases := []corpusCase{
		{"empty", gz(t, nil, 6)},
		{"one byte", gz(t, []byte{'x'}, 6)},
		{"tiny", gz(t, []byte("hello, layer\n"), 9)},
		{"text default", gz(t, text, gzip.DefaultCompression)},
		{"text best speed", gz(t, text, gzip.BestSpeed)},
		{"text best", gz(t, text, gzip.BestCompression)},
		{"text stdlib", stdgz(t, text, 6)},
		{"text huffman only", gz(t, text, gzip.HuffmanOnly)},
		{"random", gz(t, random, 6)},
		{"stored blocks", gz(t, text[:m], gzip.NoCompression)},
		{"zeros", gz(t, zeros, 6)},
		{"repeated", stdgz(t, repeat, 6)},
		{"mixed", stdgz(t, mixed, 6)},
		{"concatenated members", append(append(gz(t, text[:m], 6), gz(t, text[m:2*m], 1)...), stdgz(t, text[2*m:], 9)...)},
		{"trailing zeros", append(stdgz(t, text[:2*m], 6), make([]byte, 1024)...)},
		{"member then empty member", append(stdgz(t, text[:m], 6), gz(t, nil, 6)...)},
	}
	for _, f := range []string{"../../testdata/oci-layout/hello-world-ctr-export.tar", "../../testdata/docker-archive/hello-world-docker25-save.tar"} {
		entries := gzipEntries(t, f)
		if strings.Contains(f, "ctr-export") && len(entries) == 0 {
			t.Fatalf("no gzip layer in %s", f)
		}
		for i, b := range entries {
			cases = append(cases, corpusCase{filepath.Base(f) + " layer " + string(rune('0'+i)), b})
		}
	}
	return cases
}

// gzipEntries returns the gzip blobs inside the tar file f (real layers as saved).
func gzipEntries(t testing.TB, f string) [][]byte {
	fh, err := os.Open(f)
	if err != nil {
		matches, _ := filepath.Glob(filepath.Join("../../testdata", "*", filepath.Base(f)))
		if len(matches) == 0 {
			t.Fatalf("no %s in testdata", f)
		}
		fh, err = os.Open(matches[0])
		if err != nil {
			t.Fatal(err)
		}
	}
	defer fh.Close()
	var out [][]byte
	tr := tar.NewReader(fh)
	for {
		_, err := tr.Next()
		if err != nil {
			break
		}
		b, _ := io.ReadAll(tr)
		if len(b) > 2 && b[0] == 0x1f && b[1] == 0x8b {
			out = append(out, b)
		}
	}
	return out
}

func TestParallelEqualsSerial(t *testing.T) {
	for _, c := range corpus(t) {
		t.Run(c.name, func(t *testing.T) {
			want, werr := serial(c.blob)
			if werr != nil {
				t.Fatalf("serial: %v", werr)
			}
			// In order; patient with two workers; and a reader that waits for nobody (what
			// it takes from the worker is up to the machine: the output is not).
			for _, cfg := range []inflate.Config{{}, pinned(64 << 10 / int64(shrink)), {Workers: 1, PartSize: 32 << 10 / int64(shrink), MinSize: 1}} {
				got, st, err := parallel(t, c.blob, cfg)
				if err != nil {
					t.Fatalf("%+v: %v (stats %+v)", cfg, err, st)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%+v: output differs: %d bytes, want %d (stats %+v)", cfg, len(got), len(want), st)
				}
				if st.Ordered+st.Speculated != int64(len(want)) {
					t.Errorf("%+v: stats account for %d+%d bytes of %d", cfg, st.Ordered, st.Speculated, len(want))
				}
			}
		})
	}
}

// TestPartsAreSpeculative checks, with the decisions pinned, that a layer-like stream is
// mostly decoded in speculative parts, not all in order: the parallel path is taken.
func TestPartsAreSpeculative(t *testing.T) {
	text := treeTar(t, 2<<20)
	part := int64(64 << 10)
	for _, c := range []struct {
		name string
		blob []byte
	}{{"klauspost", gz(t, text, 6)}, {"stdlib", stdgz(t, text, 6)}} {
		got, st, err := parallel(t, c.blob, pinned(part))
		if err != nil || !bytes.Equal(got, mustSerial(t, c.blob)) {
			t.Fatalf("%s: %v", c.name, err)
		}
		parts := len(c.blob) / int(part)
		if st.Parts < parts/3 || st.Speculated < int64(len(text))/3 {
			t.Errorf("%s: %d of ~%d parts speculative (%d bytes of %d): %+v", c.name, st.Parts, parts, st.Speculated, len(text), st)
		}
		t.Logf("%s: %+v", c.name, st)
	}
}

func mustSerial(t testing.TB, blob []byte) []byte {
	b, err := serial(blob)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCorruptLikeSerial damages streams and checks that the parallel reader gives a
// prefix of the serial output, and an error wherever the serial reader errs.
func TestCorruptLikeSerial(t *testing.T) {
	text := treeTar(t, 1<<20/shrink)
	blob := stdgz(t, text, 6)
	rnd := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 40; i++ {
		b := bytes.Clone(blob)
		switch i % 3 {
		case 0:
			b[10+rnd.IntN(len(b)-10)] ^= byte(1 + rnd.IntN(255))
		case 1:
			b = b[:rnd.IntN(len(b))]
		default:
			at := 10 + rnd.IntN(len(b)-10)
			for k := at; k < min(len(b), at+64); k++ {
				b[k] = byte(rnd.Uint32())
			}
		}
		compare(t, b, pinned(32<<10/int64(shrink)))
	}
}

var cfgFuzz = inflate.Config{Workers: 2, PartSize: 256, Search: 256, MinSize: 1, MaxPartOutput: 256 << 10, Patient: true}

// FuzzParallelGzip compares the parallel reader, with parts of a few hundred bytes so
// that even small inputs are decoded speculatively, with the serial one on arbitrary
// bytes: the same output when the serial reader succeeds, and otherwise an error and
// the same output up to it.
func FuzzParallelGzip(f *testing.F) {
	text := treeTar(f, 16<<10)[:16<<10]
	f.Add(flushed(f, text, 6, 700))
	f.Add(flushed(f, text, 1, 300))
	f.Add(flushed(f, text, gzip.NoCompression, 500))
	f.Add(stdgz(f, text, 6))
	f.Add(append(flushed(f, text[:5000], 9, 400), stdgz(f, text[5000:9000], 6)...))
	f.Add(flushed(f, bytes.Repeat([]byte{'a', 'b'}, 3000), 6, 1000))
	f.Fuzz(func(t *testing.T, blob []byte) {
		compare(t, blob, cfgFuzz)
		// And in order alone, as an unpack on two cores reads every gzip layer.
		compare(t, blob, inflate.Config{Workers: 0, MinSize: 1})
		// And with a reader that waits for no worker (what it takes from them is up to
		// the machine; the outcome must not be).
		impatient := cfgFuzz
		impatient.Patient = false
		compare(t, blob, impatient)
	})
}

// flushed compresses b with a flush every `every` bytes: many small blocks, so that a
// few KiB make several parts.
func flushed(t testing.TB, b []byte, level, every int) []byte {
	var buf bytes.Buffer
	w, err := gzip.NewWriterLevel(&buf, level)
	if err != nil {
		t.Fatal(err)
	}
	for len(b) > 0 {
		k := min(every, len(b))
		w.Write(b[:k])
		w.Flush()
		b = b[k:]
	}
	w.Close()
	return buf.Bytes()
}

// TestFuzzSeedsSpeculate checks that the fuzz target's configuration decodes its seeds
// in speculative parts, so that fuzzing exercises them.
func TestFuzzSeedsSpeculate(t *testing.T) {
	text := treeTar(t, 16<<10)[:16<<10]
	_, st, err := parallel(t, flushed(t, text, 6, 700), cfgFuzz)
	if err != nil || st.Parts == 0 {
		t.Fatalf("%v %+v", err, st)
	}
}

func compare(t *testing.T, blob []byte, cfg inflate.Config) {
	t.Helper()
	if rc, kind, err := layers.Decompress(bytes.NewReader(blob)); err == nil {
		rc.Close()
		if kind != manifest.Gzip {
			return // not for this reader: layers.Decompress passes it through
		}
	}
	want, werr := serial(blob)
	r, err := inflate.NewGzip(context.Background(), bytes.NewReader(blob), int64(len(blob)), cfg)
	if err != nil {
		if werr == nil {
			t.Fatalf("parallel refused a stream serial reads: %v", err)
		}
		return
	}
	got, gerr := io.ReadAll(r)
	r.Close()
	switch {
	case werr == nil && gerr != nil:
		t.Fatalf("parallel failed (%v) where serial read %d bytes", gerr, len(want))
	case werr == nil && !bytes.Equal(got, want):
		t.Fatalf("output differs: %d bytes, want %d", len(got), len(want))
	case werr != nil && gerr == nil:
		t.Fatalf("parallel read %d bytes without error where serial failed with %v after %d", len(got), werr, len(want))
	case werr != nil && !bytes.HasPrefix(want, got):
		t.Fatalf("parallel output (%d bytes) is not a prefix of the serial output (%d bytes)", len(got), len(want))
	}
}

func TestCancel(t *testing.T) {
	blob := gz(t, make([]byte, 64<<20/shrink), 6)
	ctx, cancel := context.WithCancel(context.Background())
	r, err := inflate.NewGzip(ctx, bytes.NewReader(blob), int64(len(blob)), pinned(16<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 1<<10)
	if _, err := r.Read(buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := io.ReadAll(r); !errors.Is(err, context.Canceled) {
		t.Fatalf("read after cancel: %v", err)
	}
}

// TestLatePartsDecodedInOrder holds every worker until the reader is done, so that each
// part is still being decoded when the reader gets to it: a reader that does not wait
// drops them all and decodes the whole stream in order, to the same bytes.
func TestLatePartsDecodedInOrder(t *testing.T) {
	text := treeTar(t, 1<<20/shrink)
	blob := stdgz(t, text, 6)
	release := make(chan struct{})
	defer inflate.HoldWorkers(func() { <-release })()
	r, err := inflate.NewGzip(context.Background(), bytes.NewReader(blob), int64(len(blob)), inflate.Config{Workers: 1, PartSize: 2 << 10, Search: 2 << 10, MinSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	close(release)
	st := r.Stats()
	r.Close()
	if err != nil || !bytes.Equal(got, text) {
		t.Fatalf("%v: %d bytes, want %d", err, len(got), len(text))
	}
	if st.Parts != 0 || st.Late == 0 || st.Ordered != int64(len(text)) {
		t.Fatalf("held workers: %+v, want every part late and the stream decoded in order", st)
	}
}

// TestReaderWaitsPastHalf holds every worker once it decoded past half of its part, until
// the reader, which does not wait for workers that are less far along, decides about the
// part: it waits for such a worker rather than decode the stretch again in order. One
// part at a time (Ahead 1), so that the worker held is the one the reader gets to.
func TestReaderWaitsPastHalf(t *testing.T) {
	text := treeTar(t, 2<<20/shrink)
	blob := stdgz(t, text, 6) // blocks of 16 Ki symbols: several in each part
	release := make(chan struct{})
	defer inflate.HoldPastHalf(func(ctx context.Context) {
		select {
		case <-release:
		case <-ctx.Done():
		}
	}, func() { release <- struct{}{} })()
	got, st, err := parallel(t, blob, inflate.Config{Workers: 1, Ahead: 1, PartSize: 64 << 10 / int64(shrink), Search: 64 << 10, MinSize: 1})
	if err != nil || !bytes.Equal(got, text) {
		t.Fatalf("%v: %d bytes, want %d", err, len(got), len(text))
	}
	if st.Late != 0 || st.Waited == 0 || st.Parts == 0 || st.Ordered+st.Speculated != int64(len(text)) {
		t.Fatalf("workers held past half: %+v, want the reader to wait for some and drop none as late", st)
	}
	t.Logf("%+v", st)
}

// TestCancelWhileWaitingPastHalf cancels the reader while it waits for a worker held past
// half of its part: the read ends with the context's error, and Close returns (the held
// worker's part ends with the reader's context).
func TestCancelWhileWaitingPastHalf(t *testing.T) {
	text := treeTar(t, 2<<20/shrink)
	blob := stdgz(t, text, 6)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer inflate.HoldPastHalf(func(ctx context.Context) { <-ctx.Done() }, cancel)()
	r, err := inflate.NewGzip(ctx, bytes.NewReader(blob), int64(len(blob)), inflate.Config{Workers: 1, Ahead: 1, PartSize: 64 << 10 / int64(shrink), Search: 64 << 10, MinSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	st := r.Stats()
	r.Close()
	if !errors.Is(err, context.Canceled) || st.Waited != 1 || !bytes.HasPrefix(text, got) {
		t.Fatalf("read %d bytes, %v, stats %+v: want a prefix, context.Canceled, one wait", len(got), err, st)
	}
}

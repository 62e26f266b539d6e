// Package storetest is the conformance suite of store implementations: a store that
// passes Run behaves as the store package's interfaces say, as Layout and Memory do.
// An implementation calls Run from its own test:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return mystore.New(t.TempDir()) })
//	}
//
// It is a package of its own so that importing the store package does not bring the
// testing package into a program.
package storetest

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/store"
)

// Run runs every test of the suite, each against a new, empty store from open. Tests of
// garbage collection run when the store is a store.Collector, of Check when it is a
// store.Checker, and of bytes held out of order when its writers are store.RangeWriters.
// The rules it checks are those the store package's interfaces state.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Commit", testCommit},
		{"VerifyFailSize", testVerifyFailSize},
		{"VerifyFailDigest", testVerifyFailDigest},
		{"WritePastSize", testWritePastSize},
		{"Resume", testResume},
		{"Truncate", testTruncate},
		{"ConcurrentWriters", testConcurrentWriters},
		{"WriterWaitHonoursContext", testWriterWait},
		{"ReaderAt", testReaderAt},
		{"InfoWalkDelete", testInfoWalkDelete},
		{"InvalidDigest", testInvalidDigest},
		{"Names", testNames},
		{"PlatformNames", testPlatformNames},
		{"Load", testLoad},
		{"Check", testCheck},
		{"GC", testGC},
		{"GCLease", testGCLease},
		{"GCIngests", testGCIngests},
		{"RangesHeldAndAbsorbed", testRangesHeld},
		{"RangesResume", testRangesResume},
		{"RangesRules", testRangesRules},
		{"RangesWrongBytes", testRangesWrongBytes},
		{"RangesGCIngests", testRangesGC},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

// Sizes the tests write: one that a store may treat as small, and one past 1 MiB with
// a tail that is not a multiple of any block size.
const (
	smallSize = 3000
	largeSize = 2<<20 + 12345
)

// blob returns n pseudo-random bytes, the same for the same seed, and their digest.
func blob(seed uint64, n int) ([]byte, digest.Digest) {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b, digest.FromBytes(b)
}

func desc(b []byte, known bool) manifest.Descriptor {
	d := manifest.Descriptor{MediaType: "application/octet-stream", Digest: digest.FromBytes(b), Size: int64(len(b))}
	if !known {
		d.Size = -1
	}
	return d
}

func ctxT(t *testing.T) context.Context {
	// A generous bound, only to turn a hang into a failure.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// write writes b in pieces of chunk bytes.
func write(t *testing.T, w store.Writer, b []byte, chunk int) {
	t.Helper()
	for len(b) > 0 {
		k := min(chunk, len(b))
		n, err := w.Write(b[:k])
		if err != nil || n != k {
			t.Fatalf("Write(%d bytes) = %d, %v", k, n, err)
		}
		b = b[k:]
	}
}

// put stores b through a writer and fails the test on any error.
func put(t *testing.T, s store.Store, b []byte) digest.Digest {
	t.Helper()
	if err := store.WriteBlob(ctxT(t), s, desc(b, true), b); err != nil {
		t.Fatalf("WriteBlob: %v", err)
	}
	return digest.FromBytes(b)
}

// checkContent fails the test unless s holds exactly b under its digest.
func checkContent(t *testing.T, s store.Store, b []byte) {
	t.Helper()
	ctx := ctxT(t)
	d := digest.FromBytes(b)
	info, err := s.Info(ctx, d)
	if err != nil {
		t.Fatalf("Info(%s): %v", d, err)
	}
	if info.Digest != d || info.Size != int64(len(b)) {
		t.Errorf("Info = %+v, want digest %s size %d", info, d, len(b))
	}
	got, err := store.ReadBlob(ctx, s, d, int64(len(b)))
	if err != nil {
		t.Fatalf("Readblob(%s): %v", d, err)
	}
	if !bytes.Equal(got, b) {
		t.Errorf("blob %s: content differs from what was written", d)
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: error %v, want one wrapping %v", what, err, want)
	}
}

// wantNamed fails the test unless err's message names s.
func wantNamed(t *testing.T, err error, s string) {
	t.Helper()
	if err != nil && !strings.Contains(err.Error(), s) {
		t.Errorf("error %q does not name %s", err, s)
	}
}

func testCommit(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	start := time.Now()
	for i, tc := range []struct {
		size, chunk int
		known       bool
	}{
		{smallSize, 1000, true}, {smallSize, 7, false}, {largeSize, 1 << 20, true},
		{largeSize, 100 << 10, false}, {0, 1, true},
	} {
		b, d := blob(uint64(10+i), tc.size)
		w, err := s.Writer(ctx, desc(b, tc.known))
		if err != nil {
			t.Fatalf("Writer: %v", err)
		}
		if w.Offset() != 0 {
			t.Fatalf("new writer at offset %d", w.Offset())
		}
		write(t, w, b, tc.chunk)
		if w.Offset() != int64(len(b)) {
			t.Errorf("Offset %d after writing %d bytes", w.Offset(), len(b))
		}
		if store.Has(ctx, s, d) {
			t.Errorf("blob %s visible before Commit", d)
		}
		if err := w.Commit(ctx, int64(len(b)), d); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		if err := w.Close(); err != nil {
			t.Errorf("Close after Commit: %v", err)
		}
		checkContent(t, s, b)
		info, _ := s.Info(ctx, d)
		if info.Committed.Before(start.Add(-time.Minute)) || info.Committed.After(time.Now().Add(time.Minute)) {
			t.Errorf("Committed %v, want about %v", info.Committed, start)
		}
		if _, err := s.Writer(ctx, desc(b, tc.known)); !errors.Is(err, pullkit.ErrAlreadyExists) {
			t.Errorf("Writer of a committed blob: %v, want ErrAlreadyExists", err)
		}
		// WriteBlob of a blob the store holds is a no-op.
		if err := store.WriteBlob(ctx, s, desc(b, true), b); err != nil {
			t.Errorf("WriteBlob of a committed blob: %v", err)
		}
	}
	// Commit with an unknown size and an empty expected digest: the writer's digest.
	b, _ := blob(20, smallSize)
	w, err := s.Writer(ctx, desc(b, false))
	if err != nil {
		t.Fatal(err)
	}
	write(t, w, b, 512)
	if err := w.Commit(ctx, -1, ""); err != nil {
		t.Fatalf("Commit(-1, \"\"): %v", err)
	}
	checkContent(t, s, b)
	if _, err := w.Write([]byte("x")); err == nil {
		t.Errorf("Write after Commit succeeded")
	}
}

func testVerifyFailSize(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	for _, size := range []int{smallSize, largeSize} {
		b, d := blob(40, size)
		w, err := s.Writer(ctx, desc(b, false))
		if err != nil {
			t.Fatal(err)
		}
		write(t, w, b, 64<<10)
		err = w.Commit(ctx, int64(len(b))+1, d)
		wantErr(t, "Commit with a wrong size", err, pullkit.ErrSizeMismatch)
		var se *pullkit.SizeMismatchError
		if !errors.As(err, &se) || se.Want != int64(len(b))+1 || se.Got != int64(len(b)) {
			t.Errorf("error %v: want a *pullkit.SizeMismatchError with Want %d, Got %d", err, len(b)+1, len(b))
		}
		wantNamed(t, err, string(d))
		if store.Has(ctx, s, d) {
			t.Fatalf("blob %s stored after a failed Commit", d)
		}
		w.Close()
		// The bytes were discarded: a new writer starts from nothing.
		w, err = s.Writer(ctx, desc(b, false))
		if err != nil {
			t.Fatal(err)
		}
		if w.Offset() != 0 {
			t.Errorf("writer after a failed Commit at offset %d, want 0", w.Offset())
		}
		w.Close()
	}
}

func testVerifyFailDigest(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	for _, known := range []bool{true, false} {
		for _, size := range []int{smallSize, largeSize} {
			b, real := blob(50, size)
			_, want := blob(51, size)
			dsc := manifest.Descriptor{Digest: want, Size: int64(size)}
			if !known {
				dsc.Size = -1
			}
			w, err := s.Writer(ctx, dsc)
			if err != nil {
				t.Fatal(err)
			}
			write(t, w, b, 256<<10)
			err = w.Commit(ctx, int64(len(b)), want)
			wantErr(t, "Commit of the wrong content", err, pullkit.ErrDigestMismatch)
			var de *pullkit.DigestMismatchError
			if !errors.As(err, &de) || de.Want != want || de.Got != real {
				t.Errorf("error %v: want a *pullkit.DigestMismatchError with Want %s, Got %s", err, want, real)
			}
			wantNamed(t, err, string(want))
			for _, d := range []digest.Digest{want, real} {
				if store.Has(ctx, s, d) {
					t.Fatalf("blob %s stored after a failed Commit", d)
				}
			}
			w.Close()
			w, err = s.Writer(ctx, dsc)
			if err != nil {
				t.Fatal(err)
			}
			if w.Offset() != 0 {
				t.Errorf("writer after a failed Commit at offset %d, want 0", w.Offset())
			}
			w.Close()
		}
	}
}

// A writer of a blob of known size refuses bytes past it.
func testWritePastSize(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	b, d := blob(55, smallSize)
	w, err := s.Writer(ctx, desc(b, true))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	write(t, w, b[:1000], 1000)
	_, err = w.Write(append(b[1000:], 'x'))
	wantErr(t, "Write past the size", err, pullkit.ErrSizeMismatch)
	wantNamed(t, err, string(d))
	if store.Has(ctx, s, d) {
		t.Fatal("blob stored")
	}
}

func testResume(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	for i, tc := range []struct {
		size  int
		known bool
	}{{smallSize, true}, {smallSize, false}, {largeSize, true}, {largeSize, false}} {
		b, d := blob(uint64(60+i), tc.size)
		half := tc.size / 2
		w, err := s.Writer(ctx, desc(b, tc.known))
		if err != nil {
			t.Fatal(err)
		}
		write(t, w, b[:half], 64<<10)
		if err := w.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if store.Has(ctx, s, d) {
			t.Fatalf("blob %s visible after Close", d)
		}
		w, err = s.Writer(ctx, desc(b, tc.known))
		if err != nil {
			t.Fatal(err)
		}
		if w.Offset() != int64(half) {
			t.Fatalf("size %d known %v: resumed at %d, want %d", tc.size, tc.known, w.Offset(), half)
		}
		write(t, w, b[half:], 1<<20)
		if err := w.Commit(ctx, int64(len(b)), d); err != nil {
			t.Fatalf("Commit after resume: %v", err)
		}
		checkContent(t, s, b)
	}
}

func testTruncate(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	for i, size := range []int{smallSize, largeSize} {
		b, d := blob(uint64(70+i), size)
		junk, _ := blob(79, size/2)
		w, err := s.Writer(ctx, desc(b, false))
		if err != nil {
			t.Fatal(err)
		}
		write(t, w, junk, 64<<10)
		w.Close()
		w, err = s.Writer(ctx, desc(b, false))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Truncate(0); err != nil {
			t.Fatalf("Truncate(0): %v", err)
		}
		if w.Offset() != 0 {
			t.Fatalf("Offset %d after Truncate(0)", w.Offset())
		}
		write(t, w, b[:size/2], 64<<10)
		// Truncate to a shorter prefix: supported, or refused as unsupported.
		keep := int64(size / 3)
		if err := w.Truncate(keep); err == nil {
			if w.Offset() != keep {
				t.Fatalf("Offset %d after Truncate(%d)", w.Offset(), keep)
			}
			write(t, w, b[keep:size/2], 64<<10)
		} else if !errors.Is(err, pullkit.ErrUnsupported) {
			t.Fatalf("Truncate(%d): %v, want nil or ErrUnsupported", keep, err)
		}
		if err := w.Truncate(w.Offset() + 1); err == nil {
			t.Errorf("Truncate past Offset succeeded")
		}
		write(t, w, b[w.Offset():], 1<<20)
		if err := w.Commit(ctx, int64(size), d); err != nil {
			t.Fatalf("Commit after Truncate: %v", err)
		}
		checkContent(t, s, b)
	}
}

// N goroutines ask for a writer of one digest at once: exactly one gets it and writes,
// the others wait and then find the blob committed.
func testConcurrentWriters(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	const n = 8
	for i, size := range []int{smallSize, largeSize} {
		b, d := blob(uint64(80+i), size)
		var (
			wg              sync.WaitGroup
			mu              sync.Mutex
			wrote, existing int
			errs            []error
		)
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w, err := s.Writer(ctx, desc(b, true))
				if errors.Is(err, pullkit.ErrAlreadyExists) {
					mu.Lock()
					existing++
					mu.Unlock()
					return
				}
				if err == nil && w.Offset() != 0 {
					err = w.Truncate(0)
				}
				for p := b; err == nil && len(p) > 0; {
					k := min(len(p), 256<<10)
					_, err = w.Write(p[:k])
					p = p[k:]
				}
				if err == nil {
					err = w.Commit(ctx, int64(len(b)), d)
				}
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				wrote++
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			t.Fatalf("writers failed: %v", errs)
		}
		if wrote != 1 || existing != n-1 {
			t.Errorf("size %d: %d writers wrote and %d found the blob, want 1 and %d", size, wrote, existing, n-1)
		}
		checkContent(t, s, b)
	}
}

// A Writer waiting for another writer of its digest gives up when its context is done,
// and gets the digest once the other is closed.
func testWriterWait(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	b, d := blob(85, largeSize)
	w1, err := s.Writer(ctx, desc(b, true))
	if err != nil {
		t.Fatal(err)
	}
	write(t, w1, b[:1<<20], 1<<20)
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	_, err = s.Writer(short, desc(b, true))
	cancel()
	wantErr(t, "Writer while another is open", err, context.DeadlineExceeded)
	got := make(chan store.Writer, 1)
	go func() {
		w, err := s.Writer(ctx, desc(b, true))
		if err != nil {
			t.Errorf("waiting Writer: %v", err)
		}
		got <- w
	}()
	w1.Close()
	w2 := <-got
	if w2 == nil {
		return
	}
	if w2.Offset() != 1<<20 {
		t.Errorf("waiting writer at offset %d, want %d", w2.Offset(), 1<<20)
	}
	write(t, w2, b[w2.Offset():], 1<<20)
	if err := w2.Commit(ctx, int64(len(b)), d); err != nil {
		t.Fatal(err)
	}
	checkContent(t, s, b)
}

func testReaderAt(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	b, d := blob(90, largeSize)
	put(t, s, b)
	ra, err := s.ReaderAt(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	if ra.Size() != int64(len(b)) {
		t.Errorf("Size %d, want %d", ra.Size(), len(b))
	}
	for _, c := range []struct{ off, n int }{{0, 10}, {1 << 20, 4096}, {len(b) - 7, 7}, {12345, 1 << 20}} {
		p := make([]byte, c.n)
		n, err := ra.ReadAt(p, int64(c.off))
		if n != c.n || (err != nil && !errors.Is(err, io.EOF)) || !bytes.Equal(p, b[c.off:c.off+c.n]) {
			t.Errorf("ReadAt(%d bytes at %d) = %d, %v, or wrong bytes", c.n, c.off, n, err)
		}
	}
	p := make([]byte, 10)
	if n, err := ra.ReadAt(p, int64(len(b))-3); n != 3 || !errors.Is(err, io.EOF) {
		t.Errorf("ReadAt across the end = %d, %v; want 3, io.EOF", n, err)
	}
	all, err := io.ReadAll(io.NewSectionReader(ra, 0, ra.Size()))
	if err != nil || !bytes.Equal(all, b) {
		t.Errorf("reading the whole blob: %v, or wrong bytes", err)
	}
	if _, err := s.ReaderAt(ctx, digest.FromString("absent")); !errors.Is(err, pullkit.ErrNotFound) {
		t.Errorf("ReaderAt of an absent blob: %v, want ErrNotFound", err)
	}
	if _, err := store.ReadBlob(ctx, s, d, 100); !errors.Is(err, pullkit.ErrTooLarge) {
		t.Errorf("ReadBlob over the limit: %v, want ErrTooLarge", err)
	}
}

func testInfoWalkDelete(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	want := map[digest.Digest]int64{}
	for i, n := range []int{0, 100, smallSize, largeSize} {
		b, _ := blob(uint64(100+i), n)
		want[put(t, s, b)] = int64(n)
	}
	walk := func() map[digest.Digest]int64 {
		got := map[digest.Digest]int64{}
		if err := s.Walk(ctx, func(i store.Info) error {
			if _, dup := got[i.Digest]; dup {
				t.Errorf("Walk gave %s twice", i.Digest)
			}
			got[i.Digest] = i.Size
			return nil
		}); err != nil {
			t.Fatalf("Walk: %v", err)
		}
		return got
	}
	if got := walk(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Walk = %v, want %v", got, want)
	}
	stop := errors.New("stop")
	if err := s.Walk(ctx, func(store.Info) error { return stop }); err != stop {
		t.Errorf("Walk returned %v, want the callback's error", err)
	}
	var victim digest.Digest
	for d, n := range want {
		if n == smallSize {
			victim = d
		}
	}
	if err := s.Delete(ctx, victim); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	delete(want, victim)
	if got := walk(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Walk after Delete = %v, want %v", got, want)
	}
	err := s.Delete(ctx, victim)
	wantErr(t, "second Delete", err, pullkit.ErrNotFound)
	wantNamed(t, err, string(victim))
	_, err = s.Info(ctx, victim)
	wantErr(t, "Info of a deleted blob", err, pullkit.ErrNotFound)
	wantNamed(t, err, string(victim))
	if store.Has(ctx, s, victim) {
		t.Error("Has a deleted blob")
	}
	// A deleted blob can be written again.
	b, _ := blob(102, smallSize)
	put(t, s, b)
	checkContent(t, s, b)
}

func testInvalidDigest(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	for _, d := range []digest.Digest{"", "sha256:../../etc/passwd", "sha256:" + digest.Digest(strings.Repeat("A", 64)), "md5:d41d8cd98f00b204e9800998ecf8427e", "sha256:abc"} {
		if _, err := s.Info(ctx, d); !errors.Is(err, pullkit.ErrInvalid) {
			t.Errorf("Info(%q): %v, want ErrInvalid", d, err)
		}
		if _, err := s.ReaderAt(ctx, d); !errors.Is(err, pullkit.ErrInvalid) {
			t.Errorf("ReaderAt(%q): %v, want ErrInvalid", d, err)
		}
		if err := s.Delete(ctx, d); !errors.Is(err, pullkit.ErrInvalid) {
			t.Errorf("Delete(%q): %v, want ErrInvalid", d, err)
		}
		if _, err := s.Writer(ctx, manifest.Descriptor{Digest: d, Size: -1}); !errors.Is(err, pullkit.ErrInvalid) {
			t.Errorf("Writer(%q): %v, want ErrInvalid", d, err)
		}
	}
}

// manifestOf returns an OCI image manifest over config and layers.
func manifestOf(config []byte, layers ...[]byte) []byte {
	var ls []manifest.Descriptor
	for _, l := range layers {
		ls = append(ls, manifest.Descriptor{MediaType: manifest.MediaTypeOCILayerGzip, Digest: digest.FromBytes(l), Size: int64(len(l))})
	}
	b, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": manifest.MediaTypeOCIManifest,
		"config": manifest.Descriptor{MediaType: manifest.MediaTypeOCIConfig, Digest: digest.FromBytes(config), Size: int64(len(config))},
		"layers": ls,
	})
	return b
}

// indexOf returns an OCI index over manifests (for linux/amd64).
func indexOf(ms ...[]byte) []byte {
	var ds []manifest.Descriptor
	for _, m := range ms {
		ds = append(ds, manifest.Descriptor{MediaType: manifest.MediaTypeOCIManifest, Digest: digest.FromBytes(m), Size: int64(len(m)),
			Platform: &platforms.Platform{OS: "linux", Architecture: "amd64"}})
	}
	b, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": manifest.MediaTypeOCIIndex, "manifests": ds})
	return b
}

func target(b []byte, mediaType string) manifest.Descriptor {
	return manifest.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
}

func imageNames(t *testing.T, s store.Store) []string {
	t.Helper()
	imgs, err := s.Images(ctxT(t))
	if err != nil {
		t.Fatalf("Images: %v", err)
	}
	var names []string
	for _, img := range imgs {
		names = append(names, img.Name+"="+string(img.Target.Digest))
	}
	return names
}

func testNames(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	m1 := manifestOf([]byte(`{"n":1}`))
	m2 := manifestOf([]byte(`{"n":2}`))
	t1, t2 := target(m1, manifest.MediaTypeOCIManifest), target(m2, manifest.MediaTypeOCIManifest)
	const a, b = "registry.example/team/app:1.0", "other.example/app:1.0"

	err := s.PutImage(ctx, store.Image{Name: a, Target: t1})
	wantErr(t, "PutImage of a target the store does not hold", err, pullkit.ErrNotFound)
	wantNamed(t, err, string(t1.Digest))
	put(t, s, m1)
	put(t, s, m2)
	if err := s.PutImage(ctx, store.Image{Name: "", Target: t1}); !errors.Is(err, pullkit.ErrInvalid) {
		t.Errorf("PutImage with no name: %v, want ErrInvalid", err)
	}

	t1.Platform = &platforms.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	t1.Annotations = map[string]string{"org.example.kept": "yes"}
	if err := s.PutImage(ctx, store.Image{Name: a, Target: t1}); err != nil {
		t.Fatal(err)
	}
	if len(t1.Annotations) != 1 {
		t.Errorf("PutImage changed the caller's annotations: %v", t1.Annotations)
	}
	if err := s.PutImage(ctx, store.Image{Name: b, Target: t2}); err != nil {
		t.Fatal(err)
	}
	if got, want := imageNames(t, s), []string{b + "=" + string(t2.Digest), a + "=" + string(t1.Digest)}; !slices.Equal(got, want) {
		t.Errorf("Images = %v, want %v", got, want)
	}
	img, err := s.Image(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if img.Name != a || img.Target.Digest != t1.Digest || img.Target.Size != t1.Size || img.Target.MediaType != t1.MediaType {
		t.Errorf("Image(%s) = %+v, want target %+v", a, img, t1)
	}
	if img.Target.Platform == nil || img.Target.Platform.String() != t1.Platform.String() {
		t.Errorf("Image(%s) platform %v, want %v", a, img.Target.Platform, t1.Platform)
	}
	for k, v := range map[string]string{store.AnnotationRefName: a, store.AnnotationImageName: a, "org.example.kept": "yes"} {
		if img.Target.Annotations[k] != v {
			t.Errorf("Image(%s) annotation %s = %q, want %q", a, k, img.Target.Annotations[k], v)
		}
	}

	// Naming a again replaces only a's entry.
	if err := s.PutImage(ctx, store.Image{Name: a, Target: t2}); err != nil {
		t.Fatal(err)
	}
	if got, want := imageNames(t, s), []string{b + "=" + string(t2.Digest), a + "=" + string(t2.Digest)}; !slices.Equal(got, want) {
		t.Errorf("Images after replacing %s = %v, want %v", a, got, want)
	}
	_, err = s.Image(ctx, "absent.example/x:1")
	wantErr(t, "Image of an absent name", err, pullkit.ErrNotFound)
	wantNamed(t, err, "absent.example/x:1")

	if err := s.DeleteImage(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got, want := imageNames(t, s), []string{b + "=" + string(t2.Digest)}; !slices.Equal(got, want) {
		t.Errorf("Images after deleting %s = %v, want %v", a, got, want)
	}
	wantErr(t, "second DeleteImage", s.DeleteImage(ctx, a), pullkit.ErrNotFound)
	// Names are not blobs: the target stays until GC.
	if !store.Has(ctx, s, t1.Digest) {
		t.Error("DeleteImage removed a blob")
	}

	// Many names put at once are all kept.
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.PutImage(ctx, store.Image{Name: fmt.Sprintf("r.example/c:%d", i), Target: t1}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := imageNames(t, s); len(got) != 11 {
		t.Errorf("%d images after 10 concurrent PutImage, want 11: %v", len(got), got)
	}
}

// DeleteImage of a name removes the names PlatformName derives from it too, and only
// those.
func testPlatformNames(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	m := manifestOf([]byte(`{"n":3}`))
	put(t, s, m)
	tg := target(m, manifest.MediaTypeOCIManifest)
	const name = "registry.example/team/app:1.0"
	arm := store.PlatformName(name, platforms.Platform{OS: "linux", Architecture: "arm64"})
	if arm != name+"@linux/arm64/v8" {
		t.Fatalf("PlatformName = %q", arm)
	}
	if store.PlatformName(name, platforms.Platform{OS: "linux\x1b[2J", Architecture: "amd64"}) != "" {
		t.Error("PlatformName of a platform with control characters is not empty")
	}
	for _, n := range []string{name, arm, name + "@other", "registry.example/team/app:1.0x@linux/amd64"} {
		if err := s.PutImage(ctx, store.Image{Name: n, Target: tg}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteImage(ctx, name); err != nil {
		t.Fatal(err)
	}
	want := []string{name + "@other=" + string(tg.Digest), "registry.example/team/app:1.0x@linux/amd64=" + string(tg.Digest)}
	if got := imageNames(t, s); !slices.Equal(got, want) {
		t.Errorf("Images after DeleteImage(%s) = %v, want %v", name, got, want)
	}
	// Only platform names left: DeleteImage of the name removes them, and succeeds.
	if err := s.PutImage(ctx, store.Image{Name: arm, Target: tg}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteImage(ctx, name); err != nil {
		t.Errorf("DeleteImage of a name with only platform names left: %v", err)
	}
	if _, err := s.Image(ctx, arm); !errors.Is(err, pullkit.ErrNotFound) {
		t.Errorf("Image(%s) after DeleteImage(%s): %v, want ErrNotFound", arm, name, err)
	}
}

// store.Load reads an image back from the store alone: layers base first with the
// config's diffIDs, the runtime config, the registry's digest from the annotation.
func testLoad(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	l1, _ := blob(500, smallSize)
	l2, _ := blob(501, smallSize)
	d1, d2 := digest.FromString("diff 1"), digest.FromString("diff 2")
	config := []byte(`{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/app"],"Env":["A=1"]},` +
		`"rootfs":{"type":"layers","diff_ids":["` + string(d1) + `","` + string(d2) + `"]}}`)
	p := pull(t, s, "registry.example/team/app:1.0", false, config, l1, l2)
	img, err := s.Image(ctx, p.name)
	if err != nil {
		t.Fatal(err)
	}
	served := digest.FromString("as the registry served it")
	img.Target.Annotations = map[string]string{store.AnnotationRegistryDigest: string(served)}
	if err := s.PutImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	got, err := store.Load(ctx, s, p.name)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got.Name != p.name || got.RegistryDigest != served || got.Digest != served || got.Stored.Digest != img.Target.Digest {
		t.Errorf("Load: name %q, registry digest %s, digest %s, stored %s; want %q, %s, %s", got.Name, got.RegistryDigest, got.Digest, got.Stored.Digest, p.name, served, img.Target.Digest)
	}
	if len(got.Layers) != 2 || got.Layers[0].Digest != digest.FromBytes(l1) || got.Layers[0].DiffID != d1 || got.Layers[1].DiffID != d2 {
		t.Errorf("Load: layers %+v, want base first with the config's diffIDs", got.Layers)
	}
	if !slices.Equal(got.Runtime.Cmd, []string{"/bin/app"}) || got.Platform == nil || got.Platform.Architecture != "amd64" {
		t.Errorf("Load: runtime %+v, platform %v", got.Runtime, got.Platform)
	}
	if _, err := store.Load(ctx, s, "registry.example/absent:1"); !errors.Is(err, pullkit.ErrNotFound) {
		t.Errorf("Load of an absent name: %v, want ErrNotFound", err)
	}
}

// A healthy store's Check hashes every blob and finds nothing damaged.
func testCheck(t *testing.T, s store.Store) {
	c, ok := s.(store.Checker)
	if !ok {
		t.Skip("the store does not check its blobs")
	}
	ctx := ctxT(t)
	var total int64
	for i, n := range []int{0, smallSize, largeSize} {
		b, _ := blob(uint64(600+i), n)
		put(t, s, b)
		total += int64(n)
	}
	res, err := c.Check(ctx, true)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if res.Checked != 3 || res.Bytes != total || len(res.Damaged) != 0 || len(res.Removed) != 0 {
		t.Errorf("Check = %+v, want 3 blobs of %d bytes, none damaged", res, total)
	}
}

// pulled is an image put into a store the way a pull does.
type pulled struct {
	name  string
	blobs []digest.Digest // every blob of the image, its manifest (and index) included
}

// pull stores an image of config and layers under name, through an index when
// asIndex, and names it.
func pull(t *testing.T, s store.Store, name string, asIndex bool, config []byte, layers ...[]byte) pulled {
	t.Helper()
	p := pulled{name: name}
	for _, b := range append([][]byte{config}, layers...) {
		p.blobs = append(p.blobs, put(t, s, b))
	}
	m := manifestOf(config, layers...)
	p.blobs = append(p.blobs, put(t, s, m))
	top := target(m, manifest.MediaTypeOCIManifest)
	if asIndex {
		idx := indexOf(m)
		p.blobs = append(p.blobs, put(t, s, idx))
		top = target(idx, manifest.MediaTypeOCIIndex)
	}
	if err := s.PutImage(ctxT(t), store.Image{Name: name, Target: top}); err != nil {
		t.Fatal(err)
	}
	return p
}

func collector(t *testing.T, s store.Store) store.Collector {
	c, ok := s.(store.Collector)
	if !ok {
		t.Skip("the store does not collect garbage")
	}
	return c
}

func gc(t *testing.T, c store.Collector, opts ...store.GCOption) store.GCResult {
	t.Helper()
	res, err := c.GC(ctxT(t), opts...)
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	return res
}

func sorted(ds []digest.Digest) []digest.Digest {
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return slices.Compact(ds)
}

// Images A and B share a base layer; deleting A's name and collecting removes exactly
// A's own blobs.
func testGC(t *testing.T, s store.Store) {
	c := collector(t, s)
	ctx := ctxT(t)
	base, _ := blob(200, largeSize)
	la, _ := blob(201, smallSize)
	lb, _ := blob(202, largeSize/2)
	a := pull(t, s, "r.example/a:1", false, []byte(`{"image":"a"}`), base, la)
	b := pull(t, s, "r.example/b:1", true, []byte(`{"image":"b"}`), base, lb)
	junk, _ := blob(203, smallSize)
	jd := put(t, s, junk)

	if res := gc(t, c); !slices.Equal(res.Blobs, []digest.Digest{jd}) || res.Bytes != int64(len(junk)) {
		t.Errorf("GC removed %v (%d bytes), want only the unnamed %s (%d)", res.Blobs, res.Bytes, jd, len(junk))
	}
	for _, d := range append(a.blobs, b.blobs...) {
		if !store.Has(ctx, s, d) {
			t.Fatalf("GC removed %s, which a name reaches", d)
		}
	}
	if err := s.DeleteImage(ctx, a.name); err != nil {
		t.Fatal(err)
	}
	var own []digest.Digest
	for _, d := range a.blobs {
		if !slices.Contains(b.blobs, d) {
			own = append(own, d)
		}
	}
	res := gc(t, c)
	if !slices.Equal(res.Blobs, sorted(own)) {
		t.Errorf("GC after deleting %s removed %v, want its own blobs %v", a.name, res.Blobs, sorted(own))
	}
	for _, d := range b.blobs {
		if !store.Has(ctx, s, d) {
			t.Errorf("GC removed %s of %s", d, b.name)
		}
	}
	if err := s.DeleteImage(ctx, b.name); err != nil {
		t.Fatal(err)
	}
	if res := gc(t, c); !slices.Equal(res.Blobs, sorted(b.blobs)) {
		t.Errorf("GC after deleting every name removed %v, want %v", res.Blobs, sorted(b.blobs))
	}
	if _, err := c.GC(ctx, store.WithIngestExpiry(-time.Second)); !errors.Is(err, pullkit.ErrInvalid) {
		t.Errorf("GC with a negative expiry: %v, want ErrInvalid", err)
	}
}

// Blobs a lease holds survive GC until the lease is released, named or not.
func testGCLease(t *testing.T, s store.Store) {
	c := collector(t, s)
	ctx := ctxT(t)
	l, err := s.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	x, _ := blob(300, largeSize)
	y, _ := blob(301, smallSize)
	z, _ := blob(302, smallSize)
	m := manifestOf(z, x)
	held := []digest.Digest{digest.FromBytes(x), digest.FromBytes(y), digest.FromBytes(m)}
	if err := l.Add(ctx, held...); err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{x, y, z, m} {
		put(t, s, b)
	}
	// z is reached through the leased manifest m.
	if res := gc(t, c, store.WithIngestExpiry(0)); len(res.Blobs) != 0 {
		t.Errorf("GC removed %v, which a lease holds", res.Blobs)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if err := l.Add(ctx, held[0]); err == nil {
		t.Error("Add to a released lease succeeded")
	}
	want := sorted(append(held, digest.FromBytes(z)))
	if res := gc(t, c); !slices.Equal(res.Blobs, want) {
		t.Errorf("GC after Release removed %v, want %v", res.Blobs, want)
	}
	if err := l.Release(); err != nil {
		t.Errorf("second Release: %v", err)
	}
}

// A partial ingest no writer holds is kept for the expiry, then removed; one a writer
// holds is never removed.
func testGCIngests(t *testing.T, s store.Store) {
	c := collector(t, s)
	ctx := ctxT(t)
	for i, size := range []int{smallSize, largeSize} {
		b, d := blob(uint64(400+i), size)
		w, err := s.Writer(ctx, desc(b, true))
		if err != nil {
			t.Fatal(err)
		}
		write(t, w, b[:size/2], 64<<10)
		w.Close()
		if res := gc(t, c, store.WithIngestExpiry(time.Hour)); res.Ingests != 0 {
			t.Errorf("GC expired %d fresh ingests", res.Ingests)
		}
		w, err = s.Writer(ctx, desc(b, true))
		if err != nil {
			t.Fatal(err)
		}
		if w.Offset() != int64(size/2) {
			t.Fatalf("resumed at %d after GC, want %d", w.Offset(), size/2)
		}
		// Held by a writer: kept whatever its age.
		if res := gc(t, c, store.WithIngestExpiry(0)); res.Ingests != 0 {
			t.Errorf("GC expired %d ingests that a writer holds", res.Ingests)
		}
		if w.Offset() != int64(size/2) {
			t.Fatalf("writer at %d after GC", w.Offset())
		}
		w.Close()
		time.Sleep(10 * time.Millisecond)
		res := gc(t, c, store.WithIngestExpiry(time.Millisecond))
		if res.Ingests != 1 || res.IngestBytes != int64(size/2) {
			t.Errorf("GC expired %d ingests of %d bytes, want 1 of %d", res.Ingests, res.IngestBytes, size/2)
		}
		w, err = s.Writer(ctx, desc(b, true))
		if err != nil {
			t.Fatal(err)
		}
		if w.Offset() != 0 {
			t.Errorf("writer at %d after its ingest expired, want 0", w.Offset())
		}
		write(t, w, b, 1<<20)
		if err := w.Commit(ctx, int64(size), d); err != nil {
			t.Fatal(err)
		}
	}
}

// rangeWriter opens a writer of desc as a store.RangeWriter, or skips the test.
func rangeWriter(t *testing.T, s store.Store, d manifest.Descriptor) store.RangeWriter {
	t.Helper()
	w, err := s.Writer(ctxT(t), d)
	if err != nil {
		t.Fatal(err)
	}
	rw, ok := w.(store.RangeWriter)
	if !ok {
		w.Close()
		t.Skip("the store's writers are not store.RangeWriters")
	}
	return rw
}

func writeAt(t *testing.T, w store.RangeWriter, b []byte, start, end int) {
	t.Helper()
	if n, err := w.WriteAt(b[start:end], int64(start)); err != nil || n != end-start {
		t.Fatalf("WriteAt([%d, %d)) = %d, %v", start, end, n, err)
	}
}

func wantHeld(t *testing.T, w store.RangeWriter, want ...store.Range) {
	t.Helper()
	if got := w.Held(); !slices.Equal(got, want) {
		t.Fatalf("Held() = %v, want %v", got, want)
	}
}

// absorb takes every held byte at Offset, in pieces of chunk, and returns them.
func absorb(t *testing.T, w store.RangeWriter, chunk int) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, chunk)
	for {
		n, err := w.Absorb(buf)
		if err != nil {
			t.Fatalf("Absorb: %v", err)
		}
		if n == 0 {
			return out
		}
		out = append(out, buf[:n]...)
	}
}

// Bytes written out of order are held beyond Offset, merged when they overlap or touch
// (the last written win), taken in order by Absorb or by a Write over them, and the
// blob verifies whole.
func testRangesHeld(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	for i, known := range []bool{true, false} {
		b, d := blob(uint64(500+i), largeSize)
		w := rangeWriter(t, s, desc(b, known))
		write(t, w, b[:100<<10], 64<<10)
		junk, _ := blob(599, 200<<10)
		// Wrong bytes first, then the right ones over them: the last written are kept.
		if _, err := w.WriteAt(junk, 1<<20); err != nil {
			t.Fatal(err)
		}
		writeAt(t, w, b, 1<<20, 1<<20+300<<10)
		writeAt(t, w, b, 600<<10, 1<<20) // touches the stretch after it
		writeAt(t, w, b, 2<<20, largeSize)
		if w.Offset() != 100<<10 {
			t.Fatalf("Offset %d after writes out of order, want %d", w.Offset(), 100<<10)
		}
		wantHeld(t, w, store.Range{Start: 600 << 10, End: 1<<20 + 300<<10}, store.Range{Start: 2 << 20, End: largeSize})
		if n, err := w.Absorb(make([]byte, 10)); n != 0 || err != nil {
			t.Fatalf("Absorb with nothing held at Offset = %d, %v, want 0", n, err)
		}
		// A Write over the start of a held stretch takes those bytes; Absorb the rest.
		write(t, w, b[100<<10:700<<10], 64<<10)
		wantHeld(t, w, store.Range{Start: 700 << 10, End: 1<<20 + 300<<10}, store.Range{Start: 2 << 20, End: largeSize})
		got := absorb(t, w, 100<<10)
		if !bytes.Equal(got, b[700<<10:1<<20+300<<10]) {
			t.Fatalf("Absorb gave %d bytes that are not the blob's [%d, %d)", len(got), 700<<10, 1<<20+300<<10)
		}
		if w.Offset() != 1<<20+300<<10 {
			t.Fatalf("Offset %d after Absorb", w.Offset())
		}
		wantHeld(t, w, store.Range{Start: 2 << 20, End: largeSize})
		write(t, w, b[1<<20+300<<10:2<<20], 64<<10)
		// Commit takes what is held from Offset on.
		if err := w.Commit(ctx, int64(len(b)), d); err != nil {
			t.Fatalf("Commit with the tail held: %v", err)
		}
		checkContent(t, s, b)
	}
}

// What a closed writer held is the next writer's: its prefix at Offset, its stretches
// in Held.
func testRangesResume(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	for i, tc := range []struct {
		size  int
		known bool
	}{{largeSize, true}, {largeSize, false}, {4 << 20, true}} {
		b, d := blob(uint64(520+i), tc.size)
		w := rangeWriter(t, s, desc(b, tc.known))
		write(t, w, b[:300<<10], 64<<10)
		writeAt(t, w, b, 1<<20, 1<<20+1000)
		writeAt(t, w, b, 1<<20+5000, 2<<20)
		writeAt(t, w, b, tc.size-777, tc.size)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if store.Has(ctx, s, d) {
			t.Fatal("blob visible after Close")
		}
		w = rangeWriter(t, s, desc(b, tc.known))
		if w.Offset() != 300<<10 {
			t.Fatalf("size %d: resumed at %d, want %d", tc.size, w.Offset(), 300<<10)
		}
		want := []store.Range{{Start: 1 << 20, End: 1<<20 + 1000}, {Start: 1<<20 + 5000, End: 2 << 20}, {Start: int64(tc.size - 777), End: int64(tc.size)}}
		wantHeld(t, w, want...)
		// Only the gaps are written again.
		write(t, w, b[300<<10:1<<20], 64<<10)
		if got := absorb(t, w, 4096); !bytes.Equal(got, b[1<<20:1<<20+1000]) {
			t.Fatalf("absorbed bytes differ from the blob's")
		}
		if n, err := w.WriteAt(b[1<<20+1000:1<<20+5000], 1<<20+1000); err != nil || n != 4000 {
			t.Fatalf("WriteAt the gap at Offset: %d, %v", n, err)
		}
		absorb(t, w, 1<<20)
		write(t, w, b[2<<20:tc.size-777], 64<<10)
		if err := w.Commit(ctx, int64(tc.size), d); err != nil {
			t.Fatalf("Commit after resuming held stretches: %v", err)
		}
		checkContent(t, s, b)
	}
}

// WriteAt refuses bytes before Offset and past a known size; Truncate drops what is
// held.
func testRangesRules(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	b, d := blob(540, largeSize)
	w := rangeWriter(t, s, desc(b, true))
	write(t, w, b[:1000], 1000)
	if _, err := w.WriteAt(b[500:600], 500); !errors.Is(err, pullkit.ErrInvalid) {
		t.Errorf("WriteAt before Offset: %v, want ErrInvalid", err)
	}
	if _, err := w.WriteAt(b[:100], int64(largeSize-50)); !errors.Is(err, pullkit.ErrInvalid) {
		t.Errorf("WriteAt past the size: %v, want ErrInvalid", err)
	}
	writeAt(t, w, b, 1<<20, 2<<20)
	if err := w.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if w.Offset() != 0 || len(w.Held()) != 0 {
		t.Fatalf("after Truncate(0): Offset %d, Held %v", w.Offset(), w.Held())
	}
	w.Close()
	w = rangeWriter(t, s, desc(b, true))
	if w.Offset() != 0 || len(w.Held()) != 0 {
		t.Fatalf("after Truncate(0) and Close: Offset %d, Held %v, want nothing", w.Offset(), w.Held())
	}
	writeAt(t, w, b, 0+1, 1000) // at Offset + 1
	write(t, w, b[:1], 1)
	absorb(t, w, 100)
	write(t, w, b[1000:], 1<<20)
	if err := w.Commit(ctx, int64(len(b)), d); err != nil {
		t.Fatal(err)
	}
	checkContent(t, s, b)
}

// Wrong bytes held are found by Commit's digest check, and nothing gets the name.
func testRangesWrongBytes(t *testing.T, s store.Store) {
	ctx := ctxT(t)
	b, d := blob(550, largeSize)
	bad := append([]byte(nil), b...)
	bad[1<<20+7] ^= 0xff
	w := rangeWriter(t, s, desc(b, true))
	writeAt(t, w, bad, 1<<20, largeSize)
	w.Close()
	w = rangeWriter(t, s, desc(b, true))
	write(t, w, b[:1<<20], 64<<10)
	err := w.Commit(ctx, int64(len(b)), d)
	wantErr(t, "commit with wrong bytes held", err, pullkit.ErrDigestMismatch)
	if store.Has(ctx, s, d) {
		t.Fatal("a blob with wrong bytes got its name")
	}
	w = rangeWriter(t, s, desc(b, true))
	if w.Offset() != 0 || len(w.Held()) != 0 {
		t.Errorf("after a failed commit: Offset %d, Held %v, want nothing", w.Offset(), w.Held())
	}
	w.Close()
}

// GC expires a partial that holds only stretches beyond its prefix, counting them.
func testRangesGC(t *testing.T, s store.Store) {
	c := collector(t, s)
	b, _ := blob(560, largeSize)
	w := rangeWriter(t, s, desc(b, true))
	writeAt(t, w, b, 1<<20, 1<<20+4096)
	w.Close()
	if res := gc(t, c, store.WithIngestExpiry(time.Hour)); res.Ingests != 0 {
		t.Errorf("GC expired %d fresh ingests", res.Ingests)
	}
	w = rangeWriter(t, s, desc(b, true))
	wantHeld(t, w, store.Range{Start: 1 << 20, End: 1<<20 + 4096})
	w.Close()
	time.Sleep(10 * time.Millisecond)
	res := gc(t, c, store.WithIngestExpiry(time.Millisecond))
	if res.Ingests != 1 || res.IngestBytes != 4096 {
		t.Errorf("GC expired %d ingests of %d bytes, want 1 of 4096", res.Ingests, res.IngestBytes)
	}
	w = rangeWriter(t, s, desc(b, true))
	if w.Offset() != 0 || len(w.Held()) != 0 {
		t.Errorf("after expiry: Offset %d, Held %v", w.Offset(), w.Held())
	}
	w.Close()
}

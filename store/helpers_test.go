package store

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/manifest"
)

// randBytes returns n pseudo-random bytes, the same for the same seed.
func randBytes(seed uint64, n int) []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

func descOf(mediaType string, b []byte) manifest.Descriptor {
	return manifest.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
}

// testCtx is a context with a generous bound, only to turn a hang into a failure.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func openTemp(t testing.TB, opts ...LayoutOption) *Layout {
	t.Helper()
	l, err := OpenLayout(t.TempDir(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// writeAligned writes b through w from an aligned buffer, in pieces of chunk bytes,
// starting at w's Offset.
func writeAligned(w Writer, b []byte, chunk int) error {
	buf := alignedBytes(chunk)
	for off := int(w.Offset()); off < len(b); {
		n := copy(buf, b[off:])
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// store writes b into s as a blob, failing the test on error.
func storeBlob(t testing.TB, s Store, b []byte) manifest.Descriptor {
	t.Helper()
	d := descOf("application/octet-stream", b)
	if err := WriteBlob(testCtx(t), s, d, b); err != nil {
		t.Fatal(err)
	}
	return d
}

// entries lists a directory, failing the test on an error other than its absence.
func entries(t testing.TB, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// untar extracts an image-layout tar into dir.
func untar(t testing.TB, archive, dir string) {
	t.Helper()
	b, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// rawIndex reads index.json as generic JSON.
func rawIndex(t testing.TB, dir string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, IndexFile))
	if err != nil {
		t.Fatal(err)
	}
	var idx map[string]any
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	return idx
}

var errCanceled = context.Canceled

func contextCanceled() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx, cancel
}

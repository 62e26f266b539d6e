package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A disk that fills up mid-blob (a 3 MiB tmpfs, mounted when the test runs as root)
// fails the Write with the disk's error, naming the blob, through the writer goroutine
// (direct and buffered) and inline writes alike, and leaves nothing under blobs/.
func TestDiskFullFailsCleanly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	data := randBytes(93, 6<<20)
	d := descOf("", data)
	for _, tc := range []struct {
		direct bool
		chunk  int
	}{{true, 1 << 20}, {false, 1 << 20}, {false, 32 << 10}} {
		t.Run(fmt.Sprintf("direct %v chunk %d", tc.direct, tc.chunk), func(t *testing.T) {
			dir := t.TempDir()
			if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=3m"); err != nil {
				t.Skipf("cannot mount a tmpfs: %v", err)
			}
			t.Cleanup(func() { syscall.Unmount(dir, 0) })
			l, err := OpenLayout(dir, WithDirectIO(tc.direct))
			if err != nil {
				t.Fatal(err)
			}
			ctx := testCtx(t)
			w, err := l.Writer(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			before := directBytes.Load()
			err = writeAligned(w, data, tc.chunk)
			if tc.direct && l.directOK() && directBytes.Load() == before {
				t.Error("no block went through O_DIRECT")
			}
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("error %v, want ENOSPC", err)
			}
			if !strings.Contains(err.Error(), string(d.Digest)) {
				t.Errorf("error %q does not name the blob", err)
			}
			if _, err := w.Write(data[:10]); err == nil {
				t.Error("Write after a failed Write succeeded")
			}
			if err := w.Commit(ctx, d.Size, d.Digest); err == nil {
				t.Fatal("Commit after a failed Write succeeded")
			}
			if Has(ctx, l, d.Digest) {
				t.Error("the blob is in the store")
			}
			if left := entries(t, filepath.Join(dir, BlobsDir, "sha256")); len(left) != 0 {
				t.Errorf("blobs/sha256 holds %v", left)
			}
		})
	}
}

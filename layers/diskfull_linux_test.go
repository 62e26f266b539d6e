package layers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
)

// A disk that fills up mid-blob (a 3 MiB tmpfs, mounted when the test runs as root)
// fails the blob with the write error, through the writer goroutine (direct) and the
// receiver (buffered) alike, without hanging, and leaves nothing under blobs/.
func TestDiskFullFailsCleanly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	data := randBytes(93, 6<<20)
	for _, direct := range []bool{true, false} {
		t.Run(fmt.Sprintf("direct %v", direct), func(t *testing.T) {
			dir := t.TempDir()
			if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=3m"); err != nil {
				t.Skipf("cannot mount a tmpfs: %v", err)
			}
			t.Cleanup(func() { syscall.Unmount(dir, 0) })
			l, err := OpenLayout(dir)
			if err != nil {
				t.Fatal(err)
			}
			srv := newBlobServer(t, data)
			desc := descOf("", data)
			_, err = Fetch(context.Background(), srv.fetcher(), l, []Blob{{Desc: desc}}, WithDirectIO(direct), WithParallelRanges(0, 1))
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("error %v, want ENOSPC", err)
			}
			var be *BlobError
			if !errors.As(err, &be) || be.Digest != desc.Digest {
				t.Errorf("error %v does not name blob %s", err, desc.Digest)
			}
			if l.Has(desc.Digest) {
				t.Error("the blob is in the store")
			}
		})
	}
}

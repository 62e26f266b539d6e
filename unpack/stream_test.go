//go:build linux

package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/ztest"
)

func TestApplyCompressions(t *testing.T) {
	layer := tarOf(t, dir("etc"), file("etc/hostname", "pullkit\n"))
	two := tarOf(t, file("a", "1"))
	// Two gzip members, the tar cut between them, as pigz --independent or cat make.
	members := append(ztest.Gzip(t, layer[:700]), ztest.Gzip(t, layer[700:])...)
	want := map[string]string{"/etc": "d 755", "/etc/hostname": "f 644 pullkit\n"}
	cases := []struct {
		name   string
		blob   []byte
		diffID digest.Digest
		want   map[string]string
	}{
		{"plain", layer, diffIDOf(layer), want},
		{"gzip", ztest.Gzip(t, layer), diffIDOf(layer), want},
		{"zstd", ztest.Zstd(t, layer), diffIDOf(layer), want},
		{"gzip members", members, diffIDOf(layer), want},
		{"gzip then zeros", append(ztest.Gzip(t, layer), make([]byte, 100)...), diffIDOf(layer), want},
		{"tar padded past its end", append(append([]byte(nil), layer...), make([]byte, 10240)...), diffIDOf(append(append([]byte(nil), layer...), make([]byte, 10240)...)), want},
		{"empty blob", nil, diffIDOf(nil), map[string]string{}},
		{"empty tar", make([]byte, 1024), diffIDOf(make([]byte, 1024)), map[string]string{}},
		{"empty tar, gzip", ztest.Gzip(t, make([]byte, 1024)), diffIDOf(make([]byte, 1024)), map[string]string{}},
		{"no diffID to check", ztest.Zstd(t, two), "", map[string]string{"/a": "f 644 1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			r, err := NewRootfs(e.root)
			must(t, err)
			defer r.Abort()
			res, err := r.Apply(context.Background(), digest.FromBytes(c.blob), c.diffID, bytes.NewReader(c.blob))
			if err != nil {
				t.Fatal(err)
			}
			if c.diffID != "" && res.DiffID != c.diffID {
				t.Errorf("diffID %s, want %s", res.DiffID, c.diffID)
			}
			must(t, r.Commit())
			checkTree(t, e.root, c.want)
		})
	}
}

// failingReader returns its bytes, then err instead of io.EOF, as a verifying reader does
// when the blob's digest does not match.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func TestApplyFailuresLeaveNothing(t *testing.T) {
	layer := tarOf(t, dir("etc"), file("etc/passwd", "root:x:0:0::/root:/bin/sh\n"))
	blobMismatch := fmt.Errorf("blob: %w", &pullkit.DigestMismatchError{What: "blob", Want: "sha256:aa", Got: "sha256:bb"})
	cases := []struct {
		name  string
		blob  io.Reader
		want  digest.Digest
		is    error
		check func(t *testing.T, err error)
	}{
		{"diffID mismatch", bytes.NewReader(layer), digest.FromString("other"), pullkit.ErrDigestMismatch, func(t *testing.T, err error) {
			var dm *pullkit.DigestMismatchError
			if !errors.As(err, &dm) || dm.Got != diffIDOf(layer) {
				t.Errorf("no DigestMismatchError with the computed diffID: %v", err)
			}
		}},
		{"blob digest mismatch at the end", &failingReader{r: bytes.NewReader(ztest.Gzip(t, layer)), err: blobMismatch}, diffIDOf(layer), pullkit.ErrDigestMismatch, nil},
		{"reader error mid-stream", &failingReader{r: io.LimitReader(bytes.NewReader(layer), 600), err: errors.New("connection reset")}, diffIDOf(layer), pullkit.ErrUnreachable, nil},
		{"truncated", io.LimitReader(bytes.NewReader(layer), 700), diffIDOf(layer), pullkit.ErrInvalid, nil},
		{"truncated gzip", io.LimitReader(bytes.NewReader(ztest.Gzip(t, layer)), 40), diffIDOf(layer), pullkit.ErrInvalid, nil},
		{"corrupt zstd", bytes.NewReader(append([]byte{0x28, 0xb5, 0x2f, 0xfd}, bytes.Repeat([]byte{0xff}, 64)...)), "", pullkit.ErrInvalid, nil},
		{"not a tar", bytes.NewReader(bytes.Repeat([]byte("garbage!"), 100)), "", pullkit.ErrInvalid, nil},
		{"bad diffID", bytes.NewReader(layer), "sha256:xyz", pullkit.ErrInvalid, nil},
		{"unknown diffID algorithm", bytes.NewReader(layer), "md5:d41d8cd98f00b204e9800998ecf8427e", pullkit.ErrUnsupported, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			r, err := NewRootfs(e.root)
			must(t, err)
			layerDigest := digest.FromString(c.name)
			_, err = r.Apply(context.Background(), layerDigest, c.want, c.blob)
			if !errors.Is(err, c.is) {
				t.Fatalf("error %v, want %v", err, c.is)
			}
			checkError(t, err, layerDigest)
			if c.check != nil {
				c.check(t, err)
			}
			if err := r.Commit(); err == nil {
				t.Fatal("Commit after a failed layer succeeded")
			}
			if _, err := r.Apply(context.Background(), layerDigest, "", bytes.NewReader(layer)); err == nil {
				t.Fatal("Apply after a failed layer succeeded")
			}
			must(t, r.Abort())
			if ents, _ := os.ReadDir(e.base); len(ents) != 1 {
				t.Fatalf("left behind: %v", ents)
			}
			e.checkOutside(t)
			t.Logf("%v", err)
		})
	}
}

// zstdBomb is an endless zstd frame: a raw block holding head, then RLE blocks of 128 KiB
// of zeros, 4 bytes each (32768:1).
type zstdBomb struct {
	out []byte
}

func newZstdBomb(head []byte) *zstdBomb {
	b := &zstdBomb{}
	b.out = append(b.out, 0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38) // magic, no size, 128 KiB window
	hdr := uint32(len(head))<<3 | 0<<1                        // raw block
	b.out = append(b.out, byte(hdr), byte(hdr>>8), byte(hdr>>16))
	b.out = append(b.out, head...)
	return b
}

func (b *zstdBomb) Read(p []byte) (int, error) {
	for len(b.out) < len(p) {
		hdr := uint32(128<<10)<<3 | 1<<1 // RLE block of 128 KiB
		var blk [4]byte
		binary.LittleEndian.PutUint32(blk[:], hdr)
		b.out = append(b.out, blk[0], blk[1], blk[2], 0)
	}
	n := copy(p, b.out)
	b.out = b.out[n:]
	return n, nil
}

// TestApplyCancelBomb cancels layers that expand without end: a file of a terabyte of
// zeros, and zeros after the end of the archive. Apply must return once cancelled (a generous
// bound catches a hang).
func TestApplyCancelBomb(t *testing.T) {
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	must(t, tw.WriteHeader(&tar.Header{Name: "big", Typeflag: tar.TypeReg, Size: 1 << 40, Mode: 0o644, Format: tar.FormatPAX}))
	bigHead := hdr.Bytes()
	small := tarOf(t, file("a", "1"))
	bombDigest := digest.FromString("bomb")
	for name, head := range map[string][]byte{"huge file": bigHead, "endless padding": small} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			r, err := NewRootfs(e.root)
			must(t, err)
			defer r.Abort()
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			bomb := newZstdBomb(head)
			go func() {
				_, err := r.Apply(ctx, bombDigest, "", bomb)
				done <- err
			}()
			time.Sleep(300 * time.Millisecond)
			cancel()
			start := time.Now()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("error %v, want context.Canceled", err)
				}
				checkError(t, err, bombDigest)
				t.Logf("returned %v after cancel: %v", time.Since(start), err)
			case <-time.After(30 * time.Second): // catches a hang
				t.Fatal("Apply still running 30 s after cancel")
			}
		})
	}
}

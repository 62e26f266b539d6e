package layers

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestDecompress(t *testing.T) {
	tarball := makeTar(t, 7, 100<<10)
	gz, zst := gzipBytes(t, tarball), zstdBytes(t, tarball)
	broken := bytes.Clone(gz)
	broken[len(broken)/2] ^= 0xff
	for _, tt := range []struct {
		name, kind string
		blob       []byte
		readErr    bool
	}{
		{"gzip", "gzip", gz, false},
		{"zstd", "zstd", zst, false},
		{"plain tar", "", tarball, false},
		{"tiny", "", []byte("x"), false},
		{"corrupt gzip", "gzip", broken, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Compression(tt.blob); got != tt.kind {
				t.Errorf("Compression = %q, want %q", got, tt.kind)
			}
			rc, kind, err := Decompress(bytes.NewReader(tt.blob))
			if err != nil || kind != tt.kind {
				t.Fatalf("Decompress = %q, %v; want %q", kind, err, tt.kind)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if tt.readErr {
				if !errors.Is(err, ErrDecompress) {
					t.Fatalf("read error %v, want ErrDecompress", err)
				}
				return
			}
			want := tt.blob
			if tt.kind != "" {
				want = tarball
			}
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("read %d bytes (%v), want %d", len(got), err, len(want))
			}
		})
	}
	if _, _, err := Decompress(bytes.NewReader([]byte{0x1f, 0x8b, 0, 0})); !errors.Is(err, ErrDecompress) {
		t.Errorf("a gzip header that is not one: %v, want ErrDecompress", err)
	}
}

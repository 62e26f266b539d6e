package layers

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
)

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstded(t *testing.T, b []byte) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer zw.Close()
	return zw.EncodeAll(b, nil)
}

func TestDecompress(t *testing.T) {
	content := bytes.Repeat([]byte("pullkit layer content "), 5000)
	corrupt := gzipped(t, content)
	corrupt[len(corrupt)/2] ^= 0xff
	cases := []struct {
		name string
		blob []byte
		kind manifest.Compression
		want []byte // nil: ErrInvalid
	}{
		{"plain", content, manifest.Uncompressed, content},
		{"gzip", gzipped(t, content), manifest.Gzip, content},
		{"zstd", zstded(t, content), manifest.Zstd, content},
		{"gzip members", append(gzipped(t, content[:700]), gzipped(t, content[700:])...), manifest.Gzip, content},
		{"gzip then zeros", append(gzipped(t, content), make([]byte, 100)...), manifest.Gzip, content},
		{"empty", nil, manifest.Uncompressed, []byte{}},
		{"corrupt gzip", corrupt, manifest.Gzip, nil},
		{"corrupt zstd", append(zstded(t, content)[:20], make([]byte, 50)...), manifest.Zstd, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rc, kind, err := Decompress(bytes.NewReader(c.blob))
			if err == nil {
				defer rc.Close()
			}
			if err == nil && kind != c.kind {
				t.Errorf("kind %v, want %v", kind, c.kind)
			}
			var got []byte
			if err == nil {
				got, err = io.ReadAll(rc)
			}
			if c.want == nil {
				if !errors.Is(err, pullkit.ErrInvalid) {
					t.Fatalf("err %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, c.want) {
				t.Fatalf("%d bytes out, want %d", len(got), len(c.want))
			}
		})
	}
}

package layers

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/ztest"
	"github.com/pullkit/pullkit/manifest"
)

func TestDecompress(t *testing.T) {
	content := bytes.Repeat([]byte("pullkit layer content "), 5000)
	corrupt := ztest.Gzip(t, content)
	corrupt[len(corrupt)/2] ^= 0xff
	cases := []struct {
		name string
		blob []byte
		kind manifest.Compression
		want []byte // nil: ErrInvalid
	}{
		{"plain", content, manifest.Uncompressed, content},
		{"gzip", ztest.Gzip(t, content), manifest.Gzip, content},
		{"zstd", ztest.Zstd(t, content), manifest.Zstd, content},
		{"gzip members", append(ztest.Gzip(t, content[:700]), ztest.Gzip(t, content[700:])...), manifest.Gzip, content},
		{"gzip then zeros", append(ztest.Gzip(t, content), make([]byte, 100)...), manifest.Gzip, content},
		{"empty", nil, manifest.Uncompressed, []byte{}},
		{"corrupt gzip", corrupt, manifest.Gzip, nil},
		{"corrupt zstd", append(ztest.Zstd(t, content)[:20], make([]byte, 50)...), manifest.Zstd, nil},
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

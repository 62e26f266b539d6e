package archive

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/ztest"
	"github.com/pullkit/pullkit/manifest"
)

// closeTracker records whether Close was called.
type closeTracker struct {
	io.Reader
	closed bool
}

func (c *closeTracker) Close() error { c.closed = true; return nil }

func TestUncompressed(t *testing.T) {
	plain := layerTar(t, map[string]string{"a": strings.Repeat("layer content ", 500)})
	gz, zs := ztest.Gzip(t, plain), ztest.Zstd(t, plain)
	truncated := gz[:len(gz)/2]
	tests := []struct {
		name      string
		blob      []byte
		mediaType string
		want      []byte // nil: an error is expected
		openErr   bool   // the error comes from Uncompressed itself, not from Read
	}{
		{"oci gzip", gz, manifest.MediaTypeOCILayerGzip, plain, false},
		{"docker gzip", gz, manifest.MediaTypeDockerLayer, plain, false},
		{"docker foreign", gz, manifest.MediaTypeDockerForeignLayer, plain, false},
		{"oci zstd", zs, manifest.MediaTypeOCILayerZstd, plain, false},
		{"oci uncompressed", plain, manifest.MediaTypeOCILayer, plain, false},
		{"docker uncompressed", plain, manifest.MediaTypeDockerLayerUncompressed, plain, false},
		{"no media type, gzip bytes", gz, "", plain, false},
		{"no media type, zstd bytes", zs, "", plain, false},
		{"no media type, plain bytes", plain, "", plain, false},
		{"uncompressed type, gzip bytes", gz, manifest.MediaTypeOCILayer, plain, false},
		{"tiny blob", []byte("ab"), "", []byte("ab"), false},
		{"gzip type, plain bytes", plain, manifest.MediaTypeOCILayerGzip, nil, true},
		{"zstd type, gzip bytes", gz, manifest.MediaTypeOCILayerZstd, nil, true},
		{"gzip type, empty blob", nil, manifest.MediaTypeOCILayerGzip, nil, true},
		{"truncated gzip", truncated, manifest.MediaTypeOCILayerGzip, nil, false},
		{"truncated zstd", zs[:len(zs)-3], manifest.MediaTypeOCILayerZstd, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &closeTracker{Reader: bytes.NewReader(tc.blob)}
			rc, err := Uncompressed(src, tc.mediaType)
			if tc.openErr {
				if !errors.Is(err, pullkit.ErrInvalid) {
					t.Fatalf("error %v, want pullkit.ErrInvalid", err)
				}
				if !src.closed {
					t.Error("source not closed after a failed open")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			if tc.want == nil {
				if !errors.Is(err, pullkit.ErrInvalid) {
					t.Errorf("read error %v, want pullkit.ErrInvalid", err)
				}
			} else if err != nil || !bytes.Equal(got, tc.want) {
				t.Errorf("got %d bytes (%v), want %d", len(got), err, len(tc.want))
			}
			if err := rc.Close(); err != nil {
				t.Error(err)
			}
			if !src.closed {
				t.Error("Close did not close the source")
			}
			if _, err := rc.Read(make([]byte, 1)); !errors.Is(err, os.ErrClosed) {
				t.Errorf("read after close: %v, want os.ErrClosed", err)
			}
		})
	}
}

// TestUncompressedIntoArchive writes a gzip blob through Uncompressed as a layer opener:
// the archive holds the uncompressed tar under the config's diffID.
func TestUncompressedIntoArchive(t *testing.T) {
	fix := byName(readMembers(t, bytes.NewReader(fixture(t, almostEmptyTar))))
	layer := fix[almostEmptyV1ID+"/layer.tar"].data
	gz := ztest.Gzip(t, layer)
	img := DockerImage{RepoTags: []string{"emptyimage:latest"}, Config: fix[almostEmptyConfig].data, Layers: []Layer{{
		Open: func() (io.ReadCloser, error) { return Uncompressed(bytes.NewReader(gz), manifest.MediaTypeDockerLayer) },
	}}}
	var buf bytes.Buffer
	if err := WriteDockerArchive(&buf, img); err != nil {
		t.Fatal(err)
	}
	if got := byName(readMembers(t, &buf))[almostEmptyV1ID+"/layer.tar"].data; !bytes.Equal(got, layer) {
		t.Errorf("layer.tar is %d bytes, want the %d uncompressed bytes", len(got), len(layer))
	}
}

// FuzzUncompressed: any blob and media type; never a panic, and errors are pullkit.ErrInvalid
// (or reads finish). Seeded with the fixture layers, compressed both ways.
func FuzzUncompressed(f *testing.F) {
	tars, _ := filepath.Glob(filepath.Join("..", "testdata", "docker-archive", "*.tar"))
	for _, p := range tars {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[:2048], "")
		f.Add(ztest.Gzip(f, b), manifest.MediaTypeOCILayerGzip)
		f.Add(ztest.Zstd(f, b), manifest.MediaTypeOCILayerZstd)
	}
	f.Fuzz(func(t *testing.T, blob []byte, mediaType string) {
		rc, err := Uncompressed(bytes.NewReader(blob), mediaType)
		if err != nil {
			if !errors.Is(err, pullkit.ErrInvalid) {
				t.Fatalf("open error %v is not pullkit.ErrInvalid", err)
			}
			return
		}
		defer rc.Close()
		_, err = io.Copy(io.Discard, io.LimitReader(rc, 64<<20))
		if err != nil && !errors.Is(err, pullkit.ErrInvalid) {
			t.Fatalf("read error %v is not pullkit.ErrInvalid", err)
		}
	})
}
